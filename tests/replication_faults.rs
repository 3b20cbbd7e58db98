//! Replication and broker liveness under faults, with real `weir-server` processes: a restarted
//! broker leads nothing before the controller accepts its new incarnation, a replica cannot
//! claim records the leader does not have, a paused controller costs no healthy broker its
//! session, and a restarted broker rejoins the ISR promptly and stays there when another node
//! pauses. (The partition-level rules are tested in crates/broker/tests/replication.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The serial() guard is held across awaits on purpose: it keeps cluster tests one at a time.
#![allow(clippy::await_holding_lock)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{broker_client_at, serial, wait_for, Cluster, STARTUP};
use tokio_stream::StreamExt;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::broker::v1::replication_client::ReplicationClient;
use weir_proto::common::v1::ErrorCode;

fn code(error: &Option<weir_proto::common::v1::Error>) -> i32 {
    error.as_ref().map_or(0, |e| e.code)
}

fn records(tag: &str, n: usize) -> Records {
    Records::Plain(bpb::RecordList {
        records: (0..n)
            .map(|i| bpb::Record {
                value: Some(Bytes::from(format!("{tag}-{i}"))),
                ..Default::default()
            })
            .collect(),
    })
}

/// Produces `n` records to `addr`; the answer, or `None` when the RPC itself failed.
async fn produce(
    addr: &str,
    topic: &str,
    acks: i32,
    tag: &str,
    n: usize,
) -> Option<bpb::ProduceResponse> {
    let mut client = broker_client_at(addr);
    let req = bpb::ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks,
        timeout_ms: 5_000,
        records: Some(records(tag, n)),
    };
    let r = tokio::time::timeout(Duration::from_secs(8), client.produce(req)).await;
    Some(r.ok()?.ok()?.into_inner())
}

