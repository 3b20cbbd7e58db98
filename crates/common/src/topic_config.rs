//! The topic-config schema: every key a topic may set, its type, its built-in default and its
//! validation, in one place.
//!
//! Overrides travel as text (`key=value`, Kafka's names and value syntax) from the CLI through
//! the metadata quorum to the brokers. The controller parses each with [`TopicConfig::parse`]
//! before storing it, so a stored override is one every broker can apply; the storage engine
//! applies the log keys to its `LogConfig` from the same parsed values, and the broker and the
//! controller read the replication keys through [`TopicConfig`] too. A new key is one variant,
//! one [`KEYS`] entry and one arm of [`TopicConfig::parse`].

use std::collections::BTreeMap;
use std::time::Duration;

/// `segment.bytes`: roll to a new segment before one would exceed this size.
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// `segment.ms`: roll a segment whose first append is older than this.
pub const SEGMENT_MS: &str = "segment.ms";
/// `index.interval.bytes`: add a sparse index entry after this many bytes.
pub const INDEX_INTERVAL_BYTES: &str = "index.interval.bytes";
/// `max.message.bytes`: the largest record batch accepted, header included.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// `retention.ms`: delete sealed segments whose newest record is older; -1 keeps them.
pub const RETENTION_MS: &str = "retention.ms";
/// `retention.bytes`: delete the oldest sealed segments while the log is larger; -1: no limit.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// `flush.messages`: fsync once this many records are unflushed.
pub const FLUSH_MESSAGES: &str = "flush.messages";
/// `flush.ms`: fsync once the oldest unflushed append is this old.
pub const FLUSH_MS: &str = "flush.ms";
/// `message.timestamp.type`: `CreateTime` or `LogAppendTime`.
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
/// `message.timestamp.before.max.ms`: how far behind the broker's clock a CreateTime may be.
pub const MESSAGE_TIMESTAMP_BEFORE_MAX_MS: &str = "message.timestamp.before.max.ms";
/// `message.timestamp.after.max.ms`: how far ahead of the broker's clock a CreateTime may be.
pub const MESSAGE_TIMESTAMP_AFTER_MAX_MS: &str = "message.timestamp.after.max.ms";
/// `min.insync.replicas`: acks=all needs at least this many in-sync replicas.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
/// `unclean.leader.election.enable`: let an out-of-sync replica lead when no in-sync one is
/// alive (may lose acknowledged records).
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";
/// `cleanup.policy`: only `delete` so far (compaction is not built yet).
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// `compression.type`: the codec the broker stores batches in (`producer`: as sent).
pub const COMPRESSION_TYPE: &str = "compression.type";
/// `compression.gzip.level`: the level the broker recompresses to gzip at (1–9; -1: the codec's
/// default, 6), as KIP-390.
pub const COMPRESSION_GZIP_LEVEL: &str = "compression.gzip.level";
/// `compression.zstd.level`: the level the broker recompresses to zstd at (-131072–22), as
/// KIP-390.
pub const COMPRESSION_ZSTD_LEVEL: &str = "compression.zstd.level";
/// `delete.retention.ms`: how long a compacted topic keeps tombstones. Stored and validated;
/// it takes effect with compaction.
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";

/// One key of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key's name, as Kafka spells it.
    pub name: &'static str,
    /// The built-in default, in the key's value syntax.
    pub default: &'static str,
    /// Whether the storage engine applies it (a log key) rather than the replication layer.
    pub log: bool,
}

