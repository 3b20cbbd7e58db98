//! The Rust client (`weir-client`) against real `weir-server` processes: admin round trips,
//! keyed and keyless produce/consume, seeking by Latest and Timestamp, bootstrap fallback,
//! typed server errors, producer back-pressure, and a producer delivering through a leader
//! kill on an RF 3 cluster: every delivery result checked, and the log read back holding each
//! acknowledged record at its offset, in send order, with only retried batches repeated (and
//! none at all from the idempotent producer, through repeated leader kills);
//! a consumer reading on through a leader kill with no gap and no repeat; and every
//! compression codec round-tripping records byte for byte through an RF 3 cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The serial() guard is held across awaits on purpose: it keeps cluster tests one at a time.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::now_ms;
use weir_common::sync::MutexExt;

use bytes::Bytes;
use common::{free_port, serial, wait_for, Cluster, STARTUP};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use weir_client::{
    partition_for_key, Acks, Admin, ClientConfig, Compression, Consumer, ConsumerConfig,
    ConsumerRecord, DeliveryFuture, Error, ErrorCode, Offset, Producer, ProducerConfig,
    ProducerRecord, RecordMetadata,
};
use weir_proto::broker::v1 as bpb;
use weir_storage::batch::{Batches, RecordBatch};

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

/// A started cluster of `nodes` (with `env` for each node) holding topic `topic` of
/// `partitions` partitions, replication factor `rf` and `configs`, every partition led with a
/// full ISR; its client config and an admin client.
async fn cluster_with_topic(
    nodes: u64,
    env: &[(&str, &str)],
    topic: &str,
    partitions: i32,
    rf: i32,
    configs: &[(&str, &str)],
) -> (Cluster, ClientConfig, Admin) {
    let mut cluster = Cluster::start_ready(nodes, env).await.0;
    let config = client_config(&mut cluster);
    let admin = Admin::connect(config.clone()).await.unwrap();
    let configs = configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    admin
        .create_topic(topic, partitions, rf, configs)
        .await
        .unwrap();
    wait_topic_ready(&admin, topic, rf as usize).await;
    (cluster, config, admin)
}