/// Partition 0 of `topic` and the broker addresses, as node `via` sees them.
async fn partition_via(
    cluster: &mut Cluster,
    via: u64,
    topic: &str,
) -> Option<(
    weir_proto::controller::v1::PartitionState,
    Vec<bpb::BrokerEndpoint>,
)> {
    let mut client = cluster.broker_client(via);
    let req = bpb::MetadataRequest {
        topics: vec![topic.into()],
    };
    let md = tokio::time::timeout(Duration::from_secs(3), client.metadata(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let t = md.topics.into_iter().find(|t| t.name == topic)?;
    let p = t.partitions.into_iter().find(|p| p.partition == 0)?;
    Some((p, md.brokers))
}

/// Waits until node `via` shows partition 0 of `topic` led (not by `not`) with an ISR of
/// `isr` members (any number for 0); returns (leader, its address, leader epoch, replicas).
async fn wait_partition(
    cluster: &mut Cluster,
    via: u64,
    topic: &str,
    isr: usize,
    not: Option<u64>,
    timeout: Duration,
) -> (u64, String, i32, Vec<u64>) {
    let what = format!("{topic}-0 led with an ISR of {isr} (seen by node {via})");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((p, brokers)) = partition_via(cluster, via, topic).await {
            let leader = u64::try_from(p.leader).ok();
            let addr = leader.and_then(|l| brokers.iter().find(|b| b.id == l));
            if let (Some(l), Some(b)) = (leader, addr) {
                if (isr == 0 || p.isr.len() == isr) && Some(l) != not {
                    return (l, b.address.clone(), p.leader_epoch, p.replicas);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Produces `n` records to the leader of partition 0 as node `via` sees it, retrying (with the
/// leader looked up again) until one answer succeeds, as a client would; panics after
/// [`STARTUP`]. Returns the answer.
async fn produce_ok(
    cluster: &mut Cluster,
    via: u64,
    topic: &str,
    acks: i32,
    tag: &str,
    n: usize,
) -> bpb::ProduceResponse {
    let deadline = Instant::now() + STARTUP;
    loop {
        let (_, addr, _, _) = wait_partition(cluster, via, topic, 0, None, STARTUP).await;
        match produce(&addr, topic, acks, tag, n).await {
            Some(r) if code(&r.error) == 0 => return r,
            other => assert!(
                Instant::now() < deadline,
                "producing {tag} to {topic}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Brokers DescribeCluster shows fenced, through node `via` (`None` if it did not answer).
async fn fenced_brokers(cluster: &mut Cluster, via: u64) -> Option<Vec<u64>> {
    let r = tokio::time::timeout(Duration::from_secs(2), cluster.describe_cluster_via(via))
        .await
        .ok()??;
    if r.error.is_some() {
        return None;
    }
    Some(
        r.brokers
            .iter()
            .filter(|b| b.state() != weir_proto::common::v1::BrokerState::Active)
            .map(|b| b.id)
            .collect(),
    )
}

async fn start_three(env: &[(&str, &str)]) -> (Cluster, u64) {
    Cluster::start_ready(3, env).await
}

async fn create(cluster: &mut Cluster, via: u64, topic: &str, configs: &[(&str, &str)]) {
    let r = cluster
        .create_topic_with(via, topic, 1, 3, configs)
        .await
        .unwrap();
    assert_eq!(code(&r.error), 0, "CreateTopic: {:?}", r.error);
}

/// Item 3 of issue 14: a killed leader restarted where its controller quorum cannot answer
/// (its peers are down too) still has its old leadership in its local metadata. It must not
/// act on it: a broker leads only for an incarnation the controller has registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_leads_nothing_until_the_controller_accepts_its_new_incarnation() {
    let _serial = serial();
    let (mut cluster, controller) = start_three(&[]).await;
    create(&mut cluster, controller, "t", &[]).await;
    let (leader, addr, _, _) =
        wait_partition(&mut cluster, controller, "t", 3, None, STARTUP).await;
    produce_ok(&mut cluster, controller, "t", -1, "before", 10).await;

    for id in 1..=3 {
        cluster.kill(id);
    }
    cluster.spawn(leader);
    // Alone, its controller has no quorum, so it cannot register. For 4 s every produce it
    // answers must be refused; at least some must be answered (the listener is up), so the
    // test cannot pass on a node that never started.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut answered = 0;
    for _ in 0..200 {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(r) = produce(&addr, "t", 1, "stale", 1).await {
            answered += 1;
            assert_ne!(
                code(&r.error),
                0,
                "a restarted broker accepted a write before its registration: offset {}",
                r.base_offset
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered > 0,
        "the restarted node never answered; its log:\n{}",
        cluster.log_tail(leader)
    );

    // With its peers back, the cluster serves again and nothing acknowledged was lost.
    for id in (1..=3).filter(|id| *id != leader) {
        cluster.spawn(id);
    }
    let r = produce_ok(&mut cluster, leader, "t", -1, "after", 5).await;
    assert_eq!(
        r.base_offset, 10,
        "the 10 acknowledged records are still there, nothing else"
    );
}

/// Item 8 of issue 14: ReplicaFetch positions are checked before they count. With both
/// followers frozen, claims on their behalf past the leader's log end, or from a broker id that
/// is not registered, are refused and leave the high watermark where replication left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cannot_claim_records_it_does_not_have() {
    let _serial = serial();
    // Sessions and lag limits long enough that the frozen followers stay in the ISR.
    let env = [
        ("WEIR_BROKER_SESSION_TIMEOUT_MS", "60000"),
        ("WEIR_REPLICA_LAG_TIME_MAX_MS", "60000"),
    ];
    let (mut cluster, controller) = start_three(&env).await;
    create(
        &mut cluster,
        controller,
        "t",
        &[("min.insync.replicas", "2")],
    )
    .await;
    let (leader, addr, epoch, replicas) =
        wait_partition(&mut cluster, controller, "t", 3, None, STARTUP).await;
    produce_ok(&mut cluster, controller, "t", -1, "replicated", 5).await;
    let followers: Vec<u64> = replicas.into_iter().filter(|r| *r != leader).collect();
    for f in &followers {
        cluster.pause(*f, true);
    }
    let r = produce(&addr, "t", 1, "unreplicated", 5)
        .await
        .expect("Produce RPC");
    assert_eq!(code(&r.error), 0, "{:?}", r.error);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let claim = |replica_id: u64, fetch_offset: i64| {
        let mut client = ReplicationClient::new(channel.clone());
        async move {
            let req = bpb::ReplicaFetchRequest {
                topic: "t".into(),
                partition: 0,
                replica_id,
                leader_epoch: epoch,
                fetch_offset,
                max_bytes: 1 << 20,
                max_wait_ms: 100,
                replica_epoch: 0,
            };
            let mut answers = client
                .replica_fetch(tokio_stream::iter([req]))
                .await
                .unwrap()
                .into_inner();
            answers.next().await.unwrap().unwrap()
        }
    };
    for f in &followers {
        let r = claim(*f, 1_000_000).await;
        assert_eq!(
            code(&r.error),
            ErrorCode::OffsetOutOfRange as i32,
            "claim as {f}: {:?}",
            r.error
        );
    }

    let mut client = broker_client_at(&addr);
    let hw = client
        .list_offsets(bpb::ListOffsetsRequest {
            topic: "t".into(),
            partition: 0,
            timestamp: -1,
        })
        .await
        .unwrap()
        .into_inner()
        .offset;
    assert_eq!(hw, 5, "only what the followers really fetched is committed");
    let r = claim(99, 10).await;
    assert_eq!(
        code(&r.error),
        ErrorCode::BrokerNotAvailable as i32,
        "unregistered: {:?}",
        r.error
    );

    for f in &followers {
        cluster.pause(*f, false);
    }
    let r = produce(&addr, "t", -1, "healed", 1)
        .await
        .expect("Produce RPC");
    assert_eq!(code(&r.error), 0, "{:?}", r.error);
    assert_eq!(r.base_offset, 10);
}

/// A controller that is not the leader freezes for 4 s (longer than the 3 s session timeout).
/// Brokers whose heartbeats it would have forwarded must reach the leader anyway: no broker
/// but the frozen node's own may be fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_controller_costs_no_healthy_broker_its_session() {
    let _serial = serial();
    let (mut cluster, mut controller) = start_three(&[]).await;
    // Freeze node 1 — the first controller every broker knows — unless it leads; then move
    // the leadership elsewhere first.
    if controller == 1 {
        let mut c2 = cluster.client(2);
        let _ = c2
            .trigger_election(weir_proto::controller::v1::TriggerElectionRequest {})
            .await;
        controller = wait_for("a controller leader other than 1", STARTUP, || {
            let fut = cluster.describe_cluster_via(2);
            async move {
                let r = fut.await?;
                (r.controller_leader != 0 && r.controller_leader != 1)
                    .then_some(r.controller_leader)
            }
        })
        .await;
        cluster.wait_active_brokers(controller, 3, STARTUP).await;
    }
    let paused = 1;
    cluster.pause(paused, true);
    let start = Instant::now();
    let mut wrongly_fenced = Vec::new();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(4) {
        if let Some(fenced) = fenced_brokers(&mut cluster, controller).await {
            checks += 1;
            wrongly_fenced.extend(fenced.into_iter().filter(|id| *id != paused));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.pause(paused, false);
    assert!(checks > 0, "the controller leader never answered");
    wrongly_fenced.sort_unstable();
    wrongly_fenced.dedup();
    assert!(
        wrongly_fenced.is_empty(),
        "healthy brokers {wrongly_fenced:?} were fenced while controller {paused} was paused; leader {controller}'s log:\n{}",
        cluster.log_tail(controller)
    );
    // The frozen node's broker is back within a few seconds of waking.
    let back = Instant::now();
    cluster
        .wait_active_brokers(controller, 3, Duration::from_secs(10))
        .await;
    println!(
        "all brokers active {:?} after the pause ended",
        back.elapsed()
    );
}

/// The liveness bug of issue 14: kill -9 a partition leader, restart it at once, wait for the
/// ISR to be full, then pause another follower for a second. The restarted broker must stay
/// unfenced and the ISR must be full again within a few seconds, not tens of seconds.
async fn restart_a_leader_then_pause_a_follower(nodes: u64, pause_controller: bool) {
    let (mut cluster, controller) = Cluster::start_ready(nodes, &[]).await;
    create(&mut cluster, controller, "t", &[]).await;
    let (leader, _, _, replicas) =
        wait_partition(&mut cluster, controller, "t", 3, None, STARTUP).await;
    for i in 0..5 {
        produce_ok(&mut cluster, controller, "t", 1, &format!("b{i}"), 100).await;
    }
    cluster.kill(leader);
    let via = (1..=nodes).find(|id| *id != leader).unwrap();
    let (new_leader, _, _, _) =
        wait_partition(&mut cluster, via, "t", 2, Some(leader), STARTUP).await;
    cluster.spawn(leader);
    let restarted = Instant::now();
    wait_partition(&mut cluster, via, "t", 3, None, Duration::from_secs(15)).await;
    println!(
        "restarted broker {leader} back in the ISR after {:?}",
        restarted.elapsed()
    );

    let mut other = replicas
        .iter()
        .copied()
        .find(|id| *id != leader && *id != new_leader)
        .unwrap();
    if pause_controller {
        let current = cluster.wait_leader(STARTUP).await;
        if current != leader {
            other = current;
        }
    }
    let via = (1..=nodes)
        .find(|id| *id != other && *id != leader)
        .unwrap();
    cluster.pause(other, true);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.pause(other, false);
    let resumed = Instant::now();
    wait_partition(&mut cluster, via, "t", 3, None, Duration::from_secs(8)).await;
    println!(
        "ISR full again {:?} after pausing {other}",
        resumed.elapsed()
    );
    // And it stays so: for 6 s the restarted broker is never fenced.
    while resumed.elapsed() < Duration::from_secs(7) {
        if let Some(fenced) = fenced_brokers(&mut cluster, via).await {
            assert!(
                !fenced.contains(&leader),
                "restarted broker {leader} fenced {:?} after the pause; node {via}'s log:\n{}",
                resumed.elapsed(),
                cluster.log_tail(via)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_partition(&mut cluster, via, "t", 3, None, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_rejoins_the_isr_and_stays_when_another_node_pauses() {
    let _serial = serial();
    restart_a_leader_then_pause_a_follower(3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_five_nodes_a_restarted_broker_rejoins_the_isr_and_stays_when_another_node_pauses() {
    let _serial = serial();
    restart_a_leader_then_pause_a_follower(5, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_rejoins_the_isr_and_stays_when_the_controller_leader_pauses() {
    let _serial = serial();
    restart_a_leader_then_pause_a_follower(3, true).await;
}

/// A clean shutdown (SIGTERM) is a controlled shutdown, as in Kafka: the broker has the
/// controller fence it and waits for its leaderships to move before it stops serving. With a
/// 30 s session timeout, only that can move the leadership within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_moves_leadership_before_the_broker_stops() {
    let _serial = serial();
    let (mut cluster, controller) =
        start_three(&[("WEIR_BROKER_SESSION_TIMEOUT_MS", "30000")]).await;
    create(
        &mut cluster,
        controller,
        "t",
        &[("min.insync.replicas", "2")],
    )
    .await;
    let (leader, _, _, _) = wait_partition(&mut cluster, controller, "t", 3, None, STARTUP).await;
    produce_ok(&mut cluster, controller, "t", -1, "before", 10).await;
    let via = (1..=3).find(|id| *id != leader).unwrap();
    let stopping = Instant::now();
    cluster.sigterm(leader);
    let (new_leader, _, _, _) = wait_partition(
        &mut cluster,
        via,
        "t",
        2,
        Some(leader),
        Duration::from_secs(10),
    )
    .await;
    println!(
        "leadership of t-0 moved from {leader} to {new_leader} {:?} after SIGTERM",
        stopping.elapsed()
    );
    let r = produce_ok(&mut cluster, via, "t", -1, "after", 5).await;
    assert_eq!(r.base_offset, 10, "nothing acknowledged was lost");
    assert!(cluster.terminate(leader), "the node exited cleanly");
}
