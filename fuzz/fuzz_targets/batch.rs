//! `cargo fuzz run batch`: see `weir_storage::fuzz::batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_storage::fuzz::batch(data));
