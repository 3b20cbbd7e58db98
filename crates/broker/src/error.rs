//! The broker's error: what went wrong, as a variant per cause, with one mapping to the wire
//! code ([`BrokerError::code`]) and — for NOT_LEADER_OR_FOLLOWER — the current leader's
//! address. Storage errors map here once ([`LogError`] is a variant). Protobuf appears only at
//! the edge: [`BrokerError::to_wire`] and [`BrokerError::answer`].

use weir_meta::NodeId;
use weir_proto::common::v1::{Error as WireError, ErrorCode, WithError, WithLeaderHint};
use weir_storage::LogError;

/// An error answered to a client or a replica.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// This broker does not lead the partition (NOT_LEADER_OR_FOLLOWER); `leader` is where the
    /// leader is, when known.
    #[error("{}", not_leader_message(topic, *partition, leader.as_deref()))]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The leader's client address, when known.
        leader: Option<String>,
    },
    /// No such topic, or no such partition of it (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// No such topic (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`; nothing was written
    /// (NOT_ENOUGH_REPLICAS).
    #[error("{topic}-{partition} has {isr} in-sync replicas, fewer than min.insync.replicas = {min_insync}")]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min_insync: usize,
    },
    /// The ISR shrank below `min.insync.replicas` after the batch was written and before it
    /// was committed (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    #[error("the ISR shrank below min.insync.replicas before the batch was committed")]
    NotEnoughReplicasAfterAppend,
    /// acks=all: the ISR did not replicate the batch in time (REQUEST_TIMED_OUT).
    #[error("the batch was not replicated to the ISR within {timeout_ms} ms")]
    ReplicationTimedOut {
        /// The request's timeout.
        timeout_ms: u128,
    },
    /// A request in another leader epoch than the partition's: FENCED_LEADER_EPOCH when the
    /// asker's is older, UNKNOWN_LEADER_EPOCH when it is newer (this broker is behind).
    #[error("leader epoch {asked} asked, current {current}")]
    LeaderEpoch {
        /// The epoch in the request.
        asked: i32,
        /// The partition's epoch on this broker.
        current: i32,
    },
    /// A follower change meant for another role than the replica has now (FENCED_LEADER_EPOCH;
    /// nothing done).
    #[error("{topic}-{partition}: the change was for following broker {leader} in epoch {epoch}, but the replica is now {now}")]
    StaleFollowerChange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The leader the change was for.
        leader: NodeId,
        /// The epoch the change was for.
        epoch: i32,
        /// The replica's role now, in words.
        now: String,
    },
    /// An offset outside the log (OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} is outside [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The log's start.
        log_start: i64,
        /// The log's end.
        log_end: i64,
    },
    /// A replica fetch from a broker that may not fetch now: fenced or unknown
    /// (BROKER_NOT_AVAILABLE).
    #[error("broker {replica} {why}")]
    ReplicaNotAvailable {
        /// The asking broker.
        replica: NodeId,
        /// Why, in words.
        why: &'static str,
    },
    /// A replica fetch from a broker that is not a replica of the partition (INVALID_REQUEST).
    #[error("broker {0} is not a replica")]
    NotAReplica(NodeId),
    /// acks other than 0, 1 or -1 (INVALID_REQUIRED_ACKS).
    #[error("acks must be 0, 1 or -1 (all), not {0}")]
    InvalidRequiredAcks(i32),
    /// A malformed or out-of-bounds request (INVALID_REQUEST).
    #[error("{0}")]
    InvalidRequest(String),
    /// Records that do not decode (CORRUPT_MESSAGE).
    #[error("{0}")]
    CorruptMessage(String),
    /// The partition log refused or failed (its own mapping, see [`LogError`]).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A replica's directory could not be retired (KAFKA_STORAGE_ERROR).
    #[error("retiring {dir}: {error}")]
    Retire {
        /// The directory.
        dir: String,
        /// The filesystem's error.
        error: String,
    },
    /// The controller quorum refused what the broker asked for a client, or none could be
    /// reached (NOT_CONTROLLER, retriable): its code and message are passed on.
    #[error("the controller quorum answered: {}", .0.message)]
    Controller(WireError),
    /// The broker is shutting down (UNKNOWN_SERVER_ERROR).
    #[error("broker shutting down")]
    ShuttingDown,
    /// A task of the broker failed (UNKNOWN_SERVER_ERROR).
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_leader_message(topic: &str, partition: u32, leader: Option<&str>) -> String {
    match leader {
        Some(addr) => {
            format!("this broker does not lead {topic}-{partition}; the leader is at {addr}")
        }
        None => {
            format!("this broker does not lead {topic}-{partition}, and it has no leader right now")
        }
    }
}

