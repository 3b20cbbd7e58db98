//! Produce to partition leaders and consume through Fetch streams on an RF 3 cluster: plain
//! and batch produce, decoded and raw fetch, ListOffsets by position and time, and a Fetch
//! stream that stays open at the log end.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use weir_common::now_ms;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_proto::controller::v1 as pb;
use weir_storage::{Header, Record};

use crate::common::data::*;
use crate::common::{assert_code, broker_client_at, serial, Cluster, STARTUP};

/// The records of one partition in the first test: plain and batch produce requests mixed,
/// null keys and values, headers with null values, broker-stamped and explicit timestamps.
/// Batch records carry create times half an hour ahead (within message.timestamp.after.max.ms)
/// so ListOffsets by timestamp finds them.
fn sample_segments(partition: u32, now: i64) -> Vec<(bool, Vec<Record>)> {
    let future = now + 1_800_000;
    let rec = |i: usize, ts: i64, key: bool, value: Option<String>| Record {
        offset: 0,
        timestamp: ts,
        key: key.then(|| Bytes::from(format!("p{partition}-key-{i}"))),
        value: value.map(Bytes::from),
        headers: if i % 2 == 1 {
            Vec::new()
        } else {
            vec![
                Header {
                    key: "trace".into(),
                    value: Some(Bytes::from(format!("t{i}"))),
                },
                Header {
                    key: "nothing".into(),
                    value: None,
                },
            ]
        },
    };
    let value = |i: usize| Some(format!("p{partition}-value-{i}-{}", "x".repeat(i * 13)));
    // Offsets 0..5: plain, broker clock, the first with a null key.
    let a = (0..5).map(|i| rec(i, 0, i != 0, value(i))).collect();
    // Offsets 5..15: one batch, create times future+0..9.
    let b = (5..15)
        .map(|i| rec(i, future + (i as i64 - 5), true, value(i)))
        .collect();
    // Offsets 15..18: plain with explicit past timestamps; 16 is a tombstone (null value).
    let c = (15..18)
        .map(|i| {
            let v = (i != 16).then(|| value(i)).flatten();
            rec(i, now - 1000 + i as i64, true, v)
        })
        .collect();
    // Offsets 18..25: one batch, create times future+100..106.
    let d = (18..25)
        .map(|i| rec(i, future + 100 + (i as i64 - 18), true, value(i)))
        .collect();
    vec![(false, a), (true, b), (false, c), (true, d)]
}

