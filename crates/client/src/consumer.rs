//! The consumer: one `Fetch` stream (raw RecordBatch v2, decoded here) per assigned partition,
//! merged into one stream of records.
//!
//! Partitions are assigned explicitly with [`Consumer::assign`]. A consumer-group
//! `subscribe(group, topics)` slots in above this: the group coordinator hands out
//! partitions and committed offsets, which become `assign` calls (and `unassign` on a
//! rebalance), and `position` is what gets committed; the fetch machinery in
//! [`Consumer::stream`] stays as it is.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_proto::broker::v1 as pb;
use weir_proto::common::v1::ErrorCode;
use weir_storage::batch::Batches;

use crate::config::{ClientConfig, ConsumerConfig};
use crate::error::{check, Error, Result};
use crate::metadata::Cluster;

/// How long to wait for an unknown topic to appear in metadata.
const TOPIC_WAIT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where to start reading a partition.
///
/// ```
/// use weir_client::Offset;
///
/// let from = [Offset::Earliest, Offset::Latest, Offset::At(42), Offset::Timestamp(1_700_000_000_000)];
/// assert_eq!(from[2], Offset::At(42));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// This offset.
    At(i64),
    /// The first record with a timestamp at or after this one (ms since the epoch); the
    /// high watermark when there is none.
    Timestamp(i64),
}

/// A consumed record, as [`Consumer::stream`] yields it.
///
/// ```
/// use bytes::Bytes;
/// use weir_client::ConsumerRecord;
///
/// let r = ConsumerRecord {
///     topic: "events".into(),
///     partition: 0,
///     offset: 7,
///     timestamp: 1_700_000_000_000,
///     key: Some(Bytes::from("user-42")),
///     value: None, // a tombstone
///     headers: vec![("trace".into(), Some(Bytes::from("abc")))],
/// };
/// assert!(r.value.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms since the epoch.
    pub timestamp: i64,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Reads assigned partitions.
