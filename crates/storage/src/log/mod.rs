//! The partition log: an ordered sequence of segments in one directory, with the offsets,
//! checkpoints, retention and recovery that make it a durable, append-only log.
//!
//! Directory layout (`<data-dir>/logs/<topic>-<partition>/`):
//!
//! ```text
//! 00000000000000000000.log        batches, in offset order
//! 00000000000000000000.index      sparse offset -> position
//! 00000000000000000000.timeindex  sparse timestamp -> offset
//! 00000000000000052311.log        the next segment, named by its first offset …
//! leader-epoch-checkpoint         epoch -> first offset (see crate::epoch)
//! recovery-point-checkpoint       everything below this offset is known to be on disk
//! log-start-offset-checkpoint     first offset a reader may see
//! 00000000000000052311.snapshot   idempotent producers' state as of that offset (the newest
//!                                 three are kept; see crate::producer)
//! .clean-shutdown                 present from a clean close until the next change
//! ```
//!
//! Recovery on open: with the clean-shutdown marker, nothing is scanned (only the last index
//! entry's tail of each segment is walked to find its end). The marker stays while the log is
//! unchanged and is removed (durably) before the first change, so an idle log costs nothing to
//! open or close, however many partitions a broker holds. Without it, every segment at or
//! after the recovery point is scanned batch by batch, checking length, CRC, offset
//! continuity and leader epoch; the first bad batch and everything after it are cut off with
//! a warning, and the indexes are rebuilt. Segments wholly below the recovery point (sealed
//! ones, fsynced after they were rolled: see [`PartitionLog::take_pending_flush`]) are never
//! rescanned.
//!
//! This file holds [`PartitionLog`] itself, its accessors, `open`/`close` and the
//! clean-shutdown marker. One `impl PartitionLog` block per concept lives beside it, as in
//! Kafka's log code:
//!
//! - `recovery`: the steps of [`PartitionLog::open`]: listing the segment files, trusting or
//!   scanning each segment, the log start offset and the leader-epoch cache after a crash
//!   (Kafka's `LogLoader`).
//! - `append`: the leader's and the follower's append, validating batches and assigning
//!   offsets and timestamps ([`AppendInfo`]; Kafka's `LogValidator` and `UnifiedLog.append`).
//! - `roll`: sealing the active segment and starting the next, and the disk blocks reserved
//!   ahead of the active segment and given back by sealed ones.
//! - `read`: fetches of whole batches and lookup by timestamp.
//! - `truncate`: cutting a follower's diverged tail, or resetting the log to start anew.
//! - `retention`: moving the log start offset, by `retention.ms`, `retention.bytes` and
//!   DeleteRecords ([`RetentionOutcome`]).
//! - `producers`: the idempotent producers' state: loaded from the newest snapshot plus the
//!   batches after it on open and after a truncation, snapshotted on roll and close, expired.
//! - `flush`: the flush policy, fsyncing sealed segments outside the log's lock
//!   ([`PendingFlush`]), and the recovery-point and log-start checkpoints ([`Checkpoint`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint::sync_dir;
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, LogError, Result};
use crate::producer::ProducerStates;
use crate::segment::Segment;

mod append;
mod flush;
mod producers;
mod read;
mod recovery;
mod retention;
mod roll;
mod truncate;

pub use append::{recompressed, AppendInfo};
pub use flush::{Checkpoint, PendingFlush};
pub use retention::RetentionOutcome;

/// Marker file written by [`PartitionLog::close`].
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// Checkpoint of the recovery point.
pub const RECOVERY_POINT_FILE: &str = "recovery-point-checkpoint";
/// Checkpoint of the log start offset.
pub const LOG_START_FILE: &str = "log-start-offset-checkpoint";

