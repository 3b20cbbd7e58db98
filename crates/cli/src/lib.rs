//! The `weir` command-line tool: cluster and topic administration, produce, consume, bench.
//!
//! The binary arrives with the client work; until then this crate holds nothing.
