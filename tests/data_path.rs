//! The data path with real `weir-server` processes, against the public contract in
//! `proto/broker.proto`, one room per concern (`tests/data_path/`), with the shared helpers in
//! `tests/common/data.rs`:
//!
//! - `produce_consume`: produce to partition leaders and consume through Fetch streams on an
//!   RF 3 cluster;
//! - `acks_all_failover`: acks=all records surviving a leader kill under load;
//! - `bad_requests`: typed errors for bad produce, fetch and ListOffsets requests (that
//!   change nothing);
//! - `min_insync`: min.insync.replicas refusing acks=all once the ISR is too small;
//! - `unclean_election`: unclean.leader.election.enable off (an out-of-sync replica never
//!   leads) and on (it leads once every ISR member is gone, and the records only the old
//!   leader had are lost);
//! - `idempotence`: InitProducerId and the leader's sequence checks over raw gRPC;
//! - `replication_rpcs`: ProduceStream and OffsetForLeaderEpoch called directly over gRPC;
//! - `replica_lifecycle`: retention and topic deletion observed on every replica;
//! - `preallocation`: disk blocks reserved ahead of busy partitions only.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The serial() guard is held across awaits on purpose: it keeps cluster tests one at a time.
#![allow(clippy::await_holding_lock)]

mod common;

#[path = "data_path/acks_all_failover.rs"]
mod acks_all_failover;
#[path = "data_path/bad_requests.rs"]
mod bad_requests;
#[path = "data_path/idempotence.rs"]
mod idempotence;
#[path = "data_path/min_insync.rs"]
mod min_insync;
#[path = "data_path/preallocation.rs"]
mod preallocation;
#[path = "data_path/produce_consume.rs"]
mod produce_consume;
#[path = "data_path/replica_lifecycle.rs"]
mod replica_lifecycle;
#[path = "data_path/replication_rpcs.rs"]
mod replication_rpcs;
#[path = "data_path/unclean_election.rs"]
mod unclean_election;
