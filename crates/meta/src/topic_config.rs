//! Topic config overrides: which keys a topic may set, and their validation.
//!
//! Log keys (`segment.bytes`, `retention.ms`, …) are checked by the storage engine's own
//! parser, so a value accepted here is one the broker can apply. Replication keys are checked
//! against the topic's replication factor.

use std::collections::BTreeMap;

use weir_storage::LogConfig;

use crate::command::MetaError;

/// `min.insync.replicas`: acks=all needs at least this many in-sync replicas. Default 1.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
/// `unclean.leader.election.enable`: let an out-of-sync replica lead when no in-sync one is
/// alive (may lose acknowledged records). Default false.
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";
/// `cleanup.policy`: only `delete` is supported so far.
pub const CLEANUP_POLICY: &str = "cleanup.policy";

/// Checks every override; the first invalid one is named in the error.
pub fn validate_topic_configs(
    configs: &BTreeMap<String, String>,
    replication_factor: u32,
) -> Result<(), MetaError> {
    let mut log = LogConfig::default();
    for (key, value) in configs {
        let invalid = |reason: String| MetaError::InvalidConfig(format!("{key}={value}: {reason}"));
        match key.as_str() {
            MIN_INSYNC_REPLICAS => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| invalid("expected a positive integer".into()))?;
                if n == 0 || n > replication_factor {
                    return Err(invalid(format!(
                        "must be between 1 and the replication factor ({replication_factor})"
                    )));
                }
            }
            UNCLEAN_LEADER_ELECTION => {
                if value != "true" && value != "false" {
                    return Err(invalid("expected true or false".into()));
                }
            }
            CLEANUP_POLICY => {
                if value != "delete" {
                    return Err(invalid(
                        "only `delete` is supported (compaction is not built yet)".into(),
                    ));
                }
            }
            _ if LogConfig::KEYS.contains(&key.as_str()) => {
                log.set(key, value)
                    .map_err(|e| MetaError::InvalidConfig(e.to_string()))?;
            }
            _ => {
                return Err(MetaError::InvalidConfig(format!(
                    "unknown topic config `{key}`"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], rf: u32) -> Result<(), MetaError> {
        let configs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        validate_topic_configs(&configs, rf)
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
        assert!(err.to_string().contains("min.insync.replicas=4"), "{err}");
        assert!(check(&[("retention.ms", "soon")], 3).is_err());
        assert!(check(&[("colour", "blue")], 3)
            .unwrap_err()
            .to_string()
            .contains("colour"));
        assert!(check(&[("unclean.leader.election.enable", "yes")], 3).is_err());
    }
}
