//! The client against a Weir node running in this test's own process (`weir_server::Node`):
//! admin, produce with every acks setting (each record at the offset it must get), consume
//! with every kind of seek — earliest (also after retention moved the log start), latest, an
//! offset, a timestamp — each checked against the exact records it must yield, typed errors.
//! The cluster tests in the workspace's tests/ folder run the same client against real
//! `weir-server` processes, failover included.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use weir_client::{
    partition_for_key, Acks, Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Error,
    ErrorCode, Offset, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
use weir_common::now_ms;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a single-node cluster in-process; returns it with its broker address.
async fn start_node(dir: &std::path::Path) -> (weir_server::Node, String) {
    // The broker and HTTP listeners take free ports of their own (port 0); the controller's
    // is named by the quorum, so it is picked here.
    let controller = free_port();
    let args = weir_server::Args::try_parse_from([
        "weir-server".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        format!("--controller-listen=127.0.0.1:{controller}"),
        "--http-listen=127.0.0.1:0".to_owned(),
        format!("--controller-quorum=1@127.0.0.1:{controller}"),
        format!("--data-dir={}", dir.display()),
    ])
    .unwrap();
    let node = weir_server::Node::start(args.validate().unwrap())
        .await
        .unwrap();
    // Node::start returns once it has written the bound listeners.
    let listeners = std::fs::read_to_string(dir.join(weir_server::LISTENERS_FILE)).unwrap();
    let broker = listeners
        .lines()
        .find_map(|l| l.strip_prefix("broker="))
        .expect("a broker listener")
        .to_owned();
    (node, broker)
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

/// Polls `check` every 50 ms until it returns `Some`, at most `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `n` records of the consumer's assigned partitions, read from a new stream within
/// 30 s (the stream, and with it any record read ahead, is dropped afterwards).
async fn read(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stream = consumer.stream();
    futures::pin_mut!(stream);
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

/// The first item of a new stream of the consumer, within 30 s.
async fn first_item(consumer: &mut Consumer) -> Result<ConsumerRecord, Error> {
    let stream = consumer.stream();
    futures::pin_mut!(stream);
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an item within 30 s")
        .expect("the stream ended")
}

/// The record as a consumer must read it back: what was sent, where it was acknowledged.
fn stored(sent: &ProducerRecord, at: &RecordMetadata) -> ConsumerRecord {
    ConsumerRecord {
        topic: at.topic.clone(),
        partition: at.partition,
        offset: at.offset,
        timestamp: at.timestamp,
        key: sent.key.clone(),
        value: sent.value.clone(),
        headers: sent.headers.clone(),
    }
}

/// Sends `records` through `producer`, flushes, and returns each as it must be read back.
async fn produce(producer: &Producer, records: Vec<ProducerRecord>) -> Vec<ConsumerRecord> {
    let mut deliveries = Vec::with_capacity(records.len());
    for r in &records {
        deliveries.push(producer.send(r.clone()).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut out = Vec::with_capacity(records.len());
    for (r, d) in records.iter().zip(deliveries) {
        out.push(stored(r, &d.await.unwrap()));
    }
    out
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

    // Each partition's records in the order they must be stored: 500 per acks setting, each
    // value naming its round.
    let mut log: [Vec<(String, String)>; 2] = [Vec::new(), Vec::new()];
    for (round, acks) in [Acks::None, Acks::Leader, Acks::All]
        .into_iter()
        .enumerate()
    {
        let producer_config = ProducerConfig {
            acks,
            ..ProducerConfig::default()
        };
        let producer = Producer::connect(config.clone(), producer_config)
            .await
            .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..500 {
            let key = format!("k{}", i % 7);
            let value = format!("r{round}-v{i}");
            let p = partition_for_key(key.as_bytes(), 2);
            let record = ProducerRecord::new("inproc", value.clone()).key(key.clone());
            deliveries.push((
                p,
                log[p as usize].len() as i64,
                producer.send(record).await.unwrap(),
            ));
            log[p as usize].push((key, value));
        }
        producer.flush().await.unwrap();
        for (p, offset, d) in deliveries {
            let md = d.await.unwrap();
            assert_eq!(md.partition, p);
            // acks=0 learns no offset; the others learn exactly the next one of the partition.
            let want = if acks == Acks::None { -1 } else { offset };
            assert_eq!(md.offset, want, "acks={acks}");
        }
        producer.close().await.unwrap();
        // acks=0 returns before the broker appends: wait until it has, so that the next
        // round's records come after these.
        let want: Vec<i64> = log.iter().map(|l| l.len() as i64).collect();
        wait_for(
            "the round's records appended",
            Duration::from_secs(30),
            || async {
                let t = admin.describe_topic("inproc").await.ok()?;
                let hw: Vec<i64> = t.partitions.iter().map(|p| p.high_watermark).collect();
                (hw == want).then_some(())
            },
        )
        .await;
    }

    // 1,500 records went in (acks=0 included); read them all back from the start: each
    // partition holds exactly its records, in send order, from offset 0 on.
    let mut consumer = Consumer::connect(config.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    assert_eq!(consumer.partitions_for("inproc").await.unwrap(), [0, 1]);
    for p in 0..2 {
        consumer
            .assign("inproc", p, Offset::Earliest)
            .await
            .unwrap();
        assert_eq!(consumer.position("inproc", p), Some(0));
    }
    let records = read(&mut consumer, 1500).await;
    for p in 0..2u32 {
        let got: Vec<(i64, String, String)> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| {
                let text = |b: &Option<Bytes>| String::from_utf8(b.clone().unwrap().to_vec());
                (r.offset, text(&r.key).unwrap(), text(&r.value).unwrap())
            })
            .collect();
        let want: Vec<(i64, String, String)> = log[p as usize]
            .iter()
            .enumerate()
            .map(|(o, (k, v))| (o as i64, k.clone(), v.clone()))
            .collect();
        assert!(
            got == want,
            "partition {p} does not hold its records in send order"
        );
        assert_eq!(consumer.position("inproc", p), Some(want.len() as i64));
    }
    // Seek back to the earliest offset and to the latest.
    consumer.seek("inproc", 0, Offset::Earliest).await.unwrap();
    assert_eq!(consumer.position("inproc", 0), Some(0));
    consumer.seek("inproc", 0, Offset::Latest).await.unwrap();
    assert_eq!(consumer.position("inproc", 0), Some(log[0].len() as i64));
    assert!(matches!(
        consumer.seek("nope", 0, Offset::Earliest).await,
        Err(Error::InvalidInput(_))
    ));

    admin.delete_topic("inproc").await.unwrap();
    node.shutdown().await;
}

/// Every kind of [`Offset`], as `assign` and `seek`: each puts the position exactly where it
/// must, and the records read from there are exactly the partition's records from that
/// offset on (offsets, keys, values, timestamps, headers; no gap). Earliest is also checked
/// after retention moved the log start past 0, where it and offset 0 differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_seek_reads_exactly_the_records_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = start_node(dir.path()).await;
    let config = ClientConfig::new([addr]);
    let admin = wait_ready(&config).await;
    admin
        .create_topic("seeks", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    // Old enough to stay clear of the clock, ten milliseconds apart.
    let base = now_ms() - 600_000;
    let ts = |i: i64| base + 10 * i;
    let producer = Producer::connect(config.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let record = |i: i64| {
        ProducerRecord::new("seeks", format!("s{i}"))
            .key(format!("k{i}"))
            .header("i", i.to_string())
            .partition(0)
            .timestamp(ts(i))
    };
    let mut log = produce(&producer, (0..100).map(record).collect()).await;
    let other: Vec<ProducerRecord> = (0..5)
        .map(|i| ProducerRecord::new("seeks", format!("o{i}")).partition(1))
        .collect();
    let other = produce(&producer, other).await;
    for (i, r) in log.iter().enumerate() {
        assert_eq!(
            (r.partition, r.offset, r.timestamp),
            (0, i as i64, ts(i as i64))
        );
    }

    let mut consumer = Consumer::connect(config.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    // Seeking before assigning is refused.
    let err = consumer
        .seek("seeks", 0, Offset::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    // Earliest: the whole partition.
    consumer.assign("seeks", 0, Offset::Earliest).await.unwrap();
    assert_eq!(consumer.position("seeks", 0), Some(0));
    assert_eq!(read(&mut consumer, 100).await, log[0..100]);
    assert_eq!(consumer.position("seeks", 0), Some(100));

    // An offset: from there on.
    consumer.seek("seeks", 0, Offset::At(37)).await.unwrap();
    assert_eq!(consumer.position("seeks", 0), Some(37));
    assert_eq!(read(&mut consumer, 10).await, log[37..47]);
    assert_eq!(consumer.position("seeks", 0), Some(47));

    // A timestamp: the first record at or after it.
    for (at, want) in [
        (ts(50), 50),             // a record's own timestamp
        (ts(50) + 5, 51),         // between two records
        (ts(99), 99),             // the last record's
        (0, 0),                   // the epoch: before every record
        (ts(0) - 1, 0),           // just before the first
        (ts(99) + 1, 100),        // after every record: the high watermark
        (now_ms() + 60_000, 100), // the future
    ] {
        consumer
            .seek("seeks", 0, Offset::Timestamp(at))
            .await
            .unwrap();
        assert_eq!(consumer.position("seeks", 0), Some(want), "timestamp {at}");
    }
    consumer
        .seek("seeks", 0, Offset::Timestamp(ts(50)))
        .await
        .unwrap();
    assert_eq!(read(&mut consumer, 3).await, log[50..53]);
    consumer
        .seek("seeks", 0, Offset::Timestamp(ts(98) + 1))
        .await
        .unwrap();
    assert_eq!(read(&mut consumer, 1).await, log[99..100]);

    // Latest: only what comes after.
    consumer.seek("seeks", 0, Offset::Latest).await.unwrap();
    assert_eq!(consumer.position("seeks", 0), Some(100));
    log.extend(produce(&producer, (100..103).map(record).collect()).await);
    assert_eq!(read(&mut consumer, 3).await, log[100..103]);
    assert_eq!(consumer.position("seeks", 0), Some(103));

    // The high watermark as an offset: the next record produced.
    consumer.seek("seeks", 0, Offset::At(103)).await.unwrap();
    log.extend(produce(&producer, vec![record(103)]).await);
    assert_eq!(read(&mut consumer, 1).await, log[103..104]);

    // The other partition keeps its own position; assigning it leaves partition 0's alone.
    consumer.assign("seeks", 1, Offset::At(2)).await.unwrap();
    assert_eq!(consumer.position("seeks", 0), Some(104));
    assert_eq!(consumer.position("seeks", 1), Some(2));
    assert_eq!(read(&mut consumer, 3).await, other[2..5]);
    assert!(consumer.unassign("seeks", 1));

    // Past the end: the stream says OFFSET_OUT_OF_RANGE.
    consumer.seek("seeks", 0, Offset::At(110)).await.unwrap();
    assert_eq!(consumer.position("seeks", 0), Some(110));
    let err = first_item(&mut consumer).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    // Negative offsets and timestamps are refused before any request; the position stays.
    for bad in [Offset::At(-1), Offset::Timestamp(-5)] {
        let err = consumer.seek("seeks", 0, bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err}");
        assert_eq!(consumer.position("seeks", 0), Some(110));
    }

    // ---- Earliest once the log start moved: small segments of records an hour old, deleted
    // by retention (the broker applies it every 30 s) up to the active segment.
    admin
        .create_topic(
            "aged",
            1,
            1,
            BTreeMap::from([
                ("segment.bytes".to_string(), "1024".to_string()),
                ("retention.ms".to_string(), "1800000".to_string()),
            ]),
        )
        .await
        .unwrap();
    let old = now_ms() - 3_600_000;
    let mut aged = Vec::new();
    for i in 0..40i64 {
        // One record per batch, so that the segments roll every few records.
        let r = ProducerRecord::new("aged", format!("a{i}:{}", "x".repeat(100)))
            .partition(0)
            .timestamp(old + i);
        aged.extend(produce(&producer, vec![r]).await);
    }
    let start = wait_for(
        "retention to move the log start of `aged`",
        Duration::from_secs(75),
        || async {
            let t = admin.describe_topic("aged").await.ok()?;
            let p = &t.partitions[0];
            (p.log_start_offset > 0).then_some(p.log_start_offset)
        },
    )
    .await;
    assert!(
        start < 40,
        "retention deleted the active segment: log start {start}"
    );
    consumer.assign("aged", 0, Offset::Earliest).await.unwrap();
    assert_eq!(consumer.position("aged", 0), Some(start));
    consumer.unassign("seeks", 0);
    assert_eq!(
        read(&mut consumer, (40 - start) as usize).await,
        aged[start as usize..]
    );
    // Offset 0 is gone now.
    consumer.seek("aged", 0, Offset::At(0)).await.unwrap();
    let err = first_item(&mut consumer).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    // A timestamp before every record left: the log start.
    consumer
        .seek("aged", 0, Offset::Timestamp(old))
        .await
        .unwrap();
    assert_eq!(consumer.position("aged", 0), Some(start));

    producer.close().await.unwrap();
    node.shutdown().await;
}