/// Every key a topic may set, with its built-in default (Kafka's, except where noted on
/// [`TopicConfig`]).
pub const KEYS: &[Key] = &[
    log_key(SEGMENT_BYTES, "1073741824"),
    log_key(SEGMENT_MS, "604800000"),
    log_key(INDEX_INTERVAL_BYTES, "4096"),
    log_key(MAX_MESSAGE_BYTES, "1048588"),
    log_key(RETENTION_MS, "604800000"),
    log_key(RETENTION_BYTES, "-1"),
    log_key(FLUSH_MESSAGES, "9223372036854775807"),
    log_key(FLUSH_MS, "9223372036854775807"),
    log_key(MESSAGE_TIMESTAMP_TYPE, "CreateTime"),
    log_key(MESSAGE_TIMESTAMP_BEFORE_MAX_MS, "9223372036854775807"),
    log_key(MESSAGE_TIMESTAMP_AFTER_MAX_MS, "3600000"),
    log_key(COMPRESSION_TYPE, "producer"),
    log_key(COMPRESSION_GZIP_LEVEL, "-1"),
    log_key(COMPRESSION_ZSTD_LEVEL, "3"),
    Key {
        name: DELETE_RETENTION_MS,
        default: "86400000",
        log: false,
    },
    Key {
        name: MIN_INSYNC_REPLICAS,
        default: "1",
        log: false,
    },
    Key {
        name: UNCLEAN_LEADER_ELECTION_ENABLE,
        default: "false",
        log: false,
    },
    Key {
        name: CLEANUP_POLICY,
        default: "delete",
        log: false,
    },
];

const fn log_key(name: &'static str, default: &'static str) -> Key {
    Key {
        name,
        default,
        log: true,
    }
}

/// The schema entry of `name`, if it is a topic config.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// How a batch's timestamps are assigned (`message.timestamp.type`; attributes bit 3 of a
/// RecordBatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Set by the producer when the record was created.
    #[default]
    CreateTime,
    /// Set by the broker when the batch was appended; every record takes `maxTimestamp`.
    LogAppendTime,
}

/// The codec a topic stores batches in (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// As the producer sent them (Kafka's default).
    #[default]
    Producer,
    /// Uncompressed (`uncompressed`, or `none`).
    Uncompressed,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// What happens to old segments (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Delete whole segments past retention.
    #[default]
    Delete,
}

/// One parsed topic config: the key and its typed value. `None` in a limit means "no limit"
/// (Kafka's -1, or Long.MAX_VALUE for the keys whose "never" is that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicConfig {
    /// `segment.bytes`, 1024 ..= 2^31-1.
    SegmentBytes(u64),
    /// `segment.ms`, > 0.
    SegmentMs(Duration),
    /// `index.interval.bytes`, >= 0.
    IndexIntervalBytes(u64),
    /// `max.message.bytes`, 1 ..= 2^31-1.
    MaxMessageBytes(usize),
    /// `retention.ms`, >= 0 or -1.
    RetentionMs(Option<Duration>),
    /// `retention.bytes`, >= 0 or -1.
    RetentionBytes(Option<u64>),
    /// `flush.messages`, > 0, or Long.MAX_VALUE for never.
    FlushMessages(Option<u64>),
    /// `flush.ms`, >= 0, or Long.MAX_VALUE for never.
    FlushMs(Option<Duration>),
    /// `message.timestamp.type`.
    MessageTimestampType(TimestampType),
    /// `message.timestamp.before.max.ms`, >= 0, or Long.MAX_VALUE for no bound (the default).
    MessageTimestampBeforeMax(Option<Duration>),
    /// `message.timestamp.after.max.ms`, >= 0, or Long.MAX_VALUE for no bound. Default 1 hour,
    /// as in Kafka 3.6+ (KIP-937).
    MessageTimestampAfterMax(Option<Duration>),
    /// `min.insync.replicas`, 1 ..= the replication factor (checked by [`validate`]).
    MinInsyncReplicas(u32),
    /// `unclean.leader.election.enable`, `true` or `false`.
    UncleanLeaderElectionEnable(bool),
    /// `cleanup.policy`.
    CleanupPolicy(CleanupPolicy),
    /// `compression.type`: producer, uncompressed (or none), gzip, snappy, lz4, zstd.
    CompressionType(CompressionType),
    /// `delete.retention.ms`, >= 0.
    DeleteRetentionMs(Duration),
    /// `compression.gzip.level`, 1 ..= 9, or -1 (`None`) for the codec's default.
    CompressionGzipLevel(Option<i32>),
    /// `compression.zstd.level`, -131072 ..= 22.
    CompressionZstdLevel(i32),
}

