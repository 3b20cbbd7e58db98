//! The data path with real `weir-server` processes, against the public contract in
//! `proto/broker.proto`: produce to partition leaders and consume through Fetch streams on an
//! RF 3 cluster, acks=all records surviving a leader kill under load, typed errors for bad
//! produce and fetch requests (that change nothing), min.insync.replicas refusing acks=all
//! once the ISR is too small, and disk blocks reserved ahead of busy partitions only.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The serial() guard is held across awaits on purpose: it keeps cluster tests one at a time.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::now_ms;

use bytes::Bytes;
use common::{assert_code, broker_client_at, code, code_name, serial, wait_for, Cluster, STARTUP};
use tonic::transport::Channel;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_proto::controller::v1 as pb;
use weir_storage::batch::Batches;
use weir_storage::{BatchBuilder, Compression, Header, Record};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn to_proto(r: &Record) -> bpb::Record {
    bpb::Record {
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r
            .headers
            .iter()
            .map(|h| bpb::Header {
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect(),
        timestamp: r.timestamp,
        offset: 0,
    }
}

fn from_proto(r: bpb::Record) -> Record {
    Record {
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
    }
}

/// One uncompressed RecordBatch v2 with base offset 0, as the Rust client sends it.
fn build_batch(records: &[Record]) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None);
    for r in records {
        builder.push(r);
    }
    builder.build(0).unwrap()
}

fn plain(records: &[Record]) -> Records {
    Records::Plain(bpb::RecordList {
        records: records.iter().map(to_proto).collect(),
    })
}

fn produce_req(topic: &str, partition: u32, acks: i32, records: Records) -> bpb::ProduceRequest {
    bpb::ProduceRequest {
        topic: topic.into(),
        partition,
        acks,
        timeout_ms: 10_000,
        records: Some(records),
    }
}

async fn produce(
    client: &mut BrokerClient<Channel>,
    req: bpb::ProduceRequest,
) -> bpb::ProduceResponse {
    client.produce(req).await.expect("Produce RPC").into_inner()
}

async fn list_offset(
    client: &mut BrokerClient<Channel>,
    topic: &str,
    partition: u32,
    timestamp: i64,
) -> bpb::ListOffsetsResponse {
    client
        .list_offsets(bpb::ListOffsetsRequest {
            topic: topic.into(),
            partition,
            timestamp,
        })
        .await
        .expect("ListOffsets RPC")
        .into_inner()
}

/// Metadata for `topic` from node `via` (an owned future: it does not borrow the cluster).
fn metadata(
    cluster: &mut Cluster,
    via: u64,
    topic: &str,
) -> impl Future<Output = Option<bpb::MetadataResponse>> + 'static {
    let mut client = cluster.broker_client(via);
    let req = bpb::MetadataRequest {
        topics: vec![topic.into()],
    };
    async move {
        let r = tokio::time::timeout(Duration::from_secs(3), client.metadata(req))
            .await
            .ok()?
            .ok()?;
        Some(r.into_inner())
    }
}

/// `topic`'s partition `partition` in a Metadata answer, when the topic is known.
fn partition_md(
    md: &bpb::MetadataResponse,
    topic: &str,
    partition: u32,
) -> Option<weir_proto::controller::v1::PartitionState> {
    let t = md.topics.iter().find(|t| t.name == topic)?;
    if code(&t.error) != 0 {
        return None;
    }
    t.partitions
        .iter()
        .find(|p| p.partition == partition)
        .cloned()
}

/// The leader of a partition and its advertised broker address, from a Metadata answer.
fn leader_of(md: &bpb::MetadataResponse, topic: &str, partition: u32) -> Option<(u64, String)> {
    let p = partition_md(md, topic, partition)?;
    let id = u64::try_from(p.leader).ok()?;
    let broker = md.brokers.iter().find(|b| b.id == id)?;
    Some((id, broker.address.clone()))
}

/// Waits until Metadata answered by every running node shows each of the `partitions` of
/// `topic` with a leader and exactly `isr` in-sync replicas; returns the first node's answer.
async fn wait_topic_ready(
    cluster: &mut Cluster,
    topic: &str,
    partitions: u32,
    isr: usize,
) -> bpb::MetadataResponse {
    let what = format!("{topic}: {partitions} partitions led, with {isr} in-sync replicas");
    let ids = cluster.running();
    let mut first = None;
    for id in ids {
        let md = wait_for(&what, STARTUP, || {
            let fut = metadata(cluster, id, topic);
            async move {
                let md = fut.await?;
                let ready = (0..partitions).all(|p| {
                    partition_md(&md, topic, p).is_some_and(|pm| {
                        pm.leader >= 0
                            && pm.isr.len() == isr
                            && pm.isr.contains(&(pm.leader as u64))
                    }) && leader_of(&md, topic, p).is_some()
                });
                ready.then_some(md)
            }
        })
        .await;
        first.get_or_insert(md);
    }
    first.expect("no running node")
}