#[tokio::test]
async fn produce_and_consume_through_a_three_node_cluster_with_rf3() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(1, 3, STARTUP).await;

    // Created through a broker, which forwards admin requests to the controller quorum.
    let created = cluster
        .broker_client(2)
        .create_topic(pb::CreateTopicRequest {
            name: "events".into(),
            partitions: 3,
            replication_factor: 3,
            configs: Default::default(),
        })
        .await
        .expect("CreateTopic through a broker")
        .into_inner();
    assert_code(
        &created.error,
        ErrorCode::None,
        "CreateTopic through a broker",
    );

    let md = wait_topic_ready(&mut cluster, "events", 3, 3).await;
    assert_eq!(md.brokers.len(), 3, "{:?}", md.brokers);
    let controller = cluster.wait_leader(STARTUP).await;
    assert_eq!(
        md.controller_id, controller,
        "Metadata names the controller leader"
    );
    for b in &md.brokers {
        assert_eq!(
            b.address,
            cluster.node(b.id).broker_addr(),
            "advertised address"
        );
        assert_eq!(b.state(), weir_proto::common::v1::BrokerState::Active);
    }
    let topic = md.topics.iter().find(|t| t.name == "events").unwrap();
    assert_eq!(topic.partitions.len(), 3);
    assert!(!topic.id.is_empty());
    for p in &topic.partitions {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3, "{p:?}");
        assert!(p.replicas.contains(&(p.leader as u64)), "{p:?}");
        assert_eq!(p.leader_epoch, 0, "a new topic's first leaders: {p:?}");
    }

    let now = now_ms();
    let t0 = now_ms();
    let mut expected_by_partition = Vec::new();
    for partition in 0..3u32 {
        let (_, addr) = leader_of(&md, "events", partition).unwrap();
        let mut leader = broker_client_at(&addr);
        let mut expected = Vec::new();
        for (as_batch, records) in sample_segments(partition, now) {
            let body = if as_batch {
                Records::Batch(build_batch(&records))
            } else {
                plain(&records)
            };
            let r = produce(&mut leader, produce_req("events", partition, -1, body)).await;
            let what = format!("produce to events-{partition} (batch: {as_batch})");
            assert_code(&r.error, ErrorCode::None, &what);
            assert_eq!(r.base_offset, expected.len() as i64, "{what}: base offset");
            assert_eq!(r.log_start_offset, 0, "{what}");
            assert_eq!(r.log_append_time, -1, "{what}: CreateTime topics report -1");
            expected.extend(records);
        }
        expected_by_partition.push((addr, expected));
    }
    let t1 = now_ms();

    for (partition, (addr, expected)) in expected_by_partition.iter().enumerate() {
        let partition = partition as u32;
        let mut leader = broker_client_at(addr);
        let count = expected.len() as i64;
        for decode in [true, false] {
            let what = format!("events-{partition} decode={decode}");
            let got = fetch_range(&mut leader, "events", partition, 0, count, decode).await;
            assert_records(&got, expected, 0, (t0, t1), &what);
            // From the middle of a batch: raw batches may start earlier, records may not.
            let got = fetch_range(&mut leader, "events", partition, 7, count, decode).await;
            assert_records(&got, &expected[7..], 7, (t0, t1), &format!("{what} from 7"));
        }

        let earliest = list_offset(&mut leader, "events", partition, -2).await;
        assert_code(&earliest.error, ErrorCode::None, "ListOffsets earliest");
        assert_eq!(earliest.offset, 0);
        let latest = list_offset(&mut leader, "events", partition, -1).await;
        assert_code(&latest.error, ErrorCode::None, "ListOffsets latest");
        assert_eq!(latest.offset, count, "latest offset of events-{partition}");

        // By timestamp: the first record at or after it.
        let future = now + 1_800_000;
        let at = list_offset(&mut leader, "events", partition, future + 2).await;
        assert_code(&at.error, ErrorCode::None, "ListOffsets by timestamp");
        assert_eq!((at.offset, at.timestamp), (7, future + 2));
        let at = list_offset(&mut leader, "events", partition, future + 50).await;
        assert_eq!((at.offset, at.timestamp), (18, future + 100));
        let none = list_offset(&mut leader, "events", partition, future + 3_600_000).await;
        assert_code(
            &none.error,
            ErrorCode::None,
            "ListOffsets past every record",
        );
        assert_eq!(
            none.offset, -1,
            "no record at or after a timestamp past them all"
        );
    }

    // A Fetch stream stays open at the log end and delivers what is committed later.
    let (addr, expected) = &expected_by_partition[0];
    let end = expected.len() as i64;
    let mut leader = broker_client_at(addr);
    let mut stream = leader
        .fetch(bpb::FetchRequest {
            topic: "events".into(),
            partition: 0,
            offset: end,
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait_ms: 200,
            decode: true,
        })
        .await
        .expect("Fetch RPC")
        .into_inner();
    let late = Record {
        value: Some(Bytes::from_static(b"late arrival")),
        ..Record::default()
    };
    let r = produce(&mut leader, produce_req("events", 0, 1, plain(&[late]))).await;
    assert_code(&r.error, ErrorCode::None, "late produce");
    assert_eq!(r.base_offset, end);
    let delivered = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let msg = stream
                .message()
                .await
                .expect("Fetch stream")
                .expect("stream open");
            assert_code(&msg.error, ErrorCode::None, "tailing Fetch");
            if msg.records.is_empty() {
                // Waiting at the log end: the HW is the end, or the new record's commit has
                // just moved it past it.
                assert!(
                    [end, end + 1].contains(&msg.high_watermark),
                    "an empty answer at the log end {end}: {msg:?}"
                );
                continue;
            }
            assert_eq!(msg.high_watermark, end + 1, "{msg:?}");
            assert_eq!(msg.records.len(), 1, "{msg:?}");
            if let Some(r) = msg.records.into_iter().next() {
                return r;
            }
        }
    })
    .await
    .expect("the open Fetch stream delivered the new record");
    assert_eq!(delivered.offset, end);
    assert_eq!(delivered.value.as_deref(), Some(&b"late arrival"[..]));
}
