//! Replays the seed corpus of the storage fuzz targets (`fuzz/corpus/{batch,recovery}/`) through
//! the same functions the fuzzers call: every input that once crashed stays a regression test.
//! `WEIR_WRITE_FUZZ_SEEDS=1 cargo test -p weir-storage --test fuzz_corpus` regenerates the
//! generated seeds (valid batches of every codec and their damaged variants).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use bytes::Bytes;
use weir_storage::batch::{BatchBuilder, Header, Record};
use weir_storage::Compression;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus(target))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Valid batches of every codec, several concatenated, and damaged copies of them.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut log = Vec::new();
    for (i, codec) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = BatchBuilder::new(codec);
        for r in 0..4 {
            b.push(&Record {
                timestamp: 1_700_000_000_000 + r,
                key: (r % 2 == 0).then(|| Bytes::from(format!("key-{r}"))),
                value: Some(Bytes::from(format!("value {r} of a {codec:?} batch"))),
                headers: vec![Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"v")),
                }],
                ..Record::default()
            });
        }
        let batch = b.build(i as i64 * 4).unwrap().to_vec();
        out.push((format!("seed-{codec:?}"), batch.clone()));
        let mut flipped = batch.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x5a;
        out.push((format!("seed-{codec:?}-flipped"), flipped));
        out.push((
            format!("seed-{codec:?}-torn"),
            batch[..batch.len() - 3].to_vec(),
        ));
        log.extend_from_slice(&batch);
    }
    out.push(("seed-log".into(), log));
    out
}

#[test]
fn the_seed_corpus_replays_without_a_panic() {
    if std::env::var_os("WEIR_WRITE_FUZZ_SEEDS").is_some() {
        for target in ["batch", "recovery"] {
            std::fs::create_dir_all(corpus(target)).unwrap();
            for (name, bytes) in seeds() {
                std::fs::write(corpus(target).join(name), bytes).unwrap();
            }
        }
    }
    let batch = inputs("batch");
    assert!(batch.len() >= 10, "the batch corpus is missing");
    for (name, data) in &batch {
        let r = std::panic::catch_unwind(|| weir_storage::fuzz::batch(data));
        assert!(r.is_ok(), "batch input {name} panicked");
    }
    let recovery = inputs("recovery");
    assert!(recovery.len() >= 10, "the recovery corpus is missing");
    for (name, data) in &recovery {
        let dir = tempfile::tempdir().unwrap();
        let r = std::panic::catch_unwind(|| weir_storage::fuzz::recovery(data, dir.path()));
        assert!(r.is_ok(), "recovery input {name} panicked");
    }
}
