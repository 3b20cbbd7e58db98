//! Loading a partition's segments on open and recovering them after a crash (Kafka's
//! `LogLoader`). [`PartitionLog::open`] runs these steps in order:
//!
//! 1. [`create_dir_if_missing`]: a new partition gets its directory, durably.
//! 2. [`list_segments`]: the segment files present, with leftovers of interrupted operations
//!    removed.
//! 3. [`load_segments`]: each segment trusted as it is or scanned batch by batch
//!    ([`scan_segment`]), everything after the first damaged one deleted.
//! 4. [`bounded_log_start`]: the checkpointed log start, kept within what survived.
//! 5. [`reconcile_epochs`]: the leader-epoch cache rebuilt if its file was lost, and cut to
//!    the surviving offsets.
//! 6. [`read_checkpointed`]: what the checkpoint files hold, so only changes are rewritten.
//!
//! The rules (which segments are trusted, what counts as damage) are in the parent module's
//! docs.
//!
//! [`PartitionLog::open`]: super::PartitionLog::open

use std::collections::BTreeMap;
use std::path::Path;

use crate::batch::BatchHeader;
use crate::checkpoint::{read_i64, sync_dir};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, Result};
use crate::segment::{self, Segment};

use super::{CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};

/// The segments [`load_segments`] kept, and what it had to do to get them.
pub(super) struct LoadedSegments {
    /// Segments by base offset, the last one active. Never empty.
    pub(super) segments: BTreeMap<i64, Segment>,
    /// Whether any segment had to be scanned; the checkpoints are then rewritten.
    pub(super) recovered_any: bool,
    /// Whether the clean-shutdown marker is still on disk (it is removed before a scan).
    pub(super) clean_marker: bool,
}

