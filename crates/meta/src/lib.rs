//! Weir's metadata quorum (KRaft-style): the metadata model and state machine, the openraft
//! type configuration, sled-backed log and state storage, Raft over gRPC, and the controller
//! logic that runs on the Raft leader.
//!
//! This crate is empty until the metadata-quorum work lands; nothing here pretends otherwise.
