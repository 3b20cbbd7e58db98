//! Per-log configuration, with Kafka's topic-config names and defaults.
//!
//! A topic's config overrides (from the metadata quorum) are applied key by key with
//! [`LogConfig::set`]; the keys, their types, defaults and validation are the one topic-config
//! schema in [`weir_common::topic_config`], which the quorum checks overrides against too.

use std::time::Duration;

pub use weir_common::topic_config::ConfigError;
use weir_common::topic_config::{self, CompressionType, TimestampType, TopicConfig};

/// When a log forces its data to disk with fsync.
///
/// Kafka's default, kept here, is to leave flushing to the operating system and rely on
/// replication for durability; `flush.messages=1` (or [`FlushPolicy::every_append`]) makes
/// every acknowledged append durable on this node alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushPolicy {
    /// `flush.messages`: fsync once this many records are unflushed. `None`: never for this
    /// reason.
    pub messages: Option<u64>,
    /// `flush.ms`: fsync once the oldest unflushed append is this old (checked on append and by
    /// [`crate::PartitionLog::flush_if_due`]). `None`: never for this reason.
    pub interval: Option<Duration>,
}

impl FlushPolicy {
    /// fsync after every append before it returns.
    pub fn every_append() -> Self {
        Self {
            messages: Some(1),
            interval: None,
        }
    }
}

/// Configuration of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before one would exceed this size. Default 1 GiB.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment whose first append is older than this. Default 7 days.
    pub segment_ms: Duration,
    /// `index.interval.bytes`: add a sparse index entry after this many bytes. Default 4096.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: largest record batch accepted, header included. Default 1 MiB
    /// plus Kafka's 12-byte log overhead (1048588), as in Kafka.
    pub max_message_bytes: usize,
    /// `retention.ms`: delete sealed segments whose newest record is older. Default 7 days;
    /// `None` (`-1`) keeps them forever.
    pub retention_ms: Option<Duration>,
    /// `retention.bytes`: delete the oldest sealed segments while the log is larger.
    /// Default `None` (`-1`): no size limit.
    pub retention_bytes: Option<u64>,
    /// `flush.messages` / `flush.ms`.
    pub flush: FlushPolicy,
    /// `message.timestamp.type`: `CreateTime` (default) keeps the producer's timestamps;
    /// `LogAppendTime` stamps each batch with the broker's clock.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: with CreateTime, a record more than this older than
    /// the broker's clock is refused. Default `None` (Kafka's Long.MAX_VALUE: no bound).
    pub timestamp_before_max: Option<Duration>,
    /// `message.timestamp.after.max.ms`: with CreateTime, a record more than this ahead of the
    /// broker's clock is refused. Default 1 hour, as in Kafka 3.6+ (KIP-937): a timestamp of
    /// year 292,277,026 would otherwise keep its segment from ever being deleted by retention.
    pub timestamp_after_max: Option<Duration>,
    /// `compression.type`: the codec batches are stored in; `Producer` (default) keeps each
    /// batch as the producer compressed it, any other makes the leader recompress batches in
    /// another codec.
    pub compression: CompressionType,
    /// `compression.gzip.level`: the level of that recompression to gzip (`None`: default 6).
    pub gzip_level: Option<i32>,
    /// `compression.zstd.level`: the level of that recompression to zstd (default 3).
    pub zstd_level: i32,
    /// Most segments a partition keeps before it stops rolling by `segment.bytes` and
    /// `segment.ms` (the active segment then grows past them, with a warning, until retention
    /// deletes old ones): each segment holds a file descriptor, and `segment.ms=1` must not run
    /// a node out of them. Default 10,000. A broker setting.
    pub max_segments: usize,
    /// The node's count of open segments and its bound, shared by every log of a broker: past
    /// it no log rolls by `segment.bytes` or `segment.ms` (as at [`Self::max_segments`]), so
    /// many partitions of many segments cannot together run the node out of descriptors.
    /// Default: a count of its own, unbounded.
    pub node_segments: NodeSegments,
    /// Largest window of disk blocks reserved ahead of the active segment's end, so appends
    /// don't wait on the filesystem allocating blocks during writeback (see
    /// [`crate::preallocate`]). 0 turns it off. Default 256 MiB. A broker setting, not a
    /// topic config.
    pub preallocate_bytes: u64,
    /// `producer.id.expiration.ms`: an idempotent producer not seen for this long is
    /// forgotten (see [`crate::producer`]). Default 1 day, as in Kafka. A broker setting.
    pub producer_id_expiration: Duration,
    /// Most idempotent producer ids remembered per partition; past it the least recently
    /// seen is forgotten. Default 10,000 (a few MB at most). A broker setting.
    pub max_producers: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: Duration::from_secs(7 * 24 * 3600),
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            flush: FlushPolicy::default(),
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max: None,
            timestamp_after_max: Some(Duration::from_secs(3600)),
            compression: CompressionType::Producer,
            gzip_level: None,
            zstd_level: 3,
            max_segments: 10_000,
            node_segments: NodeSegments::default(),
            preallocate_bytes: 256 << 20,
            producer_id_expiration: Duration::from_secs(24 * 3600),
            max_producers: 10_000,
        }
    }
}

