//! Weir's metadata quorum (KRaft-style): the metadata model and state machine, the openraft
//! type configuration, sled-backed log and state storage, Raft over gRPC, and the controller
//! logic that runs on the Raft leader.
//!
//! - [`command`]: what the metadata log carries; [`state`]: what applying it builds.
//! - [`types`]: the openraft type configuration.

pub mod command;
pub mod state;
pub mod types;

pub use command::{Command, CommandResult, MetaError};
pub use state::{BrokerInfo, MetadataState, PartitionInfo, TopicInfo};
pub use types::{NodeId, TypeConfig};