/// The leader of partition 0 of `topic` and its other replicas.
async fn leader_and_followers(admin: &Admin, topic: &str) -> (u64, Vec<u64>) {
    let p = admin.describe_topic(topic).await.unwrap().partitions[0].clone();
    let leader = p.leader.expect("a led partition");
    let followers = p
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    (leader, followers)
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
    assert_eq!(err.code(), Some(ErrorCode::InvalidPartitions), "{err}");

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
    // Each partition's records take its offsets from 0 on, in send order.
    let mut next = [0i64; 3];
    for (i, m) in acked.iter().enumerate() {
        let key = format!("key-{}", i % 500);
        let p = partition_for_key(key.as_bytes(), 3);
        assert_eq!((m.partition, m.offset), (p, next[p as usize]), "record {i}");
        next[p as usize] += 1;
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
    for (i, m) in later_md.iter().enumerate() {
        let i = i as i64;
        assert_eq!(
            (m.partition, m.offset, m.timestamp),
            (0, hw0 + i, base_ts + i * 1000)
        );
    }
    let got = read_n(&mut seeker, 5, Duration::from_secs(20)).await;
    for (i, r) in got.iter().enumerate() {
        let want = (
            0,
            hw0 + i as i64,
            format!("late-{i}"),
            later_md[i].timestamp,
        );
        assert_eq!((r.partition, r.offset, text(&r.value), r.timestamp), want);
    }
    seeker
        .seek("keyed", 0, Offset::Timestamp(base_ts + 2500))
        .await
        .unwrap();
    assert_eq!(seeker.position("keyed", 0), Some(hw0 + 3));
    let got = read_n(&mut seeker, 2, Duration::from_secs(20)).await;
    assert_eq!(
        got.iter()
            .map(|r| (r.offset, text(&r.value)))
            .collect::<Vec<_>>(),
        [
            (hw0 + 3, "late-3".to_string()),
            (hw0 + 4, "late-4".to_string())
        ]
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
    assert_eq!(
        (got[0].offset, text(&got[0].value)),
        (hw0 + 1, "late-1".to_string())
    );

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
    let (_cluster, config, admin) = cluster_with_topic(1, &[], "sticky", 4, 1, &[]).await;

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
    let hw_before: Vec<i64> = admin
        .describe_topic("sticky")
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .collect();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(n);
    for _ in 0..n {
        deliveries.push(
            fast.send(ProducerRecord::new("sticky", value.clone()))
                .await
                .unwrap(),
        );
    }
    fast.flush().await.unwrap();
    // Every delivery, not just the last: each record got its own offset, and together they
    // fill each partition's offsets from its old high watermark on, with no gap.
    let mut offsets: Vec<Vec<i64>> = vec![Vec::new(); 4];
    for (i, d) in deliveries.into_iter().enumerate() {
        let m = d
            .await
            .unwrap_or_else(|e| panic!("record {i} of the throughput run: {e}"));
        offsets[m.partition as usize].push(m.offset);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "throughput: {n} x 100 B keyless, acks=1, in {elapsed:?} ({:.0} records/s)",
        n as f64 / elapsed.as_secs_f64()
    );
    let hw_after = admin.describe_topic("sticky").await.unwrap().partitions;
    for (p, got) in offsets.into_iter().enumerate() {
        // In send order, too: one producer's records to a partition keep their order.
        let (from, to) = (hw_before[p], hw_after[p].high_watermark);
        let out_of_place = got.iter().zip(from..).position(|(g, w)| *g != w);
        assert!(
            got.len() as i64 == to - from && out_of_place.is_none(),
            "partition {p}: {} acks for the {} new offsets {from}..{to}, the one at index \
             {out_of_place:?} out of place",
            got.len(),
            to - from
        );
    }
    fast.close().await.unwrap();
}

/// Records of partition 0 acknowledged on each side of the kill before the leader-kill test
/// moves on: enough that the kill lands in a steady stream, and that the new leader proves
/// it takes over rather than acknowledging a stray batch.
const ACKS_AROUND_THE_KILL: usize = 2000;

/// The most records the leader-kill test's sender sends (its loop's bound; the test stops it
/// long before in a healthy run).
const MAX_SENT: u64 = 1_000_000;

/// What the delivery collector has seen so far, for the leader-kill test to poll.
#[derive(Debug, Default)]
struct Tally {
    /// Acknowledged records per partition.
    acked: [usize; 2],
    /// Acknowledged records of partition 0 whose `send` began after the kill.
    acked_p0_sent_after_kill: usize,
    /// Failed deliveries.
    failed: usize,
}

/// One record's delivery as the collector saw it.
#[derive(Debug)]
struct Delivered {
    /// The record's number: its key, and its value as `v{n}`.
    n: u64,
    /// What its DeliveryFuture resolved to.
    result: Result<RecordMetadata, Error>,
    /// When it resolved.
    at: Instant,
}

/// Awaits every DeliveryFuture handed over on `deliveries`, all at once (not in send order),
/// noting when each resolves and keeping `tally` current; returns them all once the sender
/// has hung up and every one has resolved.
fn collect_deliveries(
    mut deliveries: mpsc::UnboundedReceiver<(u64, DeliveryFuture)>,
    tally: Arc<Mutex<Tally>>,
    kill_index: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<Delivered>> {
    tokio::spawn(async move {
        let mut pending = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            tokio::select! {
                next = deliveries.recv(), if open => match next {
                    Some((n, delivery)) => pending.push(async move { (n, delivery.await) }),
                    None => open = false,
                },
                Some((n, result)) = pending.next(), if !pending.is_empty() => {
                    {
                        let mut t = tally.locked();
                        match &result {
                            Ok(m) => {
                                t.acked[m.partition as usize] += 1;
                                if m.partition == 0 && n >= kill_index.load(Ordering::SeqCst) {
                                    t.acked_p0_sent_after_kill += 1;
                                }
                            }
                            Err(_) => t.failed += 1,
                        }
                    }
                    done.push(Delivered { n, result, at: Instant::now() });
                }
            }
        }
        done
    })
}

/// The batches of `topic`/`partition` below `end`, as the leader at `addr` stores them (raw
/// Fetch, nothing decoded): where each batch begins and ends, which the consumer's records do
/// not show.
async fn raw_batches(addr: &str, topic: &str, partition: u32, end: i64) -> Vec<RecordBatch> {
    let mut client = common::broker_client_at(addr);
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut next = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let req = bpb::FetchRequest {
        topic: topic.into(),
        partition,
        offset: 0,
        max_bytes: 1 << 20,
        min_bytes: 1,
        max_wait_ms: 200,
        decode: false,
    };
    let Ok(opened) = tokio::time::timeout_at(deadline, client.fetch(req)).await else {
        panic!("raw fetch of {topic}-{partition} did not open within 60 s");
    };
    let mut stream = opened.unwrap().into_inner();
    while next < end {
        let Ok(answer) = tokio::time::timeout_at(deadline, stream.message()).await else {
            panic!("raw fetch of {topic}-{partition}: nothing from {next} on within 60 s");
        };
        let answer = answer.unwrap().expect("the fetch stream ended");
        assert!(answer.error.is_none(), "raw fetch: {:?}", answer.error);
        for batch in Batches::new(answer.batches) {
            let batch = batch.unwrap();
            if batch.header().next_offset() > next {
                next = batch.header().next_offset();
                batches.push(batch);
            }
        }
    }
    batches
}

/// Checks one partition of the leader-kill test's topic against what was acknowledged;
/// returns how many records it holds twice (or more). The log must hold exactly:
///
/// * every record sent to the partition, at the offset its acknowledgement named, with the
///   acknowledged timestamp (no loss, nothing moved);
/// * those acknowledged copies in send order (ordered pipelining through retries);
/// * besides them only earlier copies of whole retried batches: a batch none of whose records
///   is acknowledged at its offset must be byte-for-byte (from its magic byte on: records,
///   timestamps and CRC) a batch stored later whose records are all acknowledged there. The
///   producer resends a failed batch's same bytes; without idempotence a resend of a batch the
///   old leader had already replicated leaves both copies.
fn check_partition(
    partition: u32,
    sent: &[u64],
    acked: &HashMap<u64, RecordMetadata>,
    records: &[&ConsumerRecord],
    batches: &[RecordBatch],
) -> usize {
    let p = partition;
    for (k, r) in records.iter().enumerate() {
        assert_eq!(
            r.offset, k as i64,
            "partition {p}: a gap or a repeat in offsets"
        );
    }
    let numbers: Vec<u64> = records
        .iter()
        .map(|r| {
            let n: u64 = text(&r.key).parse().unwrap();
            assert_eq!(
                text(&r.value),
                format!("v{n}"),
                "partition {p} at {}",
                r.offset
            );
            assert_eq!(
                partition_for_key(n.to_string().as_bytes(), 2),
                p,
                "record {n}"
            );
            n
        })
        .collect();
    let mut previous = -1;
    for n in sent {
        let m = &acked[n];
        assert_eq!(m.partition, p, "record {n}");
        assert!(
            m.offset > previous,
            "partition {p}: record {n} acknowledged at {}, before the record sent ahead of it \
             (at {previous})",
            m.offset
        );
        previous = m.offset;
        let stored = records
            .get(m.offset as usize)
            .unwrap_or_else(|| panic!("record {n}, acknowledged at {}, is missing", m.offset));
        assert_eq!(
            numbers[m.offset as usize], *n,
            "partition {p} at {}",
            m.offset
        );
        assert_eq!(stored.timestamp, m.timestamp, "record {n}");
    }
    let acked_here = |offset: i64| acked[&numbers[offset as usize]].offset == offset;

    let mut next = 0;
    for b in batches {
        assert_eq!(
            b.header().base_offset,
            next,
            "partition {p}: batches not contiguous"
        );
        next = b.header().next_offset();
    }
    assert_eq!(
        next,
        records.len() as i64,
        "partition {p}: batches vs records"
    );
    let body = |b: &RecordBatch| b.as_bytes().slice(16..);
    let mut duplicates = 0;
    for (i, b) in batches.iter().enumerate() {
        let (from, to) = (b.header().base_offset, b.header().next_offset());
        let acked_in_it = (from..to).filter(|o| acked_here(*o)).count();
        if acked_in_it == (to - from) as usize {
            continue;
        }
        assert_eq!(
            acked_in_it, 0,
            "partition {p}: the batch at {from}..{to} mixes acknowledged records with others"
        );
        let resent = batches[i + 1..].iter().find(|later| {
            body(later) == body(b)
                && (later.header().base_offset..later.header().next_offset()).all(acked_here)
        });
        assert!(
            resent.is_some(),
            "partition {p}: records {:?} at {from}..{to} are stored again, but not as a \
             retried batch (no later acknowledged batch has the same bytes)",
            &numbers[from as usize..to as usize]
        );
        duplicates += (to - from) as usize;
    }
    duplicates
}

/// [`check_partition`] itself, on a made-up partition: a retried batch stored twice passes;
/// acknowledged records out of send order, a repeat that is not a whole resent batch, and a
/// lost acknowledged record each fail.
#[test]
fn the_partition_check_allows_only_retried_batches_to_repeat() {
    let n: Vec<u64> = (0..)
        .filter(|n: &u64| partition_for_key(n.to_string().as_bytes(), 2) == 0)
        .take(4)
        .collect();
    // A batch of records `numbers` at `base`, as the leader stores it, and its records as the
    // consumer yields them.
    let batch = |base: i64, numbers: &[u64]| {
        let mut builder = weir_storage::BatchBuilder::new(weir_client::Compression::None);
        for k in numbers {
            let key = k.to_string();
            let value = format!("v{k}");
            builder.push_parts(
                1000 + *k as i64,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[],
            );
        }
        let b = RecordBatch::decode(builder.build(base).unwrap()).unwrap();
        let records: Vec<ConsumerRecord> = numbers
            .iter()
            .enumerate()
            .map(|(i, k)| ConsumerRecord {
                topic: "t".into(),
                partition: 0,
                offset: base + i as i64,
                timestamp: 1000 + *k as i64,
                key: Some(k.to_string().into()),
                value: Some(format!("v{k}").into()),
                headers: Vec::new(),
            })
            .collect();
        (b, records)
    };
    let acks = |offsets: &[(u64, i64)]| -> HashMap<u64, RecordMetadata> {
        offsets
            .iter()
            .map(|(k, o)| {
                let m = RecordMetadata {
                    topic: "t".into(),
                    partition: 0,
                    offset: *o,
                    timestamp: 1000 + *k as i64,
                };
                (*k, m)
            })
            .collect()
    };
    let check = |layout: &[(i64, &[u64])], acked: &HashMap<u64, RecordMetadata>| {
        let (batches, records): (Vec<_>, Vec<_>) =
            layout.iter().map(|(b, ns)| batch(*b, ns)).unzip();
        let records: Vec<ConsumerRecord> = records.into_iter().flatten().collect();
        let refs: Vec<&ConsumerRecord> = records.iter().collect();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_partition(0, &n, acked, &refs, &batches)
        }))
    };
    // [n0 n1] [n2 n3] (the old leader's, unacknowledged) [n2 n3] (the retry, acknowledged).
    let retried = acks(&[(n[0], 0), (n[1], 1), (n[2], 4), (n[3], 5)]);
    let layout: &[(i64, &[u64])] = &[(0, &n[0..2]), (2, &n[2..4]), (4, &n[2..4])];
    assert_eq!(check(layout, &retried).ok(), Some(2));
    // Acknowledged copies out of send order.
    let swapped = acks(&[(n[0], 0), (n[1], 1), (n[3], 2), (n[2], 3)]);
    let layout: &[(i64, &[u64])] = &[(0, &n[0..2]), (2, &[n[3], n[2]])];
    assert!(check(layout, &swapped).is_err());
    // n2 stored twice, but the first copy is no resend of the batch acknowledged later.
    let partial = acks(&[(n[0], 0), (n[1], 1), (n[2], 3), (n[3], 4)]);
    let layout: &[(i64, &[u64])] = &[(0, &n[0..2]), (2, &n[2..3]), (3, &n[2..4])];
    assert!(check(layout, &partial).is_err());
    // n3 acknowledged at an offset the log does not hold.
    let lost = acks(&[(n[0], 0), (n[1], 1), (n[2], 2), (n[3], 3)]);
    let layout: &[(i64, &[u64])] = &[(0, &n[0..3])];
    assert!(check(layout, &lost).is_err());
}

