//! The sender task: the one owner of every closed batch until it completes.
//!
//! Each turn of its loop closes batches whose linger expired, fails batches past
//! `delivery_timeout`, gives up streams that stopped answering, and sends what may be sent:
//! per partition, batches in id order, at most `max_in_flight_per_partition` at a time, to the
//! partition's leader over that broker's stream (see `stream`). Answers come back in request
//! order, so each one completes the oldest in-flight batch of its stream. A retriable failure
//! sends the failed batch and everything after it for that partition again, in order, once the
//! partition's in-flight batches are back and the backoff passed; a metadata refresh is
//! started when the error says the metadata is stale or a stream went down.
//!
//! With idempotence (see `idempotence`), a batch is stamped with its partition's producer id,
//! epoch and next sequence when it is first sent; an OUT_OF_ORDER_SEQUENCE_NUMBER answer while
//! an earlier batch of the partition is still outstanding is one more retriable error (the
//! earlier one is resent first), and a batch that fails for good retires its partition's
//! identity ([`PartQueue::retire`]).
//!
//! Completing a batch ([`Shared::complete`]) resolves its records' `DeliveryFuture`s and gives
//! its bytes back to `buffer_memory`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_common::sync::MutexExt;

use bytes::Bytes;
use tokio::sync::mpsc;
use weir_proto::broker::v1 as pb;
use weir_proto::broker::v1::produce_request::Records;

use super::accumulator::Closed;
use super::idempotence::{self, Identity, Stamp};
use super::record::Completion;
use super::stream::{run_conn, Conn};
use super::Shared;
use crate::error::{check, Error, Result};
use weir_proto::common::v1::ErrorCode;

/// Slack over `request_timeout` before an unanswered stream is given up.
const STREAM_SLACK: Duration = Duration::from_secs(5);
/// The sender looks around at least this often.
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// A closed batch, encoded, on its way.
pub(super) struct Batch {
    /// Handed out when the batch closed: orders the batch among its partition's others and
    /// marks it done in `Shared::pending`.
    pub(super) id: u64,
    /// The topic it goes to.
    pub(super) topic: String,
    /// The partition it goes to.
    pub(super) partition: u32,
    /// The encoded RecordBatch; every send, first or retry, clones these same bytes.
    pub(super) bytes: Bytes,
    /// Its records' outcome, completed once when the batch completes.
    pub(super) completion: Completion,
    /// How many records it holds.
    pub(super) records: u32,
    /// Bytes of `buffer_memory` held until the batch completes.
    pub(super) permits: usize,
    /// When the batch was opened: `delivery_timeout` counts from here, across retries.
    pub(super) created: Instant,
    /// When the batch was last written to a stream (`created` until then): a stream whose
    /// oldest batch waited longer than `request_timeout` plus [`STREAM_SLACK`] is given up.
    pub(super) sent_at: Instant,
    /// The last retriable error, named in the timeout error if the batch runs out of time
    /// waiting in its queue.
    pub(super) last_error: Option<Error>,
    /// The idempotent producer's id, epoch and first sequence, set at the first send and
    /// kept through retries (unless the batch was certainly never written and its partition's
    /// identity was retired: see [`PartQueue::retire`]).
    pub(super) stamp: Option<Stamp>,
    /// Some attempt may have written the batch ([`idempotence::may_be_written`]): it keeps its
    /// stamp for good.
    pub(super) maybe_written: bool,
}

