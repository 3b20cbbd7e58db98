//! Weir's broker role: the client-facing gRPC services (Produce, Fetch, ListOffsets, Metadata,
//! Admin), the replica manager that leads or follows each partition, ISR replication and, later,
//! the group coordinator.
//!
//! This crate is empty until the broker data-path work lands; nothing here pretends otherwise.
