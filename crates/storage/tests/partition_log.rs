//! Behaviour of a partition log as the broker uses it: appends, reads, rolls, lookups by
//! time, truncation, epochs, retention, and rejection of bad input.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use weir_storage::batch::{BatchHeader, Batches};
use weir_storage::{Compression, FlushPolicy, LogConfig, LogError, PartitionLog, TimestampType};

#[test]
fn appends_get_consecutive_offsets_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let a = log.append_as_leader(batch("a", 3, 100), 0).unwrap();
    let b = log.append_as_leader(batch("b", 2, 200), 0).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 2));
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    assert_eq!(b.max_timestamp, 201);
    assert_eq!(log.log_end_offset(), 5);

    let records = read_all(&log, 0);
    assert_eq!(values(&records), ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    // Reading mid-batch returns the whole batch holding the offset.
    let bytes = log.read(4, 1 << 20).unwrap();
    let first = BatchHeader::parse(&bytes).unwrap();
    assert_eq!(first.base_offset, 3);
    assert!(
        log.read(5, 1 << 20).unwrap().is_empty(),
        "at the log end there is nothing yet"
    );
}

#[test]
fn reads_return_whole_batches_within_max_bytes_but_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let one = batch_with("x", 10, 0, Compression::None, 100);
    for _ in 0..10 {
        log.append_as_leader(one.clone(), 0).unwrap();
    }
    let size = one.len();
    let bytes = log.read(0, size * 3 + size / 2).unwrap();
    assert_eq!(bytes.len(), size * 3, "only whole batches");
    let bytes = log.read(0, 10).unwrap();
    assert_eq!(
        bytes.len(),
        size,
        "one whole batch even if larger than max_bytes"
    );
    assert_eq!(Batches::new(bytes).count(), 1);
}

#[test]
fn read_below_a_bound_hides_uncommitted_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..5 {
        log.append_as_leader(batch(&format!("b{i}"), 2, 0), 0)
            .unwrap();
    }
    let bytes = log.read_below(0, 1 << 20, 6).unwrap();
    let last = Batches::new(bytes).last().unwrap().unwrap();
    assert_eq!(last.header().next_offset(), 6);
    assert!(log.read_below(6, 1 << 20, 6).unwrap().is_empty());
}

#[test]
fn rolls_segments_by_size_and_reads_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(4096)).unwrap();
    for i in 0..200 {
        log.append_as_leader(batch_with(&format!("r{i}"), 3, i, Compression::None, 50), 0)
            .unwrap();
    }
    assert!(
        log.segment_count() > 10,
        "segments: {}",
        log.segment_count()
    );
    let bases = log.segment_base_offsets();
    for base in &bases {
        assert!(segment_log(dir.path(), *base).exists());
    }
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 600);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.offset == i as i64));
    // Every offset is readable directly, through the sparse index.
    for offset in [0, 1, 299, 300, 599] {
        let bytes = log.read(offset, 1).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert!(header.base_offset <= offset && offset <= header.last_offset());
    }
    // Rolls don't fsync in the append path: the sealed segments are pending until synced
    // (the broker does this off the lock), and then the recovery point passes them.
    assert_eq!(log.recovery_point(), 0);
    let pending = log.take_pending_flush().unwrap().unwrap();
    let synced = pending.sync();
    log.complete_flush(pending, synced).unwrap();
    assert_eq!(log.recovery_point(), *bases.last().unwrap());
    assert!(log.take_pending_flush().unwrap().is_none());
}

/// Appends a record every 10 ms until the log has rolled its first segment (a log with a
/// short `segment.ms`); fails after 10 s.
fn append_until_rolled_by_age(log: &mut PartitionLog) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.segment_count() == 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "segment.ms never rolled"
        );
        std::thread::sleep(Duration::from_millis(10));
        log.append_as_leader(batch("b", 1, 0), 0).unwrap();
    }
}