///
/// ```no_run
/// # async fn example() -> weir_client::Result<()> {
/// use futures::StreamExt;
/// use weir_client::{ClientConfig, Consumer, ConsumerConfig, Offset};
///
/// let mut consumer =
///     Consumer::connect(ClientConfig::new(["127.0.0.1:9700"]), ConsumerConfig::default()).await?;
/// for p in consumer.partitions_for("events").await? {
///     consumer.assign("events", p, Offset::Earliest).await?;
/// }
/// let mut records = consumer.stream();
/// while let Some(record) = records.next().await {
///     let record = record?;
///     println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    /// topic → partition → next offset to hand out.
    positions: BTreeMap<String, BTreeMap<u32, i64>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connects to the cluster (metadata from the first reachable bootstrap address).
    pub async fn connect(client: ClientConfig, config: ConsumerConfig) -> Result<Consumer> {
        let cluster = Cluster::connect(client).await?;
        Ok(Consumer {
            cluster,
            config,
            positions: BTreeMap::new(),
        })
    }

    /// The partitions of `topic`; UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<u32>> {
        let snap = self.cluster.topic(topic, TOPIC_WAIT).await?;
        let count = snap.partition_count(topic).unwrap_or(0) as u32;
        Ok((0..count).collect())
    }

    /// Reads `topic`/`partition` from `from` on (replacing an earlier assignment of it).
    /// `Earliest`, `Latest` and `Timestamp` are resolved now, with ListOffsets on the leader.
    pub async fn assign(&mut self, topic: &str, partition: u32, from: Offset) -> Result<()> {
        let count = self.partitions_for(topic).await?.len();
        if partition as usize >= count {
            return Err(Error::InvalidInput(format!(
                "partition {partition} of topic `{topic}` does not exist ({count} partitions)"
            )));
        }
        let offset = match from {
            Offset::At(offset) if offset < 0 => {
                return Err(Error::InvalidInput(format!("offset {offset} is negative")))
            }
            Offset::At(offset) => offset,
            Offset::Earliest => self.list_offset(topic, partition, -2).await?,
            Offset::Latest => self.list_offset(topic, partition, -1).await?,
            Offset::Timestamp(ts) if ts < 0 => {
                return Err(Error::InvalidInput(format!("timestamp {ts} is negative")))
            }
            Offset::Timestamp(ts) => match self.list_offset(topic, partition, ts).await? {
                -1 => self.list_offset(topic, partition, -1).await?,
                offset => offset,
            },
        };
        self.positions
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, offset);
        Ok(())
    }

    /// Moves an assigned partition to `to` (an offset, the earliest or latest offset, or the
    /// first record at or after a timestamp); the next [`Consumer::stream`] reads from there.
    /// Fails with `InvalidInput` when the partition is not assigned.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: Offset) -> Result<()> {
        if self.position(topic, partition).is_none() {
            return Err(Error::InvalidInput(format!(
                "partition {partition} of topic `{topic}` is not assigned; assign it first"
            )));
        }
        self.assign(topic, partition, to).await
    }

    /// Stops reading `topic`/`partition`; whether it was assigned.
    pub fn unassign(&mut self, topic: &str, partition: u32) -> bool {
        let Some(parts) = self.positions.get_mut(topic) else {
            return false;
        };
        let was = parts.remove(&partition).is_some();
        if parts.is_empty() {
            self.positions.remove(topic);
        }
        was
    }

    /// The assigned partitions with their positions.
    pub fn assignment(&self) -> Vec<(String, u32, i64)> {
        self.positions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, o)| (t.clone(), *p, *o)))
            .collect()
    }

    /// The next offset [`Consumer::stream`] hands out for an assigned partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.positions.get(topic)?.get(&partition).copied()
    }

    /// The records of every assigned partition, each partition in offset order, starting at
    /// its position (positions advance as records are yielded; a later `stream()` resumes
    /// there). A partition whose leader moves or whose stream breaks is reopened at its
    /// position after refreshing metadata, for as long as the stream lives.
    /// OFFSET_OUT_OF_RANGE, other non-retriable server errors and undecodable batches are
    /// yielded as errors and end that partition's reading; the others go on.
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord>> + '_ {
        let count: usize = self.positions.values().map(BTreeMap::len).sum();
        let (tx, rx) = mpsc::channel(count.clamp(1, 64) * 2);
        let mut tasks = Vec::with_capacity(count);
        for (topic, parts) in &self.positions {
            for (&partition, &offset) in parts {
                tasks.push(tokio::spawn(fetch_partition(
                    Arc::clone(&self.cluster),
                    self.config.clone(),
                    topic.clone(),
                    partition,
                    offset,
                    tx.clone(),
                )));
            }
        }
        RecordStream {
            positions: &mut self.positions,
            rx,
            buffer: VecDeque::new(),
            tasks,
        }
    }

    /// ListOffsets on the partition's leader, retrying leader moves for up to the request
    /// timeout.
    async fn list_offset(&self, topic: &str, partition: u32, timestamp: i64) -> Result<i64> {
        let timeout = self.cluster.config.request_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let err = match self.cluster.leader(topic, partition, remaining).await {
                Err(e) => e,
                Ok(addr) => {
                    let mut client = self.cluster.client(&addr)?;
                    let req = pb::ListOffsetsRequest {
                        topic: topic.to_owned(),
                        partition,
                        timestamp,
                    };
                    match tokio::time::timeout(timeout, client.list_offsets(req)).await {
                        Ok(Ok(r)) => {
                            let r = r.into_inner();
                            match check(r.error) {
                                Ok(()) => return Ok(r.offset),
                                Err(e) => e,
                            }
                        }
                        Ok(Err(status)) => Error::from(status),
                        Err(_) => Error::Timeout(format!("ListOffsets to {addr}")),
                    }
                }
            };
            if !err.is_retriable() || Instant::now() >= deadline {
                return Err(err);
            }
            let seen = self.cluster.snapshot().generation;
            let _ = self.cluster.refresh(seen).await;
            tokio::time::sleep(MIN_BACKOFF).await;
        }
    }
}

