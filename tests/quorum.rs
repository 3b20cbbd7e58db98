//! The metadata quorum with real `weir-server` processes: leader election, failover, restart
//! from disk, catch-up by snapshot, minority partitions, broker fencing, learners, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The SERIAL guard is held across awaits on purpose: it serializes whole tests, each of which
// runs on its own runtime, so no task of another test can be waiting on it.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{assert_code, serial, wait_for, Cluster};
use weir_proto::broker::v1 as bpb;
use weir_proto::common::v1::ErrorCode;
use weir_proto::controller::v1 as pb;

const STARTUP: Duration = Duration::from_secs(60);

async fn describe_cluster(cluster: &mut Cluster, via: u64) -> pb::DescribeClusterResponse {
    cluster
        .client(via)
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn describe_topic(cluster: &mut Cluster, via: u64, name: &str) -> pb::TopicDescription {
    let req = pb::DescribeTopicsRequest {
        names: vec![name.into()],
    };
    let r = cluster
        .client(via)
        .describe_topics(req)
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{:?}", r.error);
    r.topics.into_iter().next().unwrap()
}

#[tokio::test]
async fn three_controllers_elect_a_leader_and_followers_forward_writes() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let leader = cluster.wait_leader(STARTUP).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // Every broker registers and is unfenced.
    cluster.wait_active_brokers(follower, 3, STARTUP).await;

    let created = cluster
        .create_topic(follower, "orders", 6, 3)
        .await
        .unwrap();
    assert!(created.error.is_none(), "{:?}", created.error);
    let topic = created.topic.unwrap();
    assert_eq!(topic.partitions.len(), 6);
    let mut leaders = std::collections::BTreeMap::new();
    for p in &topic.partitions {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(p.isr.len(), 3);
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "leaders spread evenly"
    );

    for id in 1..=3 {
        assert_eq!(
            describe_topic(&mut cluster, id, "orders")
                .await
                .partitions
                .len(),
            6
        );
    }
    let cluster_view = describe_cluster(&mut cluster, 1).await;
    assert_eq!(cluster_view.voters.len(), 3);
    assert_eq!(cluster_view.controller_leader, leader);
}

#[tokio::test]
async fn killing_the_leader_elects_a_new_one_and_the_old_one_catches_up_from_disk() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let old = cluster.wait_leader(STARTUP).await;
    assert!(cluster
        .create_topic(old, "before", 1, 1)
        .await
        .unwrap()
        .error
        .is_none());

    cluster.kill(old);
    let survivor = (1..=3).find(|id| *id != old).unwrap();
    let new = wait_for("a new leader", Duration::from_secs(10), || {
        let view = cluster.describe_cluster_via(survivor);
        async move {
            let r = view.await?;
            (r.error.is_none() && r.controller_leader != 0 && r.controller_leader != old)
                .then_some(r.controller_leader)
        }
    })
    .await;
    let created = cluster.create_topic(survivor, "after", 2, 2).await.unwrap();
    assert!(
        created.error.is_none(),
        "the new leader {new} accepts writes: {:?}",
        created.error
    );

    cluster.spawn(old);
    cluster.wait_healthy(STARTUP).await;
    // The restarted node replicated the write it missed: its match index reaches the end.
    wait_for("old leader caught up", STARTUP, || {
        let view = cluster.describe_cluster_via(old);
        async move {
            let r = view.await?;
            let me = r.voters.iter().find(|v| v.id == old)?;
            (me.lag == 0 && me.match_index > 0).then_some(())
        }
    })
    .await;
    assert_eq!(
        describe_topic(&mut cluster, old, "after")
            .await
            .partitions
            .len(),
        2
    );
    assert_eq!(
        describe_topic(&mut cluster, old, "before")
            .await
            .partitions
            .len(),
        1
    );
}

