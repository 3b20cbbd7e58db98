//! Weir's broker role: the client-facing gRPC services (Produce, Fetch, ListOffsets, Metadata,
//! Admin), the replica manager that leads or follows each partition, ISR replication and,
//! later, the group coordinator.
//!
//! So far the broker registers with the controller quorum and keeps its session alive
//! ([`lifecycle`]); the data path arrives with the broker data-path work.

pub mod lifecycle;
