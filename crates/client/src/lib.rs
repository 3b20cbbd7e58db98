//! The Rust client for Weir: a batching producer, a consumer with per-partition fetch streams,
//! and an admin client.
//!
//! This crate is empty until the client work lands; nothing here pretends otherwise.
