//! The idempotent producer's guarantees at the log: a retried batch is written once and
//! answered with its original offsets, gaps and stale epochs are refused, and the state
//! behind it survives a clean close, a crash, a roll and a truncation, on leader and follower.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use weir_storage::batch::{self, BatchHeader};
use weir_storage::{LogConfig, LogError, PartitionLog};

/// `n` records from producer `pid` (epoch `epoch`) starting at sequence `seq`, stamped the way
/// the client stamps a batch when it first sends it.
fn idem(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let mut bytes = BytesMut::from(&batch(&format!("p{pid}s{seq}"), n, 1_000)[..]);
    batch::set_producer(&mut bytes, pid, epoch, seq);
    bytes.freeze()
}

#[test]
fn a_stamped_batch_validates_and_carries_its_producer_fields() {
    let bytes = idem(42, 3, 17, 4);
    let header = batch::validate(&bytes, usize::MAX).unwrap();
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (42, 3, 17)
    );
    let mut flipped = bytes.to_vec();
    flipped[50] ^= 1; // inside producerId: the CRC covers it
    assert!(batch::validate(&flipped, usize::MAX).is_err());
}

#[test]
fn a_retry_is_answered_with_the_original_offsets_and_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let first = log.append_as_leader(idem(1, 0, 0, 3), 0).unwrap();
    let second = log.append_as_leader(idem(1, 0, 3, 2), 0).unwrap();
    let retry = log.append_as_leader(idem(1, 0, 0, 3), 0).unwrap();
    assert!(!first.duplicate && !second.duplicate);
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
    assert_eq!(retry.bytes, 0);
    assert_eq!(log.log_end_offset(), 5, "nothing written for the retry");
    assert_eq!(read_all(&log, 0).len(), 5);

    let gap = log.append_as_leader(idem(1, 0, 9, 1), 0).unwrap_err();
    assert!(
        matches!(
            gap,
            LogError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            }
        ),
        "{gap}"
    );
    let bumped = log.append_as_leader(idem(1, 1, 0, 1), 0).unwrap();
    assert_eq!(bumped.base_offset, 5);
    let fenced = log.append_as_leader(idem(1, 0, 5, 1), 0).unwrap_err();
    assert!(
        matches!(
            fenced,
            LogError::ProducerFenced {
                epoch: 0,
                current: 1,
                ..
            }
        ),
        "{fenced}"
    );
    let unknown = log.append_as_leader(idem(2, 0, 7, 1), 0).unwrap_err();
    assert!(
        matches!(unknown, LogError::UnknownProducerId { producer_id: 2, .. }),
        "{unknown}"
    );
    assert_eq!(log.log_end_offset(), 6, "refused batches change nothing");
}

/// Appends five batches of producer 9 across several small segments.
fn five_batches(log: &mut PartitionLog) {
    for i in 0..5 {
        let info = log.append_as_leader(idem(9, 0, i * 4, 4), 0).unwrap();
        assert!(!info.duplicate);
    }
}

#[test]
fn the_state_survives_a_clean_close_a_crash_and_rolls() {
    for crash in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(300);
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        five_batches(&mut log);
        assert!(log.segment_count() > 2, "the test needs rolls");
        if crash {
            drop(log);
        } else {
            log.close().unwrap();
        }
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let retry = log.append_as_leader(idem(9, 0, 16, 4), 0).unwrap();
        assert!(retry.duplicate, "crash={crash}");
        assert_eq!(retry.base_offset, 16);
        let next = log.append_as_leader(idem(9, 0, 20, 1), 0).unwrap();
        assert_eq!(
            (next.base_offset, next.duplicate),
            (20, false),
            "crash={crash}"
        );
    }
}

#[test]
fn a_lost_snapshot_costs_a_replay_not_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(300);
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    five_batches(&mut log);
    log.close().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    assert!(
        log.append_as_leader(idem(9, 0, 12, 4), 0)
            .unwrap()
            .duplicate
    );
}

#[test]
fn a_truncated_batch_is_forgotten_so_its_retry_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(300);
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    five_batches(&mut log);
    // The last two batches (offsets 12..20) were never committed: a new leader cuts them.
    log.truncate_to(12).unwrap();
    let retry = log.append_as_leader(idem(9, 0, 12, 4), 1).unwrap();
    assert_eq!((retry.base_offset, retry.duplicate), (12, false));
    assert!(log.append_as_leader(idem(9, 0, 8, 4), 1).unwrap().duplicate);
    log.truncate_fully_and_start_at(100).unwrap();
    assert!(log.producer_states().is_empty());
}

#[test]
fn a_follower_builds_the_state_and_dedupes_once_it_leads() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), LogConfig::default()).unwrap();
    five_batches(&mut leader);
    let mut follower = PartitionLog::open(follower_dir.path(), LogConfig::default()).unwrap();
    let copied = leader.read(0, 1 << 20).unwrap();
    assert_eq!(BatchHeader::parse(&copied).unwrap().producer_id, 9);
    follower.append_as_follower(copied).unwrap();
    assert_eq!(follower.log_end_offset(), 20);
    let retry = follower.append_as_leader(idem(9, 0, 16, 4), 1).unwrap();
    assert_eq!((retry.base_offset, retry.duplicate), (16, true));
}

#[test]
fn idle_producers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    log.append_as_leader(idem(5, 0, 0, 1), 0).unwrap();
    let now = weir_common::now_ms();
    assert_eq!(log.expire_producers(now), 0);
    assert_eq!(log.expire_producers(now + 25 * 3600 * 1000), 1);
    let after = log.append_as_leader(idem(5, 0, 1, 1), 0).unwrap_err();
    assert!(
        matches!(after, LogError::UnknownProducerId { .. }),
        "{after}"
    );
}

#[test]
fn a_retry_under_log_append_time_reports_the_original_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::default();
    config
        .set("message.timestamp.type", "LogAppendTime")
        .unwrap();
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    let first = log.append_as_leader(idem(3, 0, 0, 2), 0).unwrap();
    let stamped = first.log_append_time.unwrap();
    log.close().unwrap();
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let retry = log.append_as_leader(idem(3, 0, 0, 2), 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        retry.log_append_time,
        Some(stamped),
        "kept through the snapshot too"
    );
}
