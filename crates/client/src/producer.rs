//! The producer: records are appended to a per-partition batch (encoded once, as the
//! RecordBatch v2 the broker stores), closed batches go to the partition leader over one
//! `ProduceStream` per broker, and each record's [`DeliveryFuture`] resolves with its offset.
//!
//! Threads of control:
//!
//! * [`Producer::send`] (any task): reserves the record's bytes from the `buffer_memory`
//!   semaphore (back-pressure), picks the partition, appends to the open batch under a short
//!   std lock (never held across `.await`), and closes the batch when it is full.
//! * The sender task: closes batches whose linger expired, sends batches to leaders (at most
//!   `max_in_flight_per_partition` per partition), matches answers (the broker answers a
//!   stream in request order), retries retriable failures after refreshing metadata (the
//!   failed batch and everything after it for that partition, in order), and fails batches
//!   past `delivery_timeout`.
//! * One task per broker connection reads its `ProduceStream` answers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use weir_common::now_ms;
use weir_common::sync::MutexExt;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use weir_proto::broker::v1 as pb;
use weir_proto::broker::v1::produce_request::Records;
use weir_storage::{BatchBuilder, Header};

use crate::config::{ClientConfig, ProducerConfig};
use crate::error::{check, Error, Result};
use crate::metadata::Cluster;
use crate::partitioner::{partition_for_key, Sticky};

/// Bytes a record costs beyond its key, value and headers (varints, attributes), for the
/// memory budget and batch sizing.
const RECORD_OVERHEAD: usize = 24;
/// How long `send` waits for an unknown topic to show up in metadata.
const TOPIC_WAIT: Duration = Duration::from_secs(5);
/// Slack over `request_timeout` before an unanswered stream is given up.
const STREAM_SLACK: Duration = Duration::from_secs(5);
/// The sender looks around at least this often.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// A record to send.
///
/// ```
/// use weir_client::ProducerRecord;
///
/// let record = ProducerRecord::new("events", "hello")
///     .key("user-42")
///     .header("trace", "abc")
///     .timestamp(1_700_000_000_000);
/// assert_eq!(record.partition, None); // chosen from the key
/// let pinned = ProducerRecord::new("events", &b"raw bytes"[..]).partition(2);
/// assert_eq!(pinned.partition, Some(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None`: from the key's murmur2 hash, or the sticky partition without key.
    pub partition: Option<u32>,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order; a `None` value is a null header value.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in ms since the epoch; `None`: the time of `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition explicitly.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sets the create timestamp (ms since the epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    fn size(&self) -> usize {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        RECORD_OVERHEAD
            + len(&self.key)
            + len(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + len(v) + 4)
                .sum::<usize>()
    }
}

/// Where a record was stored: what a [`DeliveryFuture`] resolves to.
///
/// ```
/// use weir_client::RecordMetadata;
///
/// let m = RecordMetadata { topic: "events".into(), partition: 2, offset: 1041, timestamp: 1_700_000_000_000 };
/// assert_eq!(format!("{}-{}@{}", m.topic, m.partition, m.offset), "events-2@1041");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset; -1 with acks=0.
    pub offset: i64,
    /// The record's timestamp (the broker's append time with LogAppendTime topics).
    pub timestamp: i64,
}

/// Resolves once a record is delivered (or failed): returned by [`Producer::send`].
///
/// ```no_run
/// # async fn example(producer: weir_client::Producer) -> weir_client::Result<()> {
/// use weir_client::ProducerRecord;
///
/// let delivery = producer.send(ProducerRecord::new("events", "hello")).await?;
/// let metadata = delivery.await?;
/// println!("stored at {}-{}@{}", metadata.topic, metadata.partition, metadata.offset);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a DeliveryFuture reports whether the record was delivered"]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One record's slot in a batch: where its result goes.
struct Slot {
    tx: oneshot::Sender<Result<RecordMetadata>>,
    timestamp: i64,
}

/// A partition's batch still taking records.
struct OpenBatch {
    builder: BatchBuilder,
    slots: Vec<Slot>,
    permits: usize,
    created: Instant,
}

/// A closed batch, encoded, on its way.
struct Batch {
    id: u64,
    topic: String,
    partition: u32,
    bytes: Bytes,
    slots: Vec<Slot>,
    permits: usize,
    created: Instant,
    sent_at: Instant,
    last_error: Option<Error>,
}