#[test]
fn rolls_segments_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: Duration::from_millis(30),
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("a", 1, 0), 0).unwrap();
    append_until_rolled_by_age(&mut log);
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(2048)).unwrap();
    // Batch i holds timestamps 1000*i .. 1000*i+4, offsets 5i .. 5i+4.
    for i in 0..50 {
        log.append_as_leader(batch(&format!("t{i}"), 5, 1000 * i), 0)
            .unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(3).unwrap(), Some((3, 3)));
    assert_eq!(log.offset_for_timestamp(4).unwrap(), Some((4, 4)));
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((5, 1000)));
    assert_eq!(
        log.offset_for_timestamp(17_002).unwrap(),
        Some((87, 17_002))
    );
    assert_eq!(
        log.offset_for_timestamp(49_004).unwrap(),
        Some((249, 49_004))
    );
    assert_eq!(log.offset_for_timestamp(49_005).unwrap(), None);
    // The same answers after a restart, from the persisted time indexes.
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments(2048)).unwrap();
    assert_eq!(
        log.offset_for_timestamp(17_002).unwrap(),
        Some((87, 17_002))
    );
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((5, 1000)));
}

#[test]
fn log_append_time_stamps_batches_with_the_broker_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let info = log.append_as_leader(batch("a", 3, 5), 0).unwrap();
    let stamped = info.log_append_time.unwrap();
    assert!(stamped > 1_600_000_000_000);
    let records = read_all(&log, 0);
    assert!(records.iter().all(|r| r.timestamp == stamped));
}

#[test]
fn truncation_removes_the_tail_and_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(1024)).unwrap();
    for i in 0..30 {
        let epoch = if i < 10 {
            1
        } else if i < 20 {
            2
        } else {
            4
        };
        log.append_as_leader(batch(&format!("e{i}"), 2, i), epoch)
            .unwrap();
    }
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 20)));
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 40)));
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 60)));
    assert_eq!(log.end_offset_for_epoch(5), None);

    // Truncating mid-batch drops the whole batch holding the offset.
    log.truncate_to(41).unwrap();
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(log.latest_epoch(), Some(2));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 40)));
    assert_eq!(read_all(&log, 0).len(), 40);

    // New appends continue from the truncation point, and survive a restart.
    log.append_as_leader(batch("new", 2, 0), 5).unwrap();
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_segments(1024)).unwrap();
    let records = read_all(&log, 0);
    assert_eq!(records.len(), 42);
    assert_eq!(values(&records[40..]), ["new-0", "new-1"]);
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 40)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 42)));
}

#[test]
fn truncating_below_the_log_start_empties_the_log_at_that_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append_as_leader(batch("a", 5, 0), 0).unwrap();
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    log.truncate_fully_and_start_at(1000).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
    assert_eq!(
        log.append_as_leader(batch("b", 1, 0), 0)
            .unwrap()
            .base_offset,
        1000
    );
}

#[test]
fn follower_appends_keep_the_leaders_offsets_and_epochs() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), LogConfig::default()).unwrap();
    let mut follower = PartitionLog::open(follower_dir.path(), LogConfig::default()).unwrap();
    for i in 0..5 {
        leader
            .append_as_leader(batch(&format!("l{i}"), 3, 0), 7)
            .unwrap();
    }
    let fetched = leader.read(0, 1 << 20).unwrap();
    let info = follower
        .append_as_follower(fetched.clone())
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 14, 15)
    );
    assert_eq!(
        follower.read(0, 1 << 20).unwrap(),
        fetched,
        "byte-identical replica"
    );
    assert_eq!(follower.end_offset_for_epoch(7), Some((7, 15)));
    // A batch that does not start at the log end is refused.
    let err = follower
        .append_as_follower(leader.read(3, 1 << 20).unwrap())
        .unwrap_err();
    assert!(matches!(err, LogError::InvalidRequest(_)), "{err}");
    assert_eq!(follower.log_end_offset(), 15);
}

