//! `cargo fuzz run raft_payload`: see `weir_meta::fuzz::raft_payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_meta::fuzz::raft_payload(data));
