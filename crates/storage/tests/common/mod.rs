//! Helpers shared by the storage tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_storage::batch::Batches;
use weir_storage::{BatchBuilder, Compression, LogConfig, PartitionLog, Record};

/// A batch of `n` records `"{tag}-{i}"`, timestamps `ts, ts+1, …`.
pub fn batch(tag: &str, n: usize, ts: i64) -> Bytes {
    batch_with(tag, n, ts, Compression::None, 0)
}

/// Like [`batch`], with a codec and `pad` extra bytes of value per record.
pub fn batch_with(tag: &str, n: usize, ts: i64, codec: Compression, pad: usize) -> Bytes {
    let mut b = BatchBuilder::new(codec);
    for i in 0..n {
        let mut value = format!("{tag}-{i}").into_bytes();
        value.resize(value.len() + pad, b'.');
        b.push(&Record {
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(value)),
            ..Record::default()
        });
    }
    b.build(0).unwrap()
}

/// Every record from `from` to the end, decoded.
pub fn read_all(log: &PartitionLog, from: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = from;
    for _ in 0..100_000 {
        if offset >= log.log_end_offset() {
            break;
        }
        let bytes = log.read(offset, 64 * 1024).unwrap();
        assert!(
            !bytes.is_empty(),
            "read at {offset} below log end returned nothing"
        );
        for batch in Batches::new(bytes) {
            let batch = batch.unwrap();
            for r in batch.records().unwrap() {
                if r.offset >= offset {
                    out.push(r);
                }
            }
            offset = batch.header().next_offset();
        }
    }
    out
}

/// Values of records as strings.
pub fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

/// A config with small segments so tests roll often.
pub fn small_segments(bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes: bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// The names and sizes of every file in `dir`, sorted: a fingerprint of what is on disk.
pub fn dir_state(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Path of the `.log` file of the segment starting at `base`.
pub fn segment_log(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
