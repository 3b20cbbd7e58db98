//! Bad produce, fetch and ListOffsets requests get typed error codes and change nothing: one
//! table of request → expected code, sent to the leader or to a follower, then a check that
//! the log still holds the one good record and no node panicked.

use bytes::Bytes;
use tonic::transport::Channel;
use weir_common::now_ms;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_storage::Record;

use crate::common::data::*;
use crate::common::{assert_code, broker_client_at, serial, Cluster};

/// One bad request.
enum Bad {
    /// A produce request.
    Produce(bpb::ProduceRequest),
    /// A Fetch stream opened at `offset`: its first answer.
    Fetch {
        topic: &'static str,
        partition: u32,
        offset: i64,
    },
    /// ListOffsets for the latest offset.
    ListOffsets { topic: &'static str, partition: u32 },
}

/// Which broker a case is sent to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Leader,
    Follower,
}

/// The answer's error and, with NOT_LEADER_OR_FOLLOWER, the leader address it names.
struct Answer {
    error: Option<weir_proto::common::v1::Error>,
    leader_address: String,
    /// What else the answer must say on an error ("no value" fields), checked per kind.
    rest: Result<(), String>,
}

async fn send(client: &mut BrokerClient<Channel>, bad: Bad) -> Answer {
    match bad {
        Bad::Produce(req) => {
            let r = produce(client, req).await;
            let rest = (r.base_offset == -1)
                .then_some(())
                .ok_or(format!("base offset {} on error", r.base_offset));
            Answer {
                error: r.error,
                leader_address: r.leader_address,
                rest,
            }
        }
        Bad::Fetch {
            topic,
            partition,
            offset,
        } => {
            let r = first_fetch_answer(client, topic, partition, offset).await;
            let rest = (r.batches.is_empty() && r.records.is_empty())
                .then_some(())
                .ok_or("records in an error answer".to_owned());
            Answer {
                error: r.error,
                leader_address: r.leader_address,
                rest,
            }
        }
        Bad::ListOffsets { topic, partition } => {
            let r = list_offset(client, topic, partition, -1).await;
            let rest = (r.offset == -1)
                .then_some(())
                .ok_or(format!("offset {} on error", r.offset));
            Answer {
                error: r.error,
                leader_address: r.leader_address,
                rest,
            }
        }
    }
}

