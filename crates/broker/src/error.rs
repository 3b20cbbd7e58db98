//! The broker's error: a wire code, a message a person can act on, and — for
//! NOT_LEADER_OR_FOLLOWER — the current leader's address. Storage errors map here once.

use weir_proto::common::v1::{Error as WireError, ErrorCode};
use weir_storage::LogError;

/// An error answered to a client or replica.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct BrokerError {
    /// The wire code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
    /// With NOT_LEADER_OR_FOLLOWER: where the leader is, when known.
    pub leader_address: Option<String>,
}

impl BrokerError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader_address: None,
        }
    }

    /// NOT_LEADER_OR_FOLLOWER naming the leader.
    pub fn not_leader(topic: &str, partition: u32, leader: Option<String>) -> Self {
        let message = match &leader {
            Some(addr) => {
                format!("this broker does not lead {topic}-{partition}; the leader is at {addr}")
            }
            None => format!(
                "this broker does not lead {topic}-{partition}, and it has no leader right now"
            ),
        };
        Self {
            code: ErrorCode::NotLeaderOrFollower,
            message,
            leader_address: leader,
        }
    }

    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn unknown(topic: &str, partition: u32) -> Self {
        Self::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic or partition {topic}-{partition}"),
        )
    }

    /// The wire form.
    pub fn to_wire(&self) -> WireError {
        WireError {
            code: self.code as i32,
            message: self.message.clone(),
        }
    }
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        let code = match &e {
            LogError::Corrupt(_) => ErrorCode::CorruptMessage,
            LogError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
            LogError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            LogError::StaleEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            LogError::Io { .. } | LogError::Offline { .. } => ErrorCode::KafkaStorageError,
        };
        Self::new(code, e.to_string())
    }
}
