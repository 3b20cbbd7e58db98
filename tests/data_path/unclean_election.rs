//! `unclean.leader.election.enable`, off and on, on a live cluster.
//!
//! The scenario, the same for both: a partition with replicas {L, F} (the third node, C, is
//! the controller leader and holds no replica of it) takes records `a` on both; the network
//! between L and F is cut, so F falls behind and L shrinks the ISR to itself; L takes records
//! `b` (acks=all: committed, with an ISR of one); then L is killed. Every ISR member is gone,
//! and F — live, registered, unfenced — is out of sync.
//!
//! - Off (the default): F never leads; the partition stays leaderless until L, the last ISR
//!   member, returns and leads again with `a` and `b`.
//! - On: the controller elects F; `b` is lost (F never had it), F takes new writes after `a`,
//!   and L, back, truncates its divergent `b` and follows F.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use weir_proto::common::v1::{BrokerState, ErrorCode};

use crate::common::data::*;
use crate::common::netfault::{End, Fault};
use crate::common::{assert_code, serial, wait_for, Cluster, STARTUP};

const TOPIC: &str = "lopsided";
/// Replica lag time of the cluster: how long F may fall behind before L drops it.
const LAG_MS: &str = "2000";

/// The partition's state as node `via`'s broker sees it: (leader, ISR, leader epoch).
async fn state_via(
    cluster: &mut Cluster,
    via: u64,
    partition: u32,
) -> Option<(i64, BTreeSet<u64>, i32)> {
    let md = metadata(cluster, via, TOPIC).await?;
    let p = partition_md(&md, TOPIC, partition)?;
    Some((p.leader, p.isr.into_iter().collect(), p.leader_epoch))
}