#[test]
fn stale_leader_epochs_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append_as_leader(batch("a", 1, 0), 3).unwrap();
    let err = log.append_as_leader(batch("b", 1, 0), 2).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::StaleEpoch {
                epoch: 2,
                latest: 3
            }
        ),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn retention_by_time_deletes_old_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(Duration::from_millis(10_000)),
        ..small_segments(1024)
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    // Old records (timestamps around 1000), then new ones (around 100_000).
    for i in 0..20 {
        log.append_as_leader(batch(&format!("old{i}"), 4, 1000 + i), 0)
            .unwrap();
    }
    log.roll().unwrap();
    let first_new = log.log_end_offset();
    for i in 0..20 {
        log.append_as_leader(batch(&format!("new{i}"), 4, 100_000 + i), 0)
            .unwrap();
    }
    let before = log.segment_count();
    let outcome = log.enforce_retention(105_000).unwrap();
    assert!(outcome.segments > 0);
    assert_eq!(log.segment_count(), before - outcome.segments);
    assert_eq!(log.log_start_offset(), first_new);
    assert!(matches!(
        log.read(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, first_new).len(), 80);

    // Even if everything is expired, the active segment stays.
    log.enforce_retention(i64::MAX / 2).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        log.log_end_offset(),
        first_new + 80,
        "retention never moves the log end"
    );
}

#[test]
fn retention_by_size_keeps_the_log_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(8 * 1024),
        retention_ms: None,
        ..small_segments(2048)
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    for i in 0..200 {
        log.append_as_leader(batch(&format!("s{i}"), 2, i), 0)
            .unwrap();
    }
    let size_before = log.size_bytes();
    let outcome = log.enforce_retention(0).unwrap();
    assert!(outcome.segments > 0);
    assert_eq!(log.size_bytes(), size_before - outcome.bytes);
    assert!(
        log.size_bytes() <= 8 * 1024 + 2048,
        "size {}",
        log.size_bytes()
    );
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    let records = read_all(&log, log.log_start_offset());
    assert_eq!(records.last().unwrap().offset, 399);
}

#[test]
fn delete_records_before_advances_the_log_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_segments(1024)).unwrap();
    for i in 0..40 {
        log.append_as_leader(batch(&format!("d{i}"), 2, i), 1)
            .unwrap();
    }
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(45).unwrap(), 45);
    assert!(log.segment_count() < segments);
    assert!(matches!(
        log.read(44, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 45).first().unwrap().offset, 45);
    assert!(matches!(
        log.delete_records_before(81),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Deleting everything leaves an empty log that still takes appends after the end.
    assert_eq!(log.delete_records_before(80).unwrap(), 80);
    drop(log); // a crash: the checkpoint alone must carry the log start.
    let mut log = PartitionLog::open(dir.path(), small_segments(1024)).unwrap();
    assert_eq!(log.log_start_offset(), 80);
    assert_eq!(
        log.append_as_leader(batch("e", 1, 0), 1)
            .unwrap()
            .base_offset,
        80
    );
}

#[test]
fn flush_policy_every_append_moves_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::every_append(),
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("a", 3, 0), 0).unwrap();
    assert_eq!(log.recovery_point(), 3);

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy {
            messages: Some(5),
            interval: None,
        },
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("a", 3, 0), 0).unwrap();
    assert_eq!(log.recovery_point(), 0, "3 of 5 messages: not flushed yet");
    log.append_as_leader(batch("b", 3, 0), 0).unwrap();
    assert_eq!(log.recovery_point(), 6);

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy {
            messages: None,
            interval: Some(Duration::ZERO),
        },
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("a", 1, 0), 0).unwrap();
    assert_eq!(log.recovery_point(), 1);
}

