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
//!
//! Where each part lives:
//!
//! * `record`: what users hold — [`ProducerRecord`], [`DeliveryFuture`], [`RecordMetadata`].
//! * `accumulator`: the open batch of every partition and the sticky partition of every
//!   topic; closing batches (when full, when their linger expires, on flush).
//! * `sender`: the sender task — per-partition queues, the in-flight limit, matching answers
//!   to batches, retries in order, delivery timeouts — and completing batches.
//! * `stream`: one `ProduceStream` per broker and the task reading its answers.
//! * `idempotence`: the idempotent producer's ids, stamps and sequence numbers (on by
//!   default: see [`ProducerConfig::idempotence`]).
//! * here: [`Producer`] and the state its handles share with the sender task.

mod accumulator;
mod idempotence;
mod record;
mod sender;
mod stream;

pub use record::{DeliveryFuture, ProducerRecord, RecordMetadata};

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::now_ms;
use weir_common::sync::MutexExt;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use weir_storage::{BatchBuilder, Header};

use self::accumulator::{Accumulator, Closed, OpenBatch, TopicAcc};
use self::idempotence::Identity;
use self::record::Completion;
use self::sender::{Event, Ident, SenderTask, HOUSEKEEPING};
use crate::config::{ClientConfig, ProducerConfig};
use crate::error::{Error, Result};
use crate::metadata::Cluster;
use crate::partitioner::{partition_for_key, Sticky};

/// How long `send` waits for an unknown topic to show up in metadata.
const TOPIC_WAIT: Duration = Duration::from_secs(5);

/// State shared by the producer handles and the sender task.
///
/// Its methods live with the part they serve: closing open batches
/// ([`Shared::close_open`]) in `accumulator`, encoding and completing batches in `sender`.
struct Shared {
    /// The cluster's metadata (partition leaders) and a client per broker.
    cluster: Arc<Cluster>,
    /// The producer's settings, validated by `connect`.
    config: ProducerConfig,
    /// `buffer_memory` bytes: `send` takes a record's size in permits, waiting while the
    /// buffer is full, and a batch gives its permits back when it completes.
    memory: Arc<Semaphore>,
    /// The open batches. A std mutex: `send`, `flush` and the sender task hold it only for
    /// short, synchronous work, never across an `.await`.
    acc: Mutex<Accumulator>,
    /// Ids of closed batches not yet completed.
    pending: Mutex<BTreeSet<u64>>,
    /// Signalled when a batch completes.
    completed: Notify,
    /// Wakes the sender: a new open batch (linger timer) or closed batches to send.
    wake: Notify,
    /// Set by `close` or when the last handle is dropped: `send` refuses new records.
    closed: AtomicBool,
    /// A metadata refresh task is running; the sender starts at most one at a time.
    refreshing: AtomicBool,
}

/// What the clones of a [`Producer`] share; dropping the last one stops the sender.
struct Inner {
    /// The state shared with the sender task.
    shared: Arc<Shared>,
    /// The sender task's inbox: batches `send` and `flush` closed, and `Shutdown`.
    events: mpsc::UnboundedSender<Event>,
    /// The sender task; `close` takes it to wait for the task to end, `flush` checks it is
    /// still running.
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
    /// Connects to the cluster (metadata from the first reachable bootstrap address), gets a
    /// producer id when the producer is idempotent (InitProducerId), and starts the sender.
    pub async fn connect(client: ClientConfig, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(client).await?;
        let initial = if config.idempotent() {
            let (producer_id, epoch) =
                idempotence::init_producer_id(&cluster, config.request_timeout).await?;
            tracing::debug!(producer_id, epoch, "idempotent producer");
            Ident::Ready(Identity::new(producer_id, epoch))
        } else {
            Ident::Off
        };
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
            initial,
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
        let delivery;
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
                builder: BatchBuilder::new(shared.config.compression)
                    .level(shared.config.compression_level),
                completion: Completion::new(&topic, p),
                permits: 0,
                created: Instant::now(),
            });
            delivery = open
                .completion
                .delivery(open.builder.len() as u32, timestamp);
            open.builder
                .push_parts(timestamp, key.as_deref(), value.as_deref(), &headers);
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
        Ok(delivery)
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
        let (closed, _) = shared.close_open(None, |_, _| true);
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
