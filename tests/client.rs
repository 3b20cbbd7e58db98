//! The Rust client (`weir-client`) against real `weir-server` processes: admin round trips,
//! keyed and keyless produce/consume, seeking by Latest and Timestamp, bootstrap fallback,
//! typed server errors, producer back-pressure, and a producer delivering through a leader
//! kill on an RF 3 cluster with every acknowledged record readable afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The serial() guard is held across awaits on purpose: it keeps cluster tests one at a time.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_common::now_ms;

use common::{free_port, serial, wait_for, Cluster, STARTUP};
use futures::stream::{FuturesUnordered, StreamExt};
use weir_client::{
    partition_for_key, Acks, Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Error,
    ErrorCode, Offset, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};

/// A started cluster with its controller leader and all brokers active.
async fn start(nodes: u64) -> Cluster {
    Cluster::start_ready(nodes, &[]).await.0
}

fn client_config(cluster: &mut Cluster) -> ClientConfig {
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut config = ClientConfig::new(ids.into_iter().map(|id| cluster.node(id).broker_addr()));
    config.request_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_millis(500);
    config
}

/// Waits until every partition of `topic` has a leader and `isr` in-sync replicas.
async fn wait_topic_ready(admin: &Admin, topic: &str, isr: usize) {
    wait_for(
        &format!("{topic} led with {isr} in-sync replicas"),
        STARTUP,
        || async {
            let t = admin.describe_topic(topic).await.ok()?;
            t.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == isr && p.high_watermark >= 0)
                .then_some(())
        },
    )
    .await;
}

/// Reads `n` records from the consumer's stream (all assigned partitions).
async fn read_n(consumer: &mut Consumer, n: usize, timeout: Duration) -> Vec<ConsumerRecord> {
    let mut out = Vec::with_capacity(n);
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(r))) => out.push(r),
            Ok(Some(Err(e))) => panic!("consumer error after {} records: {e}", out.len()),
            Ok(None) => panic!("the stream ended after {} records", out.len()),
            Err(_) => panic!("timed out with {} of {n} records", out.len()),
        }
    }
    out
}

