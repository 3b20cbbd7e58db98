//! `cargo fuzz run recovery`: see `weir_storage::fuzz::recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    weir_storage::fuzz::recovery(data, dir.path());
});