/// A topic config that can't be applied. The message names the key and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The key is not a topic config.
    #[error("unknown topic config `{0}`")]
    UnknownKey(String),
    /// The value does not parse or is out of range.
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
}

impl TopicConfig {
    /// Parses one `key=value`; the error names the key and says what was expected.
    pub fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
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
                    .ok_or_else(|| invalid("must be > 0"))
            })
        };
        let non_negative =
            || number().and_then(|n| u64::try_from(n).map_err(|_| invalid("must be >= 0")));
        // -1 means "no limit" for the keys that allow it, as in Kafka.
        let limit = || match number()? {
            -1 => Ok(None),
            _ => non_negative()
                .map(Some)
                .map_err(|_| invalid("must be >= 0 or -1")),
        };
        // Long.MAX_VALUE means "never" for the flush and timestamp keys, as in Kafka.
        let unless_max = |parse: &dyn Fn() -> Result<u64, ConfigError>| match number()? {
            i64::MAX => Ok(None),
            _ => parse().map(Some),
        };
        let millis = Duration::from_millis;
        Ok(match key {
            SEGMENT_BYTES => {
                let n = positive()?;
                if !(1024..=i32::MAX as u64).contains(&n) {
                    return Err(invalid("must be between 1024 and 2147483647"));
                }
                TopicConfig::SegmentBytes(n)
            }
            SEGMENT_MS => TopicConfig::SegmentMs(millis(positive()?)),
            INDEX_INTERVAL_BYTES => TopicConfig::IndexIntervalBytes(non_negative()?),
            MAX_MESSAGE_BYTES => TopicConfig::MaxMessageBytes(
                usize::try_from(positive()?)
                    .ok()
                    .filter(|n| *n <= i32::MAX as usize)
                    .ok_or_else(|| invalid("must be at most 2147483647"))?,
            ),
            RETENTION_MS => TopicConfig::RetentionMs(limit()?.map(millis)),
            RETENTION_BYTES => TopicConfig::RetentionBytes(limit()?),
            FLUSH_MESSAGES => TopicConfig::FlushMessages(unless_max(&positive)?),
            FLUSH_MS => TopicConfig::FlushMs(unless_max(&non_negative)?.map(millis)),
            MESSAGE_TIMESTAMP_TYPE => TopicConfig::MessageTimestampType(match value {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err(invalid("expected CreateTime or LogAppendTime")),
            }),
            MESSAGE_TIMESTAMP_BEFORE_MAX_MS => {
                TopicConfig::MessageTimestampBeforeMax(unless_max(&non_negative)?.map(millis))
            }
            MESSAGE_TIMESTAMP_AFTER_MAX_MS => {
                TopicConfig::MessageTimestampAfterMax(unless_max(&non_negative)?.map(millis))
            }
            MIN_INSYNC_REPLICAS => TopicConfig::MinInsyncReplicas(
                u32::try_from(positive()?).map_err(|_| invalid("too large"))?,
            ),
            UNCLEAN_LEADER_ELECTION_ENABLE => {
                TopicConfig::UncleanLeaderElectionEnable(match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("expected true or false")),
                })
            }
            CLEANUP_POLICY => TopicConfig::CleanupPolicy(match value {
                "delete" => CleanupPolicy::Delete,
                _ => {
                    return Err(invalid(
                        "only `delete` is supported (compaction is not built yet)",
                    ))
                }
            }),
            COMPRESSION_TYPE => TopicConfig::CompressionType(match value {
                "producer" => CompressionType::Producer,
                "uncompressed" | "none" => CompressionType::Uncompressed,
                "gzip" => CompressionType::Gzip,
                "snappy" => CompressionType::Snappy,
                "lz4" => CompressionType::Lz4,
                "zstd" => CompressionType::Zstd,
                _ => {
                    return Err(invalid(
                        "expected producer, uncompressed, gzip, snappy, lz4 or zstd",
                    ))
                }
            }),
            DELETE_RETENTION_MS => TopicConfig::DeleteRetentionMs(millis(non_negative()?)),
            COMPRESSION_GZIP_LEVEL => TopicConfig::CompressionGzipLevel(match number()? {
                -1 => None,
                n @ 1..=9 => Some(n as i32),
                _ => return Err(invalid("must be between 1 and 9, or -1 for the default")),
            }),
            COMPRESSION_ZSTD_LEVEL => TopicConfig::CompressionZstdLevel(match number()? {
                n @ -131_072..=22 => n as i32,
                _ => return Err(invalid("must be between -131072 and 22")),
            }),
            _ => return Err(ConfigError::UnknownKey(key.to_owned())),
        })
    }
}

