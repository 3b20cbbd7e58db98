//! The one error type of the storage crate.

use std::path::PathBuf;

use crate::batch::BatchError;

/// Why a log operation failed. Each variant maps to one wire error code in the broker.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed. After a failed write or fsync the log refuses further writes
    /// (see [`LogError::Offline`]): what reached the disk is no longer known.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes offered are not a valid record batch (wire code CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    Corrupt(#[from] BatchError),
    /// A batch is larger than `max.message.bytes` (wire code RECORD_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes = {max}")]
    RecordTooLarge {
        /// Size of the batch.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A record's timestamp is further from the broker's clock than
    /// `message.timestamp.before.max.ms` / `after.max.ms` allow (wire code INVALID_TIMESTAMP).
    #[error("record timestamp {timestamp} is {reason}")]
    InvalidTimestamp {
        /// The timestamp (ms since the epoch).
        timestamp: i64,
        /// How far off, and which limit.
        reason: String,
    },
    /// The offset is outside `[log start offset, log end offset]` (wire code OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// First offset in the log.
        log_start_offset: i64,
        /// Offset the next append gets.
        log_end_offset: i64,
    },
    /// The request is not valid for this log (e.g. replicated batches that don't start at the
    /// log end offset, an empty batch, a negative offset) (wire code INVALID_REQUEST).
    #[error("invalid log request: {0}")]
    InvalidRequest(String),
    /// The batch's leader epoch is older than the latest one in the log: it comes from a
    /// deposed leader (wire code FENCED_LEADER_EPOCH).
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleEpoch {
        /// Epoch of the append.
        epoch: i32,
        /// Latest epoch in the log.
        latest: i32,
    },
    /// An idempotent producer's batch does not follow its last one: an earlier batch is
    /// missing, or a new epoch does not start at 0 (wire code OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id}: out-of-order sequence number {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The sequence the partition expects next.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// An idempotent producer's batch carries an epoch older than the producer's current one
    /// here: a newer instance of the producer took over (wire code PRODUCER_FENCED).
    #[error("producer {producer_id}: epoch {epoch} is fenced by the newer epoch {current}")]
    ProducerFenced {
        /// The producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The current epoch.
        current: i16,
    },
    /// A batch continues a producer id this partition does not know (it expired after
    /// `producer.id.expiration.ms`, or never wrote here): a retry could not be told from a new
    /// batch (wire code UNKNOWN_PRODUCER_ID).
    #[error("producer {producer_id} is unknown to this partition (expired?) and sent sequence {sequence}, not 0")]
    UnknownProducerId {
        /// The producer id.
        producer_id: i64,
        /// The batch's first sequence.
        sequence: i32,
    },
    /// An earlier write or fsync failed; the log accepts no more writes until reopened, so no
    /// append can be acknowledged on top of data that may be lost (wire code
    /// KAFKA_STORAGE_ERROR).
    #[error("log {} is offline after an I/O error: {reason}", dir.display())]
    Offline {
        /// The partition directory.
        dir: PathBuf,
        /// The first error.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attaches an operation and a path to an I/O result.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| LogError::Io {
            op,
            path: path.to_owned(),
            source,
        })
    }
}
