//! The client against a Weir node running in this test's own process (`weir_server::Node`):
//! admin, produce with every acks setting, consume with every kind of seek, typed errors.
//! The cluster tests in the workspace's tests/ folder run the same client against real
//! `weir-server` processes, failover included.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use weir_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, Error, ErrorCode, Offset, Producer,
    ProducerConfig, ProducerRecord,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a single-node cluster in-process; returns it with its broker address.
async fn start_node(dir: &std::path::Path) -> (weir_server::Node, String) {
    let (broker, controller, http) = (free_port(), free_port(), free_port());
    let args = weir_server::Args::try_parse_from([
        "weir-server".to_owned(),
        format!("--listen=127.0.0.1:{broker}"),
        format!("--controller-listen=127.0.0.1:{controller}"),
        format!("--http-listen=127.0.0.1:{http}"),
        format!("--controller-quorum=1@127.0.0.1:{controller}"),
        format!("--data-dir={}", dir.display()),
    ])
    .unwrap();
    let node = weir_server::Node::start(args.validate().unwrap())
        .await
        .unwrap();
    (node, format!("127.0.0.1:{broker}"))
}

/// Waits (bounded) until the node's broker is registered and active.
async fn wait_ready(admin_config: &ClientConfig) -> Admin {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(admin) = Admin::connect(admin_config.clone()).await {
            if let Ok(cluster) = admin.describe_cluster().await {
                if cluster
                    .brokers
                    .iter()
                    .any(|b| b.state == weir_client::BrokerState::Active)
                {
                    return admin;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "in-process node not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_round_trip_against_an_in_process_node() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = start_node(dir.path()).await;
    let config = ClientConfig::new([addr]);
    let admin = wait_ready(&config).await;

    let topic = admin
        .create_topic("inproc", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(topic.partitions.len(), 2);
    assert_eq!(admin.list_topics().await.unwrap(), ["inproc"]);
    let err = admin.describe_topic("missing").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );

    for acks in [Acks::None, Acks::Leader, Acks::All] {
        let producer_config = ProducerConfig {
            acks,
            ..ProducerConfig::default()
        };
        let producer = Producer::connect(config.clone(), producer_config)
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..500 {
            let record = ProducerRecord::new("inproc", format!("v{i}")).key(format!("k{}", i % 7));
            deliveries.push(producer.send(record).await.unwrap());
        }
        producer.flush().await.unwrap();
        for d in deliveries {
            let md = d.await.unwrap();
            if acks == Acks::None {
                assert_eq!(md.offset, -1);
            } else {
                assert!(md.offset >= 0);
            }
        }
        producer.close().await.unwrap();
    }

    // 1,500 records went in (acks=0 included); read them all back from the start.
    let mut consumer = Consumer::connect(config.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    for p in consumer.partitions_for("inproc").await.unwrap() {
        consumer
            .assign("inproc", p, Offset::Earliest)
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    {
        let mut stream = Box::pin(consumer.stream());
        while seen < 1500 {
            let left = deadline.saturating_duration_since(Instant::now());
            let record = tokio::time::timeout(left, stream.next())
                .await
                .expect("records")
                .unwrap()
                .unwrap();
            if let Some(prev) = last.insert(record.partition, record.offset) {
                assert!(record.offset > prev, "offsets increase within a partition");
            }
            seen += 1;
        }
    }
    // Seek back to the earliest offset and to the latest.
    consumer.seek("inproc", 0, Offset::Earliest).await.unwrap();
    assert_eq!(consumer.position("inproc", 0), Some(0));
    consumer.seek("inproc", 0, Offset::Latest).await.unwrap();
    assert_eq!(consumer.position("inproc", 0), Some(last[&0] + 1));
    assert!(matches!(
        consumer.seek("nope", 0, Offset::Earliest).await,
        Err(Error::InvalidInput(_))
    ));

    admin.delete_topic("inproc").await.unwrap();
    node.shutdown().await;
}
