//! The commands written to the metadata log, and what applying one answers.
//!
//! Every command is a decision already made: the controller (on the Raft leader) validates a
//! request, computes replica placement or the new ISR, and writes the outcome. Applying a
//! command is deterministic, so every voter and learner that replays the log reaches the same
//! [`crate::state::MetadataState`]. A command whose precondition no longer holds when applied
//! (a stale partition epoch, a topic deleted meanwhile) changes nothing and answers an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker (re)started and registered. A new `incarnation` replaces the old registration:
    /// the broker is fenced (leaves ISRs, loses leaderships) until it heartbeats as caught up.
    RegisterBroker {
        /// Broker id (= node id).
        id: NodeId,
        /// Address clients and other brokers use to reach its broker listener.
        address: String,
        /// Rack, for rack-aware replica placement.
        rack: Option<String>,
        /// Random id chosen at each process start.
        incarnation: u64,
    },
    /// The broker missed its session (or shut down): it leaves every ISR it is not the last
    /// member of, and partitions it led get new leaders from the remaining ISR.
    FenceBroker {
        /// Broker id.
        id: NodeId,
    },
    /// The broker heartbeats again and has caught up: it may lead and join ISRs again;
    /// leaderless partitions whose ISR holds it get it as leader.
    UnfenceBroker {
        /// Broker id.
        id: NodeId,
    },
    /// Creates a topic with a replica assignment chosen by the controller.
    CreateTopic {
        /// Topic name (already validated).
        name: String,
        /// Topic id: 32 hex digits, unique per creation.
        topic_id: String,
        /// For each partition, its replicas; the first is the preferred leader.
        assignment: Vec<Vec<NodeId>>,
        /// Config overrides.
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// A partition leader changes the ISR (Kafka's AlterPartition). Rejected unless
    /// `leader_epoch` and `partition_epoch` are the current ones.
    AlterPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The leader asking.
        leader: NodeId,
        /// The leader epoch the leader holds.
        leader_epoch: i32,
        /// The partition epoch the leader last saw.
        partition_epoch: i32,
        /// The new in-sync replica set.
        isr: Vec<NodeId>,
        /// Each member the change adds, with the broker epoch (registration) it fetched with
        /// (KIP-903): refused unless that is the broker's current registration, so an
        /// expansion computed from a broker's previous incarnation cannot re-add it after it
        /// restarted (perhaps with an empty disk).
        added: Vec<(NodeId, u64)>,
    },
    /// Elects a leader for a partition from its live ISR (preferred replica first); with
    /// `unclean`, from any live replica when no ISR member is alive.
    ElectLeader {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Allow an out-of-sync replica to lead (may lose committed records).
        unclean: bool,
    },
    /// Sets and removes topic config overrides (already validated).
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// Keys to set.
        set: BTreeMap<String, String>,
        /// Keys to remove (back to the default).
        delete: Vec<String>,
    },
    /// Removes the registration of a fenced broker (an operator's UnregisterBroker): it leaves
    /// the broker list. Partitions keep it in their replica lists; it is in no ISR it was not
    /// the last member of (fencing saw to that). Refused for an active broker.
    UnregisterBroker {
        /// Broker id.
        id: NodeId,
    },
    /// Hands broker `broker` the next [`crate::state::PRODUCER_ID_BLOCK`] producer ids (Kafka's
    /// AllocateProducerIds). Refused unless `broker_epoch` is its current registration.
    AllocateProducerIds {
        /// The broker asking.
        broker: NodeId,
        /// Its broker epoch.
        broker_epoch: u64,
    },
}