/// Waits for the leader of `topic`/`partition` as some running node sees it (not `not`).
async fn wait_leader_of(
    cluster: &mut Cluster,
    topic: &str,
    partition: u32,
    not: Option<u64>,
) -> (u64, String) {
    wait_for("a partition leader in Metadata", STARTUP, || {
        let ids = cluster.running();
        let futs: Vec<_> = ids.iter().map(|id| metadata(cluster, *id, topic)).collect();
        async move {
            for fut in futs {
                if let Some(md) = fut.await {
                    if let Some((id, addr)) = leader_of(&md, topic, partition) {
                        if Some(id) != not {
                            return Some((id, addr));
                        }
                    }
                }
            }
            None
        }
    })
    .await
}

/// Reads the records at offsets `[from, to)` of a partition through one Fetch stream, with
/// decoded protobuf records (`decode`) or raw batches decoded here.
async fn fetch_range(
    client: &mut BrokerClient<Channel>,
    topic: &str,
    partition: u32,
    from: i64,
    to: i64,
    decode: bool,
) -> Vec<Record> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    let req = bpb::FetchRequest {
        topic: topic.into(),
        partition,
        offset: from,
        max_bytes: 64 * 1024,
        min_bytes: 1,
        max_wait_ms: 200,
        decode,
    };
    let mut stream = client.fetch(req).await.expect("Fetch RPC").into_inner();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = from;
    while next < to {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(answer) = tokio::time::timeout(left, stream.message()).await else {
            panic!("fetching [{from}, {to}) of {topic}-{partition}: stuck at {next}");
        };
        let msg = answer
            .expect("Fetch stream failed")
            .unwrap_or_else(|| panic!("Fetch stream ended at {next}, before {to}"));
        assert_code(&msg.error, ErrorCode::None, "Fetch");
        let records: Vec<Record> = if decode {
            assert!(msg.batches.is_empty(), "decode=true answered raw batches");
            msg.records.into_iter().map(from_proto).collect()
        } else {
            assert!(
                msg.records.is_empty(),
                "decode=false answered decoded records"
            );
            let mut records = Vec::new();
            for batch in Batches::new(msg.batches) {
                let batch = batch.expect("a fetched batch is valid");
                records.extend(batch.records().expect("a fetched batch decodes"));
            }
            records
        };
        for r in records {
            if r.offset < next {
                // Raw batches may start before the requested offset.
                assert!(!decode, "decoded record {} before {next}", r.offset);
                continue;
            }
            if r.offset >= to {
                break;
            }
            next = r.offset + 1;
            out.push(r);
        }
    }
    out
}

/// The value of a record as text.
fn text(value: &Option<Bytes>) -> String {
    String::from_utf8_lossy(value.as_deref().unwrap_or(b"<null>")).into_owned()
}

/// Asserts that `got` holds exactly `expected`, at consecutive offsets from `from`. Expected
/// records with timestamp 0 take the broker's clock: they must fall in `[t0, t1]`.
#[track_caller]
fn assert_records(got: &[Record], expected: &[Record], from: i64, clock: (i64, i64), what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: record count");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let offset = from + i as i64;
        assert_eq!(g.offset, offset, "{what}: offsets are consecutive");
        assert_eq!(g.key, e.key, "{what}: key at offset {offset}");
        assert_eq!(g.value, e.value, "{what}: value at offset {offset}");
        assert_eq!(g.headers, e.headers, "{what}: headers at offset {offset}");
        if e.timestamp == 0 {
            assert!(
                (clock.0 - 1000..=clock.1 + 1000).contains(&g.timestamp),
                "{what}: broker-stamped timestamp {} at offset {offset} not in {clock:?}",
                g.timestamp
            );
        } else {
            assert_eq!(
                g.timestamp, e.timestamp,
                "{what}: timestamp at offset {offset}"
            );
        }
    }
}