impl Shared {
    /// Encodes a closed batch; an encoding failure fails its records at once.
    pub(super) fn encode(&self, closed: Closed) -> Option<Batch> {
        let Closed {
            id,
            topic,
            partition,
            open,
        } = closed;
        let records = open.builder.len() as u32;
        // An idempotent producer's batch gets its CRC when it is stamped, at its first send.
        let built = if self.config.idempotent() {
            open.builder.build_unsealed(0).map(Bytes::from)
        } else {
            open.builder.build(0)
        };
        match built {
            Ok(bytes) => Some(Batch {
                id,
                topic,
                partition,
                bytes,
                completion: open.completion,
                records,
                permits: open.permits,
                created: open.created,
                sent_at: open.created,
                last_error: None,
                stamp: None,
                maybe_written: false,
            }),
            Err(e) => {
                let err = Error::InvalidInput(format!("cannot encode the batch: {e}"));
                open.completion.complete(Err(err));
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

    /// Resolves every record of `batch` with `result` (the broker's base offset and log
    /// append time, or the batch's error) and finishes the batch.
    fn complete(&self, batch: Batch, result: Result<(i64, i64)>) {
        if let Err(err) = &result {
            tracing::debug!(topic = %batch.topic, partition = batch.partition, error = %err,
                "batch failed");
        }
        batch.completion.complete(result);
        self.finish(batch.id, batch.permits);
    }
}

/// What arrives in the sender task's inbox.
pub(super) enum Event {
    /// A batch closed and encoded by `send` or `flush`, to queue for its partition.
    Ready(Batch),
    /// An answer read from stream `conn`: it belongs to that stream's oldest in-flight batch.
    Answer {
        conn: u64,
        answer: pb::ProduceResponse,
    },
    /// Stream `conn` ended with `error`: its in-flight batches are retried.
    ConnDown { conn: u64, error: Error },
    /// The producer was closed or its last handle dropped: deliver what is pending, then stop.
    Shutdown,
    /// A fresh producer id (InitProducerId) for a partition whose identity was retired.
    Identity {
        key: (String, u32),
        result: Result<(i64, i16)>,
    },
}

/// A partition's idempotent producer identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Ident {
    /// The producer is not idempotent.
    #[default]
    Off,
    /// Stamping with this identity.
    Ready(Identity),
    /// Retired: a new producer id is needed before the next batch is stamped, once no batch
    /// of the old one is outstanding.
    Retired,
    /// A new producer id was asked for.
    Requested,
}

/// A partition's closed batches and what is in flight.
#[derive(Default)]
pub(super) struct PartQueue {
    /// Waiting batches, by id (= send order).
    queue: VecDeque<Batch>,
    /// Batches of this partition written to a stream and not yet answered; at most
    /// `max_in_flight_per_partition`.
    in_flight: usize,
    /// A retriable error happened: wait for the in-flight batches to come back, then resend
    /// in order after the backoff.
    draining: bool,
    /// Send nothing before this time: the retry backoff after a retriable error or while the
    /// partition has no known leader.
    retry_at: Option<Instant>,
    /// The idempotent producer's identity for this partition.
    ident: Ident,
    /// Stamped batches not yet completed (queued or in flight), by id, with their producer
    /// id: an out-of-order answer while an earlier one of the same id is outstanding is a
    /// consequence of that one, not a loss.
    stamped: BTreeMap<u64, i64>,
    /// (producer id, batch id): that batch of that producer id was certainly never written, so
    /// neither was any later batch of it, whatever their attempts' answers said.
    gap: Option<(i64, u64)>,
}

impl PartQueue {
    fn new(ident: Ident) -> Self {
        Self {
            ident,
            ..Self::default()
        }
    }

    /// Whether a batch closed now would be sent at once: nothing queued before it, no retry
    /// under way and fewer than `max_in_flight` requests out.
    fn can_take_another(&self, max_in_flight: usize) -> bool {
        self.queue.is_empty() && !self.draining && self.in_flight < max_in_flight
    }

    /// A stamped batch of this partition (`failed`, with producer id `producer_id`) failed for
    /// good, certainly unwritten unless `maybe_written`: its identity stops stamping, and the
    /// later batches of it that were certainly not written lose their stamps, to be stamped
    /// again under a fresh producer id.
    fn retire(&mut self, producer_id: i64, failed: u64, maybe_written: bool) {
        if matches!(self.ident, Ident::Ready(id) if id.producer_id == producer_id) {
            tracing::debug!(producer_id, "retiring the partition's producer id");
            self.ident = Ident::Retired;
        }
        if !maybe_written
            && !self
                .gap
                .is_some_and(|(p, at)| p == producer_id && at <= failed)
        {
            self.gap = Some((producer_id, failed));
        }
        // In id order, which is sequence order: a batch of this id that certainly was never
        // written makes every later one certainly unwritten too.
        let mut gap = self.gap;
        for b in self.queue.iter_mut().filter(|b| b.id > failed) {
            if b.stamp.is_none_or(|s| s.producer_id != producer_id) {
                continue;
            }
            if !b.maybe_written && !gap.is_some_and(|(p, at)| p == producer_id && at <= b.id) {
                gap = Some((producer_id, b.id));
            }
            if certainly_unwritten(gap, b) {
                b.stamp = None;
                self.stamped.remove(&b.id);
            }
        }
        self.gap = gap;
    }

    /// A batch coming back for a retry whose producer id this partition retired meanwhile:
    /// its stamp goes if it was certainly never written.
    fn unstamp_if_retired(&mut self, b: &mut Batch) {
        let Some(stamp) = b.stamp else {
            return;
        };
        let current = matches!(self.ident, Ident::Ready(id) if id.producer_id == stamp.producer_id);
        if !current && certainly_unwritten(self.gap, b) {
            b.stamp = None;
            self.stamped.remove(&b.id);
        }
    }

    /// Puts `batch` back in id order: a retried batch goes before those closed after it.
    fn requeue(&mut self, batch: Batch) {
        let at = self.queue.partition_point(|b| b.id < batch.id);
        self.queue.insert(at, batch);
    }
}

/// Whether `b` can never have been written under its stamp, given the partition's `gap` (see
/// the `idempotence` module): none of its attempts may have written it, or an earlier batch of
/// its producer id certainly was never written.
fn certainly_unwritten(gap: Option<(i64, u64)>, b: &Batch) -> bool {
    !b.maybe_written
        || b.stamp
            .is_some_and(|s| gap.is_some_and(|(p, at)| p == s.producer_id && at < b.id))
}

/// The sender task's state; [`SenderTask::run`] is the task.
pub(super) struct SenderTask {
    /// Shared with the producer handles: the accumulator, the memory budget, metadata.
    pub(super) shared: Arc<Shared>,
    /// A handle on its own inbox, cloned into every stream task it starts.
    pub(super) events_tx: mpsc::UnboundedSender<Event>,
    /// The inbox: batches from `send`/`flush`, stream answers and failures, shutdown.
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    /// The queue of every partition a batch was sent to, by (topic, partition).
    pub(super) parts: HashMap<(String, u32), PartQueue>,
    /// By broker address.
    pub(super) conns: HashMap<String, Conn>,
    /// The id given to the last stream opened; ids are never reused, so events from a
    /// stream already given up on match no entry in `conns` and are ignored.
    pub(super) next_conn: u64,
    /// Shutdown was asked for: close every open batch without waiting for its linger, and
    /// stop once nothing is pending.
    pub(super) stopping: bool,
    /// The identity every partition starts with: the producer's id from InitProducerId, or
    /// [`Ident::Off`].
    pub(super) initial: Ident,
}

impl SenderTask {
    pub(super) async fn run(mut self) {
        loop {
            let now = Instant::now();
            let linger_due = if self.stopping {
                let (closed, _) = self.shared.close_open(None, |_, _| true);
                self.enqueue_closed(closed);
                None
            } else {
                let max = self.shared.config.max_in_flight_per_partition;
                let parts = &self.parts;
                let (closed, next) = self.shared.close_open(Some(now), |topic, partition| {
                    parts
                        .get(&(topic.to_owned(), partition))
                        .is_none_or(|pq| pq.can_take_another(max))
                });
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
        let initial = self.initial;
        self.parts
            .entry(key)
            .or_insert_with(|| PartQueue::new(initial))
            .requeue(batch);
    }

    /// Completes `batch` with `result`; a stamped batch that failed retires its partition's
    /// identity.
    fn resolve(&mut self, batch: Batch, result: Result<(i64, i64)>) {
        // Only a stamped batch is in its partition's `stamped` (an unstamped one has no
        // identity to retire): no lookup, and no key built, for the others.
        if let Some(stamp) = batch.stamp {
            if let Some(pq) = self.parts.get_mut(&(batch.topic.clone(), batch.partition)) {
                pq.stamped.remove(&batch.id);
                if result.is_err() {
                    pq.retire(stamp.producer_id, batch.id, batch.maybe_written);
                }
            }
        }
        self.shared.complete(batch, result);
    }

    /// A new producer id arrived for a partition (or could not be had: then it is asked for
    /// again after the backoff).
    fn identity(&mut self, key: (String, u32), result: Result<(i64, i16)>) {
        let Some(pq) = self.parts.get_mut(&key) else {
            return;
        };
        match result {
            Ok((producer_id, epoch)) => {
                tracing::debug!(topic = %key.0, partition = key.1, producer_id, "new producer id");
                pq.ident = Ident::Ready(Identity::new(producer_id, epoch));
            }
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e,
                    "cannot get a new producer id; retrying");
                pq.ident = Ident::Retired;
                pq.retry_at = Some(Instant::now() + self.shared.config.retry_backoff);
            }
        }
    }

    /// An idempotence refusal (out of order, unknown producer id, fenced) of `batch`.
    fn sequence_refused(&mut self, mut batch: Batch, error: Error) {
        let key = (batch.topic.clone(), batch.partition);
        let Some(stamp) = batch.stamp else {
            return self.resolve(batch, Err(error));
        };
        let Some(pq) = self.parts.get_mut(&key) else {
            return self.resolve(batch, Err(error));
        };
        let earlier_outstanding = pq
            .stamped
            .range(..batch.id)
            .any(|(_, pid)| *pid == stamp.producer_id);
        let code = error.code();
        if code == Some(ErrorCode::OutOfOrderSequenceNumber) && earlier_outstanding {
            // An earlier batch failed and is being resent: this one follows it.
            return self.retry(batch, error);
        }
        if code != Some(ErrorCode::ProducerFenced) && !batch.maybe_written {
            // Never written, and the leader has lost this producer's sequence (an expired id,
            // a lost tail): the batch goes again under a fresh producer id.
            tracing::info!(topic = %key.0, partition = key.1, %error,
                "the partition lost the producer's sequence; continuing under a new producer id");
            pq.retire(stamp.producer_id, batch.id, false);
            pq.stamped.remove(&batch.id);
            batch.stamp = None;
            return self.retry(batch, error);
        }
        self.resolve(batch, Err(error));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Ready(batch) => self.enqueue(batch),
            Event::Answer { conn, answer } => self.answer(conn, answer),
            Event::ConnDown { conn, error } => self.conn_down(conn, error),
            Event::Shutdown => self.stopping = true,
            Event::Identity { key, result } => self.identity(key, result),
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
            Ok(()) => self.resolve(batch, Ok((answer.base_offset, answer.log_append_time))),
            Err(e) if e.is_retriable() => self.retry(batch, e),
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        ErrorCode::OutOfOrderSequenceNumber
                            | ErrorCode::UnknownProducerId
                            | ErrorCode::ProducerFenced
                    )
                ) =>
            {
                self.sequence_refused(batch, e)
            }
            Err(e) => self.resolve(batch, Err(e)),
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
        if batch.stamp.is_some() && idempotence::may_be_written(&error) {
            batch.maybe_written = true;
        }
        if batch.created.elapsed() >= self.shared.config.delivery_timeout {
            let err = Error::Timeout(format!(
                "delivery timeout ({:?}) expired; last error: {error}",
                self.shared.config.delivery_timeout
            ));
            self.resolve(batch, Err(err));
            return;
        }
        if error.needs_metadata() {
            self.request_refresh();
        }
        tracing::debug!(topic = %batch.topic, partition = batch.partition, %error, "retrying batch");
        batch.last_error = Some(error);
        let initial = self.initial;
        let pq = self
            .parts
            .entry((batch.topic.clone(), batch.partition))
            .or_insert_with(|| PartQueue::new(initial));
        pq.draining = true;
        pq.unstamp_if_retired(&mut batch);
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
        let mut expired = Vec::new();
        for pq in self.parts.values_mut() {
            while pq
                .queue
                .front()
                .is_some_and(|b| now.duration_since(b.created) >= timeout)
            {
                expired.extend(pq.queue.pop_front());
            }
        }
        for batch in expired {
            let last = batch
                .last_error
                .as_ref()
                .map_or_else(|| "none".to_owned(), ToString::to_string);
            let err = Error::Timeout(format!(
                "delivery timeout ({timeout:?}) expired; last error: {last}"
            ));
            self.resolve(batch, Err(err));
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
                if let Some(front) = pq.queue.front_mut().filter(|b| b.stamp.is_none()) {
                    match &mut pq.ident {
                        Ident::Off => {}
                        Ident::Ready(identity) => {
                            let stamp = identity.take(front.records as i32);
                            front.bytes =
                                idempotence::stamped(std::mem::take(&mut front.bytes), stamp);
                            front.stamp = Some(stamp);
                            pq.stamped.insert(front.id, stamp.producer_id);
                        }
                        Ident::Retired if pq.stamped.is_empty() => {
                            // Nothing of the old id is outstanding: ask for a new one.
                            pq.ident = Ident::Requested;
                            let (shared, tx) = (Arc::clone(&shared), events_tx.clone());
                            let key = (topic.clone(), *partition);
                            tokio::spawn(async move {
                                let within = shared.config.request_timeout;
                                let result =
                                    idempotence::init_producer_id(&shared.cluster, within).await;
                                let _ = tx.send(Event::Identity { key, result });
                            });
                            break;
                        }
                        // Wait for the old id's batches, or for the new id.
                        Ident::Retired | Ident::Requested => break,
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: u64, producer_id: Option<i64>, maybe_written: bool) -> Batch {
        Batch {
            id,
            topic: "t".into(),
            partition: 0,
            bytes: Bytes::new(),
            completion: Completion::new("t", 0),
            records: 0,
            permits: 0,
            created: Instant::now(),
            sent_at: Instant::now(),
            last_error: None,
            stamp: producer_id.map(|producer_id| Stamp {
                producer_id,
                epoch: 0,
                seq: id as i32,
            }),
            maybe_written,
        }
    }

    fn queue(batches: Vec<Batch>) -> PartQueue {
        let mut pq = PartQueue::new(Ident::Ready(Identity::new(1, 0)));
        for b in batches {
            if let Some(s) = b.stamp {
                pq.stamped.insert(b.id, s.producer_id);
            }
            pq.requeue(b);
        }
        pq
    }

    fn stamps(pq: &PartQueue) -> Vec<(u64, bool)> {
        pq.queue.iter().map(|b| (b.id, b.stamp.is_some())).collect()
    }

    #[test]
    fn after_a_certainly_unwritten_failure_every_later_batch_of_its_id_is_unstamped() {
        // Batch 1 failed and was never written: 2 and 3 follow it in sequence, so they were
        // not written either, whatever their own answers said.
        let mut pq = queue(vec![batch(2, Some(1), true), batch(3, Some(1), false)]);
        pq.retire(1, 1, false);
        assert_eq!(pq.ident, Ident::Retired);
        assert_eq!(stamps(&pq), [(2, false), (3, false)]);
        assert!(pq.stamped.is_empty(), "nothing of the old id outstanding");
        // One of them still in flight comes back later: it loses its stamp too.
        let mut late = batch(4, Some(1), true);
        pq.stamped.insert(4, 1);
        pq.unstamp_if_retired(&mut late);
        assert!(late.stamp.is_none() && pq.stamped.is_empty());
    }

    #[test]
    fn after_a_failure_that_may_have_been_written_maybe_written_batches_keep_their_stamps() {
        let mut pq = queue(vec![
            batch(2, Some(1), true),
            batch(3, Some(1), false),
            batch(4, Some(1), true),
            batch(5, None, false),
        ]);
        pq.retire(1, 1, true);
        // 2 may be written (if 1 was); 3 certainly was not, so 4, after it, was not either.
        assert_eq!(stamps(&pq), [(2, true), (3, false), (4, false), (5, false)]);
        assert_eq!(pq.stamped.keys().copied().collect::<Vec<_>>(), [2]);
        // The stamped batch is the front one: it goes first, nothing waits behind it forever.
        assert!(pq.queue.front().is_some_and(|b| b.stamp.is_some()));
    }

    #[test]
    fn a_batch_of_the_current_id_keeps_its_stamp_on_retry() {
        let mut pq = queue(vec![]);
        let mut b = batch(7, Some(1), false);
        pq.stamped.insert(7, 1);
        pq.unstamp_if_retired(&mut b);
        assert!(b.stamp.is_some());
    }
}
