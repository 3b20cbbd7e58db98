//! Per-log configuration, with Kafka's topic-config names and defaults.
//!
//! A topic's config overrides (from the metadata quorum) are applied key by key with
//! [`LogConfig::set`], which validates each value and names the bad one in its error.

use std::time::Duration;

use crate::batch::TimestampType;

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
    /// Largest window of disk blocks reserved ahead of the active segment's end, so appends
    /// don't wait on the filesystem allocating blocks during writeback (see
    /// [`crate::preallocate`]). 0 turns it off. Default 256 MiB. A broker setting, not a
    /// topic config: it is not among [`LogConfig::KEYS`].
    pub preallocate_bytes: u64,
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
            preallocate_bytes: 256 << 20,
        }
    }
}

/// A config key or value that can't be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The key is not a log config.
    #[error("unknown log config `{0}`")]
    UnknownKey(String),
    /// The value does not parse or is out of range.
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

impl LogConfig {
    /// The keys [`LogConfig::set`] understands.
    pub const KEYS: &'static [&'static str] = &[
        "segment.bytes",
        "segment.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "retention.ms",
        "retention.bytes",
        "flush.messages",
        "flush.ms",
        "message.timestamp.type",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
    ];

    /// Applies one Kafka-style topic config. Nothing changes when the key or value is invalid.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |reason| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let number = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid("expected an integer"))
        };
        let positive = || {
            number().and_then(|n| {
                u64::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(invalid("must be > 0"))
            })
        };
        // -1 means "no limit" for the keys that allow it, as in Kafka.
        let limit = || -> Result<Option<u64>, ConfigError> {
            match number()? {
                -1 => Ok(None),
                n => u64::try_from(n)
                    .map(Some)
                    .map_err(|_| invalid("must be >= 0 or -1")),
            }
        };
        match key {
            "segment.bytes" => {
                let n = positive()?;
                if n < 1024 || n > i32::MAX as u64 {
                    return Err(invalid("must be between 1024 and 2147483647"));
                }
                self.segment_bytes = n;
            }
            "segment.ms" => self.segment_ms = Duration::from_millis(positive()?),
            "index.interval.bytes" => {
                self.index_interval_bytes = limit()?.ok_or(invalid("must be >= 0"))?
            }
            "max.message.bytes" => {
                let n = positive()?;
                self.max_message_bytes = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= i32::MAX as usize)
                    .ok_or(invalid("too large"))?;
            }
            "retention.ms" => self.retention_ms = limit()?.map(Duration::from_millis),
            "retention.bytes" => self.retention_bytes = limit()?,
            "flush.messages" => {
                self.flush.messages = match number()? {
                    i64::MAX => None,
                    _ => Some(positive()?),
                }
            }
            "flush.ms" => {
                self.flush.interval = match number()? {
                    i64::MAX => None,
                    _ => Some(Duration::from_millis(
                        limit()?.ok_or(invalid("must be >= 0"))?,
                    )),
                }
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid("expected CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" => {
                let bound = match number()? {
                    i64::MAX => None,
                    n => Some(Duration::from_millis(
                        u64::try_from(n).map_err(|_| invalid("must be >= 0"))?,
                    )),
                };
                if key.contains("before") {
                    self.timestamp_before_max = bound;
                } else {
                    self.timestamp_after_max = bound;
                }
            }
            _ => return Err(ConfigError::UnknownKey(key.to_owned())),
        }
        Ok(())
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