/// Every record in a node's on-disk log of one partition (`<data-dir>/logs/<topic>-<p>/`),
/// segment by segment, up to the first batch that does not validate (a tail being written).
fn disk_records(data_dir: &Path, topic: &str, partition: u32) -> Vec<Record> {
    let dir = data_dir.join("logs").join(format!("{topic}-{partition}"));
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let bytes = Bytes::from(std::fs::read(&segment).unwrap_or_default());
        for batch in Batches::new(bytes) {
            let Ok(batch) = batch else { break };
            let Ok(records) = batch.records() else { break };
            out.extend(records);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Produce and consume
// ---------------------------------------------------------------------------------------------

/// The records of one partition in the first test: plain and batch produce requests mixed,
/// null keys and values, headers with null values, broker-stamped and explicit timestamps.
/// Batch records carry create times half an hour ahead (within message.timestamp.after.max.ms)
/// so ListOffsets by timestamp finds them.
fn sample_segments(partition: u32, now: i64) -> Vec<(bool, Vec<Record>)> {
    let future = now + 1_800_000;
    let rec = |i: usize, ts: i64, key: bool, value: Option<String>| Record {
        offset: 0,
        timestamp: ts,
        key: key.then(|| Bytes::from(format!("p{partition}-key-{i}"))),
        value: value.map(Bytes::from),
        headers: if i % 2 == 1 {
            Vec::new()
        } else {
            vec![
                Header {
                    key: "trace".into(),
                    value: Some(Bytes::from(format!("t{i}"))),
                },
                Header {
                    key: "nothing".into(),
                    value: None,
                },
            ]
        },
    };
    let value = |i: usize| Some(format!("p{partition}-value-{i}-{}", "x".repeat(i * 13)));
    // Offsets 0..5: plain, broker clock, the first with a null key.
    let a = (0..5).map(|i| rec(i, 0, i != 0, value(i))).collect();
    // Offsets 5..15: one batch, create times future+0..9.
    let b = (5..15)
        .map(|i| rec(i, future + (i as i64 - 5), true, value(i)))
        .collect();
    // Offsets 15..18: plain with explicit past timestamps; 16 is a tombstone (null value).
    let c = (15..18)
        .map(|i| {
            let v = (i != 16).then(|| value(i)).flatten();
            rec(i, now - 1000 + i as i64, true, v)
        })
        .collect();
    // Offsets 18..25: one batch, create times future+100..106.
    let d = (18..25)
        .map(|i| rec(i, future + 100 + (i as i64 - 18), true, value(i)))
        .collect();
    vec![(false, a), (true, b), (false, c), (true, d)]
}

#[tokio::test]
async fn produce_and_consume_through_a_three_node_cluster_with_rf3() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(1, 3, STARTUP).await;

    // Created through a broker, which forwards admin requests to the controller quorum.
    let created = cluster
        .broker_client(2)
        .create_topic(pb::CreateTopicRequest {
            name: "events".into(),
            partitions: 3,
            replication_factor: 3,
            configs: Default::default(),
        })
        .await
        .expect("CreateTopic through a broker")
        .into_inner();
    assert_code(
        &created.error,
        ErrorCode::None,
        "CreateTopic through a broker",
    );

    let md = wait_topic_ready(&mut cluster, "events", 3, 3).await;
    assert_eq!(md.brokers.len(), 3, "{:?}", md.brokers);
    let controller = cluster.wait_leader(STARTUP).await;
    assert_eq!(
        md.controller_id, controller,
        "Metadata names the controller leader"
    );
    for b in &md.brokers {
        assert_eq!(
            b.address,
            cluster.node(b.id).broker_addr(),
            "advertised address"
        );
        assert_eq!(b.state(), weir_proto::common::v1::BrokerState::Active);
    }
    let topic = md.topics.iter().find(|t| t.name == "events").unwrap();
    assert_eq!(topic.partitions.len(), 3);
    assert!(!topic.id.is_empty());
    for p in &topic.partitions {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3, "{p:?}");
        assert!(p.replicas.contains(&(p.leader as u64)), "{p:?}");
        assert!(p.leader_epoch >= 0, "{p:?}");
    }

    let now = now_ms();
    let t0 = now_ms();
    let mut expected_by_partition = Vec::new();
    for partition in 0..3u32 {
        let (_, addr) = leader_of(&md, "events", partition).unwrap();
        let mut leader = broker_client_at(&addr);
        let mut expected = Vec::new();
        for (as_batch, records) in sample_segments(partition, now) {
            let body = if as_batch {
                Records::Batch(build_batch(&records))
            } else {
                plain(&records)
            };
            let r = produce(&mut leader, produce_req("events", partition, -1, body)).await;
            let what = format!("produce to events-{partition} (batch: {as_batch})");
            assert_code(&r.error, ErrorCode::None, &what);
            assert_eq!(r.base_offset, expected.len() as i64, "{what}: base offset");
            assert_eq!(r.log_start_offset, 0, "{what}");
            assert_eq!(r.log_append_time, -1, "{what}: CreateTime topics report -1");
            expected.extend(records);
        }
        expected_by_partition.push((addr, expected));
    }
    let t1 = now_ms();

    for (partition, (addr, expected)) in expected_by_partition.iter().enumerate() {
        let partition = partition as u32;
        let mut leader = broker_client_at(addr);
        let count = expected.len() as i64;
        for decode in [true, false] {
            let what = format!("events-{partition} decode={decode}");
            let got = fetch_range(&mut leader, "events", partition, 0, count, decode).await;
            assert_records(&got, expected, 0, (t0, t1), &what);
            // From the middle of a batch: raw batches may start earlier, records may not.
            let got = fetch_range(&mut leader, "events", partition, 7, count, decode).await;
            assert_records(&got, &expected[7..], 7, (t0, t1), &format!("{what} from 7"));
        }

        let earliest = list_offset(&mut leader, "events", partition, -2).await;
        assert_code(&earliest.error, ErrorCode::None, "ListOffsets earliest");
        assert_eq!(earliest.offset, 0);
        let latest = list_offset(&mut leader, "events", partition, -1).await;
        assert_code(&latest.error, ErrorCode::None, "ListOffsets latest");
        assert_eq!(latest.offset, count, "latest offset of events-{partition}");

        // By timestamp: the first record at or after it.
        let future = now + 1_800_000;
        let at = list_offset(&mut leader, "events", partition, future + 2).await;
        assert_code(&at.error, ErrorCode::None, "ListOffsets by timestamp");
        assert_eq!((at.offset, at.timestamp), (7, future + 2));
        let at = list_offset(&mut leader, "events", partition, future + 50).await;
        assert_eq!((at.offset, at.timestamp), (18, future + 100));
        let none = list_offset(&mut leader, "events", partition, future + 3_600_000).await;
        assert_code(
            &none.error,
            ErrorCode::None,
            "ListOffsets past every record",
        );
        assert_eq!(
            none.offset, -1,
            "no record at or after a timestamp past them all"
        );
    }

    // A Fetch stream stays open at the log end and delivers what is committed later.
    let (addr, expected) = &expected_by_partition[0];
    let end = expected.len() as i64;
    let mut leader = broker_client_at(addr);
    let mut stream = leader
        .fetch(bpb::FetchRequest {
            topic: "events".into(),
            partition: 0,
            offset: end,
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait_ms: 200,
            decode: true,
        })
        .await
        .expect("Fetch RPC")
        .into_inner();
    let late = Record {
        value: Some(Bytes::from_static(b"late arrival")),
        ..Record::default()
    };
    let r = produce(&mut leader, produce_req("events", 0, 1, plain(&[late]))).await;
    assert_code(&r.error, ErrorCode::None, "late produce");
    assert_eq!(r.base_offset, end);
    let delivered = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let msg = stream
                .message()
                .await
                .expect("Fetch stream")
                .expect("stream open");
            assert_code(&msg.error, ErrorCode::None, "tailing Fetch");
            assert!(msg.high_watermark >= end, "{msg:?}");
            if let Some(r) = msg.records.into_iter().next() {
                return r;
            }
        }
    })
    .await
    .expect("the open Fetch stream delivered the new record");
    assert_eq!(delivered.offset, end);
    assert_eq!(delivered.value.as_deref(), Some(&b"late arrival"[..]));
}