/// Waits until node `via` sees the partition in exactly `want` (leader, ISR, leader epoch).
async fn wait_state(
    cluster: &mut Cluster,
    via: u64,
    partition: u32,
    want: (i64, BTreeSet<u64>, i32),
    what: &str,
) {
    let deadline = Instant::now() + STARTUP;
    loop {
        let now = state_via(cluster, via, partition).await;
        if now.as_ref() == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: node {via} sees (leader, ISR, epoch) {now:?}, not {want:?} within {STARTUP:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the scenario set up: the partition, its two replicas, the controller.
struct Setup {
    cluster: Cluster,
    partition: u32,
    /// The partition's leader until it is killed: the only replica with `b`.
    l: u64,
    /// The follower that falls out of sync.
    f: u64,
    /// The controller leader, holding no replica of the partition.
    c: u64,
}

/// Runs the scenario up to L's death (see the module docs); `a` and `b` are 5 and 3 records.
async fn lose_every_isr_member(unclean: &str) -> Setup {
    let (mut cluster, c) =
        Cluster::start_proxied(3, &[("WEIR_REPLICA_LAG_TIME_MAX_MS", LAG_MS)]).await;
    // Three partitions of RF 2 on three brokers: one of them has no replica on C.
    let r = cluster
        .create_topic_with(
            c,
            TOPIC,
            3,
            2,
            &[("unclean.leader.election.enable", unclean)],
        )
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, TOPIC, 3, 2).await;
    let p = (0..3u32)
        .filter_map(|i| partition_md(&md, TOPIC, i))
        .find(|p| !p.replicas.contains(&c))
        .expect("a partition without a replica on the controller leader");
    let (partition, l) = (p.partition, p.leader as u64);
    let f = *p.replicas.iter().find(|r| **r != l).unwrap();
    assert_eq!(p.leader_epoch, 0);

    let mut leader = cluster.broker_client(l);
    let r = produce(
        &mut leader,
        produce_req(TOPIC, partition, -1, plain(&numbered("a", 5, 0))),
    )
    .await;
    assert_code(&r.error, ErrorCode::None, "acks=all with the full ISR");
    assert_eq!(r.base_offset, 0);

    // F cannot fetch from L any more (the controller, C, still hears both).
    cluster
        .net()
        .set_both(End::Node(l), End::Node(f), Some(Fault::Cut));
    wait_state(
        &mut cluster,
        c,
        partition,
        (l as i64, BTreeSet::from([l]), 0),
        "L drops F from the ISR",
    )
    .await;
    let r = produce(
        &mut leader,
        produce_req(TOPIC, partition, -1, plain(&numbered("b", 3, 0))),
    )
    .await;
    assert_code(&r.error, ErrorCode::None, "acks=all with an ISR of L alone");
    assert_eq!(r.base_offset, 5);

    cluster.kill(l);
    cluster.net().heal();
    Setup {
        cluster,
        partition,
        l,
        f,
        c,
    }
}

/// Off: with every ISR member gone the partition stays leaderless; F, live and out of sync,
/// never leads. L's return brings the partition back with everything it committed.
#[tokio::test]
async fn with_unclean_election_off_an_out_of_sync_replica_never_leads() {
    let _serial = serial();
    let Setup {
        mut cluster,
        partition,
        l,
        f,
        c,
    } = lose_every_isr_member("false").await;
    // L is fenced: no leader, the ISR keeps its last member, the epoch moves on.
    wait_state(
        &mut cluster,
        c,
        partition,
        (-1, BTreeSet::from([l]), 1),
        "L fenced, the partition leaderless",
    )
    .await;
    let view = cluster
        .describe_cluster_via(c)
        .await
        .expect("DescribeCluster");
    let state = |id| view.brokers.iter().find(|b| b.id == id).map(|b| b.state());
    assert_eq!(
        state(f),
        Some(BrokerState::Active),
        "F is live: it could lead"
    );
    assert_eq!(state(l), Some(BrokerState::Fenced));
    // Several liveness rounds of the controller (every 250 ms): nobody leads.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for via in [c, f] {
            let now = state_via(&mut cluster, via, partition).await;
            assert_eq!(
                now,
                Some((-1, BTreeSet::from([l]), 1)),
                "node {via} sees the partition led by an out-of-sync replica"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut on_f = cluster.broker_client(f);
    let r = produce(
        &mut on_f,
        produce_req(TOPIC, partition, 1, plain(&numbered("x", 1, 0))),
    )
    .await;
    assert_code(
        &r.error,
        ErrorCode::NotLeaderOrFollower,
        "produce to the out-of-sync replica",
    );
    let led = format!("becoming leader topic={TOPIC} partition={partition} ");
    assert_eq!(
        cluster.log_lines(f, &[&led]),
        "",
        "F led {TOPIC}-{partition} at some point"
    );

    // L returns: it leads again (epoch 2), with `a` and `b`, and F catches up into the ISR.
    cluster.spawn(l);
    wait_state(
        &mut cluster,
        c,
        partition,
        (l as i64, BTreeSet::from([l, f]), 2),
        "L leads again and F rejoins",
    )
    .await;
    let mut leader = cluster.broker_client(l);
    let got = fetch_range(&mut leader, TOPIC, partition, 0, 8, true).await;
    let mut expected = values(&numbered("a", 5, 0));
    expected.extend(values(&numbered("b", 3, 0)));
    assert_eq!(values(&got), expected, "everything L committed");
    let data_dir = cluster.node(f).data_dir.clone();
    wait_for("F's log equal to L's", Duration::from_secs(15), || {
        let disk = values(&disk_records(&data_dir, TOPIC, partition));
        let same = disk == expected;
        async move { same.then_some(()) }
    })
    .await;
    for id in [c, f, l] {
        assert_eq!(cluster.log_panics(id), "", "node {id}");
    }
}

/// On: once every ISR member is gone, the controller elects the live out-of-sync replica.
/// What only L had (`b`, acknowledged with acks=all) is lost, as the setting allows; F takes
/// new writes after `a`, and L comes back as F's follower, its `b` truncated away.
#[tokio::test]
async fn with_unclean_election_on_an_out_of_sync_replica_leads_once_the_isr_is_gone() {
    let _serial = serial();
    let Setup {
        mut cluster,
        partition,
        l,
        f,
        c,
    } = lose_every_isr_member("true").await;
    // Fenced L gives up the lead (epoch 1); the unclean election gives it to F (epoch 2) with
    // an ISR of F alone.
    wait_state(
        &mut cluster,
        c,
        partition,
        (f as i64, BTreeSet::from([f]), 2),
        "F elected uncleanly",
    )
    .await;
    let (mut on_f, end) = wait_for("F leading on its broker", STARTUP, || {
        let mut client = cluster.broker_client(f);
        async move {
            let r = list_offset(&mut client, TOPIC, partition, -1).await;
            r.error.is_none().then_some((client, r.offset))
        }
    })
    .await;
    assert_eq!(end, 5, "F's log ends after `a`: `b` is lost");
    // The line the off case looks for, to know that F never led there.
    let led = format!("becoming leader topic={TOPIC} partition={partition} ");
    assert_ne!(cluster.log_lines(f, &[&led]), "", "F's log says it leads");
    let r = produce(
        &mut on_f,
        produce_req(TOPIC, partition, -1, plain(&numbered("c", 2, 0))),
    )
    .await;
    assert_code(&r.error, ErrorCode::None, "acks=all on the unclean leader");
    assert_eq!(r.base_offset, 5, "F writes after `a`");
    let mut expected = values(&numbered("a", 5, 0));
    expected.extend(values(&numbered("c", 2, 0)));
    let got = fetch_range(&mut on_f, TOPIC, partition, 0, 7, true).await;
    assert_eq!(values(&got), expected);

    // L returns as F's follower: its divergent `b` is cut, it catches up and rejoins the ISR.
    cluster.spawn(l);
    wait_state(
        &mut cluster,
        c,
        partition,
        (f as i64, BTreeSet::from([l, f]), 2),
        "L rejoins as F's follower",
    )
    .await;
    let data_dir = cluster.node(l).data_dir.clone();
    wait_for("L's log equal to F's", Duration::from_secs(15), || {
        let disk = values(&disk_records(&data_dir, TOPIC, partition));
        let same = disk == expected;
        async move { same.then_some(()) }
    })
    .await;
    for id in [c, f, l] {
        assert_eq!(cluster.log_panics(id), "", "node {id}");
    }
}