/// Creates the log directory if it is missing, and fsyncs its parent so the new entry lasts.
pub(super) fn create_dir_if_missing(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).ctx("create log directory", dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Base offsets of the segments found in `dir`, sorted; removes leftovers of interrupted
/// operations (temp files, indexes without a log).
pub(super) fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list log directory", dir)? {
        let path = entry.ctx("list log directory", dir)?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(".tmp") {
            orphans.push(path);
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        if stem.len() != 20 || base < 0 {
            continue;
        }
        if base > crate::batch::MAX_OFFSET {
            tracing::warn!(file = %path.display(), "ignoring a segment file whose base offset is past 2^62");
            continue;
        }
        match ext {
            segment::LOG_SUFFIX => bases.push(base),
            segment::INDEX_SUFFIX | segment::TIME_INDEX_SUFFIX
                if !segment::file_path(dir, base, segment::LOG_SUFFIX).exists() =>
            {
                orphans.push(path);
            }
            _ => {}
        }
    }
    for path in orphans {
        tracing::info!(file = %path.display(), "removing leftover file");
        std::fs::remove_file(&path).ctx("remove leftover file", &path)?;
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Loads the segments at `bases` (from [`list_segments`]), oldest first. A segment is taken
/// as it is after a clean shutdown (`clean`) or when it is sealed and wholly below the
/// checkpointed recovery point, unless its batch headers don't add up; any other is scanned
/// by [`scan_segment`], checking leader epochs against `epochs` (`None` when the leader-epoch
/// checkpoint was missing or malformed). The first segment with a cut tail, or one that does
/// not end where the next begins, is the last kept: the segments after it are deleted. An
/// empty directory gets one empty segment at the checkpointed log start. The directory is
/// fsynced if any of this changed it.
pub(super) fn load_segments(
    dir: &Path,
    bases: &[i64],
    config: &LogConfig,
    clean: bool,
    epochs: Option<&LeaderEpochCache>,
) -> Result<LoadedSegments> {
    let recovery_point = if clean {
        i64::MAX
    } else {
        read_i64(dir, RECOVERY_POINT_FILE).unwrap_or(0)
    };
    let mut segments = BTreeMap::new();
    let mut recovered_any = false;
    let mut clean_marker = clean;
    let mut dir_changed = false;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let sealed_and_flushed = next_base.is_some_and(|next| next <= recovery_point);
        let trusted = if clean || sealed_and_flushed {
            Segment::open(dir, base, config.index_interval_bytes)?
        } else {
            None
        };
        if let Some(segment) = trusted {
            segments.insert(base, segment);
            continue;
        }
        recovered_any = true;
        if clean_marker {
            // About to change files: a crash from here on must not pass as clean.
            remove_clean_marker(dir)?;
            clean_marker = false;
        }
        let expected = segments
            .values()
            .next_back()
            .map_or(base, Segment::next_offset);
        let (segment, cut) =
            scan_segment(dir, base, expected, epochs, config.index_interval_bytes)?;
        let damaged = cut > 0 || next_base.is_some_and(|next| segment.next_offset() != next);
        segments.insert(base, segment);
        if damaged {
            // Damage (or a gap) here: nothing after it can be trusted to follow on.
            dir_changed = true;
            delete_segments_after_damage(dir, &bases[i + 1..])?;
            break;
        }
    }
    if segments.is_empty() {
        let start = read_i64(dir, LOG_START_FILE).unwrap_or(0).max(0);
        segments.insert(start, Segment::create(dir, start)?);
        dir_changed = true;
    }
    if dir_changed {
        sync_dir(dir)?;
    }
    Ok(LoadedSegments {
        segments,
        recovered_any,
        clean_marker,
    })
}

/// Removes the clean-shutdown marker found on open, durably, before recovery changes a file.
fn remove_clean_marker(dir: &Path) -> Result<()> {
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    std::fs::remove_file(&marker).ctx("remove clean-shutdown marker", &marker)?;
    sync_dir(dir)
}

/// Scans segment `base` batch by batch ([`Segment::recover`]): a batch is kept only if it
/// starts where the one before it ended (the first at `expected`, the previous segment's
/// end) and its leader epoch agrees with `epochs`. The indexes are rebuilt and the tail from
/// the first rejected batch is cut off. Returns the segment and the bytes cut.
fn scan_segment(
    dir: &Path,
    base: i64,
    mut expected: i64,
    epochs: Option<&LeaderEpochCache>,
    index_interval_bytes: u64,
) -> Result<(Segment, u64)> {
    let mut accept = |h: &BatchHeader| {
        if h.base_offset != expected {
            return Err("batch offset does not follow the previous batch");
        }
        // Batches before the first checkpointed epoch (below a log start
        // moved by retention or DeleteRecords) have no entry to check against.
        let known = epochs.and_then(|epochs| epochs.epoch_for_offset(h.base_offset));
        if known.is_some_and(|epoch| epoch != h.partition_leader_epoch) {
            return Err("batch leader epoch disagrees with the leader-epoch checkpoint");
        }
        expected = h.next_offset();
        Ok(())
    };
    let mut segment = Segment::open_files(dir, base)?;
    let cut = segment.recover(index_interval_bytes, &mut accept)?;
    Ok((segment, cut))
}

/// Deletes the segments at `later`, which follow a damaged one.
fn delete_segments_after_damage(dir: &Path, later: &[i64]) -> Result<()> {
    for &base in later {
        tracing::warn!(dir = %dir.display(), base_offset = base, "deleting segment after a corrupt one");
        Segment::open_files(dir, base)?.delete()?;
    }
    Ok(())
}

/// The checkpointed log start offset, kept within the recovered segments: at least the
/// first segment's base, at most the log end.
pub(super) fn bounded_log_start(dir: &Path, first_base: i64, log_end: i64) -> i64 {
    // max/min, not clamp: clamp panics when its bounds cross, and a damaged directory must
    // not panic a node.
    read_i64(dir, LOG_START_FILE)
        .unwrap_or(first_base)
        .max(first_base)
        .min(log_end.max(first_base))
}

/// Brings the leader-epoch cache in line with the recovered segments: rebuilt from every
/// batch header when its checkpoint was missing or malformed (`valid` false), then cut to
/// the offsets from `log_start` to `log_end`.
pub(super) fn reconcile_epochs(
    epochs: &mut LeaderEpochCache,
    valid: bool,
    segments: &BTreeMap<i64, Segment>,
    log_start: i64,
    log_end: i64,
) -> Result<()> {
    if !valid {
        let mut found = Vec::new();
        for segment in segments.values() {
            segment.for_each_header(|h| found.push((h.partition_leader_epoch, h.base_offset)))?;
        }
        epochs.rebuild(found)?;
    }
    epochs.truncate_from_end(log_end)?;
    epochs.truncate_from_start(log_start)?;
    Ok(())
}

/// The (recovery point, log start) the checkpoint files hold, so that only values that
/// change are rewritten.
pub(super) fn read_checkpointed(dir: &Path, first_base: i64) -> (i64, i64) {
    (
        read_i64(dir, RECOVERY_POINT_FILE).unwrap_or(0),
        read_i64(dir, LOG_START_FILE).unwrap_or(first_base),
    )
}
