//! What a producer's user sees: the [`ProducerRecord`] handed to `send`, the
//! [`DeliveryFuture`] it returns, and the [`RecordMetadata`] that future resolves to.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

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
    /// The receiving end of the record's `Slot` (see `accumulator`): the sender
    /// task sends the result once the broker answers (or the batch fails); a dropped sender
    /// (the producer stopped without answering) reads as [`Error::Closed`].
    pub(super) rx: oneshot::Receiver<Result<RecordMetadata>>,
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