#[tokio::test]
async fn a_wiped_node_catches_up_by_snapshot() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[("WEIR_METADATA_SNAPSHOT_ENTRIES", "20")]);
    cluster.wait_healthy(STARTUP).await;
    let leader = cluster.wait_leader(STARTUP).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(victim);
    cluster.wipe(victim);

    // Far more entries than one snapshot interval: the leader snapshots and purges its log.
    for i in 0..80 {
        let r = cluster
            .create_topic(leader, &format!("t{i}"), 1, 1)
            .await
            .unwrap();
        assert!(r.error.is_none(), "{:?}", r.error);
    }
    assert!(
        !cluster
            .log_lines(leader, &["built a metadata snapshot"])
            .is_empty(),
        "the leader built no snapshot"
    );
    cluster.spawn(victim);
    cluster.wait_healthy(STARTUP).await;
    wait_for("wiped node caught up", STARTUP, || {
        let view = cluster.describe_cluster_via(leader);
        async move {
            let r = view.await?;
            let v = r.voters.iter().find(|v| v.id == victim)?;
            (v.lag == 0 && v.match_index > 80).then_some(())
        }
    })
    .await;
    // It caught up by a snapshot (its log started empty and the leader's no longer reaches
    // back to the start), not by replaying entries.
    let installed = cluster.log_lines(victim, &["installed a metadata snapshot"]);
    assert!(
        !installed.is_empty(),
        "the wiped node installed no snapshot; its log:\n{}",
        cluster.log_tail(victim)
    );
    // And the snapshot holds the state: its own applied metadata knows every topic.
    let md = cluster
        .broker_client(victim)
        .metadata(bpb::MetadataRequest { topics: vec![] })
        .await
        .expect("Metadata RPC")
        .into_inner();
    let names: BTreeSet<String> = md.topics.into_iter().map(|t| t.name).collect();
    let expected: BTreeSet<String> = (0..80).map(|i| format!("t{i}")).collect();
    assert_eq!(names, expected, "the wiped node's metadata");
    assert_eq!(cluster.log_panics(victim), "");
}

/// Every topic the quorum knows, read through node `via` (linearized at the leader); `None`
/// when there is no leader to answer.
fn topics_via(
    cluster: &mut Cluster,
    via: u64,
) -> impl std::future::Future<Output = Option<Vec<String>>> + 'static {
    let mut client = cluster.client(via);
    async move {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            client.describe_topics(pb::DescribeTopicsRequest { names: vec![] }),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        if r.error.is_some() {
            return None;
        }
        let mut names: Vec<String> = r.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Some(names)
    }
}