impl LogConfig {
    /// The most bytes one batch may decompress to: 8 × `max.message.bytes` (8 MiB by
    /// default), so a small batch of zeros cannot cost every consumer hundreds of MB.
    pub fn max_decompressed(&self) -> usize {
        self.max_message_bytes.saturating_mul(8)
    }

    /// What `compression.type` asks of produced batches: the few settings recompression
    /// needs, `Copy`, so a broker keeps them beside its partition's state and recompresses
    /// without the log.
    pub fn recompression(&self) -> Recompression {
        Recompression {
            compression: self.compression,
            gzip_level: self.gzip_level,
            zstd_level: self.zstd_level,
            max_decompressed: self.max_decompressed(),
        }
    }

    /// Applies one Kafka-style topic config (parsed and validated by
    /// [`weir_common::topic_config`], the one schema). Nothing changes when the key or value is
    /// invalid; a topic config that is not a log config (`min.insync.replicas`, …) is
    /// [`ConfigError::UnknownKey`] here.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if !topic_config::key(key).is_some_and(|k| k.log) {
            return Err(ConfigError::UnknownKey(key.to_owned()));
        }
        self.apply(TopicConfig::parse(key, value)?);
        Ok(())
    }

    /// Applies a parsed topic config; those that are not about the log are ignored.
    pub fn apply(&mut self, config: TopicConfig) {
        match config {
            TopicConfig::SegmentBytes(n) => self.segment_bytes = n,
            TopicConfig::SegmentMs(d) => self.segment_ms = d,
            TopicConfig::IndexIntervalBytes(n) => self.index_interval_bytes = n,
            TopicConfig::MaxMessageBytes(n) => self.max_message_bytes = n,
            TopicConfig::RetentionMs(d) => self.retention_ms = d,
            TopicConfig::RetentionBytes(n) => self.retention_bytes = n,
            TopicConfig::FlushMessages(n) => self.flush.messages = n,
            TopicConfig::FlushMs(d) => self.flush.interval = d,
            TopicConfig::MessageTimestampType(t) => self.timestamp_type = t,
            TopicConfig::MessageTimestampBeforeMax(d) => self.timestamp_before_max = d,
            TopicConfig::MessageTimestampAfterMax(d) => self.timestamp_after_max = d,
            TopicConfig::CompressionType(c) => self.compression = c,
            TopicConfig::CompressionGzipLevel(l) => self.gzip_level = l,
            TopicConfig::CompressionZstdLevel(l) => self.zstd_level = l,
            TopicConfig::MinInsyncReplicas(_)
            | TopicConfig::UncleanLeaderElectionEnable(_)
            | TopicConfig::CleanupPolicy(_)
            | TopicConfig::DeleteRetentionMs(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_kafka_keys_and_rejects_bad_values_without_change() {
        let mut config = LogConfig::default();
        config.set("segment.bytes", "1048576").unwrap();
        config.set("retention.ms", "-1").unwrap();
        config.set("retention.bytes", "5000").unwrap();
        config.set("flush.messages", "1").unwrap();
        config
            .set("message.timestamp.type", "LogAppendTime")
            .unwrap();
        assert_eq!(config.segment_bytes, 1 << 20);
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.retention_bytes, Some(5000));
        assert_eq!(config.flush, FlushPolicy::every_append());
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.timestamp_after_max, Some(Duration::from_secs(3600)));
        config
            .set("message.timestamp.after.max.ms", "5000")
            .unwrap();
        config
            .set("message.timestamp.before.max.ms", "60000")
            .unwrap();
        assert_eq!(config.timestamp_after_max, Some(Duration::from_secs(5)));
        assert_eq!(config.timestamp_before_max, Some(Duration::from_secs(60)));

        let before = config.clone();
        assert!(config.set("segment.bytes", "0").is_err());
        assert!(config.set("segment.bytes", "lots").is_err());
        assert!(config.set("retention.bytes", "-7").is_err());
        assert!(config.set("message.timestamp.type", "Now").is_err());
        assert!(config.set("message.timestamp.after.max.ms", "-5").is_err());
        assert_eq!(
            config.set("nope", "1"),
            Err(ConfigError::UnknownKey("nope".into()))
        );
        assert_eq!(config, before);
    }
}