/// An RF 3 topic (min.insync.replicas 2) takes a steady stream of acks=all records from a
/// producer without idempotence while the leader of partition 0 is killed. Every delivery result is checked: none fails, acks come
/// both before the kill and, from the new leader, for records sent after it. Then the topic
/// is read back with the consumer (and its batch boundaries with a raw fetch): see
/// [`check_partition`] for what each partition must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_keeps_delivering_through_a_leader_kill() {
    let _serial = serial();
    let (mut cluster, config, admin) =
        cluster_with_topic(3, &[], "durable", 2, 3, &[("min.insync.replicas", "2")]).await;
    let before = admin.describe_topic("durable").await.unwrap();
    let victim = before.partitions[0].leader.unwrap();

    let producer = Producer::connect(
        config.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            // The plain producer: a retried batch may be stored twice, which the check allows
            // only as a whole resent batch. The idempotent one is held to none (below).
            idempotence: Some(false),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();

    // A sender numbers records (key n, value vn) until told to stop; a collector awaits every
    // delivery as it resolves.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let kill_index = Arc::new(AtomicU64::new(u64::MAX));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
    let collector = collect_deliveries(deliveries_rx, Arc::clone(&tally), Arc::clone(&kill_index));
    let sender = {
        let producer = producer.clone();
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < MAX_SENT {
                let record = ProducerRecord::new("durable", format!("v{n}")).key(n.to_string());
                let delivery = producer.send(record).await.unwrap();
                deliveries_tx.send((n, delivery)).unwrap();
                n += 1;
                sent.store(n, Ordering::SeqCst);
                if n % 100 == 0 {
                    // Pacing, so that the sender does not crowd out the rest of the test.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            n
        })
    };
    let p0_acked = |t: &Tally| t.acked[0];
    wait_for("acks on partition 0 before the kill", STARTUP, || async {
        let t = tally.locked();
        assert_eq!(t.failed, 0, "deliveries failed before the kill: {t:?}");
        (p0_acked(&t) >= ACKS_AROUND_THE_KILL).then_some(())
    })
    .await;
    cluster.kill(victim);
    let killed = Instant::now();
    // The record being sent right now may have been started before the kill; the next one
    // was not.
    kill_index.store(sent.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    wait_for("a new leader for durable-0", STARTUP, || async {
        let t = admin.describe_topic("durable").await.ok()?;
        let leader = t.partitions[0].leader?;
        (leader != victim).then_some(())
    })
    .await;
    eprintln!("new leader after {:?}", killed.elapsed());
    wait_for(
        "acks on partition 0 of records sent after the kill",
        Duration::from_secs(60),
        || async {
            let t = tally.locked();
            (t.acked_p0_sent_after_kill >= ACKS_AROUND_THE_KILL).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let total_sent = sent_count(sender).await;
    tokio::time::timeout(Duration::from_secs(90), producer.flush())
        .await
        .expect("flush finishes")
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(90), collector)
        .await
        .expect("every delivery resolves")
        .unwrap();
    let kill_index = kill_index.load(Ordering::SeqCst);

    // ---- Every delivery result, and when it came.
    let acked = all_acknowledged(&delivered, total_sent);
    let count = |f: &dyn Fn(&Delivered, &RecordMetadata) -> bool| {
        delivered.iter().filter(|d| f(d, &acked[&d.n])).count()
    };
    let acked_before_kill = count(&|d, _| d.at < killed);
    let acked_after_kill = count(&|d, _| d.at >= killed);
    let p0_before_kill = count(&|d, m| d.at < killed && m.partition == 0);
    let p0_sent_after_kill = count(&|d, m| d.n >= kill_index && m.partition == 0);
    let p1_sent_after_kill = count(&|d, m| d.n >= kill_index && m.partition == 1);
    eprintln!(
        "{total_sent} sent and acknowledged: {acked_before_kill} before the kill, \
         {acked_after_kill} after it; of the {} sent after it, {p0_sent_after_kill} on \
         partition 0 and {p1_sent_after_kill} on partition 1",
        total_sent - kill_index
    );
    assert_eq!(acked_before_kill + acked_after_kill, total_sent as usize);
    assert!(p0_before_kill >= ACKS_AROUND_THE_KILL, "{p0_before_kill}");
    assert!(
        p0_sent_after_kill >= ACKS_AROUND_THE_KILL,
        "{p0_sent_after_kill}"
    );
    assert!(
        p1_sent_after_kill > 0,
        "partition 1 took nothing after the kill"
    );

    // ---- The log: once the followers caught up, read it all back.
    let (total, duplicates) =
        read_back_and_check(&mut cluster, &admin, config, "durable", &acked, total_sent).await;
    eprintln!("{duplicates} records stored twice, all of them copies of retried batches");
    assert_eq!(total as usize, total_sent as usize + duplicates);
    producer.close().await.unwrap();
}

/// Leaders killed with SIGKILL in a row.
const KILL_ROUNDS: usize = 3;

/// The idempotent producer (weir-client's default), with five batches of about 2 KiB in flight
/// per partition, through repeated SIGKILLs of partition leaders on an RF 3 topic
/// (min.insync.replicas 2): each round kills the leader of one partition while records flow,
/// waits for acks from the new leader, restarts the killed broker and waits for the full ISR.
/// Batches in flight to a killed leader are retried at its successor, which may already hold
/// them: every delivery must succeed, and the log read back must hold each record exactly
/// once, at its acknowledged offset, in send order ([`check_partition`] with no copies at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_stores_each_record_once_through_repeated_leader_kills() {
    let _serial = serial();
    let topic = "once";
    let (mut cluster, config, admin) =
        cluster_with_topic(3, &[], topic, 2, 3, &[("min.insync.replicas", "2")]).await;
    let producer_config = ProducerConfig {
        linger: Duration::from_millis(2),
        batch_size: 2048,
        max_in_flight_per_partition: 5,
        delivery_timeout: Duration::from_secs(90),
        request_timeout: Duration::from_secs(10),
        ..ProducerConfig::default()
    };
    assert!(producer_config.idempotent(), "idempotence is the default");
    let producer = Producer::connect(config.clone(), producer_config)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
    let never = Arc::new(AtomicU64::new(u64::MAX));
    let collector = collect_deliveries(deliveries_rx, Arc::clone(&tally), never);
    let sender = {
        let producer = producer.clone();
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < MAX_SENT {
                let record = ProducerRecord::new(topic, format!("v{n}")).key(n.to_string());
                let delivery = producer.send(record).await.unwrap();
                deliveries_tx.send((n, delivery)).unwrap();
                n += 1;
                sent.store(n, Ordering::SeqCst);
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            n
        })
    };
    let acked_on = |p: usize| tally.locked().acked[p];
    for round in 0..KILL_ROUNDS {
        let partition = round % 2;
        let flowing = acked_on(partition) + 500;
        wait_for("acks before the kill", STARTUP, || async {
            let t = tally.locked();
            assert_eq!(t.failed, 0, "deliveries failed: {t:?}");
            (t.acked[partition] >= flowing).then_some(())
        })
        .await;
        let victim = admin.describe_topic(topic).await.unwrap().partitions[partition]
            .leader
            .unwrap();
        cluster.kill(victim);
        let at_kill = acked_on(partition);
        eprintln!(
            "round {round}: killed broker {victim}, the leader of {topic}-{partition}, at {at_kill} acks there"
        );
        wait_for("a new leader", STARTUP, || async {
            let t = admin.describe_topic(topic).await.ok()?;
            (t.partitions[partition].leader? != victim).then_some(())
        })
        .await;
        wait_for(
            "acks from the new leader",
            Duration::from_secs(60),
            || async { (acked_on(partition) >= at_kill + 1000).then_some(()) },
        )
        .await;
        cluster.spawn(victim);
        wait_topic_ready(&admin, topic, 3).await;
    }
    stop.store(true, Ordering::SeqCst);
    let total_sent = sent_count(sender).await;
    tokio::time::timeout(Duration::from_secs(90), producer.flush())
        .await
        .expect("flush finishes")
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(90), collector)
        .await
        .expect("every delivery resolves")
        .unwrap();
    let acked = all_acknowledged(&delivered, total_sent);
    let (total, duplicates) =
        read_back_and_check(&mut cluster, &admin, config, topic, &acked, total_sent).await;
    eprintln!(
        "{total_sent} records sent and acknowledged through {KILL_ROUNDS} leader kills; {total} stored"
    );
    assert_eq!(
        duplicates, 0,
        "records of the idempotent producer were stored twice"
    );
    assert_eq!(total, total_sent as i64);
    producer.close().await.unwrap();
}

