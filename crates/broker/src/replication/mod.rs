//! Partition replication, Kafka's ISR model (DESIGN.md, "The data path" and "Replication
//! rules"), in three rooms:
//!
//! - [`leader`]: the leader's side — the `Replication` gRPC service: follower fetch sessions
//!   (positions checked against the log, then recorded) and OffsetForLeaderEpoch.
//! - [`follower`]: the follower's side — reconcile with the leader by leader epochs (KIP-279),
//!   then fetch and append, every log change fenced by role and epoch.
//! - [`isr`]: ISR expansions and shrinks, decided by the partition and sent to the controller
//!   through one path.
//!
//! The bookkeeping they share — roles, follower progress, the maximal ISR and the high
//! watermark — is the partition's ([`crate::partition`]).

pub mod follower;
pub mod isr;
pub mod leader;