// ---------------------------------------------------------------------------------------------
// acks=all across a leader kill
// ---------------------------------------------------------------------------------------------

const DURABLE: &str = "durable";
const PER_BATCH: u64 = 20;

/// A batch the leader acknowledged with acks=all.
#[derive(Debug, Clone)]
struct Acked {
    /// Number of its first record (values are `rec-N`).
    first: u64,
    /// Offset the leader assigned to its first record.
    base_offset: i64,
    /// Address of the broker that acknowledged it.
    addr: String,
}

#[derive(Default)]
struct ProducerState {
    stop: AtomicBool,
    acked: Mutex<Vec<Acked>>,
    unexpected: Mutex<Vec<String>>,
    retries: Mutex<u64>,
}

/// The leader of `DURABLE`-0 according to the first broker in `addrs` that answers.
async fn find_leader(
    addrs: &[String],
    clients: &mut HashMap<String, BrokerClient<Channel>>,
    rotate: usize,
) -> Option<String> {
    for i in 0..addrs.len() {
        let addr = &addrs[(i + rotate) % addrs.len()];
        let client = clients
            .entry(addr.clone())
            .or_insert_with(|| broker_client_at(addr));
        let req = bpb::MetadataRequest {
            topics: vec![DURABLE.into()],
        };
        let Ok(Ok(md)) = tokio::time::timeout(Duration::from_secs(2), client.metadata(req)).await
        else {
            continue;
        };
        if let Some((_, leader)) = leader_of(&md.into_inner(), DURABLE, 0) {
            return Some(leader);
        }
    }
    None
}