/// An idempotent producer idle past `producer.id.expiration.ms` (1 s here) is forgotten by
/// the partition, so its next batch, continuing its sequence, is refused with
/// UNKNOWN_PRODUCER_ID: the producer sends it again under a new producer id, and the record is
/// delivered, once, right after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_producer_id_is_replaced_without_losing_or_repeating_a_record() {
    let _serial = serial();
    let expiring = [("WEIR_PRODUCER_ID_EXPIRATION_MS", "1000")];
    let (mut cluster, config, admin) = cluster_with_topic(1, &expiring, "idle", 1, 1, &[]).await;
    let producer = Producer::connect(config.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let first = producer
        .send(ProducerRecord::new("idle", "first"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(first.offset, 0);
    wait_for("the partition to expire the idle producer", STARTUP, || {
        let expired = !cluster
            .log_lines(1, &["expired idle producer ids"])
            .is_empty();
        async move { expired.then_some(()) }
    })
    .await;
    let second = producer
        .send(ProducerRecord::new("idle", "second"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(second.offset, 1, "delivered right after the first");
    producer.close().await.unwrap();
    let t = admin.describe_topic("idle").await.unwrap();
    assert_eq!(t.partitions[0].high_watermark, 2, "stored once");
}

/// An acks=all request that times out after the leader appended it (both followers frozen
/// with SIGSTOP, so the high watermark cannot move) is sent again and again by the producer
/// until the followers are back. Two producers send one record each to the same partition at
/// the same time: the plain one's record ends up in the log once per attempt (the test waits
/// for three copies on the leader's disk, which shows the retries happened), the idempotent
/// one's exactly once, at the offset its delivery reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_resent_after_an_acks_all_timeout_is_stored_once_when_idempotent() {
    let _serial = serial();
    let (mut cluster, config, admin) = cluster_with_topic(3, &[], "resend", 1, 3, &[]).await;
    let (leader, followers) = leader_and_followers(&admin, "resend").await;
    let producer = |idempotence| {
        Producer::connect(
            config.clone(),
            ProducerConfig {
                linger: Duration::ZERO,
                request_timeout: Duration::from_secs(1),
                retry_backoff: Duration::from_millis(50),
                delivery_timeout: Duration::from_secs(90),
                idempotence: Some(idempotence),
                ..ProducerConfig::default()
            },
        )
    };
    let (plain, idempotent) = (
        producer(false).await.unwrap(),
        producer(true).await.unwrap(),
    );

    for f in &followers {
        cluster.pause(*f, true);
    }
    let plain_delivery = plain
        .send(ProducerRecord::new("resend", "plain"))
        .await
        .unwrap();
    let idempotent_delivery = idempotent
        .send(ProducerRecord::new("resend", "idempotent"))
        .await
        .unwrap();
    let leader_dir = cluster.node(leader).data_dir.clone();
    let copies = |value: &str| {
        common::data::disk_records(&leader_dir, "resend", 0)
            .iter()
            .filter(|r| r.value.as_deref() == Some(value.as_bytes()))
            .count()
    };
    let waited = wait_for(
        "three copies of the plain record on the leader's disk",
        Duration::from_secs(30),
        || {
            let n = copies("plain");
            async move { (n >= 3).then_some(n) }
        },
    )
    .await;
    eprintln!(
        "plain record on disk {waited} times, idempotent {} times, while the followers were frozen",
        copies("idempotent")
    );
    for f in &followers {
        cluster.pause(*f, false);
    }
    let plain_at = tokio::time::timeout(Duration::from_secs(60), plain_delivery)
        .await
        .expect("the plain record is delivered")
        .unwrap();
    let idempotent_at = tokio::time::timeout(Duration::from_secs(60), idempotent_delivery)
        .await
        .expect("the idempotent record is delivered")
        .unwrap();
    let t = wait_for("the high watermark at the log end", STARTUP, || async {
        let t = admin.describe_topic("resend").await.ok()?;
        let p = &t.partitions[0];
        (p.leader.is_some() && p.high_watermark == p.log_end_offset).then_some(t)
    })
    .await;
    let hw = t.partitions[0].high_watermark;
    let mut consumer = Consumer::connect(config, ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign("resend", 0, Offset::Earliest)
        .await
        .unwrap();
    let records = read_n(&mut consumer, hw as usize, Duration::from_secs(30)).await;
    let at = |value: &str| -> Vec<i64> {
        records
            .iter()
            .filter(|r| r.value.as_deref() == Some(value.as_bytes()))
            .map(|r| r.offset)
            .collect()
    };
    assert!(
        at("plain").len() >= 3,
        "the plain record was resent: {:?}",
        at("plain")
    );
    assert!(at("plain").contains(&plain_at.offset));
    assert_eq!(
        at("idempotent"),
        [idempotent_at.offset],
        "the idempotent record, once"
    );
    plain.close().await.unwrap();
    idempotent.close().await.unwrap();
}

/// Records that arrive while a partition's in-flight requests are at the limit wait in one
/// batch that keeps filling, not in one batch per linger: linger makes a batch ready to send,
/// and a batch that cannot be sent yet keeps taking records (Kafka's accumulator does the
/// same). With one request allowed in flight and stuck (both followers frozen, so acks=all
/// cannot complete), 20 records sent 20 ms apart (each after the 5 ms linger) must leave at
/// most two batches behind the stuck one; a producer that closed each batch at its linger
/// sent 20, each a round trip of its own, and fell behind at a steady rate it could carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_behind_the_in_flight_limit_go_out_in_one_growing_batch_not_one_per_linger() {
    let _serial = serial();
    let (mut cluster, config, admin) = cluster_with_topic(3, &[], "backlog", 1, 3, &[]).await;
    let (leader, followers) = leader_and_followers(&admin, "backlog").await;
    let producer = Producer::connect(
        config,
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_size: 1 << 20,
            max_in_flight_per_partition: 1,
            request_timeout: Duration::from_secs(30),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    for f in &followers {
        cluster.pause(*f, true);
    }
    let first = producer
        .send(ProducerRecord::new("backlog", "first"))
        .await
        .unwrap();
    // The first batch is in flight once the leader has it: it cannot complete while the
    // followers are frozen, so the partition has no room for another request.
    let leader_dir = cluster.node(leader).data_dir.clone();
    wait_for("the first record on the leader's disk", STARTUP, || {
        let there = !common::data::disk_records(&leader_dir, "backlog", 0).is_empty();
        async move { there.then_some(()) }
    })
    .await;
    let mut deliveries = vec![first];
    for i in 0..20 {
        // Paced past the linger on purpose: each record finds the last one's batch due.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let value = format!("behind-{i}");
        deliveries.push(
            producer
                .send(ProducerRecord::new("backlog", value))
                .await
                .unwrap(),
        );
    }
    for f in &followers {
        cluster.pause(*f, false);
    }
    let mut last = -1;
    for d in deliveries {
        let at = tokio::time::timeout(Duration::from_secs(60), d)
            .await
            .expect("delivered within 60 s")
            .unwrap();
        assert!(at.offset > last, "in send order");
        last = at.offset;
    }
    assert_eq!(last, 20, "21 records, each once");
    let addr = cluster.node(leader).broker_addr();
    let batches = raw_batches(&addr, "backlog", 0, 21).await;
    let sizes: Vec<i32> = batches.iter().map(|b| b.header().records_count).collect();
    eprintln!("records per batch: {sizes:?}");
    assert!(
        batches.len() <= 3,
        "the stuck batch and at most two behind it, not one per linger: {sizes:?}"
    );
    producer.close().await.unwrap();
}

/// Once every partition of `topic` (2 partitions, keys partitioned as the producer did) is led
/// and its followers caught up, reads it all back with the consumer and its batch boundaries
/// with a raw fetch, and holds each partition to [`check_partition`] against the `total_sent`
/// records numbered from 0 and their acknowledgements. Returns the records stored and how many
/// of them are copies of retried batches.
async fn read_back_and_check(
    cluster: &mut Cluster,
    admin: &Admin,
    config: ClientConfig,
    topic: &str,
    acked: &HashMap<u64, RecordMetadata>,
    total_sent: u64,
) -> (i64, usize) {
    let t = wait_for(
        "every partition led, its high watermark at its log end",
        STARTUP,
        || async {
            let t = admin.describe_topic(topic).await.ok()?;
            t.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.high_watermark == p.log_end_offset)
                .then_some(t)
        },
    )
    .await;
    let mut consumer = Consumer::connect(config, ConsumerConfig::default())
        .await
        .unwrap();
    for p in &t.partitions {
        assert_eq!(p.log_start_offset, 0, "{p:?}");
        consumer
            .assign(topic, p.partition, Offset::Earliest)
            .await
            .unwrap();
        assert_eq!(consumer.position(topic, p.partition), Some(0));
    }
    let total: i64 = t.partitions.iter().map(|p| p.high_watermark).sum();
    let records = read_n(&mut consumer, total as usize, Duration::from_secs(60)).await;
    let mut duplicates = 0;
    for p in &t.partitions {
        let partition = p.partition;
        // Numbers were sent in increasing order.
        let sent_here: Vec<u64> = (0..total_sent)
            .filter(|n| acked[n].partition == partition)
            .collect();
        // The stream yields each partition in offset order (check_partition holds it to
        // that); the merge order across partitions is free.
        let here: Vec<&ConsumerRecord> = records
            .iter()
            .filter(|r| r.partition == partition)
            .collect();
        assert_eq!(here.len() as i64, p.high_watermark, "partition {partition}");
        assert_eq!(consumer.position(topic, partition), Some(p.high_watermark));
        let leader = cluster.node(p.leader.unwrap()).broker_addr();
        let batches = raw_batches(&leader, topic, partition, p.high_watermark).await;
        duplicates += check_partition(partition, &sent_here, acked, &here, &batches);
    }
    (total, duplicates)
}

/// The acknowledgement of each of the `total_sent` records numbered from 0, by number; fails
/// the test if a delivery is missing or failed.
fn all_acknowledged(delivered: &[Delivered], total_sent: u64) -> HashMap<u64, RecordMetadata> {
    assert_eq!(
        delivered.len() as u64,
        total_sent,
        "deliveries vs records sent"
    );
    let failed: Vec<(u64, &Error)> = delivered
        .iter()
        .filter_map(|d| d.result.as_ref().err().map(|e| (d.n, e)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} records failed despite retries, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let acked: HashMap<u64, RecordMetadata> = delivered
        .iter()
        .map(|d| (d.n, d.result.clone().unwrap()))
        .collect();
    assert_eq!(
        acked.len() as u64,
        total_sent,
        "a record acknowledged twice"
    );
    acked
}

/// The sender task's count of records sent, once it stopped.
async fn sent_count(sender: tokio::task::JoinHandle<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(90), sender)
        .await
        .expect("the sender stops")
        .unwrap()
}

/// A consumer reads one partition continuously while the partition's leader is killed: it
/// goes on from the next offset on the new leader, every offset once and in order (no gap, no
/// repeat), past records the new leader acknowledged after the kill; and what it read is
/// exactly what the partition holds, every acknowledged record included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_follows_a_leader_change_mid_stream_without_gap_or_repeat() {
    let _serial = serial();
    let mut cluster = start(3).await;
    let config = client_config(&mut cluster);
    let admin = Admin::connect(config.clone()).await.unwrap();
    admin
        .create_topic(
            "follow",
            1,
            3,
            BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
        )
        .await
        .unwrap();
    wait_topic_ready(&admin, "follow", 3).await;
    let victim = admin.describe_topic("follow").await.unwrap().partitions[0]
        .leader
        .unwrap();
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

    // The writer: numbered records (key n, value vn) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let kill_index = Arc::new(AtomicU64::new(u64::MAX));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
    let collector = collect_deliveries(deliveries_rx, Arc::clone(&tally), Arc::clone(&kill_index));
    let writer = {
        let producer = producer.clone();
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < MAX_SENT {
                let record = ProducerRecord::new("follow", format!("v{n}")).key(n.to_string());
                deliveries_tx
                    .send((n, producer.send(record).await.unwrap()))
                    .unwrap();
                n += 1;
                sent.store(n, Ordering::SeqCst);
                if n % 100 == 0 {
                    // Pacing, so that the writer does not crowd out the reader.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            n
        })
    };

    // The reader: one stream from the earliest offset, for as long as the test runs, each
    // record checked to be the next offset as it arrives.
    let consumed: Arc<Mutex<Vec<ConsumerRecord>>> = Arc::default();
    let until = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let reader = {
        let (consumed, until) = (Arc::clone(&consumed), Arc::clone(&until));
        let config = config.clone();
        tokio::spawn(async move {
            let consumer_config = ConsumerConfig {
                max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::connect(config, consumer_config).await.unwrap();
            consumer
                .assign("follow", 0, Offset::Earliest)
                .await
                .unwrap();
            let mut next = consumer.position("follow", 0).unwrap();
            assert_eq!(next, 0);
            let stream = consumer.stream();
            futures::pin_mut!(stream);
            let deadline = Instant::now() + Duration::from_secs(180);
            while next < until.load(Ordering::SeqCst) {
                assert!(
                    Instant::now() < deadline,
                    "the reader stalled at offset {next}"
                );
                // Waits a little at a time, to notice `until`.
                let Ok(item) =
                    tokio::time::timeout(Duration::from_millis(200), stream.next()).await
                else {
                    continue;
                };
                let record = match item {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => panic!("the reader's stream failed at offset {next}: {e}"),
                    None => panic!("the reader's stream ended at offset {next}"),
                };
                assert_eq!(
                    record.offset,
                    next,
                    "a gap or a repeat after offset {}",
                    next - 1
                );
                next += 1;
                consumed.locked().push(record);
            }
        })
    };
    let read_so_far = |consumed: &Mutex<Vec<ConsumerRecord>>| consumed.locked().len();

    wait_for(
        "the reader to read 2000 records before the kill",
        STARTUP,
        || async {
            assert!(!reader.is_finished(), "the reader stopped");
            (read_so_far(&consumed) >= ACKS_AROUND_THE_KILL).then_some(())
        },
    )
    .await;
    cluster.kill(victim);
    let read_at_kill = read_so_far(&consumed);
    kill_index.store(sent.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    wait_for("a new leader for follow-0", STARTUP, || async {
        let t = admin.describe_topic("follow").await.ok()?;
        let leader = t.partitions[0].leader?;
        (leader != victim).then_some(())
    })
    .await;
    wait_for(
        "acks from the new leader of records sent after the kill",
        Duration::from_secs(60),
        || async {
            let t = tally.locked();
            (t.acked_p0_sent_after_kill >= ACKS_AROUND_THE_KILL).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let total_sent = sent_count(writer).await;
    tokio::time::timeout(Duration::from_secs(90), producer.flush())
        .await
        .expect("flush finishes")
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(90), collector)
        .await
        .expect("every delivery resolves")
        .unwrap();
    assert_eq!(delivered.len() as u64, total_sent);
    let mut acked = HashMap::new();
    for d in delivered {
        let m = d
            .result
            .unwrap_or_else(|e| panic!("record {} failed despite retries: {e}", d.n));
        acked.insert(d.n, m);
    }
    let kill_index = kill_index.load(Ordering::SeqCst);
    // The last offset the new leader acknowledged for a record sent after the kill: the old
    // leader never had it, so reading it means reading from the new leader.
    let newest_after_kill = acked
        .iter()
        .filter(|(n, _)| **n >= kill_index)
        .map(|(_, m)| m.offset)
        .max()
        .unwrap();

    // Everything is committed: the reader is told to stop at the end of the log.
    let t = wait_for(
        "follow-0 led, its high watermark at its log end",
        STARTUP,
        || async {
            let t = admin.describe_topic("follow").await.ok()?;
            let p = &t.partitions[0];
            (p.leader.is_some() && p.high_watermark == p.log_end_offset).then_some(t)
        },
    )
    .await;
    let end = t.partitions[0].high_watermark;
    assert!(end > newest_after_kill);
    until.store(end, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(180), reader)
        .await
        .expect("the reader finishes")
        .unwrap();
    let consumed = std::mem::take(&mut *consumed.locked());
    eprintln!(
        "read {} records, {read_at_kill} of them before the kill; {total_sent} sent, up to \
         offset {newest_after_kill} acknowledged by the new leader",
        consumed.len()
    );
    assert_eq!(consumed.len() as i64, end);
    assert!(consumed
        .iter()
        .enumerate()
        .all(|(i, r)| r.offset == i as i64));

    // What the reader saw is what the partition holds, read again from the start, and every
    // acknowledged record is in it where its acknowledgement said.
    let mut again = Consumer::connect(config, ConsumerConfig::default())
        .await
        .unwrap();
    again.assign("follow", 0, Offset::Earliest).await.unwrap();
    let fresh = read_n(&mut again, end as usize, Duration::from_secs(60)).await;
    assert!(
        fresh == consumed,
        "the reader's records differ from the partition's"
    );
    for (n, m) in &acked {
        let r = &consumed[m.offset as usize];
        assert_eq!(
            (text(&r.key), text(&r.value), r.timestamp),
            (n.to_string(), format!("v{n}"), m.timestamp),
            "offset {}",
            m.offset
        );
    }
    producer.close().await.unwrap();
}

/// Every codec the client offers; the match stops compiling when one is added and not listed.
fn every_codec() -> [Compression; 5] {
    let all = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in all {
        match codec {
            Compression::None
            | Compression::Gzip
            | Compression::Snappy
            | Compression::Lz4
            | Compression::Zstd => {}
        }
    }
    all
}

/// Bytes that do not compress: a xorshift stream from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Record `i` of the compression test: null, empty, binary, compressible, incompressible and
/// large keys and values, headers with binary, null and non-ASCII parts.
fn codec_record(topic: &str, i: usize) -> ProducerRecord {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let value = match i {
        _ if i % 7 == 0 => None,
        _ if i % 11 == 0 => Some(Vec::new()),
        // One large record: a batch of its own.
        100 => Some(noise(i as u64, 300_000)),
        _ if i % 2 == 0 => Some(format!("value {i}, ").repeat(40).into_bytes()),
        _ => Some(noise(i as u64, 400)),
    };
    let key = match i {
        _ if i % 5 == 0 => None,
        _ if i % 13 == 0 => Some(all_bytes.clone()),
        _ => Some(format!("key-{i}").into_bytes()),
    };
    let mut headers = vec![("i".to_string(), Some(Bytes::from(i.to_string())))];
    if i % 3 == 0 {
        headers.push(("bin".to_string(), Some(Bytes::from(all_bytes))));
    }
    if i % 4 == 0 {
        headers.push(("null".to_string(), None));
        headers.push(("ünïcødé".to_string(), Some(Bytes::from("✓ çà"))));
    }
    ProducerRecord {
        topic: topic.to_string(),
        partition: Some(0),
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        headers,
        timestamp: Some(1_700_000_000_000 + i as i64),
    }
}

/// For each codec the client offers, records sent with that `ProducerConfig::compression`
/// through a 3-node RF 3 cluster come back from the consumer byte for byte (keys, values,
/// headers, timestamps, at their acknowledged offsets), and the leader stores every batch
/// under that codec (raw fetch), several records to a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips_records_byte_for_byte() {
    const N: usize = 200;
    let _serial = serial();
    let mut cluster = start(3).await;
    let config = client_config(&mut cluster);
    let admin = Admin::connect(config.clone()).await.unwrap();
    for codec in every_codec() {
        let topic = format!("codec-{codec}");
        admin
            .create_topic(
                &topic,
                1,
                3,
                BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
            )
            .await
            .unwrap();
        wait_topic_ready(&admin, &topic, 3).await;
        let producer = Producer::connect(
            config.clone(),
            ProducerConfig {
                compression: codec,
                acks: Acks::All,
                batch_size: 64 * 1024,
                linger: Duration::from_millis(20),
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
        let sent: Vec<ProducerRecord> = (0..N).map(|i| codec_record(&topic, i)).collect();
        let mut deliveries = Vec::with_capacity(N);
        for r in &sent {
            deliveries.push(producer.send(r.clone()).await.unwrap());
        }
        producer.flush().await.unwrap();
        let mut want = Vec::with_capacity(N);
        for (i, (r, d)) in sent.into_iter().zip(deliveries).enumerate() {
            let m = d
                .await
                .unwrap_or_else(|e| panic!("{codec}: record {i}: {e}"));
            assert_eq!(
                (m.partition, m.offset),
                (0, i as i64),
                "{codec}: record {i}"
            );
            want.push(ConsumerRecord {
                topic: topic.clone(),
                partition: 0,
                offset: m.offset,
                timestamp: m.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
        producer.close().await.unwrap();

        let mut consumer = Consumer::connect(config.clone(), ConsumerConfig::default())
            .await
            .unwrap();
        consumer.assign(&topic, 0, Offset::Earliest).await.unwrap();
        let got = read_n(&mut consumer, N, Duration::from_secs(60)).await;
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{codec}: record at offset {}", w.offset);
        }
        assert_eq!(got.len(), want.len());

        let t = admin.describe_topic(&topic).await.unwrap();
        let p = &t.partitions[0];
        assert_eq!(p.high_watermark, N as i64, "{codec}");
        let leader = cluster.node(p.leader.unwrap()).broker_addr();
        let batches = raw_batches(&leader, &topic, 0, N as i64).await;
        for b in &batches {
            assert_eq!(
                b.header().compression().unwrap(),
                codec,
                "{codec}: the batch at {} is stored with another codec",
                b.header().base_offset
            );
        }
        let most = batches.iter().map(|b| b.header().records_count).max();
        assert!(most > Some(1), "{codec}: one record per batch: {most:?}");
        eprintln!("{codec}: {N} records in {} batches", batches.len());
    }
}