/// Merges the partitions' record chunks; aborts the fetch tasks when dropped.
struct RecordStream<'a> {
    positions: &'a mut BTreeMap<String, BTreeMap<u32, i64>>,
    rx: mpsc::Receiver<Result<Vec<ConsumerRecord>>>,
    buffer: VecDeque<ConsumerRecord>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RecordStream<'_> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Stream for RecordStream<'_> {
    type Item = Result<ConsumerRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(record) = this.buffer.pop_front() {
                if let Some(pos) = this
                    .positions
                    .get_mut(&record.topic)
                    .and_then(|ps| ps.get_mut(&record.partition))
                {
                    *pos = record.offset + 1;
                }
                return Poll::Ready(Some(Ok(record)));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buffer.extend(chunk),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How one Fetch stream ended.
enum SessionEnd {
    /// The consumer went away.
    Closed,
    /// Reopen after a backoff (and a metadata refresh).
    Retry(Error),
    /// Report and stop reading this partition.
    Fatal(Error),
}

/// Reads one partition for as long as the consumer's stream lives.
async fn fetch_partition(
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    topic: String,
    partition: u32,
    mut offset: i64,
    tx: mpsc::Sender<Result<Vec<ConsumerRecord>>>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let before = offset;
        match fetch_session(&cluster, &config, &topic, partition, &mut offset, &tx).await {
            SessionEnd::Closed => return,
            SessionEnd::Fatal(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            SessionEnd::Retry(e) => {
                if offset != before {
                    backoff = MIN_BACKOFF;
                }
                tracing::debug!(%topic, partition, offset, error = %e, "reopening fetch stream");
                let seen = cluster.snapshot().generation;
                let _ = cluster.refresh(seen).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn fetch_session(
    cluster: &Cluster,
    config: &ConsumerConfig,
    topic: &str,
    partition: u32,
    offset: &mut i64,
    tx: &mpsc::Sender<Result<Vec<ConsumerRecord>>>,
) -> SessionEnd {
    let snap = cluster.snapshot();
    let Some((_, addr)) = snap.leader(topic, partition) else {
        return SessionEnd::Retry(Error::server(
            ErrorCode::NotLeaderOrFollower,
            format!("{topic}-{partition} has no known leader"),
        ));
    };
    let addr = addr.to_owned();
    let mut client = match cluster.client(&addr) {
        Ok(c) => c,
        Err(e) => return SessionEnd::Retry(e),
    };
    let request_timeout = cluster.config.request_timeout;
    let req = pb::FetchRequest {
        topic: topic.to_owned(),
        partition,
        offset: *offset,
        max_bytes: config.max_bytes,
        min_bytes: config.min_bytes,
        max_wait_ms: config.max_wait.as_millis().clamp(1, 30_000) as u32,
        decode: false,
    };
    let mut stream = match tokio::time::timeout(request_timeout, client.fetch(req)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return SessionEnd::Retry(status.into()),
        Err(_) => return SessionEnd::Retry(Error::Timeout(format!("Fetch to {addr}"))),
    };
    // The broker answers at least every max_wait (empty answers are heartbeats).
    let silence = config.max_wait.min(Duration::from_secs(30)) + request_timeout;
    loop {
        let answer = match tokio::time::timeout(silence, stream.message()).await {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) => {
                return SessionEnd::Retry(Error::Unavailable(format!(
                    "{addr} ended the fetch stream"
                )))
            }
            Ok(Err(status)) => return SessionEnd::Retry(status.into()),
            Err(_) => {
                return SessionEnd::Retry(Error::Timeout(format!(
                    "no fetch answer from {addr} within {silence:?}"
                )))
            }
        };
        if let Err(e) = check(answer.error) {
            return if e.is_retriable() {
                SessionEnd::Retry(e)
            } else {
                SessionEnd::Fatal(e)
            };
        }
        if answer.batches.is_empty() {
            continue;
        }
        let mut records = Vec::new();
        for batch in Batches::new(answer.batches) {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => return SessionEnd::Fatal(corrupt(topic, partition, *offset, e)),
            };
            let header = *batch.header();
            if !header.is_control() {
                let decoded = match batch.records() {
                    Ok(r) => r,
                    Err(e) => return SessionEnd::Fatal(corrupt(topic, partition, *offset, e)),
                };
                records.extend(
                    decoded
                        .into_iter()
                        .filter(|r| r.offset >= *offset)
                        .map(|r| ConsumerRecord {
                            topic: topic.to_owned(),
                            partition,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key,
                            value: r.value,
                            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                        }),
                );
            }
            *offset = (*offset).max(header.next_offset());
        }
        if !records.is_empty() && tx.send(Ok(records)).await.is_err() {
            return SessionEnd::Closed;
        }
    }
}

fn corrupt(topic: &str, partition: u32, offset: i64, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{topic}-{partition} at offset {offset}: {e}"))
}
