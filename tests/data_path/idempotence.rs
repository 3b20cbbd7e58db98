//! The idempotent producer at the broker, over raw gRPC: InitProducerId hands out ids unique
//! across brokers and across a controller failover (blocks from the quorum); the leader writes
//! a resent batch once and answers its original offsets, also after a leader change (the new
//! leader built the producer's state as a follower); gaps, stale epochs and unknown ids
//! continuing a sequence are refused with their codes and change nothing.

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use tonic::transport::Channel;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;

use crate::common::data::*;
use crate::common::{assert_code, broker_client_at, serial, Cluster, STARTUP};

/// `n` records stamped as producer `pid` (epoch `epoch`) sends them from sequence `seq`.
fn stamped(pid: i64, epoch: i16, seq: i32, n: usize) -> Records {
    let mut bytes =
        BytesMut::from(&build_batch(&numbered(&format!("p{pid}e{epoch}s{seq}"), n, 1))[..]);
    weir_storage::batch::set_producer(&mut bytes, pid, epoch, seq);
    Records::Batch(Bytes::from(bytes))
}

async fn init(
    client: &mut BrokerClient<Channel>,
    pid: i64,
    epoch: i32,
) -> bpb::InitProducerIdResponse {
    client
        .init_producer_id(bpb::InitProducerIdRequest {
            producer_id: pid,
            producer_epoch: epoch,
        })
        .await
        .expect("InitProducerId RPC")
        .into_inner()
}

async fn latest(client: &mut BrokerClient<Channel>) -> i64 {
    let r = list_offset(client, "idem", 0, -1).await;
    assert_code(&r.error, ErrorCode::None, "ListOffsets");
    r.offset
}

#[tokio::test]
async fn the_leader_writes_a_resent_batch_once_and_refuses_broken_sequences() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(controller, 3, STARTUP).await;
    let r = cluster
        .create_topic_with(controller, "idem", 1, 3, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    wait_topic_ready(&mut cluster, "idem", 1, 3).await;

    // Ids: unique across brokers; an id with its epoch gets the next epoch; nonsense is refused.
    let mut seen = HashSet::new();
    for id in cluster.running() {
        let mut client = broker_client_at(&cluster.node(id).broker_addr());
        for _ in 0..3 {
            let r = init(&mut client, -1, -1).await;
            assert_code(&r.error, ErrorCode::None, "InitProducerId");
            assert_eq!(r.producer_epoch, 0);
            assert!(
                seen.insert(r.producer_id),
                "producer id {} handed out twice",
                r.producer_id
            );
        }
    }
    let (_, leader_addr) = wait_leader_of(&mut cluster, "idem", 0, None).await;
    let mut leader = broker_client_at(&leader_addr);
    let pid = init(&mut leader, -1, -1).await.producer_id;
    let bumped = init(&mut leader, pid, 0).await;
    assert_eq!((bumped.producer_id, bumped.producer_epoch), (pid, 1));
    let bad = init(&mut leader, -7, 3).await;
    assert_code(&bad.error, ErrorCode::InvalidRequest, "InitProducerId -7/3");

    // A resent batch: its first offsets again, nothing written.
    let first = produce(
        &mut leader,
        produce_req("idem", 0, -1, stamped(pid, 0, 0, 3)),
    )
    .await;
    assert_code(&first.error, ErrorCode::None, "first send");
    let resent = produce(
        &mut leader,
        produce_req("idem", 0, -1, stamped(pid, 0, 0, 3)),
    )
    .await;
    assert_code(&resent.error, ErrorCode::None, "resent batch");
    assert_eq!((first.base_offset, resent.base_offset), (0, 0));
    assert_eq!(latest(&mut leader).await, 3);

    // Broken sequences change nothing.
    let gap = produce(
        &mut leader,
        produce_req("idem", 0, -1, stamped(pid, 0, 7, 1)),
    )
    .await;
    assert_code(&gap.error, ErrorCode::OutOfOrderSequenceNumber, "a gap");
    let next = produce(
        &mut leader,
        produce_req("idem", 0, -1, stamped(pid, 1, 0, 2)),
    )
    .await;
    assert_code(&next.error, ErrorCode::None, "the bumped epoch from 0");
    assert_eq!(next.base_offset, 3);
    let fenced = produce(
        &mut leader,
        produce_req("idem", 0, -1, stamped(pid, 0, 3, 1)),
    )
    .await;
    assert_code(&fenced.error, ErrorCode::ProducerFenced, "the old epoch");
    let stranger = init(&mut leader, -1, -1).await.producer_id;
    let unknown = produce(
        &mut leader,
        produce_req("idem", 0, -1, stamped(stranger, 0, 9, 1)),
    )
    .await;
    assert_code(
        &unknown.error,
        ErrorCode::UnknownProducerId,
        "an id the partition never saw",
    );
    assert!(
        unknown
            .error
            .unwrap()
            .message
            .contains("unknown to this partition"),
        "the message says what happened"
    );
    assert_eq!(latest(&mut leader).await, 5, "refusals wrote nothing");

    // The new leader after a SIGKILL knows the producer: the resend is answered, not written.
    let (old_leader, _) = wait_leader_of(&mut cluster, "idem", 0, None).await;
    cluster.kill(old_leader);
    let (_, addr) = wait_leader_of(&mut cluster, "idem", 0, Some(old_leader)).await;
    let mut successor = broker_client_at(&addr);
    wait_leading(&successor, "idem", 0).await;
    let again = produce(
        &mut successor,
        produce_req("idem", 0, -1, stamped(pid, 1, 0, 2)),
    )
    .await;
    assert_code(&again.error, ErrorCode::None, "resent to the new leader");
    assert_eq!(again.base_offset, 3);
    assert_eq!(latest(&mut successor).await, 5);

    // Past a controller failover (that kill may have been the controller leader, or not: kill
    // whichever leads now), a broker that uses up its block gets a new one, still unique.
    let controller = cluster.wait_leader(STARTUP).await;
    let survivor = cluster
        .running()
        .into_iter()
        .find(|id| *id != controller)
        .unwrap();
    cluster.kill(controller);
    cluster.spawn(old_leader);
    cluster.wait_leader(STARTUP).await;
    let mut client = broker_client_at(&cluster.node(survivor).broker_addr());
    for _ in 0..1_100 {
        let r = init(&mut client, -1, -1).await;
        assert_code(
            &r.error,
            ErrorCode::None,
            "InitProducerId after the failover",
        );
        assert!(
            seen.insert(r.producer_id),
            "producer id {} handed out twice",
            r.producer_id
        );
    }
}
