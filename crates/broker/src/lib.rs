//! Weir's broker role: the client-facing gRPC services (Produce, Fetch, ListOffsets, Metadata,
//! Admin), the replica manager that leads or follows each partition, and ISR replication
//! (Kafka's model, not Raft per partition; see DESIGN.md "The data path").
//!
//! - [`lifecycle`]: registration and heartbeats with the controller quorum.
//! - [`manager`]: the partitions this broker holds, kept in step with the metadata log.
//! - [`partition`]: one replica — its log, leader/follower role, ISR and high watermark.
//! - [`replication`]: the leader's and the follower's sides of replication, and ISR changes.
//! - [`service`]: the client gRPC service; [`wire`]: its protobuf conversions (plain records
//!   ↔ batches, metadata answers).
//! - [`error`]: the broker's error and its wire codes; [`budget`]: the memory budgets of
//!   fetch and replica fetch answers.

pub mod budget;
pub mod error;
pub mod lifecycle;
pub mod limits;
pub mod manager;
pub mod partition;
pub mod replication;
pub mod service;
pub mod wire;

pub use error::BrokerError;
pub use manager::{BrokerConfig, ReplicaManager};
pub use service::BrokerService;