/// Sends numbered records with acks=all, one batch at a time, to the current leader; retries
/// the same batch until it is acknowledged (so a batch may land twice, never out of order).
async fn producer_loop(addrs: Vec<String>, st: Arc<ProducerState>) {
    let mut clients: HashMap<String, BrokerClient<Channel>> = HashMap::new();
    let mut leader: Option<String> = None;
    let mut next = 0u64;
    let mut rotate = 0usize;
    'batches: while !st.stop.load(Ordering::SeqCst) {
        let records: Vec<Record> = (next..next + PER_BATCH)
            .map(|n| Record {
                key: Some(Bytes::from(format!("k{}", n % 7))),
                value: Some(Bytes::from(format!("rec-{n}"))),
                timestamp: now_ms(),
                ..Record::default()
            })
            .collect();
        let batch = build_batch(&records);
        loop {
            if st.stop.load(Ordering::SeqCst) {
                break 'batches; // an unacknowledged batch is abandoned (it may have landed)
            }
            let addr = match leader.clone() {
                Some(addr) => addr,
                None => {
                    rotate += 1;
                    match find_leader(&addrs, &mut clients, rotate).await {
                        Some(addr) => {
                            leader = Some(addr.clone());
                            addr
                        }
                        None => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
            };
            let mut client = clients
                .entry(addr.clone())
                .or_insert_with(|| broker_client_at(&addr))
                .clone();
            let mut req = produce_req(DURABLE, 0, -1, Records::Batch(batch.clone()));
            req.timeout_ms = 5000;
            let answer = tokio::time::timeout(Duration::from_secs(8), client.produce(req)).await;
            let r = match answer {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(_)) | Err(_) => {
                    // Connection refused or reset, or no answer: ask Metadata again.
                    *st.retries.lock().unwrap() += 1;
                    leader = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let c = code(&r.error);
            if c == ErrorCode::None as i32 {
                st.acked.lock().unwrap().push(Acked {
                    first: next,
                    base_offset: r.base_offset,
                    addr,
                });
                next += PER_BATCH;
                continue 'batches;
            }
            *st.retries.lock().unwrap() += 1;
            if c == ErrorCode::NotLeaderOrFollower as i32 {
                leader = (!r.leader_address.is_empty() && r.leader_address != addr)
                    .then_some(r.leader_address);
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else if c == ErrorCode::NotEnoughReplicas as i32
                || c == ErrorCode::NotEnoughReplicasAfterAppend as i32
                || c == ErrorCode::RequestTimedOut as i32
            {
                leader = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                st.unexpected.lock().unwrap().push(format!(
                    "{} from {addr}: {:?}",
                    code_name(c),
                    r.error
                ));
                leader = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Parses `rec-N`.
fn number(r: &Record) -> u64 {
    text(&r.value)
        .strip_prefix("rec-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "unexpected value at offset {}: {}",
                r.offset,
                text(&r.value)
            )
        })
}

/// Checks a partition read from offset 0: offsets consecutive, every acknowledged batch at
/// the offsets it was acknowledged with, first appearances of numbers increasing.
#[track_caller]
fn check_durable_log(log: &[Record], acked: &[Acked]) {
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r.offset, i as i64, "no gap or duplicate offset");
    }
    for a in acked {
        for i in 0..PER_BATCH {
            let offset = a.base_offset + i as i64;
            let r = log.get(offset as usize).unwrap_or_else(|| {
                panic!(
                    "acked batch {a:?}: offset {offset} missing (log ends at {})",
                    log.len()
                )
            });
            assert_eq!(
                number(r),
                a.first + i,
                "acked batch {a:?} at offset {offset}"
            );
        }
    }
    let mut seen = BTreeSet::new();
    let mut last_first: Option<u64> = None;
    for r in log {
        let n = number(r);
        if seen.insert(n) {
            assert!(
                !matches!(last_first, Some(l) if n <= l),
                "first appearance of {n} at offset {} after {last_first:?}",
                r.offset
            );
            last_first = Some(n);
        }
    }
}

#[tokio::test]
async fn acked_records_survive_leader_kill_under_acks_all_load() {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(controller, 3, STARTUP).await;
    let r = cluster
        .create_topic_with(controller, DURABLE, 1, 3, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, DURABLE, 1, 3).await;
    let (old_leader, old_addr) = leader_of(&md, DURABLE, 0).unwrap();

    let addrs: Vec<String> = (1..=3).map(|id| cluster.node(id).broker_addr()).collect();
    let state = Arc::new(ProducerState::default());
    let producer = tokio::spawn(producer_loop(addrs, state.clone()));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = state.acked.lock().unwrap().len();
    assert!(
        before_kill > 0,
        "nothing acknowledged in 2 s; leader log:\n{}",
        cluster.log_tail(old_leader)
    );
    cluster.kill(old_leader);
    let killed = Instant::now();

    let st = state.clone();
    let old = old_addr.clone();
    wait_for(
        "an acks=all ack from a new leader",
        Duration::from_secs(25),
        || {
            let ok = st.acked.lock().unwrap().iter().any(|a| a.addr != old);
            async move { ok.then_some(()) }
        },
    )
    .await;
    let failover = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    state.stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(15), producer)
        .await
        .expect("the producer stops")
        .unwrap();

    let acked = state.acked.lock().unwrap().clone();
    let unexpected = state.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "unexpected produce errors: {unexpected:?}"
    );
    let after_kill = acked.iter().filter(|a| a.addr != old_addr).count();
    assert!(after_kill > 0);

    let (new_leader, new_addr) = wait_leader_of(&mut cluster, DURABLE, 0, Some(old_leader)).await;
    let mut client = broker_client_at(&new_addr);
    let hw = list_offset(&mut client, DURABLE, 0, -1).await;
    assert_code(
        &hw.error,
        ErrorCode::None,
        "ListOffsets latest on the new leader",
    );
    let hw = hw.offset;
    let log = fetch_range(&mut client, DURABLE, 0, 0, hw, false).await;
    check_durable_log(&log, &acked);
    let numbers: BTreeSet<u64> = log.iter().map(number).collect();
    let acked_count = acked.len() as u64 * PER_BATCH;
    assert!((0..acked_count).all(|n| numbers.contains(&n)));
    eprintln!(
        "acked {} batches ({before_kill} before the kill, {after_kill} by the new leader \
         {new_leader}), failover {failover:?}, {} retries, log of {hw} records",
        acked.len(),
        *state.retries.lock().unwrap()
    );

    // The old leader comes back, truncates what it had past the new leader's epoch, catches up
    // and rejoins the ISR.
    cluster.spawn(old_leader);
    wait_for(
        "the old leader back in the ISR",
        Duration::from_secs(30),
        || {
            let fut = metadata(&mut cluster, new_leader, DURABLE);
            async move {
                let md = fut.await?;
                let p = partition_md(&md, DURABLE, 0)?;
                (p.isr.len() == 3 && p.leader >= 0).then_some(())
            }
        },
    )
    .await;
    let (_, leader_addr) = wait_leader_of(&mut cluster, DURABLE, 0, None).await;
    let mut client = broker_client_at(&leader_addr);
    let end = list_offset(&mut client, DURABLE, 0, -1).await.offset;
    assert!(end >= hw, "the high watermark went back from {hw} to {end}");
    let again = fetch_range(&mut client, DURABLE, 0, 0, end, true).await;
    check_durable_log(&again, &acked);
    for (a, b) in log.iter().zip(&again) {
        assert_eq!(
            (a.offset, &a.value),
            (b.offset, &b.value),
            "committed records changed"
        );
    }

    // Its log on disk is the leader's, record for record: the divergent tail it had when it
    // was killed is gone.
    let data_dir = cluster.node(old_leader).data_dir.clone();
    wait_for(
        "the old leader's log equal to the leader's",
        Duration::from_secs(15),
        || {
            let disk = disk_records(&data_dir, DURABLE, 0);
            let same = disk.len() == again.len()
                && disk
                    .iter()
                    .zip(&again)
                    .all(|(d, l)| d.offset == l.offset && d.value == l.value);
            async move { same.then_some(()) }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------------

/// The first answer of a Fetch stream (an error answer ends it).
async fn first_fetch_answer(
    client: &mut BrokerClient<Channel>,
    topic: &str,
    partition: u32,
    offset: i64,
) -> bpb::FetchResponse {
    let req = bpb::FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        max_bytes: 1 << 20,
        min_bytes: 1,
        max_wait_ms: 200,
        decode: false,
    };
    let mut stream = client.fetch(req).await.expect("Fetch RPC").into_inner();
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a Fetch answer within 10 s")
        .expect("Fetch stream")
        .expect("a Fetch answer, not the end of the stream")
}

#[tokio::test]
async fn bad_produce_and_fetch_requests_get_error_codes() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(controller, 3, STARTUP).await;
    let r = cluster
        .create_topic_with(controller, "strict", 1, 3, &[("max.message.bytes", "2048")])
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, "strict", 1, 3).await;
    let (leader_id, leader_addr) = leader_of(&md, "strict", 0).unwrap();
    let follower_id = (1..=3).find(|id| *id != leader_id).unwrap();
    let mut leader = broker_client_at(&leader_addr);
    let mut follower = cluster.broker_client(follower_id);

    let good = vec![Record {
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"the only record")),
        ..Record::default()
    }];
    let r = produce(&mut leader, produce_req("strict", 0, -1, plain(&good))).await;
    assert_code(&r.error, ErrorCode::None, "good produce");
    assert_eq!(r.base_offset, 0);

    let batch = build_batch(&good);
    let mut flipped = batch.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let mut lying_length = batch.to_vec();
    lying_length[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut bad_magic = batch.to_vec();
    bad_magic[16] = 1;
    let big = vec![Record {
        value: Some(Bytes::from(vec![b'x'; 4000])),
        ..Record::default()
    }];

    let raw = |bytes: Vec<u8>| Records::Batch(Bytes::from(bytes));
    let to_leader = |topic: &str, partition: u32, acks: i32, records: Records| {
        (false, produce_req(topic, partition, acks, records))
    };
    let cases: Vec<(&str, (bool, bpb::ProduceRequest), ErrorCode)> = vec![
        (
            "unknown topic",
            to_leader("no-such-topic", 0, -1, plain(&good)),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            "unknown partition",
            to_leader("strict", 7, -1, plain(&good)),
            ErrorCode::UnknownTopicOrPartition,
        ),
        (
            "flipped byte (bad CRC)",
            to_leader("strict", 0, -1, raw(flipped)),
            ErrorCode::CorruptMessage,
        ),
        (
            "truncated batch",
            to_leader("strict", 0, -1, raw(batch[..batch.len() - 5].to_vec())),
            ErrorCode::CorruptMessage,
        ),
        (
            "truncated header",
            to_leader("strict", 0, -1, raw(batch[..30].to_vec())),
            ErrorCode::CorruptMessage,
        ),
        (
            "garbage bytes",
            to_leader("strict", 0, -1, raw(b"hello, broker".to_vec())),
            ErrorCode::CorruptMessage,
        ),
        (
            "length field of i32::MAX",
            to_leader("strict", 0, -1, raw(lying_length)),
            ErrorCode::CorruptMessage,
        ),
        (
            "magic 1",
            to_leader("strict", 0, -1, raw(bad_magic)),
            ErrorCode::CorruptMessage,
        ),
        (
            "batch over max.message.bytes",
            to_leader("strict", 0, -1, Records::Batch(build_batch(&big))),
            ErrorCode::RecordTooLarge,
        ),
        (
            "plain records over max.message.bytes",
            to_leader("strict", 0, -1, plain(&big)),
            ErrorCode::RecordTooLarge,
        ),
        (
            "acks=5",
            to_leader("strict", 0, 5, plain(&good)),
            ErrorCode::InvalidRequiredAcks,
        ),
        (
            "acks=-2",
            to_leader("strict", 0, -2, Records::Batch(batch.clone())),
            ErrorCode::InvalidRequiredAcks,
        ),
        (
            "to a follower",
            (true, produce_req("strict", 0, -1, plain(&good))),
            ErrorCode::NotLeaderOrFollower,
        ),
    ];
    for (what, (to_follower, req), expected) in cases {
        let client = if to_follower {
            &mut follower
        } else {
            &mut leader
        };
        let r = produce(client, req).await;
        assert_code(&r.error, expected, what);
        assert_eq!(r.base_offset, -1, "{what}: base offset on error");
        if expected == ErrorCode::NotLeaderOrFollower {
            assert_eq!(r.leader_address, leader_addr, "{what}: names the leader");
        }
    }
    // No records at all: not a valid produce request, whatever the code.
    for (what, records) in [
        ("no records field", None),
        ("an empty record list", Some(plain(&[]))),
    ] {
        let mut req = produce_req("strict", 0, -1, plain(&good));
        req.records = records;
        let r = produce(&mut leader, req).await;
        assert_ne!(code(&r.error), 0, "{what} was accepted: {r:?}");
    }

    // Fetch.
    let r = first_fetch_answer(&mut leader, "no-such-topic", 0, 0).await;
    assert_code(
        &r.error,
        ErrorCode::UnknownTopicOrPartition,
        "fetch unknown topic",
    );
    let r = first_fetch_answer(&mut leader, "strict", 3, 0).await;
    assert_code(
        &r.error,
        ErrorCode::UnknownTopicOrPartition,
        "fetch unknown partition",
    );
    let r = first_fetch_answer(&mut follower, "strict", 0, 0).await;
    assert_code(
        &r.error,
        ErrorCode::NotLeaderOrFollower,
        "fetch from a follower",
    );
    assert_eq!(
        r.leader_address, leader_addr,
        "fetch from a follower names the leader"
    );
    let r = first_fetch_answer(&mut leader, "strict", 0, 100).await;
    assert_code(
        &r.error,
        ErrorCode::OffsetOutOfRange,
        "fetch beyond the end",
    );
    let r = first_fetch_answer(&mut leader, "strict", 0, -5).await;
    assert_code(
        &r.error,
        ErrorCode::OffsetOutOfRange,
        "fetch at a negative offset",
    );
    // At the log end is not an error: an empty answer that reports the high watermark.
    let r = first_fetch_answer(&mut leader, "strict", 0, 1).await;
    assert_code(&r.error, ErrorCode::None, "fetch at the log end");
    assert_eq!(r.high_watermark, 1);
    assert!(r.batches.is_empty() && r.records.is_empty(), "{r:?}");

    // ListOffsets.
    let r = list_offset(&mut follower, "strict", 0, -1).await;
    assert_code(
        &r.error,
        ErrorCode::NotLeaderOrFollower,
        "ListOffsets on a follower",
    );
    assert_eq!(r.leader_address, leader_addr);
    let r = list_offset(&mut leader, "no-such-topic", 0, -1).await;
    assert_code(
        &r.error,
        ErrorCode::UnknownTopicOrPartition,
        "ListOffsets unknown topic",
    );

    // Nothing was appended: not committed, not even in the leader's log.
    let latest = list_offset(&mut leader, "strict", 0, -1).await;
    assert_code(&latest.error, ErrorCode::None, "ListOffsets latest");
    assert_eq!(latest.offset, 1, "bad requests appended records");
    let offsets = leader
        .partition_offsets(bpb::PartitionOffsetsRequest {
            topic: "strict".into(),
        })
        .await
        .expect("PartitionOffsets RPC")
        .into_inner();
    assert_code(&offsets.error, ErrorCode::None, "PartitionOffsets");
    let p = offsets
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .unwrap();
    assert_eq!(
        (p.log_start_offset, p.high_watermark, p.log_end_offset),
        (0, 1, 1)
    );
    let got = fetch_range(&mut leader, "strict", 0, 0, 1, true).await;
    assert_records(&got, &good, 0, (0, now_ms()), "the only record");

    for id in 1..=3 {
        assert!(cluster.node(id).is_running(), "node {id} died");
        assert_eq!(cluster.log_panics(id), "", "node {id}");
    }
}