#[tokio::test]
async fn bad_produce_and_fetch_requests_get_error_codes() {
    let _serial = serial();
    let (mut cluster, controller) = Cluster::start_ready(3, &[]).await;
    let r = cluster
        .create_topic_with(controller, "strict", 1, 3, &[("max.message.bytes", "2048")])
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, "strict", 1, 3).await;
    let (leader_id, leader_addr) = leader_of(&md, "strict", 0).unwrap();
    let follower_id = (1..=3).find(|id| *id != leader_id).unwrap();
    let mut leader = broker_client_at(&leader_addr);
    let mut follower = cluster.broker_client(follower_id);

    let good = vec![Record {
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"the only record")),
        ..Record::default()
    }];
    let r = produce(&mut leader, produce_req("strict", 0, -1, plain(&good))).await;
    assert_code(&r.error, ErrorCode::None, "good produce");
    assert_eq!(r.base_offset, 0);

    let batch = build_batch(&good);
    let mut flipped = batch.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let mut lying_length = batch.to_vec();
    lying_length[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut bad_magic = batch.to_vec();
    bad_magic[16] = 1;
    let big = vec![Record {
        value: Some(Bytes::from(vec![b'x'; 4000])),
        ..Record::default()
    }];

    let raw = |bytes: Vec<u8>| Records::Batch(Bytes::from(bytes));
    let prod = |topic: &str, partition: u32, acks: i32, records: Option<Records>| {
        Bad::Produce(bpb::ProduceRequest {
            records,
            ..produce_req(topic, partition, acks, plain(&good))
        })
    };
    let fetch = |topic, partition, offset| Bad::Fetch {
        topic,
        partition,
        offset,
    };
    let list = |topic, partition| Bad::ListOffsets { topic, partition };
    use ErrorCode as C;
    use To::{Follower, Leader};
    let cases: Vec<(&str, To, Bad, ErrorCode)> = vec![
        // Produce.
        (
            "produce to an unknown topic",
            Leader,
            prod("no-such-topic", 0, -1, Some(plain(&good))),
            C::UnknownTopicOrPartition,
        ),
        (
            "produce to an unknown partition",
            Leader,
            prod("strict", 7, -1, Some(plain(&good))),
            C::UnknownTopicOrPartition,
        ),
        (
            "flipped byte (bad CRC)",
            Leader,
            prod("strict", 0, -1, Some(raw(flipped))),
            C::CorruptMessage,
        ),
        (
            "truncated batch",
            Leader,
            prod(
                "strict",
                0,
                -1,
                Some(raw(batch[..batch.len() - 5].to_vec())),
            ),
            C::CorruptMessage,
        ),
        (
            "truncated header",
            Leader,
            prod("strict", 0, -1, Some(raw(batch[..30].to_vec()))),
            C::CorruptMessage,
        ),
        (
            "garbage bytes",
            Leader,
            prod("strict", 0, -1, Some(raw(b"hello, broker".to_vec()))),
            C::CorruptMessage,
        ),
        (
            "length field of i32::MAX",
            Leader,
            prod("strict", 0, -1, Some(raw(lying_length))),
            C::CorruptMessage,
        ),
        (
            "magic 1",
            Leader,
            prod("strict", 0, -1, Some(raw(bad_magic))),
            C::CorruptMessage,
        ),
        (
            "batch over max.message.bytes",
            Leader,
            prod("strict", 0, -1, Some(Records::Batch(build_batch(&big)))),
            C::RecordTooLarge,
        ),
        (
            "plain records over max.message.bytes",
            Leader,
            prod("strict", 0, -1, Some(plain(&big))),
            C::RecordTooLarge,
        ),
        (
            "acks=5",
            Leader,
            prod("strict", 0, 5, Some(plain(&good))),
            C::InvalidRequiredAcks,
        ),
        (
            "acks=-2",
            Leader,
            prod("strict", 0, -2, Some(Records::Batch(batch.clone()))),
            C::InvalidRequiredAcks,
        ),
        (
            "no records field",
            Leader,
            prod("strict", 0, -1, None),
            C::InvalidRequest,
        ),
        (
            "an empty record list",
            Leader,
            prod("strict", 0, -1, Some(plain(&[]))),
            C::InvalidRequest,
        ),
        (
            "produce to a follower",
            Follower,
            prod("strict", 0, -1, Some(plain(&good))),
            C::NotLeaderOrFollower,
        ),
        // Fetch.
        (
            "fetch an unknown topic",
            Leader,
            fetch("no-such-topic", 0, 0),
            C::UnknownTopicOrPartition,
        ),
        (
            "fetch an unknown partition",
            Leader,
            fetch("strict", 3, 0),
            C::UnknownTopicOrPartition,
        ),
        (
            "fetch from a follower",
            Follower,
            fetch("strict", 0, 0),
            C::NotLeaderOrFollower,
        ),
        (
            "fetch beyond the end",
            Leader,
            fetch("strict", 0, 100),
            C::OffsetOutOfRange,
        ),
        (
            "fetch at a negative offset",
            Leader,
            fetch("strict", 0, -5),
            C::OffsetOutOfRange,
        ),
        // ListOffsets.
        (
            "ListOffsets on a follower",
            Follower,
            list("strict", 0),
            C::NotLeaderOrFollower,
        ),
        (
            "ListOffsets of an unknown topic",
            Leader,
            list("no-such-topic", 0),
            C::UnknownTopicOrPartition,
        ),
    ];
    for (what, to, bad, expected) in cases {
        let client = match to {
            Leader => &mut leader,
            Follower => &mut follower,
        };
        let answer = send(client, bad).await;
        assert_code(&answer.error, expected, what);
        if let Err(wrong) = answer.rest {
            panic!("{what}: {wrong}");
        }
        let named = if expected == C::NotLeaderOrFollower {
            leader_addr.as_str()
        } else {
            ""
        };
        assert_eq!(answer.leader_address, named, "{what}: the leader address");
    }

    // At the log end is not an error: an empty answer that reports the high watermark.
    let r = first_fetch_answer(&mut leader, "strict", 0, 1).await;
    assert_code(&r.error, ErrorCode::None, "fetch at the log end");
    assert_eq!(r.high_watermark, 1);
    assert!(r.batches.is_empty() && r.records.is_empty(), "{r:?}");

    // Nothing was appended: not committed, not even in the leader's log.
    let latest = list_offset(&mut leader, "strict", 0, -1).await;
    assert_code(&latest.error, ErrorCode::None, "ListOffsets latest");
    assert_eq!(latest.offset, 1, "bad requests appended records");
    let offsets = leader
        .partition_offsets(bpb::PartitionOffsetsRequest {
            topic: "strict".into(),
        })
        .await
        .expect("PartitionOffsets RPC")
        .into_inner();
    assert_code(&offsets.error, ErrorCode::None, "PartitionOffsets");
    let p = offsets
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .unwrap();
    assert_eq!(
        (p.log_start_offset, p.high_watermark, p.log_end_offset),
        (0, 1, 1)
    );
    let got = fetch_range(&mut leader, "strict", 0, 0, 1, true).await;
    assert_records(&got, &good, 0, (0, now_ms()), "the only record");

    for id in 1..=3 {
        assert!(cluster.node(id).is_running(), "node {id} died");
        assert_eq!(cluster.log_panics(id), "", "node {id}");
    }
}