/// A closed batch not yet encoded (encoding happens outside the accumulator lock).
struct Closed {
    id: u64,
    topic: String,
    partition: u32,
    open: OpenBatch,
}

struct TopicAcc {
    partitions: Vec<Option<OpenBatch>>,
    sticky: Sticky,
}

#[derive(Default)]
struct Accumulator {
    topics: HashMap<String, TopicAcc>,
    next_batch_id: u64,
}

impl Accumulator {
    /// Closes `open` (batch `partition` of `topic`): gives it an id and registers it pending.
    fn close(
        &mut self,
        pending: &Mutex<BTreeSet<u64>>,
        topic: &str,
        partition: u32,
        open: OpenBatch,
    ) -> Closed {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        pending.locked().insert(id);
        Closed {
            id,
            topic: topic.to_owned(),
            partition,
            open,
        }
    }
}

/// State shared by the producer handles and the sender task.
struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    memory: Arc<Semaphore>,
    acc: Mutex<Accumulator>,
    /// Ids of closed batches not yet completed.
    pending: Mutex<BTreeSet<u64>>,
    /// Signalled when a batch completes.
    completed: Notify,
    /// Wakes the sender: a new open batch (linger timer) or closed batches to send.
    wake: Notify,
    closed: AtomicBool,
    refreshing: AtomicBool,
}

impl Shared {
    /// Encodes a closed batch; an encoding failure fails its records at once.
    fn encode(&self, closed: Closed) -> Option<Batch> {
        let Closed {
            id,
            topic,
            partition,
            open,
        } = closed;
        match open.builder.build(0) {
            Ok(bytes) => Some(Batch {
                id,
                topic,
                partition,
                bytes,
                slots: open.slots,
                permits: open.permits,
                created: open.created,
                sent_at: open.created,
                last_error: None,
            }),
            Err(e) => {
                let err = Error::InvalidInput(format!("cannot encode the batch: {e}"));
                for slot in open.slots {
                    let _ = slot.tx.send(Err(err.clone()));
                }
                self.finish(id, open.permits);
                None
            }
        }
    }

    /// Releases a completed batch's memory and marks it done.
    fn finish(&self, id: u64, permits: usize) {
        self.memory.add_permits(permits);
        self.pending.locked().remove(&id);
        self.completed.notify_waiters();
    }

    fn complete(&self, batch: Batch, result: Result<(i64, i64)>) {
        match result {
            Ok((base_offset, log_append_time)) => {
                for (i, slot) in batch.slots.into_iter().enumerate() {
                    let offset = if base_offset >= 0 {
                        base_offset + i as i64
                    } else {
                        -1
                    };
                    let timestamp = if log_append_time >= 0 {
                        log_append_time
                    } else {
                        slot.timestamp
                    };
                    let _ = slot.tx.send(Ok(RecordMetadata {
                        topic: batch.topic.clone(),
                        partition: batch.partition,
                        offset,
                        timestamp,
                    }));
                }
            }
            Err(err) => {
                tracing::debug!(topic = %batch.topic, partition = batch.partition, error = %err,
                    "batch failed");
                for slot in batch.slots {
                    let _ = slot.tx.send(Err(err.clone()));
                }
            }
        }
        self.finish(batch.id, batch.permits);
    }

    /// Closes every open batch (or only those whose linger expired at `now`); returns them
    /// and, when `now` is given, the earliest linger deadline of those left open.
    fn close_open(&self, now: Option<Instant>) -> (Vec<Closed>, Option<Instant>) {
        let linger = self.config.linger;
        let mut out = Vec::new();
        let mut next = None::<Instant>;
        let mut acc = self.acc.locked();
        let acc = &mut *acc;
        let mut taken = Vec::new();
        for (topic, t) in acc.topics.iter_mut() {
            let count = t.partitions.len() as u32;
            for (p, slot) in t.partitions.iter_mut().enumerate() {
                let Some(open) = slot else { continue };
                let due = open.created + linger;
                match now {
                    Some(now) if due > now => {
                        next = Some(next.map_or(due, |n| n.min(due)));
                    }
                    _ => {
                        if let Some(open) = slot.take() {
                            t.sticky.batch_closed(p as u32, count);
                            taken.push((topic.clone(), p as u32, open));
                        }
                    }
                }
            }
        }
        for (topic, p, open) in taken {
            out.push(acc.close(&self.pending, &topic, p, open));
        }
        (out, next)
    }
}