// ---------------------------------------------------------------------------------------------
// min.insync.replicas
// ---------------------------------------------------------------------------------------------

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
    let values: Vec<String> = got.iter().map(|r| text(&r.value)).collect();
    assert_eq!(values, ["a", "b"]);

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

// ---------------------------------------------------------------------------------------------
// Segment preallocation
// ---------------------------------------------------------------------------------------------

/// (file length, bytes of disk blocks allocated) of a partition's first segment. A segment
/// that is not there fails the test: a missing file reserves nothing either, but proves
/// nothing.
fn first_segment_usage(data_dir: &Path, topic: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let path = data_dir
        .join("logs")
        .join(format!("{topic}-0"))
        .join(format!("{:020}.log", 0));
    let m = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.len(), m.blocks() * 512)
}

/// A partition being written to gets disk blocks reserved ahead of its active segment (so its
/// appends don't wait on block allocation during writeback) without its file growing; an
/// idle partition reserves nothing, so many idle partitions cost no disk.
#[tokio::test]
async fn busy_partitions_reserve_disk_ahead_and_idle_ones_do_not() {
    let _serial = serial();
    let mut cluster = Cluster::start(1, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    for topic in ["busy", "idle"] {
        let r = cluster
            .create_topic(1, topic, 1, 1)
            .await
            .expect("CreateTopic");
        assert_code(&r.error, ErrorCode::None, "CreateTopic");
        wait_topic_ready(&mut cluster, topic, 1, 1).await;
    }
    let mut client = cluster.broker_client(1);
    let value = vec![b'x'; 1000];
    let records: Vec<Record> = (0..60)
        .map(|i| Record {
            timestamp: now_ms(),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(value.clone())),
            ..Record::default()
        })
        .collect();
    let batch = build_batch(&records);
    for _ in 0..50 {
        let r = produce(
            &mut client,
            produce_req("busy", 0, 1, Records::Batch(batch.clone())),
        )
        .await;
        assert_code(&r.error, ErrorCode::None, "produce to busy");
    }
    let data_dir = cluster.node(1).data_dir.clone();
    let (len, allocated) = wait_for(
        "blocks reserved past the end of busy-0's segment",
        Duration::from_secs(10),
        || {
            let usage = first_segment_usage(&data_dir, "busy");
            async move { (usage.1 >= usage.0 + (1 << 20)).then_some(usage) }
        },
    )
    .await;
    assert_eq!(
        len,
        50 * batch.len() as u64,
        "the file holds the batches and nothing more"
    );
    assert!(allocated <= len + (256 << 20), "at most one window ahead");
    let got = fetch_range(&mut client, "busy", 0, 0, 3000, false).await;
    assert_eq!(got.len(), 3000, "every record reads back");
    assert_eq!(
        first_segment_usage(&data_dir, "idle"),
        (0, 0),
        "an idle partition reserves nothing"
    );
}