/// Where a topic's effective config value comes from, as Kafka's DescribeConfigs says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The topic's own override (`weir topic create --config`, `weir topic alter`).
    Topic,
    /// The server's default for every topic (`--topic-config-default`).
    ServerDefault,
    /// Weir's built-in default ([`KEYS`]).
    BuiltIn,
}

impl ConfigSource {
    /// The name the CLI shows: `topic`, `server-default`, `built-in`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Topic => "topic",
            ConfigSource::ServerDefault => "server-default",
            ConfigSource::BuiltIn => "built-in",
        }
    }
}

/// Every key of the schema with the value a topic with `overrides` gets on a server whose
/// topic defaults are `defaults`, and where it comes from, in [`KEYS`] order.
pub fn effective(
    overrides: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> Vec<(&'static str, String, ConfigSource)> {
    KEYS.iter()
        .map(|k| match (overrides.get(k.name), defaults.get(k.name)) {
            (Some(v), _) => (k.name, v.clone(), ConfigSource::Topic),
            (None, Some(v)) => (k.name, v.clone(), ConfigSource::ServerDefault),
            (None, None) => (k.name, k.default.to_owned(), ConfigSource::BuiltIn),
        })
        .collect()
}

/// The server defaults with a topic's overrides on top: the keys that differ from the
/// built-in defaults, for the functions below and for applying to a log.
pub fn merged(
    overrides: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all = defaults.clone();
    all.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// Parses server-wide topic defaults (`key=value` each), checking every key and value.
pub fn parse_defaults(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut defaults = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("`{pair}` is not KEY=VALUE"));
        };
        let (key, value) = (key.trim(), value.trim());
        TopicConfig::parse(key, value).map_err(|e| e.to_string())?;
        defaults.insert(key.to_owned(), value.to_owned());
    }
    Ok(defaults)
}