#[test]
fn bad_batches_get_typed_errors_and_change_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_message_bytes: 4096,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("ok", 2, 0), 0).unwrap();
    log.flush().unwrap();
    let before = dir_state(dir.path());
    let good = batch("x", 3, 0);

    let truncated = good.slice(..good.len() - 5);
    assert!(matches!(
        log.append_as_leader(truncated, 0),
        Err(LogError::Corrupt(_))
    ));

    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    assert!(matches!(
        log.append_as_leader(Bytes::from(bad_crc), 0),
        Err(LogError::Corrupt(_))
    ));

    let mut huge_len = good.to_vec();
    huge_len[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(
        log.append_as_leader(Bytes::from(huge_len), 0),
        Err(LogError::Corrupt(_))
    ));
    let mut neg_len = good.to_vec();
    neg_len[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        log.append_as_leader(Bytes::from(neg_len), 0),
        Err(LogError::Corrupt(_))
    ));

    let mut trailing = good.to_vec();
    trailing.extend_from_slice(b"junk");
    assert!(matches!(
        log.append_as_leader(Bytes::from(trailing), 0),
        Err(LogError::Corrupt(_))
    ));

    let too_large = batch_with("big", 10, 0, Compression::None, 1000);
    let err = log.append_as_leader(too_large, 0).unwrap_err();
    assert!(
        matches!(err, LogError::RecordTooLarge { max: 4096, .. }),
        "{err}"
    );

    assert!(matches!(
        log.append_as_leader(Bytes::from_static(&[1, 2, 3]), 0),
        Err(LogError::Corrupt(_))
    ));
    assert!(matches!(
        log.append_as_leader(Bytes::new(), 0),
        Err(LogError::Corrupt(_))
    ));
    assert!(matches!(
        log.append_as_leader(good.clone(), -1),
        Err(LogError::InvalidRequest(_))
    ));

    for offset in [-1, i64::MIN, 3, i64::MAX] {
        assert!(
            matches!(
                log.read(offset, 100),
                Err(LogError::OffsetOutOfRange { .. })
            ),
            "read {offset}"
        );
    }
    assert!(matches!(
        log.truncate_to(-5),
        Err(LogError::InvalidRequest(_))
    ));
    assert!(matches!(
        log.delete_records_before(-1),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    assert_eq!(
        dir_state(dir.path()),
        before,
        "rejected input must not touch the disk"
    );
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.append_as_leader(good, 0).unwrap().base_offset, 2);
}

#[test]
fn compressed_batches_are_stored_as_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = batch_with(codec.name(), 20, 0, codec, 200);
        let info = log.append_as_leader(b.clone(), 0).unwrap();
        let stored = log.read(info.base_offset, 1 << 20).unwrap();
        let stored = Batches::new(stored).next().unwrap().unwrap();
        assert_eq!(
            &stored.as_bytes()[16..],
            &b[16..],
            "{codec}: bytes kept, only the header rewritten"
        );
        assert_eq!(stored.records().unwrap().len(), 20);
    }
}

/// Blocks allocated to a file, in bytes.
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Whether a reservation was made: `true` when it ran, `false` only when the file system says
/// it cannot reserve blocks (EOPNOTSUPP: the block assertions are then skipped, with a note);
/// any other error fails the test, since it means the reservation itself is broken.
fn reserved(result: std::io::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            eprintln!("this file system cannot reserve blocks ({e}): block counts not checked");
            false
        }
        Err(e) => panic!("reserving blocks failed: {e}"),
    }
}

#[test]
fn preallocation_reserves_blocks_without_changing_what_readers_or_recovery_see() {
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert!(
        log.take_preallocation().unwrap().is_none(),
        "an empty segment reserves nothing"
    );
    log.append_as_leader(batch_with("a", 50, 0, Compression::None, 1000), 0)
        .unwrap();
    let size = std::fs::metadata(&segment).unwrap().len();
    let reservation = log
        .take_preallocation()
        .unwrap()
        .expect("a segment with data reserves room ahead");
    assert_eq!(reservation.from, size);
    assert_eq!(reservation.len, 1 << 20, "1 MiB window at first");
    let supported = reserved(reservation.run());
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), size);
    if supported {
        assert!(
            allocated(&segment) >= size + (1 << 20),
            "blocks are reserved ahead"
        );
    }
    assert!(
        log.take_preallocation().unwrap().is_none(),
        "more than half the window is still reserved"
    );
    log.append_as_leader(batch("b", 3, 0), 0).unwrap();
    let expected = values(&read_all(&log, 0));
    assert_eq!(expected.len(), 53);

    // A crash (no clean close) and a clean close both reopen to exactly the same records.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(values(&read_all(&log, 0)), expected);
    assert_eq!(log.log_end_offset(), 53);
    log.append_as_leader(batch("c", 1, 0), 0).unwrap();
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(read_all(&log, 0).len(), 54);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        log.size_bytes(),
        "the file holds the batches and nothing else"
    );
}