fn text(b: &Option<bytes::Bytes>) -> String {
    String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_produce_consume_seek_and_errors_on_one_node() {
    let _serial = serial();
    let mut cluster = start(1).await;
    let real = client_config(&mut cluster);

    // A dead first bootstrap address is skipped.
    let mut config = real.clone();
    config
        .bootstrap
        .insert(0, format!("127.0.0.1:{}", free_port()));
    let admin = Admin::connect(config.clone()).await.unwrap();

    // Nothing reachable at all: Unavailable.
    let dead = ClientConfig::new([format!("127.0.0.1:{}", free_port())]);
    match Admin::connect(dead).await {
        Err(e @ Error::Unavailable(_)) => assert!(e.is_retriable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // ---- Admin round trip ----
    let configs = BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]);
    let created = admin
        .create_topic("keyed", 3, 1, configs.clone())
        .await
        .unwrap();
    assert_eq!(created.name, "keyed");
    assert_eq!(created.partitions.len(), 3);
    assert_eq!(created.configs.get("retention.ms").unwrap(), "3600000");
    admin
        .create_topic("other", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let err = admin
        .create_topic("keyed", 3, 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err}");
    let topics = admin.list_topics().await.unwrap();
    assert_eq!(topics, ["keyed", "other"]);
    wait_topic_ready(&admin, "keyed", 1).await;
    let described = admin.describe_topic("keyed").await.unwrap();
    assert_eq!(described.id, created.id);
    assert_eq!(
        described
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for p in &described.partitions {
        assert_eq!(p.leader, Some(1));
        assert_eq!(p.replicas, [1]);
        assert_eq!(
            (p.log_start_offset, p.high_watermark, p.log_end_offset),
            (0, 0, 0)
        );
    }
    // It serializes (the CLI prints JSON).
    let json = serde_json::to_value(&described).unwrap();
    assert_eq!(json["partitions"][0]["leader"], 1);

    admin
        .alter_topic_config(
            "keyed",
            BTreeMap::from([("retention.bytes".to_string(), "1000000000".to_string())]),
            vec!["retention.ms".to_string()],
        )
        .await
        .unwrap();
    let altered = admin.describe_topic("keyed").await.unwrap();
    assert_eq!(
        altered.configs.get("retention.bytes").unwrap(),
        "1000000000"
    );
    assert!(!altered.configs.contains_key("retention.ms"));

    let cluster_desc = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster_desc.controller_leader, Some(1));
    assert_eq!(cluster_desc.brokers.len(), 1);
    assert_eq!(
        cluster_desc.brokers[0].state,
        weir_client::BrokerState::Active
    );
    assert_eq!(cluster_desc.voters.len(), 1);
    assert!(cluster_desc.metadata_version > 0);

    // ---- Typed server errors ----
    let err = admin.describe_topic("nope").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    let err = admin.delete_topic("nope").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    let err = admin
        .create_topic("bad", 0, 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(err.code().is_some(), "{err}");

    let producer = Producer::connect(config.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let err = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    let err = producer
        .send(ProducerRecord::new("keyed", "x").partition(3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    let mut consumer = Consumer::connect(config.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    let err = consumer
        .assign("nope", 0, Offset::Earliest)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{err}"
    );
    assert_eq!(consumer.partitions_for("keyed").await.unwrap(), [0, 1, 2]);

    // ---- 10,000 keyed records, acks=all ----
    const N: usize = 10_000;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let record = ProducerRecord::new("keyed", format!("value-{i}"))
            .key(format!("key-{}", i % 500))
            .header("i", i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut acked: Vec<RecordMetadata> = Vec::with_capacity(N);
    for d in deliveries {
        acked.push(d.await.unwrap());
    }
    eprintln!("produced {N} keyed records in {:?}", started.elapsed());
    for (i, m) in acked.iter().enumerate() {
        let key = format!("key-{}", i % 500);
        assert_eq!(
            m.partition,
            partition_for_key(key.as_bytes(), 3),
            "record {i}"
        );
        assert!(m.offset >= 0);
    }
    assert_eq!(producer.buffered_bytes(), 0);

    for p in 0..3 {
        consumer.assign("keyed", p, Offset::Earliest).await.unwrap();
        assert_eq!(consumer.position("keyed", p), Some(0));
    }
    let records = read_n(&mut consumer, N, Duration::from_secs(60)).await;
    let mut last: HashMap<u32, i64> = HashMap::new();
    let mut by_value: HashMap<String, &ConsumerRecord> = HashMap::new();
    for r in &records {
        let key = text(&r.key);
        assert_eq!(r.partition, partition_for_key(key.as_bytes(), 3));
        if let Some(prev) = last.insert(r.partition, r.offset) {
            assert_eq!(r.offset, prev + 1, "partition {} out of order", r.partition);
        }
        by_value.insert(text(&r.value), r);
    }
    assert_eq!(by_value.len(), N);
    for (i, m) in acked.iter().enumerate() {
        let r = by_value[&format!("value-{i}")];
        assert_eq!((r.partition, r.offset), (m.partition, m.offset));
        assert_eq!(r.headers, [("i".to_string(), Some(i.to_string().into()))]);
        assert_eq!(r.timestamp, m.timestamp);
    }
    // Per partition, the keys' order is the send order.
    for p in 0..3 {
        let sent: Vec<i64> = acked
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| m.offset)
            .collect();
        assert!(sent.windows(2).all(|w| w[1] > w[0]), "acks out of order");
        assert_eq!(consumer.position("keyed", p), Some(sent.len() as i64));
    }
    let described = admin.describe_topic("keyed").await.unwrap();
    let total: i64 = described.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(total, N as i64);

    // ---- Seek: Latest, Timestamp ----
    let mut seeker = Consumer::connect(config.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    let hw0 = described.partitions[0].high_watermark;
    seeker.assign("keyed", 0, Offset::Latest).await.unwrap();
    assert_eq!(seeker.position("keyed", 0), Some(hw0));
    let base_ts = now_ms() + 60_000;
    let mut later = Vec::new();
    for i in 0..5 {
        let d = producer
            .send(
                ProducerRecord::new("keyed", format!("late-{i}"))
                    .partition(0)
                    .timestamp(base_ts + i * 1000),
            )
            .await
            .unwrap();
        later.push(d);
    }
    producer.flush().await.unwrap();
    let mut later_md = Vec::new();
    for d in later {
        later_md.push(d.await.unwrap());
    }
    assert_eq!(later_md[0].offset, hw0);
    let got = read_n(&mut seeker, 5, Duration::from_secs(20)).await;
    assert_eq!(text(&got[0].value), "late-0");
    assert_eq!(got[4].offset, hw0 + 4);
    seeker
        .seek("keyed", 0, Offset::Timestamp(base_ts + 2500))
        .await
        .unwrap();
    assert_eq!(seeker.position("keyed", 0), Some(hw0 + 3));
    let got = read_n(&mut seeker, 2, Duration::from_secs(20)).await;
    assert_eq!(
        got.iter().map(|r| text(&r.value)).collect::<Vec<_>>(),
        ["late-3", "late-4"]
    );
    // A timestamp after every record: Latest.
    seeker
        .assign("keyed", 0, Offset::Timestamp(base_ts + 1_000_000))
        .await
        .unwrap();
    assert_eq!(seeker.position("keyed", 0), Some(hw0 + 5));
    seeker.seek("keyed", 0, Offset::At(hw0 + 1)).await.unwrap();
    // Seeking a partition that is not assigned is refused.
    assert!(matches!(
        seeker.seek("keyed", 1, Offset::Earliest).await,
        Err(weir_client::Error::InvalidInput(_))
    ));
    let got = read_n(&mut seeker, 1, Duration::from_secs(20)).await;
    assert_eq!(text(&got[0].value), "late-1");

    // Reading past the end: OFFSET_OUT_OF_RANGE as a server error.
    seeker
        .assign("keyed", 0, Offset::At(hw0 + 1000))
        .await
        .unwrap();
    let mut stream = seeker.stream();
    let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap();
    match item {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange), "{e}"),
        Ok(r) => panic!("expected OFFSET_OUT_OF_RANGE, got {r:?}"),
    }
    drop(stream);

    // ---- Delete ----
    admin.delete_topic("other").await.unwrap();
    wait_for("`other` deleted", STARTUP, || async {
        let topics = admin.list_topics().await.ok()?;
        (topics == ["keyed"]).then_some(())
    })
    .await;
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_stick_and_back_pressure_bounds_memory() {
    let _serial = serial();
    let mut cluster = start(1).await;
    let config = client_config(&mut cluster);
    let admin = Admin::connect(config.clone()).await.unwrap();
    admin
        .create_topic("sticky", 4, 1, BTreeMap::new())
        .await
        .unwrap();
    wait_topic_ready(&admin, "sticky", 1).await;

    // ---- Sticky partitioning: keyless records fill one partition's batch, then move on.
    let producer = Producer::connect(
        config.clone(),
        ProducerConfig {
            acks: Acks::Leader,
            batch_size: 4096,
            linger: Duration::from_millis(50),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let value = vec![b'x'; 100];
    let mut deliveries = Vec::new();
    for _ in 0..4000 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("sticky", value.clone()))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    let mut partitions = Vec::new();
    for d in deliveries {
        partitions.push(d.await.unwrap().partition);
    }
    let switches = partitions.windows(2).filter(|w| w[0] != w[1]).count();
    let mut counts = [0usize; 4];
    for p in &partitions {
        counts[*p as usize] += 1;
    }
    eprintln!("sticky: {switches} switches, per partition {counts:?}");
    // ~30 records per 4 KiB batch: ~130 batches, each a run on one partition.
    assert!(switches >= 20, "keyless records never moved on: {switches}");
    assert!(
        switches < 4000 / 10,
        "keyless records did not stick: {switches}"
    );
    assert!(
        counts.iter().all(|c| *c > 0),
        "unused partitions: {counts:?}"
    );
    producer.close().await.unwrap();

    // ---- Back-pressure: a 64 KiB buffer and 2 MiB of records.
    const BUFFER: usize = 64 * 1024;
    let producer = Producer::connect(
        config.clone(),
        ProducerConfig {
            buffer_memory: BUFFER,
            batch_size: 16 * 1024,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let value = vec![b'y'; 1000];
    let mut pending = FuturesUnordered::new();
    let mut max_buffered = 0;
    let mut delivered = 0;
    let started = Instant::now();
    for i in 0..2000u32 {
        let d = producer
            .send(ProducerRecord::new("sticky", value.clone()).partition(i % 4))
            .await
            .unwrap();
        let buffered = producer.buffered_bytes();
        assert!(buffered <= BUFFER, "{buffered} bytes buffered");
        max_buffered = max_buffered.max(buffered);
        pending.push(d);
        // Reap what is done without waiting.
        while let Some(Some(r)) = futures::FutureExt::now_or_never(pending.next()) {
            r.unwrap();
            delivered += 1;
        }
    }
    producer.flush().await.unwrap();
    while let Some(r) = pending.next().await {
        r.unwrap();
        delivered += 1;
    }
    assert_eq!(delivered, 2000);
    assert!(
        max_buffered > BUFFER / 2,
        "the buffer never filled ({max_buffered} bytes): no back-pressure exercised"
    );
    assert_eq!(producer.buffered_bytes(), 0, "memory leaked");
    eprintln!(
        "back-pressure: 2000 x 1 KB in {:?}, at most {max_buffered} bytes buffered",
        started.elapsed()
    );
    // A record larger than the whole buffer is refused, not waited for.
    let err = producer
        .send(ProducerRecord::new("sticky", vec![0u8; BUFFER * 2]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    // ---- A rough throughput figure (debug build; informational).
    let producer2 = producer.clone();
    producer.close().await.unwrap();
    let err = producer2
        .send(ProducerRecord::new("sticky", "late"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Closed);
    let fast = Producer::connect(
        config,
        ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let value = bytes::Bytes::from(vec![b'z'; 100]);
    let n = 200_000;
    let started = Instant::now();
    let mut last = None;
    for _ in 0..n {
        last = Some(
            fast.send(ProducerRecord::new("sticky", value.clone()))
                .await
                .unwrap(),
        );
    }
    fast.flush().await.unwrap();
    last.unwrap().await.unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "throughput: {n} x 100 B keyless, acks=1, in {elapsed:?} ({:.0} records/s)",
        n as f64 / elapsed.as_secs_f64()
    );
    fast.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_keeps_delivering_through_a_leader_kill() {
    let _serial = serial();
    let mut cluster = start(3).await;
    let config = client_config(&mut cluster);
    let admin = Admin::connect(config.clone()).await.unwrap();
    admin
        .create_topic(
            "durable",
            2,
            3,
            BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
        )
        .await
        .unwrap();
    wait_topic_ready(&admin, "durable", 3).await;
    let before = admin.describe_topic("durable").await.unwrap();
    let victim = before.partitions[0].leader.unwrap();

    let producer = Producer::connect(
        config.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();

    // Send numbered records (key = number) in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let producer = producer.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let record = ProducerRecord::new("durable", format!("v{i}")).key(i.to_string());
                deliveries.push((i, producer.send(record).await.unwrap()));
                i += 1;
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            deliveries
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(victim);
    let killed = Instant::now();
    // Wait for a new leader of partition 0, then keep producing a while longer.
    wait_for("a new leader for durable-0", STARTUP, || async {
        let t = admin.describe_topic("durable").await.ok()?;
        let leader = t.partitions[0].leader?;
        (leader != victim).then_some(())
    })
    .await;
    eprintln!("new leader after {:?}", killed.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let deliveries = sender.await.unwrap();
    tokio::time::timeout(Duration::from_secs(90), producer.flush())
        .await
        .expect("flush finishes")
        .unwrap();

    let mut acked: Vec<(u64, RecordMetadata)> = Vec::new();
    let mut failed = Vec::new();
    for (i, d) in deliveries {
        match d.await {
            Ok(m) => acked.push((i, m)),
            Err(e) => failed.push((i, e)),
        }
    }
    eprintln!(
        "{} acknowledged, {} failed{}",
        acked.len(),
        failed.len(),
        failed
            .first()
            .map(|(i, e)| format!(" (first: {i}: {e})"))
            .unwrap_or_default()
    );
    assert!(
        failed.is_empty(),
        "records failed despite retries: {:?}",
        &failed[..failed.len().min(5)]
    );
    let after_kill = acked.len();
    assert!(after_kill > 0);
    // Records after the kill were acknowledged on partition 0 too (by the new leader).
    let max0 = acked
        .iter()
        .filter(|(_, m)| m.partition == 0)
        .map(|(_, m)| m.offset)
        .max()
        .unwrap();

    // Everything acknowledged is readable, at its acknowledged offset.
    let mut consumer = Consumer::connect(config, ConsumerConfig::default())
        .await
        .unwrap();
    let t = admin.describe_topic("durable").await.unwrap();
    let mut want: HashMap<(u32, i64), String> = HashMap::new();
    for (i, m) in &acked {
        want.insert((m.partition, m.offset), format!("v{i}"));
    }
    let mut total = 0usize;
    for p in &t.partitions {
        consumer
            .assign("durable", p.partition, Offset::Earliest)
            .await
            .unwrap();
        assert!(p.high_watermark >= 0, "offsets of partition {p:?}");
        total += p.high_watermark as usize;
    }
    assert!(t.partitions[0].high_watermark > max0);
    let records = read_n(&mut consumer, total, Duration::from_secs(60)).await;
    let got: HashMap<(u32, i64), String> = records
        .iter()
        .map(|r| ((r.partition, r.offset), text(&r.value)))
        .collect();
    for (at, value) in &want {
        assert_eq!(got.get(at), Some(value), "acknowledged record at {at:?}");
    }
    producer.close().await.unwrap();
}
