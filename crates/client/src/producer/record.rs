//! What a producer's user sees: the [`ProducerRecord`] handed to `send`, the
//! [`DeliveryFuture`] it returns, and the [`RecordMetadata`] that future resolves to.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use weir_common::sync::MutexExt;

use crate::error::{Error, Result};

/// Bytes a record costs beyond its key, value and headers (varints, attributes), for the
/// memory budget and batch sizing.
const RECORD_OVERHEAD: usize = 24;

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

    /// What the record costs against `buffer_memory` and `batch_size`: key, value and
    /// headers plus [`RECORD_OVERHEAD`].
    pub(super) fn size(&self) -> usize {
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

/// Resolves once a record is delivered (or failed): returned by
/// [`Producer::send`](super::Producer::send).
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
    /// The outcome of the record's batch, shared by every record of it.
    pub(super) outcome: Arc<Outcome>,
    /// The record's place in its batch: its offset is the batch's base offset plus this.
    pub(super) index: u32,
    /// The record's create timestamp (given, or the time of `send`): reported back unless
    /// the broker answers with a log append time.
    pub(super) timestamp: i64,
    /// Where this future's waker sits in the outcome's list, once it has waited.
    pub(super) waiting: Option<usize>,
}

impl DeliveryFuture {
    /// What the record's batch result means for this record.
    fn resolve(&self, result: &Result<(i64, i64)>) -> Result<RecordMetadata> {
        let (base_offset, log_append_time) = result.clone()?;
        Ok(RecordMetadata {
            topic: self.outcome.topic.clone(),
            partition: self.outcome.partition,
            offset: if base_offset >= 0 {
                base_offset + i64::from(self.index)
            } else {
                -1
            },
            timestamp: if log_append_time >= 0 {
                log_append_time
            } else {
                self.timestamp
            },
        })
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.outcome.result.get() {
            return Poll::Ready(self.resolve(result));
        }
        let this = &mut *self;
        let mut wakers = this.outcome.wakers.locked();
        // Again under the lock: the result is set before the wakers are taken under it, so
        // either it shows now or this waker is taken with the others.
        if let Some(result) = this.outcome.result.get() {
            drop(wakers);
            return Poll::Ready(this.resolve(result));
        }
        match this.waiting {
            Some(i) if i < wakers.len() => {
                if !wakers[i].will_wake(cx.waker()) {
                    wakers[i] = cx.waker().clone();
                }
            }
            _ => {
                this.waiting = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// The outcome of one batch, shared by the [`DeliveryFuture`]s of its records: one
/// allocation and one completion per batch instead of a channel per record (at 100-byte
/// records, the per-record channels were about a tenth of the producer's time).
#[derive(Debug)]
pub(super) struct Outcome {
    /// The batch's topic.
    topic: String,
    /// The batch's partition.
    partition: u32,
    /// The broker's base offset and log append time, or the batch's error; set once.
    result: OnceLock<Result<(i64, i64)>>,
    /// The wakers of records' futures waiting for the result; taken when it is set.
    wakers: Mutex<Vec<Waker>>,
}

/// The sending side of a batch's [`Outcome`], owned by the batch: completes it once, and
/// with [`Error::Closed`] if the batch is dropped without an answer (the producer stopped).
#[derive(Debug)]
pub(super) struct Completion(Arc<Outcome>);

impl Completion {
    /// A new batch's outcome, not completed yet.
    pub(super) fn new(topic: &str, partition: u32) -> Self {
        Self(Arc::new(Outcome {
            topic: topic.to_owned(),
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }))
    }

    /// The future of the batch's record number `index`, created at `timestamp`.
    pub(super) fn delivery(&self, index: u32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture {
            outcome: Arc::clone(&self.0),
            index,
            timestamp,
            waiting: None,
        }
    }

    /// Completes every record of the batch with `result` (the first result set stays).
    pub(super) fn complete(&self, result: Result<(i64, i64)>) {
        if self.0.result.set(result).is_err() {
            return;
        }
        let wakers = std::mem::take(&mut *self.0.wakers.locked());
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.0.result.get().is_none() {
            self.complete(Err(Error::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_of_a_batch_resolves_at_its_own_offset_from_one_completion() {
        let completion = Completion::new("t", 3);
        let futures: Vec<_> = (0..3)
            .map(|i| completion.delivery(i, 1000 + i64::from(i)))
            .collect();
        // Waiting before the answer: woken by it.
        let waiting = tokio::spawn(completion.delivery(3, 2000));
        tokio::task::yield_now().await;
        completion.complete(Ok((40, -1)));
        for (i, f) in futures.into_iter().enumerate() {
            let m = f.await.expect("delivered");
            assert_eq!((m.topic.as_str(), m.partition), ("t", 3));
            assert_eq!((m.offset, m.timestamp), (40 + i as i64, 1000 + i as i64));
        }
        let m = waiting.await.expect("the task ran").expect("delivered");
        assert_eq!((m.offset, m.timestamp), (43, 2000));
    }

    #[tokio::test]
    async fn a_log_append_time_answer_replaces_the_create_times() {
        let completion = Completion::new("t", 0);
        let f = completion.delivery(1, 5);
        completion.complete(Ok((7, 99)));
        let m = f.await.expect("delivered");
        assert_eq!((m.offset, m.timestamp), (8, 99));
    }

    #[tokio::test]
    async fn a_batch_dropped_unanswered_fails_its_records_as_closed() {
        let completion = Completion::new("t", 0);
        let f = completion.delivery(0, 1);
        let waiting = tokio::spawn(completion.delivery(1, 1));
        tokio::task::yield_now().await;
        drop(completion);
        assert!(matches!(f.await, Err(Error::Closed)));
        assert!(matches!(
            waiting.await.expect("the task ran"),
            Err(Error::Closed)
        ));
    }

    #[tokio::test]
    async fn only_the_first_result_counts() {
        let completion = Completion::new("t", 0);
        let f = completion.delivery(0, 1);
        completion.complete(Err(Error::Closed));
        completion.complete(Ok((1, -1)));
        assert!(matches!(f.await, Err(Error::Closed)));
    }
}