#[test]
fn a_segment_sealed_early_gives_back_its_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: Duration::from_millis(30),
        ..LogConfig::default()
    };
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("a", 1, 0), 0).unwrap();
    let reservation = log.take_preallocation().unwrap().unwrap();
    let reserved_to = reservation.from + reservation.len;
    let supported = reserved(reservation.run());
    append_until_rolled_by_age(&mut log);
    let size = std::fs::metadata(&segment).unwrap().len();
    let trimmed = log.trim_sealed().unwrap();
    assert_eq!(trimmed, reserved_to - size, "the whole unused reservation");
    if supported {
        assert!(allocated(&segment) < 64 * 1024, "blocks given back");
    }
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), size);
    assert_eq!(log.trim_sealed().unwrap(), 0, "nothing left to give back");
    assert_eq!(read_all(&log, 0).len(), log.log_end_offset() as usize);
}

#[test]
fn preallocation_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        preallocate_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch_with("a", 50, 0, Compression::None, 1000), 0)
        .unwrap();
    assert!(log.take_preallocation().unwrap().is_none());
}

/// Issue 15: timestamps were not checked, so a batch stamped `i64::MAX` kept its segment from
/// ever being deleted by retention. With CreateTime, a record more than
/// `message.timestamp.after.max.ms` (1 h by default) ahead of the broker's clock, or more than
/// `before.max.ms` behind it when set, is refused and the log does not change; LogAppendTime
/// stamps the broker's clock and needs no check.
#[test]
fn timestamps_far_from_the_clock_are_refused() {
    use std::time::Duration;
    use weir_storage::batch::TimestampType;
    use weir_storage::LogError;
    let now = weir_common::now_ms();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_before_max: Some(Duration::from_secs(24 * 3600)),
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("now", 2, now), 0).unwrap();
    for ts in [
        i64::MAX - 10,
        now + 2 * 3600 * 1000,
        now - 2 * 24 * 3600 * 1000,
    ] {
        let err = log.append_as_leader(batch("off", 2, ts), 0).unwrap_err();
        assert!(
            matches!(err, LogError::InvalidTimestamp { .. }),
            "{ts}: {err}"
        );
        assert_eq!(log.log_end_offset(), 2, "{ts}");
    }
    log.append_as_leader(batch("soon", 1, now + 60_000), 0)
        .unwrap();
    assert_eq!(log.log_end_offset(), 3);
    drop(log);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    log.append_as_leader(batch("future", 2, i64::MAX - 10), 0)
        .unwrap();
}

/// `compression.type` naming a codec: the leader stores every batch in it, whatever the
/// producer sent, with the same records (and the producer's id and sequence); `producer`
/// keeps each batch as sent.
#[test]
fn compression_type_makes_the_leader_recompress() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::default();
    config.set("compression.type", "zstd").unwrap();
    config.set("compression.zstd.level", "19").unwrap();
    assert!(config.set("compression.zstd.level", "23").is_err());
    assert!(config.set("compression.gzip.level", "0").is_err());
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let sent = [
        batch_with("plain", 20, 100, Compression::None, 50),
        batch_with("lz4", 20, 200, Compression::Lz4, 50),
        batch_with("zstd", 20, 300, Compression::Zstd, 50),
    ];
    let mut stamped = bytes::BytesMut::from(&sent[0][..]);
    weir_storage::batch::set_producer(&mut stamped, 4, 0, 0);
    log.append_as_leader(stamped.freeze(), 0).unwrap();
    for b in &sent[1..] {
        log.append_as_leader(b.clone(), 0).unwrap();
    }
    let stored: Vec<_> = Batches::new(log.read(0, 1 << 20).unwrap())
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 3);
    for b in &stored {
        assert_eq!(b.header().compression().unwrap(), Compression::Zstd);
    }
    assert_eq!(
        (
            stored[0].header().producer_id,
            stored[0].header().base_sequence
        ),
        (4, 0)
    );
    let mut expected = Vec::new();
    for b in &sent {
        expected.extend(
            weir_storage::RecordBatch::decode(b.clone())
                .unwrap()
                .records()
                .unwrap()
                .into_iter()
                .map(|r| (r.timestamp, r.key, r.value)),
        );
    }
    let got: Vec<_> = read_all(&log, 0)
        .into_iter()
        .map(|r| (r.timestamp, r.key, r.value))
        .collect();
    assert_eq!(got, expected);

    let dir = tempfile::tempdir().unwrap();
    let mut as_sent = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    as_sent.append_as_leader(sent[1].clone(), 0).unwrap();
    let kept = Batches::new(as_sent.read(0, 1 << 20).unwrap())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(kept.header().compression().unwrap(), Compression::Lz4);
}

