//! Benchmarks of the metadata quorum with real processes (not run by default; run them with
//! `scripts/bench-quorum.sh`). They print one JSON line per measurement and a summary; the
//! figures and commands are recorded in docs/BENCHMARKS.md.
//!
//! - controller failover: kill -9 the Raft leader of a 3-node cluster, time until a write
//!   (topic creation) commits through a survivor; 10 trials, median.
//! - broker failure: kill -9 a broker (not the controller leader), time until every partition
//!   it led has a new leader, with the default 3 s session timeout; 5 trials, median.
//! - 1,000 topics x 10 partitions, RF 3, on a 3-node cluster; then a whole-cluster restart
//!   until every node is healthy again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Cluster};
use weir_proto::controller::v1 as pb;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test]
#[ignore = "benchmark: run with scripts/bench-quorum.sh"]
async fn bench_controller_failover() {
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let mut trials = Vec::new();
    for trial in 0..10 {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await;
        let survivor = (1..=3).find(|id| *id != leader).unwrap();
        let name = format!("failover-{trial}");
        let killed = Instant::now();
        cluster.kill(leader);
        loop {
            let mut c = cluster.client(survivor);
            let req = pb::CreateTopicRequest {
                name: name.clone(),
                partitions: 1,
                replication_factor: 1,
                configs: Default::default(),
            };
            let attempt =
                tokio::time::timeout(Duration::from_millis(500), c.create_topic(req)).await;
            if let Ok(Ok(r)) = attempt {
                let code = r.get_ref().error.as_ref().map_or(0, |e| e.code);
                if code == 0 || code == weir_proto::common::v1::ErrorCode::TopicAlreadyExists as i32
                {
                    break;
                }
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no write committed after failover"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = killed.elapsed().as_secs_f64();
        println!("{{\"bench\":\"controller_failover\",\"trial\":{trial},\"seconds\":{secs:.3}}}");
        trials.push(secs);
        cluster.spawn(leader);
        cluster.wait_healthy(Duration::from_secs(30)).await;
    }
    println!("{{\"bench\":\"controller_failover\",\"trials\":10,\"median_seconds\":{:.3},\"max_seconds\":{:.3}}}", median(trials.clone()), trials.iter().cloned().fold(0.0, f64::max));
}

#[tokio::test]
#[ignore = "benchmark: run with scripts/bench-quorum.sh"]
async fn bench_broker_failure_to_new_partition_leaders() {
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let mut trials = Vec::new();
    for trial in 0..5 {
        let controller = cluster.wait_leader(Duration::from_secs(30)).await;
        cluster
            .wait_active_brokers(controller, 3, Duration::from_secs(30))
            .await;
        let name = format!("brokerfail-{trial}");
        let topic = cluster
            .create_topic(controller, &name, 6, 3)
            .await
            .unwrap()
            .topic
            .unwrap();
        let victim = (1..=3).find(|id| *id != controller).unwrap();
        assert!(topic.partitions.iter().any(|p| p.leader == victim as i64));
        let killed = Instant::now();
        cluster.kill(victim);
        wait_for("new partition leaders", Duration::from_secs(30), || {
            let mut c = cluster.client(controller);
            let name = name.clone();
            async move {
                let req = pb::DescribeTopicsRequest { names: vec![name] };
                let t = c
                    .describe_topics(req)
                    .await
                    .ok()?
                    .into_inner()
                    .topics
                    .pop()?;
                t.partitions
                    .iter()
                    .all(|p| p.leader >= 0 && p.leader != victim as i64)
                    .then_some(())
            }
        })
        .await;
        let secs = killed.elapsed().as_secs_f64();
        println!("{{\"bench\":\"broker_failure\",\"trial\":{trial},\"seconds\":{secs:.3}}}");
        trials.push(secs);
        cluster.spawn(victim);
        cluster.wait_healthy(Duration::from_secs(30)).await;
    }
    println!("{{\"bench\":\"broker_failure\",\"trials\":5,\"median_seconds\":{:.3},\"session_timeout_seconds\":3}}", median(trials));
}

#[tokio::test]
#[ignore = "benchmark: run with scripts/bench-quorum.sh"]
async fn bench_thousand_topics_and_cluster_restart() {
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let controller = cluster.wait_leader(Duration::from_secs(30)).await;
    cluster
        .wait_active_brokers(controller, 3, Duration::from_secs(30))
        .await;

    let started = Instant::now();
    let clients: Vec<_> = (1..=3).map(|id| cluster.client(id)).collect();
    let mut tasks = Vec::new();
    // 8 concurrent admin clients, spread over the three nodes (followers forward).
    for worker in 0..8usize {
        let mut client = clients[worker % 3].clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..1000).step_by(8) {
                let req = pb::CreateTopicRequest {
                    name: format!("bulk-{i:04}"),
                    partitions: 10,
                    replication_factor: 3,
                    configs: Default::default(),
                };
                // Retry what any admin client retries: a controller change (NOT_CONTROLLER), or
                // a request that lost its leader midway (then it may exist already).
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries < 100, "topic bulk-{i:04} never created");
                    match client
                        .create_topic(req.clone())
                        .await
                        .map(|r| r.into_inner())
                    {
                        Ok(r) if r.error.is_none() => break,
                        Ok(r)
                            if r.error.as_ref().is_some_and(|e| {
                                e.code
                                    == weir_proto::common::v1::ErrorCode::TopicAlreadyExists as i32
                            }) && tries > 1 =>
                        {
                            break
                        }
                        Ok(r)
                            if r.error.as_ref().is_some_and(|e| {
                                e.code == weir_proto::common::v1::ErrorCode::NotController as i32
                                    || e.code
                                        == weir_proto::common::v1::ErrorCode::UnknownServerError
                                            as i32
                            }) => {}
                        Ok(r) => panic!("{:?}", r.error),
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let create_secs = started.elapsed().as_secs_f64();
    let all = cluster
        .client(controller)
        .describe_topics(pb::DescribeTopicsRequest { names: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.topics.len(), 1000);
    assert!(all.topics.iter().all(|t| t.partitions.len() == 10));
    println!("{{\"bench\":\"create_1000_topics_x10_rf3\",\"seconds\":{create_secs:.3}}}");

    for id in 1..=3 {
        assert!(cluster.terminate(id));
    }
    let restarted = Instant::now();
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_healthy(Duration::from_secs(120)).await;
    let restart_secs = restarted.elapsed().as_secs_f64();
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let all = cluster
        .client(leader)
        .describe_topics(pb::DescribeTopicsRequest { names: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.topics.len(), 1000);
    println!("{{\"bench\":\"cluster_restart_after_1000_topics\",\"seconds_to_healthy\":{restart_secs:.3}}}");
}