/// The segments open across a node's logs, and the most it allows before logs stop rolling
/// ([`LogConfig::node_segments`]). Clones share the count; two are equal when they are the
/// same count.
#[derive(Debug, Clone)]
pub struct NodeSegments(std::sync::Arc<NodeSegmentsInner>);

#[derive(Debug)]
struct NodeSegmentsInner {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl NodeSegments {
    /// A count for a node that allows `max` open segments before its logs stop rolling.
    pub fn new(max: usize) -> Self {
        Self(std::sync::Arc::new(NodeSegmentsInner {
            open: std::sync::atomic::AtomicUsize::new(0),
            max,
        }))
    }

    /// Segments open now, across the logs that share this count.
    pub fn open(&self) -> usize {
        self.0.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// Whether the logs that share this count hold the most segments allowed.
    pub fn full(&self) -> bool {
        self.open() >= self.0.max
    }

    /// Moves the count from `was` to `now` segments of one log.
    pub(crate) fn adjust(&self, was: usize, now: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        if now > was {
            self.0.open.fetch_add(now - was, Relaxed);
        } else if was > now {
            self.0.open.fetch_sub(was - now, Relaxed);
        }
    }
}

impl Default for NodeSegments {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl PartialEq for NodeSegments {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NodeSegments {}

/// The settings of `compression.type` recompression ([`LogConfig::recompression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recompression {
    /// `compression.type`.
    pub compression: CompressionType,
    /// `compression.gzip.level` (`None`: the codec's default).
    pub gzip_level: Option<i32>,
    /// `compression.zstd.level`.
    pub zstd_level: i32,
    /// The most a batch may decompress to ([`LogConfig::max_decompressed`]).
    pub max_decompressed: usize,
}

impl Recompression {
    /// Whether batches are kept in the codec they came in (`compression.type=producer`).
    pub fn keeps_producers_codec(&self) -> bool {
        self.compression == CompressionType::Producer
    }

    /// The codec and level a batch sent in codec `sent` is recompressed to, if any.
    pub fn target(&self, sent: crate::Compression) -> Option<(crate::Compression, Option<i32>)> {
        use crate::Compression as C;
        let (wanted, level) = match self.compression {
            CompressionType::Producer => return None,
            CompressionType::Uncompressed => (C::None, None),
            CompressionType::Gzip => (C::Gzip, self.gzip_level),
            CompressionType::Snappy => (C::Snappy, None),
            CompressionType::Lz4 => (C::Lz4, None),
            CompressionType::Zstd => (C::Zstd, Some(self.zstd_level)),
        };
        (wanted != sent).then_some((wanted, level))
    }
}
