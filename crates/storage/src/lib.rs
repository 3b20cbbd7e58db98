//! Weir's storage engine: the partition log.
//!
//! A partition is an ordered, append-only log of record batches on local disk. This crate
//! owns everything about it and nothing about networking:
//!
//! - [`batch`]: Kafka's RecordBatch v2 byte layout (documented field by field there), its
//!   encoder ([`BatchBuilder`]) and validating decoder ([`RecordBatch`]), with
//!   [`compression`] codecs and [`varint`]s for the records inside.
//! - [`segment`]: one `.log` file of batches with its sparse [`index`]es.
//! - [`PartitionLog`] ([`log`]): the segments of one partition; offset assignment on append,
//!   zero-re-encode reads of whole batches, lookup by timestamp, truncation for diverged
//!   followers, retention, the flush policy, and crash recovery.
//! - [`epoch`]: the leader-epoch checkpoint behind OffsetForLeaderEpoch.
//! - [`producer`]: idempotent producers' sequence state, checked on the leader, rebuilt by
//!   every replica and snapshotted with the log.
//! - [`preallocate`]: disk blocks reserved ahead of the active segment, off the append path,
//!   so appends don't stall on block allocation during writeback.
//!
//! Durability contract: an append is on disk when [`PartitionLog::flush`] returns (or at once
//! with `flush.messages=1`); fsync errors are returned, never ignored, and take the log offline.
//! After a crash, [`PartitionLog::open`] keeps every intact batch up to the first damaged one
//! and nothing after it. Bytes read from disk or offered by a client never cause a panic.

pub mod batch;
pub mod checkpoint;
pub mod compression;
pub mod config;
pub mod epoch;
pub mod error;
pub mod fuzz;
pub mod index;
pub mod log;
pub mod preallocate;
pub mod producer;
pub mod segment;
pub mod varint;

pub use batch::{
    BatchBuilder, BatchError, BatchHeader, Header, Record, RecordBatch, TimestampType,
};
pub use compression::Compression;
pub use config::{ConfigError, FlushPolicy, LogConfig, NodeSegments, Recompression};
pub use error::{LogError, Result};
pub use log::{AppendInfo, Checkpoint, PartitionLog, PendingFlush, RetentionOutcome};
pub use preallocate::Preallocation;
pub use producer::{Check, ProducerStates};
