//! Crash recovery: torn tails, damaged bytes, lost indexes, and the clean-shutdown fast path.
//! A "crash" is dropping the log without `close()`, which leaves exactly what a killed
//! process leaves (every write reached the page cache; no marker, no final checkpoint).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_storage::batch::BatchHeader;
use weir_storage::log::{CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE};
use weir_storage::{Compression, LogConfig, PartitionLog};

fn flip_byte(path: &Path, position: u64, mask: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position).unwrap();
    byte[0] ^= mask;
    file.write_all_at(&byte, position).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn torn_tail_after_a_crash_is_cut_and_every_whole_batch_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        log.append_as_leader(batch(&format!("b{i}"), 3, i), 0)
            .unwrap();
    }
    drop(log);
    // The last write was torn: only part of the last batch reached the disk.
    let path = segment_log(dir.path(), 0);
    let len = file_len(&path);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 27);
    assert_eq!(read_all(&log, 0).len(), 27);
    assert_eq!(
        log.append_as_leader(batch("after", 1, 0), 0)
            .unwrap()
            .base_offset,
        27
    );
}

#[test]
fn garbage_after_the_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append_as_leader(batch("a", 3, 0), 0).unwrap();
    drop(log);
    let path = segment_log(dir.path(), 0);
    let len = file_len(&path);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0u8; 10], len).unwrap(); // zeros from a preallocated tail
    drop(file);
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(file_len(&path), len);
}

#[test]
fn clean_shutdown_marker_skips_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..5 {
        log.append_as_leader(batch(&format!("b{i}"), 2, i), 0)
            .unwrap();
    }
    log.close().unwrap();
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    // Damage a record payload (not a header): a scan would find it by CRC, but a clean open
    // does not scan, so the log keeps all its batches.
    let path = segment_log(dir.path(), 0);
    let len = file_len(&path);
    flip_byte(&path, len - 3, 0xff);
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert!(
        dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "unchanged: the marker stays"
    );
    drop(log);
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 10, "still unchanged, still trusted");
    log.append_as_leader(batch("after", 1, 0), 0).unwrap();
    assert!(
        !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "the first change removes it"
    );
    drop(log);
    // Without the marker, the next open scans and cuts the damaged batch and all after it.
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 8);
}

#[test]
fn sealed_segments_below_the_recovery_point_are_not_rescanned() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(1024)).unwrap();
    for i in 0..40 {
        log.append_as_leader(batch(&format!("b{i}"), 2, i), 0)
            .unwrap();
    }
    // The broker syncs sealed segments in the background; that moves the recovery point,
    // and its periodic checkpoint writes it down.
    let pending = log.take_pending_flush().unwrap().unwrap();
    let synced = pending.sync();
    log.complete_flush(pending, synced).unwrap();
    log.checkpoint().unwrap();
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3);
    drop(log);
    // Damage the payload of the first (sealed) segment's last batch and of the active one.
    let first = segment_log(dir.path(), bases[0]);
    flip_byte(&first, file_len(&first) - 3, 0xff);
    let active = segment_log(dir.path(), *bases.last().unwrap());
    flip_byte(&active, file_len(&active) - 3, 0xff);

    let log = PartitionLog::open(dir.path(), small_segments(1024)).unwrap();
    assert_eq!(
        log.segment_base_offsets(),
        bases,
        "the sealed segment was trusted as it is"
    );
    assert_eq!(
        log.log_end_offset(),
        78,
        "the damaged last batch of the active segment is cut"
    );
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(8192);
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for i in 0..100 {
        log.append_as_leader(batch(&format!("b{i}"), 2, 1000 * i), 0)
            .unwrap();
    }
    let expected = read_all(&log, 0);
    let ts_answer = log.offset_for_timestamp(50_000).unwrap();
    log.close().unwrap();
    let bases: Vec<i64> = PartitionLog::open(dir.path(), config.clone())
        .unwrap()
        .segment_base_offsets();
    // (that open consumed the marker; write it again through a clean close)
    PartitionLog::open(dir.path(), config.clone())
        .unwrap()
        .close()
        .unwrap();
    assert!(bases.len() >= 2);
    std::fs::remove_file(dir.path().join(format!("{:020}.index", bases[0]))).unwrap();
    std::fs::write(
        dir.path().join(format!("{:020}.timeindex", bases[1])),
        [7u8; 13],
    )
    .unwrap();
    let index = dir.path().join(format!("{:020}.index", bases[1]));
    let len = file_len(&index);
    assert!(len >= 16);
    flip_byte(&index, 4, 0x7f); // a position far past the end of the log

    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(log.offset_for_timestamp(50_000).unwrap(), ts_answer);
    assert!(file_len(&dir.path().join(format!("{:020}.index", bases[0]))) > 0);
}

#[test]
fn a_crash_right_after_a_new_epoch_leaves_a_consistent_epoch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append_as_leader(batch("a", 2, 0), 1).unwrap();
    log.append_as_leader(batch("b", 2, 0), 2).unwrap();
    drop(log);
    // The batch of epoch 2 never reached the disk, though the checkpoint did.
    let path = segment_log(dir.path(), 0);
    let first = BatchHeader::parse(&std::fs::read(&path).unwrap()).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(first.total_size() as u64)
        .unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 2)));
}