/// Issue 14 item 9: a voter that lost its metadata store must not vote until it holds what
/// the quorum committed. Leader A and follower C commit five topics while follower B is frozen;
/// C's store is wiped, A is killed, B wakes and C restarts empty. An empty C that voted would
/// elect B, which lacks the topics, and A would later truncate them away. C must withhold its
/// vote: no leader until A is back, and then every topic is still there.
#[tokio::test]
async fn a_wiped_voter_withholds_its_vote_until_it_has_caught_up() {
    let _serial = serial();
    let (mut cluster, a) = Cluster::start_ready(3, &[]).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != a).collect();
    let (b, c) = (followers[0], followers[1]);
    cluster.pause(b, true);
    let mut created = Vec::new();
    for i in 0..5 {
        let name = format!("committed-{i}");
        let r = cluster.create_topic(a, &name, 1, 1).await.unwrap();
        assert!(r.error.is_none(), "{:?}", r.error);
        created.push(name);
    }
    cluster.kill(c);
    cluster.wipe(c);
    cluster.kill(a);
    cluster.pause(b, false);
    cluster.spawn(c);
    // Without A, the only complete log, nobody may lead: B lacks the topics and C has nothing.
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        for via in [b, c] {
            if let Some(topics) = topics_via(&mut cluster, via).await {
                panic!(
                    "a leader was elected without node {a} (via node {via}), knowing topics \
                     {topics:?} of {created:?}\n--- node {c}\n{}",
                    cluster.log_tail(c)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.spawn(a);
    let topics = wait_for("a leader again", STARTUP, || topics_via(&mut cluster, b)).await;
    for name in &created {
        assert!(
            topics.contains(name),
            "committed topic {name} lost: {topics:?}"
        );
    }
    // C catches up and votes again: it is in sync with the leader.
    let leader = cluster.wait_leader(STARTUP).await;
    wait_for("the wiped voter caught up", STARTUP, || {
        let view = cluster.describe_cluster_via(leader);
        async move {
            let r = view.await?;
            let v = r.voters.iter().find(|v| v.id == c)?;
            (v.lag == 0).then_some(())
        }
    })
    .await;
    wait_for("the wiped voter voting again", STARTUP, || {
        let said = cluster.log_lines(c, &["voting again"]);
        async move { (!said.is_empty()).then_some(()) }
    })
    .await;
    assert!(
        !cluster.log_lines(c, &["lost its store"]).is_empty(),
        "the wiped voter did not warn that it lost its store"
    );
}

/// A leader cut off from both followers is a minority of one: it must neither commit nor
/// claim to lead. Its answers, exactly: a write is held unanswered (the entry waits in its log
/// for a majority that never acknowledges it: no success and no other error), linearizable
/// reads are refused with NOT_CONTROLLER (it cannot confirm its leadership: no follower
/// acknowledges its heartbeats), /health says 503, and its own applied metadata does not hold
/// the write.
#[tokio::test]
async fn a_minority_cannot_commit() {
    let _serial = serial();
    let (mut cluster, leader) = Cluster::start_ready(3, &[]).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for f in &followers {
        cluster.pause(*f, true);
    }
    let mut client = cluster.client(leader);
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        client.create_topic(pb::CreateTopicRequest {
            name: "lonely".into(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
        }),
    )
    .await;
    assert!(
        attempt.is_err(),
        "a leader cut off from both followers answered a write within 3 s (it must hold it \
         uncommitted): {attempt:?}"
    );
    // Reads that must be linearizable: refused, typed, with no leader to name.
    let topics = client
        .describe_topics(pb::DescribeTopicsRequest { names: vec![] })
        .await
        .expect("DescribeTopics RPC")
        .into_inner();
    assert_code(
        &topics.error,
        ErrorCode::NotController,
        "DescribeTopics on a minority leader",
    );
    assert!(topics.topics.is_empty(), "{topics:?}");
    let view = client
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .expect("DescribeCluster RPC")
        .into_inner();
    assert_code(
        &view.error,
        ErrorCode::NotController,
        "DescribeCluster on a minority leader",
    );
    assert_eq!(
        cluster.health(leader),
        Some(503),
        "a minority leader is not healthy"
    );
    // Nothing was applied: the node's own metadata (its broker's Metadata, read locally)
    // does not know the topic.
    let md = cluster
        .broker_client(leader)
        .metadata(bpb::MetadataRequest {
            topics: vec!["lonely".into()],
        })
        .await
        .expect("Metadata RPC")
        .into_inner();
    assert_code(
        &md.topics[0].error,
        ErrorCode::UnknownTopicOrPartition,
        "the uncommitted topic in the minority leader's metadata",
    );
    for f in &followers {
        cluster.pause(*f, false);
    }
    // The majority side heals and the cluster takes writes again. (The held "lonely" entry
    // may then commit or be replaced: Raft promises nothing about a write that timed out.)
    let leader = cluster.wait_leader(STARTUP).await;
    let r = wait_for("a write after healing", STARTUP, || {
        let mut c = cluster.client(leader);
        async move {
            let req = pb::CreateTopicRequest {
                name: "healed".into(),
                partitions: 1,
                replication_factor: 1,
                configs: Default::default(),
            };
            let r = c.create_topic(req).await.ok()?.into_inner();
            r.error.is_none().then_some(r)
        }
    })
    .await;
    assert_eq!(r.topic.map(|t| t.name).as_deref(), Some("healed"));
}

/// A follower controller frozen past its election timeout must not take the quorum over when
/// it wakes (issue 14: "a paused follower takes over the controller"): the leader is healthy and
/// the other follower still hears from it, so an election would only cost availability. Weir
/// asks for pre-votes before it starts an election (see `weir_meta::election`).
#[tokio::test]
async fn a_paused_follower_controller_does_not_depose_a_healthy_leader() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let leader = cluster.wait_leader(STARTUP).await;
    for round in 0..3u64 {
        let follower = (1..=3)
            .filter(|id| *id != leader)
            .nth((round % 2) as usize)
            .unwrap();
        cluster.pause(follower, true);
        // The fault itself: frozen three times the longest election timeout (500 ms).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.pause(follower, false);
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            for id in 1..=3 {
                if let Some(now) = cluster.leader_via(id).await {
                    assert_eq!(
                        now, leader,
                        "round {round}: node {follower} woke from a 1.5 s pause and node {now} \
                         leads instead of node {leader} (seen via node {id})"
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Pre-votes are answered "no" by a leader, by a follower that hears its leader, and for a
/// candidate that is not a voter; asking changes no term and no leader.
#[tokio::test]
async fn pre_votes_are_refused_while_the_leader_is_heard_and_change_nothing() {
    use weir_meta::election::{PreVoteRequest, PreVoteResponse};
    use weir_proto::raft::v1::raft_client::RaftClient;
    use weir_proto::raft::v1::RaftMessage;
    let _serial = serial();
    // Every broker registered and active: no metadata write is due while the test runs.
    let (mut cluster, leader) = Cluster::start_ready(3, &[]).await;
    let before = describe_cluster(&mut cluster, leader)
        .await
        .metadata_version;
    for candidate in [1, 2, 3, 99] {
        for to in 1..=3u64 {
            let addr = cluster.node(to).direct_controller_addr();
            let channel = weir_proto::channel::lazy(
                &addr,
                weir_proto::channel::Profile::CONTROLLER.request_timeout(Duration::from_secs(5)),
                None,
            )
            .unwrap();
            let req = PreVoteRequest {
                candidate,
                next_term: u64::MAX,
                last_log_id: None,
            };
            let answer = RaftClient::new(channel)
                .pre_vote(RaftMessage {
                    payload: bincode::serialize(&req).unwrap().into(),
                })
                .await
                .unwrap()
                .into_inner();
            let answer: PreVoteResponse = bincode::deserialize(&answer.payload).unwrap();
            assert!(
                !answer.granted,
                "node {to} granted a pre-vote to {candidate} with a healthy leader {leader}"
            );
            let why = if candidate == 99 {
                "not a voter"
            } else if to == leader {
                "leads"
            } else {
                "heard from the leader"
            };
            assert!(answer.reason.contains(why), "node {to}: {answer:?}");
        }
    }
    assert_eq!(cluster.wait_leader(STARTUP).await, leader);
    let after = describe_cluster(&mut cluster, leader)
        .await
        .metadata_version;
    assert_eq!(before, after, "a pre-vote changed the metadata log");
    // Garbage is refused, typed.
    let addr = cluster.node(leader).direct_controller_addr();
    let channel =
        weir_proto::channel::lazy(&addr, weir_proto::channel::Profile::CONTROLLER, None).unwrap();
    let err = RaftClient::new(channel)
        .pre_vote(RaftMessage {
            payload: vec![0xff; 3].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn a_dead_broker_is_fenced_and_its_partitions_get_new_leaders() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(controller, 3, STARTUP).await;
    let topic = cluster
        .create_topic(controller, "fenced", 6, 3)
        .await
        .unwrap()
        .topic
        .unwrap();
    let victim = (1..=3).find(|id| *id != controller).unwrap();
    let led: Vec<&pb::PartitionState> = topic
        .partitions
        .iter()
        .filter(|p| p.leader == victim as i64)
        .collect();
    assert!(!led.is_empty());

    let killed_at = Instant::now();
    cluster.kill(victim);
    let moved = wait_for(
        "partitions of the dead broker re-led",
        Duration::from_secs(15),
        || {
            let mut c = cluster.client(controller);
            async move {
                let req = pb::DescribeTopicsRequest {
                    names: vec!["fenced".into()],
                };
                let t = c
                    .describe_topics(req)
                    .await
                    .ok()?
                    .into_inner()
                    .topics
                    .pop()?;
                t.partitions
                    .iter()
                    .all(|p| p.leader != victim as i64)
                    .then_some(t)
            }
        },
    )
    .await;
    let elapsed = killed_at.elapsed();
    for p in &moved.partitions {
        assert!(!p.isr.contains(&victim), "{p:?}");
        assert!(p.leader >= 0);
        if led.iter().any(|o| o.partition == p.partition) {
            let before = led.iter().find(|o| o.partition == p.partition).unwrap();
            assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        }
    }
    assert!(elapsed < Duration::from_secs(15));
    let view = describe_cluster(&mut cluster, controller).await;
    assert_eq!(
        view.brokers
            .iter()
            .find(|b| b.id == victim)
            .unwrap()
            .state(),
        weir_proto::common::v1::BrokerState::Fenced
    );

    // Back from the dead: it registers again and is unfenced once caught up.
    cluster.spawn(victim);
    wait_for("restarted broker active", STARTUP, || {
        let view = cluster.describe_cluster_via(controller);
        async move {
            let r = view.await?;
            (r.brokers.iter().find(|b| b.id == victim)?.state()
                == weir_proto::common::v1::BrokerState::Active)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_broker_only_node_follows_the_log_as_a_learner() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 1, &[]);
    cluster.wait_healthy(STARTUP).await;
    let leader = cluster.wait_leader(STARTUP).await;
    wait_for(
        "learner 4 in the quorum and its broker active",
        STARTUP,
        || {
            let view = cluster.describe_cluster_via(leader);
            async move {
                let r = view.await?;
                let learner = r.learners.iter().any(|l| l.id == 4);
                let active = r
                    .brokers
                    .iter()
                    .any(|b| b.id == 4 && b.state() == weir_proto::common::v1::BrokerState::Active);
                (learner && active && r.voters.len() == 3).then_some(())
            }
        },
    )
    .await;
    let r = cluster.create_topic(4, "via-learner", 4, 4).await.unwrap();
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(cluster.health(4), Some(200));
}

/// SIGTERM on the controller leader hands leadership over before the node stops: it asks the
/// most caught-up follower to stand (`weir_meta::node`'s hand-over) and waits for it to lead.
/// An ordinary election could not do what is checked here: the old leader heart-beats until the
/// hand-over ends, so no follower's election timeout (500–750 ms without a heartbeat) can run
/// out; a hand-over that did nothing would leave it leading for its whole 3 s wait. So: the
/// node named in the hand-over line leads, one term later, well within that wait.
#[tokio::test]
async fn sigterm_hands_leadership_over_and_exits_cleanly() {
    let _serial = serial();
    let (mut cluster, leader) = Cluster::start_ready(3, &[]).await;
    let term = describe_cluster(&mut cluster, leader).await.term;
    let started = Instant::now();
    cluster.sigterm(leader);
    const HANDING: &str = "handing controller leadership over before shutdown";
    let (said_at, line) = wait_for("the hand-over line", Duration::from_secs(10), || {
        let said = cluster.log_lines(leader, &[HANDING]);
        async move { (!said.is_empty()).then(|| (Instant::now(), said)) }
    })
    .await;
    let target_addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("to="))
        .unwrap_or_else(|| panic!("the hand-over line names no target: {line}"))
        .to_owned();
    let target = (1..=3)
        .find(|id| cluster.node(*id).direct_controller_addr() == target_addr)
        .unwrap_or_else(|| panic!("{target_addr} is no node's controller address"));
    assert_ne!(target, leader, "the leader handed over to itself");
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let (new, new_term) = wait_for("a new leader", Duration::from_secs(10), || {
        let view = cluster.describe_cluster_via(survivor);
        async move {
            let r = view.await?;
            (r.error.is_none() && r.controller_leader != 0 && r.controller_leader != leader)
                .then_some((r.controller_leader, r.term))
        }
    })
    .await;
    let handed_over_in = said_at.elapsed();
    assert_eq!(new, target, "the node asked to stand leads");
    assert_eq!(new_term, term + 1, "one election, no contest");
    assert!(
        handed_over_in < Duration::from_millis(2500),
        "a new leader {handed_over_in:?} after the hand-over began: no faster than the old \
         leader giving up after its 3 s wait"
    );
    assert!(cluster.terminate(leader), "weir-server exits 0 on SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cluster.log_panics(leader), "");
}

#[tokio::test]
async fn bad_admin_requests_get_typed_errors_and_change_nothing() {
    let _serial = serial();
    let mut cluster = Cluster::start(1, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_leader(STARTUP).await;
    wait_for("broker active", STARTUP, || {
        let view = cluster.describe_cluster_via(1);
        async move {
            let r = view.await?;
            (r.brokers
                .iter()
                .any(|b| b.state() == weir_proto::common::v1::BrokerState::Active))
            .then_some(())
        }
    })
    .await;
    let code = |r: pb::CreateTopicResponse| r.error.map(|e| e.code).unwrap_or(0);
    let cases = [
        ("bad name!", 1, 1, ErrorCode::InvalidTopic),
        ("..", 1, 1, ErrorCode::InvalidTopic),
        ("ok", 0, 1, ErrorCode::InvalidPartitions),
        ("ok", 1, 2, ErrorCode::InvalidReplicationFactor),
        ("ok", 1, 0, ErrorCode::InvalidReplicationFactor),
    ];
    for (name, partitions, rf, expected) in cases {
        let r = cluster.create_topic(1, name, partitions, rf).await.unwrap();
        assert_eq!(code(r), expected as i32, "{name} {partitions} {rf}");
    }
    let mut client = cluster.client(1);
    let bad_config = pb::CreateTopicRequest {
        name: "cfg".into(),
        partitions: 1,
        replication_factor: 1,
        configs: [("retention.ms".to_owned(), "forever".to_owned())].into(),
    };
    let r = client.create_topic(bad_config).await.unwrap().into_inner();
    assert_eq!(r.error.unwrap().code, ErrorCode::InvalidConfig as i32);
    assert!(cluster
        .create_topic(1, "dup", 1, 1)
        .await
        .unwrap()
        .error
        .is_none());
    let r = cluster.create_topic(1, "dup", 3, 1).await.unwrap();
    assert_eq!(code(r), ErrorCode::TopicAlreadyExists as i32);
    let r = client
        .delete_topic(pb::DeleteTopicRequest {
            name: "nope".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.error.unwrap().code,
        ErrorCode::UnknownTopicOrPartition as i32
    );

    let all = client
        .describe_topics(pb::DescribeTopicsRequest { names: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["dup"]
    );
    assert_eq!(all.topics[0].partitions.len(), 1);
}

#[test]
fn bad_flags_exit_non_zero_with_a_clear_message() {
    for (args, needle) in [
        (vec!["--roles", "chef"], "unknown role `chef`"),
        (vec!["--controller-quorum", "1@nohost"], "lacks a port"),
        (vec!["--node-id", "x"], "invalid value 'x'"),
    ] {
        let out = std::process::Command::new(common::SERVER)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