impl BrokerError {
    /// NOT_LEADER_OR_FOLLOWER naming the leader.
    pub fn not_leader(topic: &str, partition: u32, leader: Option<String>) -> Self {
        BrokerError::NotLeader {
            topic: topic.to_owned(),
            partition,
            leader,
        }
    }

    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn unknown(topic: &str, partition: u32) -> Self {
        BrokerError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        }
    }

    /// The wire code: the one place a broker error becomes a code.
    pub fn code(&self) -> ErrorCode {
        use BrokerError as E;
        match self {
            E::NotLeader { .. } => ErrorCode::NotLeaderOrFollower,
            E::UnknownPartition { .. } | E::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            E::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            E::NotEnoughReplicasAfterAppend => ErrorCode::NotEnoughReplicasAfterAppend,
            E::ReplicationTimedOut { .. } => ErrorCode::RequestTimedOut,
            E::LeaderEpoch { asked, current } if asked < current => ErrorCode::FencedLeaderEpoch,
            E::LeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            E::StaleFollowerChange { .. } => ErrorCode::FencedLeaderEpoch,
            E::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            E::ReplicaNotAvailable { .. } => ErrorCode::BrokerNotAvailable,
            E::NotAReplica(_) | E::InvalidRequest(_) => ErrorCode::InvalidRequest,
            E::InvalidRequiredAcks(_) => ErrorCode::InvalidRequiredAcks,
            E::CorruptMessage(_) => ErrorCode::CorruptMessage,
            E::Log(e) => log_code(e),
            E::Retire { .. } => ErrorCode::KafkaStorageError,
            E::Controller(e) => {
                ErrorCode::try_from(e.code).unwrap_or(ErrorCode::UnknownServerError)
            }
            E::ShuttingDown | E::Internal(_) => ErrorCode::UnknownServerError,
        }
    }

    /// With NOT_LEADER_OR_FOLLOWER: where the leader is, when known.
    pub fn leader_address(&self) -> Option<&str> {
        match self {
            BrokerError::NotLeader { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }

    /// The wire form.
    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }

    /// The response that answers this error: its `error` set, the leader's address where the
    /// response has room for one, every other field at its "no value".
    pub fn answer<T: WithLeaderHint>(&self) -> T {
        let mut answer = T::with_error(self.to_wire());
        if let Some(addr) = self.leader_address() {
            answer.set_leader_address(addr.to_owned());
        }
        answer
    }

    /// [`BrokerError::answer`] for a response without a leader hint.
    pub fn answer_plain<T: WithError>(&self) -> T {
        T::with_error(self.to_wire())
    }
}

/// The wire code of a log error.
fn log_code(e: &LogError) -> ErrorCode {
    match e {
        LogError::Corrupt(_) => ErrorCode::CorruptMessage,
        LogError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
        LogError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        LogError::StaleEpoch { .. } => ErrorCode::FencedLeaderEpoch,
        LogError::Io { .. } | LogError::Offline { .. } => ErrorCode::KafkaStorageError,
        LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
        LogError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        LogError::UnknownProducerId { .. } => ErrorCode::UnknownProducerId,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_code_and_the_leader_travels_with_not_leader() {
        let e = BrokerError::not_leader("t", 3, Some("10.0.0.1:9092".into()));
        assert_eq!(e.code(), ErrorCode::NotLeaderOrFollower);
        assert_eq!(e.leader_address(), Some("10.0.0.1:9092"));
        assert!(
            e.to_string().contains("the leader is at 10.0.0.1:9092"),
            "{e}"
        );
        let answer: weir_proto::broker::v1::ProduceResponse = e.answer();
        assert_eq!(answer.leader_address, "10.0.0.1:9092");
        assert_eq!(answer.base_offset, -1);
        assert_eq!(
            answer.error.map(|e| e.code),
            Some(ErrorCode::NotLeaderOrFollower as i32)
        );

        let older = BrokerError::LeaderEpoch {
            asked: 4,
            current: 5,
        };
        let newer = BrokerError::LeaderEpoch {
            asked: 6,
            current: 5,
        };
        assert_eq!(older.code(), ErrorCode::FencedLeaderEpoch);
        assert_eq!(newer.code(), ErrorCode::UnknownLeaderEpoch);
        assert_eq!(
            BrokerError::unknown("t", 0).code(),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            BrokerError::from(LogError::Offline {
                dir: "d".into(),
                reason: "gone".into()
            })
            .code(),
            ErrorCode::KafkaStorageError
        );
        assert_eq!(BrokerError::unknown("t", 0).leader_address(), None);
    }
}