/// Writes a multi-segment log with batches of random sizes and codecs, crashes it with its
/// recovery checkpoint lost (so every segment is scanned), flips one random byte of one random
/// segment, and checks that recovery keeps exactly the batches before the damage.
#[test]
fn random_byte_flips_keep_every_batch_before_the_damage_and_none_after() {
    let mut rng = StdRng::seed_from_u64(0x5EED_F11B);
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(4096);
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let codecs = [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
            Compression::Gzip,
        ];
        let batches = rng.gen_range(5..40);
        for i in 0..batches {
            let codec = codecs[rng.gen_range(0..codecs.len())];
            let b = batch_with(
                &format!("r{round}b{i}"),
                rng.gen_range(1..8),
                i,
                codec,
                rng.gen_range(0..300),
            );
            log.append_as_leader(b, i as i32 / 10).unwrap();
        }
        // Remember every batch with its segment and position.
        let mut layout = Vec::new(); // (segment base, position, size, bytes)
        for base in log.segment_base_offsets() {
            let data = std::fs::read(segment_log(dir.path(), base)).unwrap();
            let mut pos = 0;
            while pos < data.len() {
                let h = BatchHeader::parse(&data[pos..]).unwrap();
                layout.push((
                    base,
                    pos as u64,
                    h.total_size() as u64,
                    Bytes::copy_from_slice(&data[pos..pos + h.total_size()]),
                ));
                pos += h.total_size();
            }
        }
        drop(log);
        let _ = std::fs::remove_file(dir.path().join(RECOVERY_POINT_FILE));

        let (seg, pos, size, _) = layout[rng.gen_range(0..layout.len())].clone();
        let at = pos + rng.gen_range(0..size);
        flip_byte(&segment_log(dir.path(), seg), at, 1 << rng.gen_range(0..8));

        let log = PartitionLog::open(dir.path(), config).unwrap();
        let kept: Vec<&Bytes> = layout
            .iter()
            .take_while(|(s, p, ..)| (*s, *p) != (seg, pos))
            .map(|l| &l.3)
            .collect();
        let damaged = BatchHeader::parse(&layout[kept.len()].3).unwrap();
        assert_eq!(
            log.log_end_offset(),
            damaged.base_offset,
            "round {round}: flip at {seg}:{at}"
        );
        let mut offset = 0;
        for (i, want) in kept.iter().enumerate() {
            let got = log.read(offset, 1).unwrap();
            assert_eq!(&got, *want, "round {round}: batch {i} changed");
            offset = BatchHeader::parse(&got).unwrap().next_offset();
        }
        assert!(log.read(offset, 1).unwrap().is_empty());
    }
}

#[test]
fn recovery_after_delete_records_keeps_batches_before_the_first_epoch_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append_as_leader(batch("a", 4, 0), 3).unwrap();
    log.append_as_leader(batch("b", 4, 0), 3).unwrap();
    log.delete_records_before(2).unwrap();
    drop(log);
    let _ = std::fs::remove_file(dir.path().join(RECOVERY_POINT_FILE));
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 8));
    assert_eq!(read_all(&log, 2).len(), 6);
}

/// Issue 15 (disk): a crafted segment whose base offset is near `i64::MAX` made offset
/// arithmetic wrap in recovery (and the log-start clamp panic). A log directory holding one is
/// opened without a panic: the segment's batches are refused as out of range and nothing of it
/// is served.
#[test]
fn a_segment_with_a_base_offset_near_the_top_of_the_range_cannot_wrap_recovery() {
    let near_max = i64::MAX - 10;
    for crash in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append_as_leader(batch("real", 3, 0), 0).unwrap();
        if crash {
            drop(log);
        } else {
            log.close().unwrap();
        }
        // A batch of 20 records stamped with base offset i64::MAX - 10, in a segment named so.
        let mut bytes = batch("crafted", 20, 0).to_vec();
        bytes[..8].copy_from_slice(&near_max.to_be_bytes());
        std::fs::write(segment_log(dir.path(), near_max), &bytes).unwrap();
        let opened = std::panic::catch_unwind(|| {
            PartitionLog::open(dir.path(), LogConfig::default()).map(|log| {
                let end = log.log_end_offset();
                (end, read_all(&log, 0).len())
            })
        });
        let opened = opened.unwrap_or_else(|_| panic!("opening panicked (crash: {crash})"));
        if let Ok((end, records)) = opened {
            assert!(
                (0..1 << 62).contains(&end),
                "log end {end} (crash: {crash})"
            );
            assert_eq!(records, 3, "crash: {crash}");
        }
    }
}

/// Issue 15 (disk): index files were read whole. One grown to 1 GiB (sparse here) is not
/// read: it is rebuilt from the segment, and the log serves as before.
#[test]
fn an_oversized_index_file_is_rebuilt_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..5 {
        log.append_as_leader(batch(&format!("b{i}"), 4, i), 0)
            .unwrap();
    }
    log.close().unwrap();
    let index = dir.path().join(format!("{:020}.index", 0));
    OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(read_all(&log, 0).len(), 20);
    assert_eq!(read_all(&log, 13).len(), 7);
}
