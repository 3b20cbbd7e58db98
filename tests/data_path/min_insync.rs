//! min.insync.replicas: acks=all is refused (and nothing appended) once the ISR is smaller,
//! acks=1 still works, and acks=all works again when the ISR is back.

use std::time::Duration;

use bytes::Bytes;
use weir_proto::common::v1::ErrorCode;
use weir_storage::Record;

use crate::common::data::*;
use crate::common::{assert_code, broker_client_at, serial, wait_for, Cluster, STARTUP};

#[tokio::test]
async fn min_insync_replicas_refuses_acks_all_when_the_isr_is_too_small() {
    let _serial = serial();
    // Five voters, so that the controller quorum survives losing both followers.
    let mut cluster = Cluster::start(5, 0, &[("WEIR_REPLICA_LAG_TIME_MAX_MS", "2000")]);
    cluster.wait_healthy(STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(controller, 5, STARTUP).await;
    let r = cluster
        .create_topic_with(controller, "guarded", 1, 3, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, "guarded", 1, 3).await;
    let (leader_id, leader_addr) = leader_of(&md, "guarded", 0).unwrap();
    let followers: Vec<u64> = partition_md(&md, "guarded", 0)
        .unwrap()
        .replicas
        .into_iter()
        .filter(|id| *id != leader_id)
        .collect();
    assert_eq!(followers.len(), 2);
    let mut leader = broker_client_at(&leader_addr);
    let one = |v: &'static [u8]| {
        vec![Record {
            value: Some(Bytes::from_static(v)),
            ..Record::default()
        }]
    };

    let r = produce(
        &mut leader,
        produce_req("guarded", 0, -1, plain(&one(b"a"))),
    )
    .await;
    assert_code(&r.error, ErrorCode::None, "acks=all with a full ISR");
    assert_eq!(r.base_offset, 0);

    for f in &followers {
        cluster.kill(*f);
    }
    wait_for(
        "the ISR shrunk to the leader",
        Duration::from_secs(30),
        || {
            let fut = metadata(&mut cluster, leader_id, "guarded");
            async move {
                let p = partition_md(&fut.await?, "guarded", 0)?;
                (p.isr == [leader_id]).then_some(())
            }
        },
    )
    .await;

    let mut req = produce_req("guarded", 0, -1, plain(&one(b"refused")));
    req.timeout_ms = 3000;
    let r = produce(&mut leader, req).await;
    assert_code(
        &r.error,
        ErrorCode::NotEnoughReplicas,
        "acks=all with an ISR of 1",
    );
    assert_eq!(r.base_offset, -1);

    let r = produce(&mut leader, produce_req("guarded", 0, 1, plain(&one(b"b")))).await;
    assert_code(&r.error, ErrorCode::None, "acks=1 with an ISR of 1");
    assert_eq!(r.base_offset, 1, "the refused batch was not appended");
    wait_for("high watermark 2", Duration::from_secs(5), || {
        let mut c = leader.clone();
        async move { (list_offset(&mut c, "guarded", 0, -1).await.offset == 2).then_some(()) }
    })
    .await;
    let got = fetch_range(&mut leader, "guarded", 0, 0, 2, true).await;
    assert_eq!(values(&got), ["a", "b"]);

    // Back to a full ISR, acks=all works again.
    for f in &followers {
        cluster.spawn(*f);
    }
    wait_for("the ISR back to 3", Duration::from_secs(30), || {
        let fut = metadata(&mut cluster, leader_id, "guarded");
        async move {
            let p = partition_md(&fut.await?, "guarded", 0)?;
            (p.isr.len() == 3).then_some(())
        }
    })
    .await;
    let r = produce(
        &mut leader,
        produce_req("guarded", 0, -1, plain(&one(b"c"))),
    )
    .await;
    assert_code(
        &r.error,
        ErrorCode::None,
        "acks=all after the ISR recovered",
    );
    assert_eq!(r.base_offset, 2);
}