/// `segment.ms=1` (or a tiny `segment.bytes`) cannot make a partition hold more than
/// `max_segments` segments: past the cap the active segment grows instead, and nothing is lost.
#[test]
fn the_segment_cap_stops_rolling_but_not_appending() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_segments: 4,
        ..small_segments(1024)
    };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    for i in 0..40 {
        log.append_as_leader(batch_with("r", 5, i, Compression::None, 100), 0)
            .unwrap();
    }
    assert_eq!(log.segment_count(), 4, "{:?}", log.segment_base_offsets());
    assert_eq!(read_all(&log, 0).len(), 200);
}

/// Issue 15: the per-partition cap alone let many partitions together hold more segments (each
/// a descriptor) than a node can open. Logs that share a node's count stop rolling once it is
/// reached, whichever partition holds them; retention, truncation and closing a log give their
/// segments back, and rolling resumes.
#[test]
fn the_node_segment_cap_bounds_segments_across_partitions() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let node = weir_storage::NodeSegments::new(5);
    let config = LogConfig {
        node_segments: node.clone(),
        retention_bytes: None,
        ..small_segments(1024)
    };
    let mut a = PartitionLog::open(dirs[0].path(), config.clone()).unwrap();
    let mut b = PartitionLog::open(dirs[1].path(), config).unwrap();
    assert_eq!(node.open(), 2);
    for i in 0..40 {
        a.append_as_leader(batch_with("a", 5, i, Compression::None, 100), 0)
            .unwrap();
        b.append_as_leader(batch_with("b", 5, i, Compression::None, 100), 0)
            .unwrap();
    }
    assert_eq!(a.segment_count() + b.segment_count(), 5);
    assert_eq!(node.open(), 5);
    assert_eq!(read_all(&a, 0).len(), 200);
    assert_eq!(read_all(&b, 0).len(), 200);
    // Truncating `a` to its first segment frees the others: `b` rolls again.
    let first_roll = a.segment_base_offsets()[1];
    a.truncate_to(first_roll).unwrap();
    assert_eq!(node.open(), a.segment_count() + b.segment_count());
    let before = b.segment_count();
    b.append_as_leader(batch_with("b", 5, 40, Compression::None, 1000), 0)
        .unwrap();
    b.append_as_leader(batch_with("b", 5, 41, Compression::None, 1000), 0)
        .unwrap();
    assert!(b.segment_count() > before, "{:?}", b.segment_base_offsets());
    assert_eq!(node.open(), 5);
    drop(b);
    assert_eq!(node.open(), a.segment_count());
    drop(a);
    assert_eq!(node.open(), 0);
}

/// Control batches (transaction markers) are the broker's to write: a producer's is refused,
/// and nothing changes.
#[test]
fn a_produced_control_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut bytes = batch("ctl", 1, 100).to_vec();
    let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) | 0x20;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = log.append_as_leader(Bytes::from(bytes), 0).unwrap_err();
    assert!(matches!(err, LogError::InvalidRequest(_)), "{err}");
    assert_eq!(log.log_end_offset(), 0);
}