/// Checks every override of a topic with `replication_factor` replicas; the first invalid one
/// is named in the error. `min.insync.replicas` may not exceed the replication factor.
pub fn validate(
    configs: &BTreeMap<String, String>,
    replication_factor: u32,
) -> Result<(), ConfigError> {
    for (key, value) in configs {
        if let TopicConfig::MinInsyncReplicas(n) = TopicConfig::parse(key, value)? {
            if n > replication_factor {
                return Err(ConfigError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    reason: format!(
                        "must be between 1 and the replication factor ({replication_factor})"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The value of one key in a topic's overrides, parsed; `None` when the topic does not set it
/// or (never for overrides the controller stored) its value does not parse.
pub fn get(configs: &BTreeMap<String, String>, key: &str) -> Option<TopicConfig> {
    configs
        .get(key)
        .and_then(|value| TopicConfig::parse(key, value).ok())
}

/// `min.insync.replicas` of a topic with these overrides (default 1).
pub fn min_insync_replicas(configs: &BTreeMap<String, String>) -> u32 {
    match get(configs, MIN_INSYNC_REPLICAS) {
        Some(TopicConfig::MinInsyncReplicas(n)) => n,
        _ => 1,
    }
}

/// `unclean.leader.election.enable` of a topic with these overrides (default false).
pub fn unclean_leader_election(configs: &BTreeMap<String, String>) -> bool {
    matches!(
        get(configs, UNCLEAN_LEADER_ELECTION_ENABLE),
        Some(TopicConfig::UncleanLeaderElectionEnable(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], rf: u32) -> Result<(), ConfigError> {
        let configs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate(&configs, rf)
    }

    #[test]
    fn accepts_known_keys_and_names_the_bad_one() {
        check(
            &[
                ("min.insync.replicas", "2"),
                ("retention.ms", "-1"),
                ("segment.bytes", "1048576"),
            ],
            3,
        )
        .unwrap();
        let err = check(&[("min.insync.replicas", "4")], 3).unwrap_err();
        assert!(err.to_string().contains("`min.insync.replicas`"), "{err}");
        assert!(err.to_string().contains("`4`"), "{err}");
        assert!(matches!(
            check(&[("retention.ms", "soon")], 3),
            Err(ConfigError::InvalidValue { key, .. }) if key == "retention.ms"
        ));
        assert_eq!(
            check(&[("colour", "blue")], 3),
            Err(ConfigError::UnknownKey("colour".into()))
        );
        for (key, value) in [
            ("unclean.leader.election.enable", "yes"),
            ("min.insync.replicas", "0"),
            ("cleanup.policy", "compact"),
            ("segment.bytes", "1023"),
            ("retention.bytes", "-7"),
            ("flush.ms", "-1"),
            ("message.timestamp.type", "Now"),
            ("message.timestamp.after.max.ms", "-5"),
        ] {
            let err = TopicConfig::parse(key, value).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, .. } if k == key),
                "{key}={value}: {err}"
            );
        }
    }

    #[test]
    fn every_default_parses_and_every_key_is_listed_once() {
        for key in KEYS {
            TopicConfig::parse(key.name, key.default)
                .unwrap_or_else(|e| panic!("default of {}: {e}", key.name));
            assert_eq!(KEYS.iter().filter(|k| k.name == key.name).count(), 1);
        }
        assert_eq!(
            TopicConfig::parse(FLUSH_MESSAGES, "9223372036854775807"),
            Ok(TopicConfig::FlushMessages(None))
        );
        assert_eq!(
            TopicConfig::parse(RETENTION_MS, "-1"),
            Ok(TopicConfig::RetentionMs(None))
        );
    }

    #[test]
    fn replication_keys_read_with_their_defaults() {
        let mut configs = BTreeMap::new();
        assert_eq!(min_insync_replicas(&configs), 1);
        assert!(!unclean_leader_election(&configs));
        configs.insert(MIN_INSYNC_REPLICAS.to_owned(), "2".to_owned());
        configs.insert(UNCLEAN_LEADER_ELECTION_ENABLE.to_owned(), "true".to_owned());
        assert_eq!(min_insync_replicas(&configs), 2);
        assert!(unclean_leader_election(&configs));
    }

    #[test]
    fn each_effective_value_names_its_source() {
        let overrides = BTreeMap::from([(RETENTION_MS.to_owned(), "1000".to_owned())]);
        let defaults = parse_defaults(&[
            "retention.ms=5000".to_owned(),
            "min.insync.replicas = 2".to_owned(),
        ])
        .unwrap();
        let all = effective(&overrides, &defaults);
        assert_eq!(all.len(), KEYS.len());
        let find = |key| all.iter().find(|(k, _, _)| *k == key).cloned().unwrap();
        assert_eq!(
            find(RETENTION_MS),
            (RETENTION_MS, "1000".into(), ConfigSource::Topic)
        );
        assert_eq!(
            find(MIN_INSYNC_REPLICAS),
            (MIN_INSYNC_REPLICAS, "2".into(), ConfigSource::ServerDefault)
        );
        assert_eq!(
            find(COMPRESSION_TYPE),
            (COMPRESSION_TYPE, "producer".into(), ConfigSource::BuiltIn)
        );
        assert_eq!(min_insync_replicas(&merged(&overrides, &defaults)), 2);
        assert!(parse_defaults(&["colour=blue".to_owned()])
            .unwrap_err()
            .contains("`colour`"));
        assert!(parse_defaults(&["retention.ms".to_owned()]).is_err());
        assert!(parse_defaults(&["compression.type=brotli".to_owned()])
            .unwrap_err()
            .contains("`compression.type`"));
    }
}