/// One partition's log. Appends and maintenance take `&mut self`; reads take `&self` and use
/// positioned reads, so a caller may share the log behind a read-write lock.
#[derive(Debug)]
pub struct PartitionLog {
    /// The partition directory: the segment files and the checkpoints (layout in the module
    /// docs).
    dir: PathBuf,
    /// The topic's log settings: segment size and age, retention, flush policy and the limits
    /// appends are validated against. Replaced by [`Self::set_config`].
    config: LogConfig,
    /// Segments by base offset; the last one is the active segment. Never empty.
    segments: BTreeMap<i64, Segment>,
    /// The first offset a reader may see. Retention and DeleteRecords move it forward, and it
    /// may lie inside the first segment; kept in [`LOG_START_FILE`] so it survives a restart.
    log_start_offset: i64,
    /// Every offset below this is fsynced.
    recovery_point: i64,
    /// Leader epoch -> first offset, kept in the leader-epoch checkpoint: it answers
    /// OffsetForLeaderEpoch, refuses appends from stale leaders, and checks batch epochs when
    /// a segment is scanned on open.
    epochs: LeaderEpochCache,
    /// Records appended since the last flush, for the `flush.messages` policy.
    unflushed_messages: u64,
    /// When the oldest append not yet flushed happened, for the `flush.ms` policy; `None` when
    /// everything is flushed.
    oldest_unflushed: Option<Instant>,
    /// Set after a failed write or fsync; the log then refuses writes.
    offline: Option<String>,
    /// Whether the clean-shutdown marker is on disk (the log is unchanged since a clean
    /// close); it is removed before the first change.
    clean_marker: bool,
    /// The (recovery point, log start) last written to the checkpoint files.
    checkpointed: (i64, i64),
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
    /// The idempotent producers' sequence state as of the log end (see [`crate::producer`]).
    producers: ProducerStates,
    /// Rolling stopped at `LogConfig::max_segments` or the node's bound (warned once until it
    /// rolls again).
    roll_capped: bool,
    /// The segments this log has counted in `LogConfig::node_segments` (brought in line with
    /// `segments` by [`Self::count_segments`]).
    counted: usize,
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory if needed, and recovers it (see the
    /// module docs). When this returns, every batch in the log is intact and durable.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Self> {
        let dir = dir.into();
        recovery::create_dir_if_missing(&dir)?;
        let clean = dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let bases = recovery::list_segments(&dir)?;
        let (mut epochs, epochs_valid) = LeaderEpochCache::load(&dir);
        let recovery::LoadedSegments {
            segments,
            recovered_any,
            clean_marker,
        } = recovery::load_segments(
            &dir,
            &bases,
            &config,
            clean,
            epochs_valid.then_some(&epochs),
        )?;

        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_end = segments
            .values()
            .next_back()
            .map_or(0, Segment::next_offset);
        let log_start = recovery::bounded_log_start(&dir, first_base, log_end);
        recovery::reconcile_epochs(&mut epochs, epochs_valid, &segments, log_start, log_end)?;

        let checkpointed = recovery::read_checkpointed(&dir, first_base);
        let mut log = Self {
            dir,
            config,
            segments,
            log_start_offset: log_start,
            recovery_point: log_end,
            epochs,
            unflushed_messages: 0,
            oldest_unflushed: None,
            offline: None,
            clean_marker,
            checkpointed,
            dir_unsynced: false,
            producers: ProducerStates::empty_at(first_base),
            roll_capped: false,
            counted: 0,
        };
        log.count_segments();
        log.producers = log.load_producers()?;
        if recovered_any || !clean {
            log.checkpoint()?;
        }
        tracing::debug!(dir = %log.dir.display(), clean, log_start, log_end, "opened partition log");
        Ok(log)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's configuration.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the configuration (a topic config change); applies from the next append.
    pub fn set_config(&mut self, config: LogConfig) {
        if config.node_segments != self.config.node_segments {
            self.config.node_segments.adjust(self.counted, 0);
            self.counted = 0;
        }
        self.config = config;
        self.count_segments();
    }

    /// Brings this log's share of the node's segment count (`LogConfig::node_segments`) in
    /// line with the segments it holds. Cheap when nothing changed; called wherever segments
    /// come and go, and before every roll decision, so a path that forgot is set right there.
    pub(super) fn count_segments(&mut self) {
        let now = self.segments.len();
        if now != self.counted {
            self.config.node_segments.adjust(self.counted, now);
            self.counted = now;
        }
    }

    /// The first offset readers may see.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Every offset below this is on disk (fsynced).
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// The latest leader epoch appended, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Where leader epoch `epoch` ended in this log, as Kafka's OffsetForLeaderEpoch answers:
    /// `(largest epoch <= epoch, end offset)`; `None` if `epoch` is newer than any known.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Records that this replica leads `epoch` from the current log end offset on, before it
    /// accepts a write or answers OffsetForLeaderEpoch (Kafka assigns the epoch the moment a
    /// replica becomes leader). Without it a new leader that has written nothing yet would not
    /// know its own epoch, and a follower whose latest epoch is newer than every epoch the
    /// leader has cached would be told nothing and keep a tail the leader never had. Older or
    /// equal epochs change nothing. Durable when it returns.
    pub fn begin_leader_epoch(&mut self, epoch: i32) -> Result<bool> {
        self.check_online()?;
        let start = self.log_end_offset();
        let result = self.epochs.assign(epoch, start);
        self.fail_on_error(result)
    }

    fn active(&self) -> &Segment {
        // The map is never empty: open creates a segment, and nothing removes the last one.
        self.segments
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("a log always has a segment"))
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .unwrap_or_else(|| unreachable!("a log always has a segment"))
    }

    fn check_online(&self) -> Result<()> {
        match &self.offline {
            Some(reason) => Err(LogError::Offline {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Takes the log offline when a write-side operation failed, so nothing is acknowledged on
    /// top of data whose fate is unknown.
    fn fail_on_error<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(LogError::Io { op, path, source }) = &result {
            let reason = format!("{op} {}: {source}", path.display());
            tracing::error!(dir = %self.dir.display(), %reason, "log going offline");
            self.offline.get_or_insert(reason);
        }
        result
    }

    /// Removes the clean-shutdown marker (durably) before the first change to the log, so a
    /// crash after the change is never taken for a clean shutdown.
    fn mark_dirty(&mut self) -> Result<()> {
        if self.clean_marker {
            let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
            match std::fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove clean-shutdown marker", &marker),
            }
            sync_dir(&self.dir)?;
            self.clean_marker = false;
        }
        Ok(())
    }

    /// Flushes everything, writes the checkpoints and the clean-shutdown marker, so the next
    /// open skips recovery. A log that went offline is closed without the marker.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Like [`Self::close`] for a log that is shared (behind a lock): afterwards it refuses
    /// writes as if offline, so nothing lands after the clean-shutdown marker.
    pub fn shutdown(&mut self) -> Result<()> {
        self.check_online()?;
        if !self.clean_marker {
            for segment in self.segments.values_mut() {
                segment.flush()?;
            }
            self.recovery_point = self.log_end_offset();
            self.checkpoint()?;
            self.snapshot_producers(true)?;
            // The marker needs no fsync of its own: everything it vouches for is durable
            // already, so if it is lost the next open merely scans.
            let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
            std::fs::File::create(&marker).ctx("write clean-shutdown marker", &marker)?;
            self.clean_marker = true;
        }
        self.offline = Some("closed".into());
        Ok(())
    }

    /// Deletes the whole log directory (the partition was deleted or moved away).
    pub fn delete(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).ctx("delete log directory", &self.dir)?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for PartitionLog {
    /// Its segments no longer count against the node's bound.
    fn drop(&mut self) {
        self.config.node_segments.adjust(self.counted, 0);
    }
}
