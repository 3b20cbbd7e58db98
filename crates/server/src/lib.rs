//! The `weir-server` process: configuration from flags and `WEIR_*` environment, wiring of the
//! broker and controller roles, signals and graceful shutdown.
//!
//! The binary arrives with the metadata-quorum work; until then this crate holds nothing.
