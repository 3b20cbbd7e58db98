//! Weir's metadata quorum (KRaft-style): the metadata model and state machine, the openraft
//! type configuration, sled-backed log and state storage, Raft over gRPC, and the controller
//! logic that runs on the Raft leader.
//!
//! - [`command`]: what the metadata log carries; [`state`]: what applying it builds.
//! - [`types`]: the openraft type configuration.
//! - [`store`]: the sled-backed Raft log and state machine; [`network`]: Raft over gRPC.
//! - [`controller`]: broker liveness, topic creation, leader election, request forwarding.
//! - [`wire`]: the quorum's protobuf conversions (metadata and refusals to their wire forms).
//! - [`node`]: a node's membership in the quorum (bootstrap, learners, shutdown).

pub mod command;
pub mod controller;
pub mod election;
pub mod fuzz;
pub mod network;
pub mod node;
pub mod state;
pub mod store;
pub mod types;
pub mod wire;

pub use command::{Command, CommandResult, MetaError};
pub use state::{BrokerInfo, MetadataState, PartitionInfo, TopicInfo};
pub use store::{open_store, LogStore, StateMachineStore, StoreError};
pub use types::{NodeId, TypeConfig};