enum Event {
    Ready(Batch),
    Answer {
        conn: u64,
        answer: pb::ProduceResponse,
    },
    ConnDown {
        conn: u64,
        error: Error,
    },
    Shutdown,
}

struct Inner {
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender delivers what is pending, then stops.
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Shutdown);
    }
}

/// A batching, pipelining producer. Cheap to clone; clones share buffers and connections.
///
/// ```no_run
/// # async fn example() -> weir_client::Result<()> {
/// use weir_client::{Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord};
///
/// let client = ClientConfig::new(["127.0.0.1:9700"]);
/// let producer = Producer::connect(client, ProducerConfig { acks: Acks::All, ..Default::default() })
///     .await?;
/// let mut deliveries = Vec::new();
/// for i in 0..1000 {
///     let record = ProducerRecord::new("events", format!("value-{i}")).key(format!("key-{i}"));
///     // Waits only for buffer space, never for delivery.
///     deliveries.push(producer.send(record).await?);
/// }
/// producer.flush().await?;
/// for d in deliveries {
///     let m = d.await?;
///     assert!(m.offset >= 0);
/// }
/// producer.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Connects to the cluster (metadata from the first reachable bootstrap address) and
    /// starts the sender.
    pub async fn connect(client: ClientConfig, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(client).await?;
        let shared = Arc::new(Shared {
            cluster,
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            acc: Mutex::new(Accumulator::default()),
            pending: Mutex::new(BTreeSet::new()),
            completed: Notify::new(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = SenderTask {
            shared: Arc::clone(&shared),
            events_tx: tx.clone(),
            events: rx,
            parts: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            stopping: false,
        };
        let task = tokio::spawn(sender.run());
        Ok(Producer {
            inner: Arc::new(Inner {
                shared,
                events: tx,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Queues a record. Waits only for buffer space (back-pressure once `buffer_memory`
    /// bytes are buffered or in flight) and, the first time a topic is used, for its
    /// metadata; never for delivery: await the returned future for that.
    ///
    /// Fails at once for an unknown topic (UNKNOWN_TOPIC_OR_PARTITION after a few seconds of
    /// metadata refreshes), a partition out of range, a record larger than `buffer_memory`,
    /// or a closed producer.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let size = record.size();
        if size > shared.config.buffer_memory {
            return Err(Error::InvalidInput(format!(
                "a record of {size} bytes does not fit in buffer_memory ({} bytes)",
                shared.config.buffer_memory
            )));
        }
        let permit = shared
            .memory
            .acquire_many(size as u32)
            .await
            .map_err(|_| Error::Closed)?;
        permit.forget();
        let mut reserved = Reserved {
            memory: &shared.memory,
            permits: size,
        };
        let (tx, rx) = oneshot::channel();
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers,
            ..
        } = record;
        let headers: Vec<Header> = headers
            .into_iter()
            .map(|(key, value)| Header { key, value })
            .collect();

        let known = shared.acc.locked().topics.contains_key(&topic);
        if !known {
            let snap = shared
                .cluster
                .topic(&topic, TOPIC_WAIT.min(shared.config.request_timeout))
                .await?;
            let count = snap.partition_count(&topic).unwrap_or(0);
            if count == 0 {
                return Err(Error::InvalidInput(format!(
                    "topic `{topic}` has no partitions"
                )));
            }
            shared
                .acc
                .locked()
                .topics
                .entry(topic.clone())
                .or_insert_with(|| TopicAcc {
                    partitions: (0..count).map(|_| None).collect(),
                    sticky: Sticky::default(),
                });
        }

        let batch_size = shared.config.batch_size;
        let new_batch;
        {
            let mut guard = shared.acc.locked();
            let acc = &mut *guard;
            let Some(t) = acc.topics.get_mut(&topic) else {
                return Err(Error::Closed);
            };
            let count = t.partitions.len() as u32;
            let p = match (partition, &key) {
                (Some(p), _) if p >= count => {
                    return Err(Error::InvalidInput(format!(
                        "partition {p} of topic `{topic}` does not exist ({count} partitions)"
                    )))
                }
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, count),
                (None, None) => t.sticky.partition(count),
            };
            let slot = &mut t.partitions[p as usize];
            let mut full = Vec::new();
            if slot.as_ref().is_some_and(|open| {
                !open.builder.is_empty() && open.builder.uncompressed_size() + size > batch_size
            }) {
                full.extend(slot.take());
            }
            new_batch = slot.is_none();
            let open = slot.get_or_insert_with(|| OpenBatch {
                builder: BatchBuilder::new(shared.config.compression),
                slots: Vec::new(),
                permits: 0,
                created: Instant::now(),
            });
            open.builder
                .push_parts(timestamp, key.as_deref(), value.as_deref(), &headers);
            open.slots.push(Slot { tx, timestamp });
            open.permits += size;
            reserved.permits = 0;
            if open.builder.uncompressed_size() >= batch_size {
                full.extend(slot.take());
            }
            if !full.is_empty() {
                t.sticky.batch_closed(p, count);
            }
            let closed_now: Vec<Closed> = full
                .into_iter()
                .map(|open| acc.close(&shared.pending, &topic, p, open))
                .collect();
            drop(guard);
            for c in closed_now {
                if let Some(batch) = shared.encode(c) {
                    let _ = self.inner.events.send(Event::Ready(batch));
                }
            }
        }
        if new_batch {
            shared.wake.notify_one();
        }
        Ok(DeliveryFuture { rx })
    }

    /// Bytes of records buffered or in flight (at most `buffer_memory`).
    pub fn buffered_bytes(&self) -> usize {
        let shared = &self.inner.shared;
        shared
            .config
            .buffer_memory
            .saturating_sub(shared.memory.available_permits())
    }

    /// Waits until every record sent so far is delivered or failed (closing open batches
    /// without waiting for their linger).
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.inner.shared;
        let (closed, _) = shared.close_open(None);
        let upto = shared.acc.locked().next_batch_id;
        for c in closed {
            if let Some(batch) = shared.encode(c) {
                if self.inner.events.send(Event::Ready(batch)).is_err() {
                    return Err(Error::Closed);
                }
            }
        }
        loop {
            let notified = shared.completed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done = shared.pending.locked().range(..upto).next().is_none();
            if done {
                return Ok(());
            }
            if self.sender_finished() {
                return Err(Error::Closed);
            }
            // A timeout guards against a lost wakeup; the condition is rechecked anyway.
            let _ = tokio::time::timeout(HOUSEKEEPING, notified).await;
        }
    }

    fn sender_finished(&self) -> bool {
        self.inner
            .task
            .locked()
            .as_ref()
            .map(JoinHandle::is_finished)
            .unwrap_or(true)
    }

    /// Flushes, then stops the sender and closes connections. Other clones of this producer
    /// fail with [`Error::Closed`] afterwards.
    pub async fn close(self) -> Result<()> {
        let flushed = self.flush().await;
        self.inner.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.inner.events.send(Event::Shutdown);
        let task = self.inner.task.locked().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        flushed
    }
}

/// Memory reserved by `send` and not yet handed to a batch: given back if `send` fails.
struct Reserved<'a> {
    memory: &'a Semaphore,
    permits: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.permits > 0 {
            self.memory.add_permits(self.permits);
        }
    }
}

/// A partition's closed batches and what is in flight.
#[derive(Default)]
struct PartQueue {
    /// Waiting batches, by id (= send order).
    queue: VecDeque<Batch>,
    in_flight: usize,
    /// A retriable error happened: wait for the in-flight batches to come back, then resend
    /// in order after the backoff.
    draining: bool,
    retry_at: Option<Instant>,
}

impl PartQueue {
    fn requeue(&mut self, batch: Batch) {
        let at = self.queue.partition_point(|b| b.id < batch.id);
        self.queue.insert(at, batch);
    }
}

/// One ProduceStream to a broker.
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<pb::ProduceRequest>,
    in_flight: VecDeque<Batch>,
    task: JoinHandle<()>,
}

struct SenderTask {
    shared: Arc<Shared>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    parts: HashMap<(String, u32), PartQueue>,
    /// By broker address.
    conns: HashMap<String, Conn>,
    next_conn: u64,
    stopping: bool,
}

impl SenderTask {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            let linger_due = if self.stopping {
                let (closed, _) = self.shared.close_open(None);
                self.enqueue_closed(closed);
                None
            } else {
                let (closed, next) = self.shared.close_open(Some(now));
                self.enqueue_closed(closed);
                next
            };
            self.expire(now);
            let retry_due = self.dispatch(now);
            if self.stopping && self.idle() {
                break;
            }
            let mut deadline = now + HOUSEKEEPING;
            for d in [linger_due, retry_due].into_iter().flatten() {
                deadline = deadline.min(d);
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            while let Ok(event) = self.events.try_recv() {
                self.handle(event);
            }
        }
        for (_, conn) in self.conns.drain() {
            conn.task.abort();
            for batch in conn.in_flight {
                self.shared.complete(batch, Err(Error::Closed));
            }
        }
        for (_, pq) in self.parts.drain() {
            for batch in pq.queue {
                self.shared.complete(batch, Err(Error::Closed));
            }
        }
    }

    fn idle(&self) -> bool {
        self.parts
            .values()
            .all(|pq| pq.queue.is_empty() && pq.in_flight == 0)
            && self.shared.pending.locked().is_empty()
    }

    fn enqueue_closed(&mut self, closed: Vec<Closed>) {
        for c in closed {
            if let Some(batch) = self.shared.encode(c) {
                self.enqueue(batch);
            }
        }
    }

    fn enqueue(&mut self, batch: Batch) {
        let key = (batch.topic.clone(), batch.partition);
        self.parts.entry(key).or_default().requeue(batch);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Ready(batch) => self.enqueue(batch),
            Event::Answer { conn, answer } => self.answer(conn, answer),
            Event::ConnDown { conn, error } => self.conn_down(conn, error),
            Event::Shutdown => self.stopping = true,
        }
    }

    fn conn_key(&self, id: u64) -> Option<String> {
        self.conns
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(addr, _)| addr.clone())
    }

    fn answer(&mut self, conn: u64, answer: pb::ProduceResponse) {
        let Some(addr) = self.conn_key(conn) else {
            return; // a stream given up on
        };
        let Some(batch) = self
            .conns
            .get_mut(&addr)
            .and_then(|c| c.in_flight.pop_front())
        else {
            tracing::warn!(%addr, "produce answer without a request; dropping the stream");
            self.conn_down(conn, Error::Unavailable("unexpected produce answer".into()));
            return;
        };
        let key = (batch.topic.clone(), batch.partition);
        if let Some(pq) = self.parts.get_mut(&key) {
            pq.in_flight = pq.in_flight.saturating_sub(1);
        }
        match check(answer.error) {
            Ok(()) => self
                .shared
                .complete(batch, Ok((answer.base_offset, answer.log_append_time))),
            Err(e) if e.is_retriable() => self.retry(batch, e),
            Err(e) => self.shared.complete(batch, Err(e)),
        }
    }

    fn conn_down(&mut self, conn: u64, error: Error) {
        let Some(addr) = self.conn_key(conn) else {
            return;
        };
        let Some(c) = self.conns.remove(&addr) else {
            return;
        };
        c.task.abort();
        let error = if error.is_retriable() {
            error
        } else {
            Error::Unavailable(error.to_string())
        };
        tracing::debug!(%addr, %error, in_flight = c.in_flight.len(), "produce stream down");
        for batch in c.in_flight {
            let key = (batch.topic.clone(), batch.partition);
            if let Some(pq) = self.parts.get_mut(&key) {
                pq.in_flight = pq.in_flight.saturating_sub(1);
            }
            self.retry(batch, error.clone());
        }
        self.request_refresh();
    }

    /// A retriable failure: retry in order unless the delivery timeout passed.
    fn retry(&mut self, mut batch: Batch, error: Error) {
        if batch.created.elapsed() >= self.shared.config.delivery_timeout {
            let err = Error::Timeout(format!(
                "delivery timeout ({:?}) expired; last error: {error}",
                self.shared.config.delivery_timeout
            ));
            self.shared.complete(batch, Err(err));
            return;
        }
        if error.needs_metadata() {
            self.request_refresh();
        }
        tracing::debug!(topic = %batch.topic, partition = batch.partition, %error, "retrying batch");
        batch.last_error = Some(error);
        let pq = self
            .parts
            .entry((batch.topic.clone(), batch.partition))
            .or_default();
        pq.draining = true;
        pq.requeue(batch);
    }

    fn request_refresh(&self) {
        if self.shared.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let seen = shared.cluster.snapshot().generation;
            if let Err(e) = shared.cluster.refresh(seen).await {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
            shared.refreshing.store(false, Ordering::SeqCst);
            shared.wake.notify_one();
        });
    }

    /// Fails queued batches past the delivery timeout; gives up streams that stopped
    /// answering.
    fn expire(&mut self, now: Instant) {
        let timeout = self.shared.config.delivery_timeout;
        for pq in self.parts.values_mut() {
            while pq
                .queue
                .front()
                .is_some_and(|b| now.duration_since(b.created) >= timeout)
            {
                if let Some(batch) = pq.queue.pop_front() {
                    let last = batch
                        .last_error
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), ToString::to_string);
                    let err = Error::Timeout(format!(
                        "delivery timeout ({timeout:?}) expired; last error: {last}"
                    ));
                    self.shared.complete(batch, Err(err));
                }
            }
        }
        let limit = self.shared.config.request_timeout + STREAM_SLACK;
        let stuck: Vec<u64> = self
            .conns
            .values()
            .filter(|c| {
                c.in_flight
                    .front()
                    .is_some_and(|b| now.duration_since(b.sent_at) >= limit)
            })
            .map(|c| c.id)
            .collect();
        for id in stuck {
            self.conn_down(
                id,
                Error::Timeout(format!("no produce answer within {limit:?}")),
            );
        }
    }

    /// Sends what may be sent; returns the earliest retry time of a waiting partition.
    fn dispatch(&mut self, now: Instant) -> Option<Instant> {
        let shared = Arc::clone(&self.shared);
        let snapshot = shared.cluster.snapshot();
        let config = &shared.config;
        let acks = config.acks.as_i32();
        let timeout_ms = config.request_timeout.as_millis().min(u32::MAX as u128) as u32;
        let mut next_retry = None::<Instant>;
        let mut need_refresh = false;
        let Self {
            parts,
            conns,
            next_conn,
            events_tx,
            ..
        } = self;
        for ((topic, partition), pq) in parts.iter_mut() {
            if pq.draining {
                if pq.in_flight > 0 {
                    continue;
                }
                pq.draining = false;
                pq.retry_at = Some(now + config.retry_backoff);
            }
            if pq.queue.is_empty() {
                continue;
            }
            if let Some(at) = pq.retry_at {
                if at > now {
                    next_retry = Some(next_retry.map_or(at, |n: Instant| n.min(at)));
                    continue;
                }
                pq.retry_at = None;
            }
            while pq.in_flight < config.max_in_flight_per_partition && !pq.queue.is_empty() {
                let Some((_, addr)) = snapshot.leader(topic, *partition) else {
                    need_refresh = true;
                    let at = now + config.retry_backoff;
                    pq.retry_at = Some(at);
                    next_retry = Some(next_retry.map_or(at, |n: Instant| n.min(at)));
                    break;
                };
                let conn = match conns.get_mut(addr) {
                    Some(c) => c,
                    None => {
                        let client = match shared.cluster.client(addr) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::warn!(%addr, error = %e, "bad broker address");
                                need_refresh = true;
                                break;
                            }
                        };
                        *next_conn += 1;
                        let id = *next_conn;
                        let (tx, rx) = mpsc::unbounded_channel();
                        let task = tokio::spawn(run_conn(id, client, rx, events_tx.clone()));
                        conns.entry(addr.to_owned()).or_insert(Conn {
                            id,
                            tx,
                            in_flight: VecDeque::new(),
                            task,
                        })
                    }
                };
                let Some(mut batch) = pq.queue.pop_front() else {
                    break;
                };
                let request = pb::ProduceRequest {
                    topic: topic.clone(),
                    partition: *partition,
                    acks,
                    timeout_ms,
                    records: Some(Records::Batch(batch.bytes.clone())),
                };
                if conn.tx.send(request).is_err() {
                    // The stream task ended; its ConnDown event is on the way.
                    pq.queue.push_front(batch);
                    break;
                }
                batch.sent_at = now;
                conn.in_flight.push_back(batch);
                pq.in_flight += 1;
            }
        }
        if need_refresh {
            self.request_refresh();
        }
        next_retry
    }
}

/// One broker's ProduceStream: forwards answers (in request order) to the sender task.
async fn run_conn(
    id: u64,
    mut client: pb::broker_client::BrokerClient<tonic::transport::Channel>,
    rx: mpsc::UnboundedReceiver<pb::ProduceRequest>,
    events: mpsc::UnboundedSender<Event>,
) {
    let error = match client
        .produce_stream(UnboundedReceiverStream::new(rx))
        .await
    {
        Err(status) => Error::from(status),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(answer)) => {
                        if events.send(Event::Answer { conn: id, answer }).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        break Error::Unavailable("the broker closed the produce stream".into())
                    }
                    Err(status) => break Error::from(status),
                }
            }
        }
    };
    let _ = events.send(Event::ConnDown { conn: id, error });
}
