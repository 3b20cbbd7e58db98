//! Data-path helpers for cluster tests: records to and from the wire, produce, ListOffsets,
//! Metadata reads that wait for leaders and ISRs, Fetch streams read to an exact offset, and
//! what a node holds on disk (records, segment files) for checks that look past the RPCs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::transport::Channel;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_storage::batch::Batches;
use weir_storage::{BatchBuilder, Compression, Header, Record};

use super::{assert_code, code, wait_for, Cluster, STARTUP};

/// A storage record as a protobuf record (offset 0: the leader assigns it).
pub fn to_proto(r: &Record) -> bpb::Record {
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

/// A fetched protobuf record as a storage record.
pub fn from_proto(r: bpb::Record) -> Record {
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
pub fn build_batch(records: &[Record]) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None);
    for r in records {
        builder.push(r);
    }
    builder.build(0).unwrap()
}

/// `n` records with values `<prefix>-<i>` (i from 0, zero-padded so every value has the same
/// length) and keys `k<i>`, all stamped `timestamp`.
pub fn numbered(prefix: &str, n: usize, timestamp: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            timestamp,
            key: Some(Bytes::from(format!("k{i:04}"))),
            value: Some(Bytes::from(format!("{prefix}-{i:04}"))),
            ..Record::default()
        })
        .collect()
}

/// Records as a plain (protobuf) produce body.
pub fn plain(records: &[Record]) -> Records {
    Records::Plain(bpb::RecordList {
        records: records.iter().map(to_proto).collect(),
    })
}

/// A produce request with a 10 s acks=all timeout.
pub fn produce_req(
    topic: &str,
    partition: u32,
    acks: i32,
    records: Records,
) -> bpb::ProduceRequest {
    bpb::ProduceRequest {
        topic: topic.into(),
        partition,
        acks,
        timeout_ms: 10_000,
        records: Some(records),
    }
}

/// Produce; panics when the RPC itself fails (an error answer is returned).
pub async fn produce(
    client: &mut BrokerClient<Channel>,
    req: bpb::ProduceRequest,
) -> bpb::ProduceResponse {
    client.produce(req).await.expect("Produce RPC").into_inner()
}

/// ListOffsets; `timestamp` -1 is the latest offset, -2 the earliest.
pub async fn list_offset(
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
pub fn metadata(
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
pub fn partition_md(
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
pub fn leader_of(md: &bpb::MetadataResponse, topic: &str, partition: u32) -> Option<(u64, String)> {
    let p = partition_md(md, topic, partition)?;
    let id = u64::try_from(p.leader).ok()?;
    let broker = md.brokers.iter().find(|b| b.id == id)?;
    Some((id, broker.address.clone()))
}

/// Waits until Metadata answered by every running node shows each of the `partitions` of
/// `topic` with a leader and exactly `isr` in-sync replicas, and each leader leads on its
/// broker ([`wait_leading`]); returns the first node's answer.
pub async fn wait_topic_ready(
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
    let md = first.expect("no running node");
    for p in 0..partitions {
        let (_, addr) = leader_of(&md, topic, p).expect("a leader");
        wait_leading(&super::broker_client_at(&addr), topic, p).await;
    }
    md
}

/// Waits for the leader of `topic`/`partition` as some running node sees it (not `not`).
pub async fn wait_leader_of(
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
pub async fn fetch_range(
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

/// The first answer of a Fetch stream (an error answer ends it).
pub async fn first_fetch_answer(
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

/// The value of a record as text.
pub fn text(value: &Option<Bytes>) -> String {
    String::from_utf8_lossy(value.as_deref().unwrap_or(b"<null>")).into_owned()
}

/// The values of records as text, in order.
pub fn values(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| text(&r.value)).collect()
}

/// Asserts that `got` holds exactly `expected`, at consecutive offsets from `from`. Expected
/// records with timestamp 0 take the broker's clock: they must fall in `[t0, t1]`.
#[track_caller]
pub fn assert_records(
    got: &[Record],
    expected: &[Record],
    from: i64,
    clock: (i64, i64),
    what: &str,
) {
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

/// A node's log directory of one partition: `<data-dir>/logs/<topic>-<p>/`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join("logs").join(format!("{topic}-{partition}"))
}

/// The base offsets of the segment files (`<20-digit base offset>.log`) in a node's log of
/// one partition, in order; `None` when the directory cannot be read.
pub fn segment_bases(data_dir: &Path, topic: &str, partition: u32) -> Option<Vec<i64>> {
    let dir = partition_dir(data_dir, topic, partition);
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    Some(bases)
}

/// Every record in a node's on-disk log of one partition, segment by segment, up to the first
/// batch that does not validate (a tail being written).
pub fn disk_records(data_dir: &Path, topic: &str, partition: u32) -> Vec<Record> {
    let dir = partition_dir(data_dir, topic, partition);
    let mut out = Vec::new();
    for base in segment_bases(data_dir, topic, partition).unwrap_or_default() {
        let segment = dir.join(format!("{base:020}.log"));
        let bytes = Bytes::from(std::fs::read(&segment).unwrap_or_default());
        for batch in Batches::new(bytes) {
            let Ok(batch) = batch else { break };
            let Ok(records) = batch.records() else { break };
            out.extend(records);
        }
    }
    out
}

/// A client of the replication service (ReplicaFetch, OffsetForLeaderEpoch) at `addr`
/// (host:port; lazy: never blocks), unary calls bounded at 10 s.
pub fn replication_client_at(
    addr: &str,
) -> weir_proto::broker::v1::replication_client::ReplicationClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    weir_proto::broker::v1::replication_client::ReplicationClient::new(channel)
}

/// Waits until the broker behind `client` leads `topic`/`partition` itself (ListOffsets
/// answers without error): Metadata names a leader as soon as the broker has the metadata,
/// a moment before that broker has made its replica the leader.
pub async fn wait_leading(client: &BrokerClient<Channel>, topic: &str, partition: u32) {
    let what = format!("the broker leading {topic}-{partition}");
    wait_for(&what, STARTUP, || {
        let mut c = client.clone();
        let topic = topic.to_owned();
        async move {
            let r = c
                .list_offsets(bpb::ListOffsetsRequest {
                    topic,
                    partition,
                    timestamp: -1,
                })
                .await
                .ok()?
                .into_inner();
            r.error.is_none().then_some(())
        }
    })
    .await;
}