/// Why a request or command was refused. Each maps to one wire error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    /// The topic does not exist.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The partition does not exist.
    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// A topic with this name exists.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// The topic name breaks the rules.
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopic {
        /// The name.
        name: String,
        /// Which rule.
        reason: String,
    },
    /// Bad partition count.
    #[error("invalid partition count {0}: must be between 1 and 100000")]
    InvalidPartitions(i64),
    /// A new topic would put more partition replicas on a broker than it may hold.
    #[error("the topic would put {count} partition replicas on broker {broker}, more than the {limit} a broker may hold; use fewer partitions or add brokers")]
    TooManyReplicas {
        /// The broker.
        broker: NodeId,
        /// Its replicas with the new topic.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Bad replication factor.
    #[error("invalid replication factor {factor}: {reason}")]
    InvalidReplicationFactor {
        /// Requested factor.
        factor: i64,
        /// Why.
        reason: String,
    },
    /// A config key or value is invalid (the message names the key).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The broker is not registered (or its incarnation is old).
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    /// The partition epoch or leader epoch in the request is not the current one.
    #[error("stale partition state for {topic}-{partition}: {reason}")]
    StalePartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// What was stale.
        reason: String,
    },
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No leader could be elected.
    #[error("no eligible leader for {topic}-{partition}")]
    NoEligibleLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// An ISR change names a broker epoch that is not the broker's current registration.
    #[error("broker {broker} asked with broker epoch {given}, but its registration is epoch {current}: the request came from an earlier incarnation")]
    StaleBrokerEpoch {
        /// The broker.
        broker: NodeId,
        /// The epoch the change carries.
        given: u64,
        /// Its current registration's epoch.
        current: u64,
    },
    /// This node is not the controller leader (and the request was not forwarded): `leader`
    /// is the leader's controller address, when known.
    #[error("{}", match leader {
        Some(addr) => format!("this node is not the controller leader; the leader is at {addr}"),
        None => "no controller leader is known yet; retry shortly".to_owned(),
    })]
    NotController {
        /// The leader's controller address.
        leader: Option<String>,
    },
    /// TriggerElection called again within the interval.
    #[error("an election was triggered on this node less than {interval_secs} s ago")]
    ElectionThrottled {
        /// The least time between two triggered elections.
        interval_secs: u64,
    },
    /// The quorum failed to do what was asked (a Raft error).
    #[error("{0}")]
    Internal(String),
}

impl From<weir_common::topic_config::ConfigError> for MetaError {
    fn from(e: weir_common::topic_config::ConfigError) -> Self {
        MetaError::InvalidConfig(e.to_string())
    }
}

impl MetaError {
    /// The wire error code (Kafka's numbering, see `proto/common.proto`).
    pub fn code(&self) -> i32 {
        use weir_proto::common::v1::ErrorCode as C;
        let code = match self {
            MetaError::UnknownTopic(_) | MetaError::UnknownPartition { .. } => {
                C::UnknownTopicOrPartition
            }
            MetaError::TopicExists(_) => C::TopicAlreadyExists,
            MetaError::InvalidTopic { .. } => C::InvalidTopic,
            MetaError::InvalidPartitions(_) | MetaError::TooManyReplicas { .. } => {
                C::InvalidPartitions
            }
            MetaError::InvalidReplicationFactor { .. } => C::InvalidReplicationFactor,
            MetaError::InvalidConfig(_) => C::InvalidConfig,
            MetaError::UnknownBroker(_) => C::InvalidRequest,
            MetaError::StalePartition { .. } => C::FencedLeaderEpoch,
            MetaError::InvalidRequest(_) => C::InvalidRequest,
            MetaError::NoEligibleLeader { .. } => C::NotLeaderOrFollower,
            MetaError::StaleBrokerEpoch { .. } => C::StaleBrokerEpoch,
            MetaError::NotController { .. } => C::NotController,
            MetaError::ElectionThrottled { .. } => C::ThrottlingQuotaExceeded,
            MetaError::Internal(_) => C::UnknownServerError,
        };
        code as i32
    }
}

/// The outcome of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommandResult {
    /// `None` when the command was applied; the refusal otherwise (nothing changed).
    pub error: Option<MetaError>,
    /// The metadata version (log index) after applying.
    pub version: u64,
    /// For [`Command::AllocateProducerIds`]: the first id of the block handed out.
    #[serde(default)]
    pub first_producer_id: Option<i64>,
}

impl CommandResult {
    /// The result as a `Result`.
    pub fn into_result(self) -> Result<u64, MetaError> {
        match self.error {
            None => Ok(self.version),
            Some(e) => Err(e),
        }
    }
}
