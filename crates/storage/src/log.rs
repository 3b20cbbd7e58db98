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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use weir_common::now_ms;

use bytes::Bytes;

use crate::batch::{self, BatchError, BatchHeader, TimestampType};
use crate::checkpoint::{read_i64, sync_dir, write_atomic};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{IoContext, LogError, Result};
use crate::preallocate::Preallocation;
use crate::segment::{self, Segment};

/// Marker file written by [`PartitionLog::close`].
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// Checkpoint of the recovery point.
pub const RECOVERY_POINT_FILE: &str = "recovery-point-checkpoint";
/// Checkpoint of the log start offset.
pub const LOG_START_FILE: &str = "log-start-offset-checkpoint";

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest record timestamp appended.
    pub max_timestamp: i64,
    /// The broker time stamped on the batch when the log uses `LogAppendTime`.
    pub log_append_time: Option<i64>,
    /// Records appended.
    pub record_count: i64,
    /// Bytes appended.
    pub bytes: usize,
}

/// Checkpoint values to write, taken from a log by [`PartitionLog::pending_checkpoint`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    recovery_point: Option<i64>,
    log_start: Option<i64>,
}

impl Checkpoint {
    /// Writes the files (temp file, fsync, rename, fsync the directory); call without holding
    /// the log, then [`PartitionLog::checkpoint_written`].
    pub fn write(&self) -> Result<()> {
        if let Some(v) = self.recovery_point {
            write_atomic(&self.dir, RECOVERY_POINT_FILE, v.to_string().as_bytes())?;
        }
        if let Some(v) = self.log_start {
            write_atomic(&self.dir, LOG_START_FILE, v.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// Sealed segments awaiting fsync, taken from a log by [`PartitionLog::take_pending_flush`].
#[derive(Debug)]
pub struct PendingFlush {
    bases: Vec<i64>,
    files: Vec<std::fs::File>,
    upto: i64,
    /// Whether `files` includes the directory (a segment was created since its last fsync).
    dir: bool,
}

impl PendingFlush {
    /// fsyncs every file; call without holding the log.
    pub fn sync(&self) -> std::io::Result<()> {
        self.files.iter().try_for_each(|f| f.sync_all())
    }
}

/// What retention removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes deleted.
    pub bytes: u64,
}

/// One partition's log. Appends and maintenance take `&mut self`; reads take `&self` and use
/// positioned reads, so a caller may share the log behind a read-write lock.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Segments by base offset; the last one is the active segment. Never empty.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    /// Every offset below this is fsynced.
    recovery_point: i64,
    epochs: LeaderEpochCache,
    unflushed_messages: u64,
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
}

/// Base offsets of the segments found in `dir`, sorted; removes leftovers of interrupted
/// operations (temp files, indexes without a log).
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
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

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory if needed, and recovers it (see the
    /// module docs). When this returns, every batch in the log is intact and durable.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).ctx("create log directory", &dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let mut clean_marker = marker.exists();
        let clean = clean_marker;
        let mut dir_changed = false;
        let bases = list_segments(&dir)?;
        let (mut epochs, epochs_valid) = LeaderEpochCache::load(&dir);
        let recovery_point = if clean {
            i64::MAX
        } else {
            read_i64(&dir, RECOVERY_POINT_FILE).unwrap_or(0)
        };

        let mut segments = BTreeMap::new();
        let mut recovered_any = false;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let sealed_and_flushed = next_base.is_some_and(|next| next <= recovery_point);
            let trusted = if clean || sealed_and_flushed {
                Segment::open(&dir, base, config.index_interval_bytes)?
            } else {
                None
            };
            let segment = match trusted {
                Some(segment) => segment,
                None => {
                    recovered_any = true;
                    if clean_marker {
                        // About to change files: a crash from here on must not pass as clean.
                        std::fs::remove_file(&marker)
                            .ctx("remove clean-shutdown marker", &marker)?;
                        sync_dir(&dir)?;
                        clean_marker = false;
                    }
                    let mut expected = segments
                        .values()
                        .next_back()
                        .map_or(base, |s: &Segment| s.next_offset());
                    let mut accept = |h: &BatchHeader| {
                        if h.base_offset != expected {
                            return Err("batch offset does not follow the previous batch");
                        }
                        // Batches before the first checkpointed epoch (below a log start
                        // moved by retention or DeleteRecords) have no entry to check against.
                        let known = epochs_valid
                            .then(|| epochs.epoch_for_offset(h.base_offset))
                            .flatten();
                        if known.is_some_and(|epoch| epoch != h.partition_leader_epoch) {
                            return Err(
                                "batch leader epoch disagrees with the leader-epoch checkpoint",
                            );
                        }
                        expected = h.next_offset();
                        Ok(())
                    };
                    let mut segment = Segment::open_files(&dir, base)?;
                    let cut = segment.recover(config.index_interval_bytes, &mut accept)?;
                    if cut > 0 || next_base.is_some_and(|next| segment.next_offset() != next) {
                        // Damage (or a gap) here: nothing after it can be trusted to follow on.
                        segments.insert(base, segment);
                        dir_changed = true;
                        for &later in &bases[i + 1..] {
                            tracing::warn!(dir = %dir.display(), base_offset = later, "deleting segment after a corrupt one");
                            Segment::open_files(&dir, later)?.delete()?;
                        }
                        break;
                    }
                    segment
                }
            };
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let start = read_i64(&dir, LOG_START_FILE).unwrap_or(0).max(0);
            segments.insert(start, Segment::create(&dir, start)?);
            dir_changed = true;
        }
        if dir_changed {
            sync_dir(&dir)?;
        }

        let first_base = segments.keys().next().copied().unwrap_or(0);
        let log_end = segments
            .values()
            .next_back()
            .map_or(0, Segment::next_offset);
        // max/min, not clamp: clamp panics when its bounds cross, and a damaged directory must
        // not panic a node.
        let log_start = read_i64(&dir, LOG_START_FILE)
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end.max(first_base));
        if !epochs_valid {
            let mut found = Vec::new();
            for segment in segments.values() {
                segment
                    .for_each_header(|h| found.push((h.partition_leader_epoch, h.base_offset)))?;
            }
            epochs.rebuild(found)?;
        }
        epochs.truncate_from_end(log_end)?;
        epochs.truncate_from_start(log_start)?;

        let checkpointed = (
            read_i64(&dir, RECOVERY_POINT_FILE).unwrap_or(0),
            read_i64(&dir, LOG_START_FILE).unwrap_or(first_base),
        );
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
        };
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
        self.config = config;
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

    /// `message.timestamp.before.max.ms` / `after.max.ms` against this broker's clock, for the
    /// oldest and newest timestamps of a batch (its records' and its header's `maxTimestamp`,
    /// which retention reads).
    fn check_timestamps(&self, oldest: i64, newest: i64) -> Result<()> {
        let now = now_ms();
        let limits = [
            (
                self.config.timestamp_before_max,
                oldest,
                now.saturating_sub(oldest),
                "before",
            ),
            (
                self.config.timestamp_after_max,
                newest,
                newest.saturating_sub(now),
                "after",
            ),
        ];
        for (bound, timestamp, off, side) in limits {
            let Some(bound) = bound else {
                continue;
            };
            let limit = bound.as_millis().min(i64::MAX as u128) as i64;
            if off > limit {
                return Err(LogError::InvalidTimestamp {
                    timestamp,
                    reason: format!(
                        "more than message.timestamp.{side}.max.ms = {limit} {side} the broker's clock"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Appends one batch from a producer as the partition leader in `leader_epoch`: validates
    /// it (size, length, CRC, and every record: [`batch::check_records`]), assigns it the next offsets by rewriting the
    /// base offset and leader epoch in its header, and writes it. Invalid input changes
    /// nothing. Durable when it returns only if the flush policy says so; see [`Self::flush`].
    pub fn append_as_leader(&mut self, batch: Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        self.check_online()?;
        let mut header = batch::validate(&batch, usize::MAX)?;
        if header.total_size() != batch.len() {
            return Err(
                BatchError::InvalidLength(batch.len() as i64 - batch::LOG_OVERHEAD as i64).into(),
            );
        }
        if batch.len() > self.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size: batch.len(),
                max: self.config.max_message_bytes,
            });
        }
        if header.records_count < 1 {
            return Err(LogError::InvalidRequest(
                "a produced batch must hold at least one record".into(),
            ));
        }
        if header.last_offset_delta != header.records_count - 1 {
            return Err(
                BatchError::InvalidCount("lastOffsetDelta must be recordsCount - 1").into(),
            );
        }
        // Decompressed, a batch may be at most 8 times max.message.bytes (8 MiB by default):
        // a small batch of zeros must not cost every consumer hundreds of MB to decode.
        let max_decompressed = self.config.max_message_bytes.saturating_mul(8);
        let timestamps = batch::check_records(&batch, &header, max_decompressed)?;
        if self.config.timestamp_type == TimestampType::CreateTime {
            let (lo, hi) = timestamps.unwrap_or((header.max_timestamp, header.max_timestamp));
            self.check_timestamps(lo.min(header.max_timestamp), hi.max(header.max_timestamp))?;
        }
        if leader_epoch < 0 {
            return Err(LogError::InvalidRequest(format!(
                "leader epoch {leader_epoch} is negative"
            )));
        }
        if let Some(latest) = self
            .epochs
            .latest_epoch()
            .filter(|latest| leader_epoch < *latest)
        {
            return Err(LogError::StaleEpoch {
                epoch: leader_epoch,
                latest,
            });
        }

        let base_offset = self.log_end_offset();
        header.base_offset = base_offset;
        header.partition_leader_epoch = leader_epoch;
        let log_append_time =
            (self.config.timestamp_type == TimestampType::LogAppendTime).then(now_ms);
        let result = self.write_batch(
            &header,
            |prefix| {
                batch::set_base_offset_and_epoch(prefix, base_offset, leader_epoch);
            },
            &batch,
            log_append_time,
        );
        let header = self.fail_on_error(result)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            log_append_time,
            record_count: i64::from(header.records_count),
            bytes: batch.len(),
        })
    }

    /// Appends batches copied from the leader (a follower's append): they keep their offsets
    /// and epochs, and the first must start at this log's end offset. Each batch is validated;
    /// on the first invalid one nothing more is appended and the error is returned (the ones
    /// before it stay). Returns the info of everything appended, `None` for an empty input.
    pub fn append_as_follower(&mut self, mut batches: Bytes) -> Result<Option<AppendInfo>> {
        self.check_online()?;
        let mut info: Option<AppendInfo> = None;
        while !batches.is_empty() {
            let header = batch::validate(&batches, usize::MAX)?;
            let expected = self.log_end_offset();
            if header.base_offset != expected {
                return Err(LogError::InvalidRequest(format!(
                    "replicated batch starts at offset {}, but the log ends at {expected}",
                    header.base_offset
                )));
            }
            if let Some(latest) = self
                .epochs
                .latest_epoch()
                .filter(|l| header.partition_leader_epoch < *l)
            {
                return Err(LogError::StaleEpoch {
                    epoch: header.partition_leader_epoch,
                    latest,
                });
            }
            let bytes = batches.split_to(header.total_size());
            let result = self.write_batch(&header, |_| {}, &bytes, None);
            let header = self.fail_on_error(result)?;
            let this = AppendInfo {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                max_timestamp: header.max_timestamp,
                log_append_time: None,
                record_count: i64::from(header.records_count),
                bytes: bytes.len(),
            };
            info = Some(match info {
                None => this,
                Some(prev) => AppendInfo {
                    last_offset: this.last_offset,
                    max_timestamp: prev.max_timestamp.max(this.max_timestamp),
                    record_count: prev.record_count + this.record_count,
                    bytes: prev.bytes + this.bytes,
                    ..prev
                },
            });
        }
        Ok(info)
    }

    /// Rolls if needed, records a new epoch, and writes the batch with its first 16 bytes
    /// patched by `patch` (or, with log-append time, the whole batch restamped). Applies the
    /// flush policy. Returns the header as written.
    fn write_batch(
        &mut self,
        header: &BatchHeader,
        patch: impl FnOnce(&mut [u8]),
        batch: &[u8],
        log_append_time: Option<i64>,
    ) -> Result<BatchHeader> {
        self.mark_dirty()?;
        self.maybe_roll(batch.len() as u64, header.last_offset())?;
        self.epochs
            .assign(header.partition_leader_epoch, header.base_offset)?;
        let interval = self.config.index_interval_bytes;
        let mut header = *header;
        match log_append_time {
            Some(now) => {
                let mut owned = batch.to_vec();
                patch(&mut owned[..16]);
                batch::set_log_append_time(&mut owned, now);
                header.max_timestamp = now;
                self.active_mut().append(&header, &[&owned], interval)?;
            }
            None => {
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&batch[..16]);
                patch(&mut prefix);
                self.active_mut()
                    .append(&header, &[&prefix, &batch[16..]], interval)?;
            }
        }
        self.unflushed_messages += header.records_count.max(0) as u64;
        self.oldest_unflushed.get_or_insert_with(Instant::now);
        let policy = self.config.flush;
        let by_count = policy
            .messages
            .is_some_and(|n| self.unflushed_messages >= n);
        let by_time = policy
            .interval
            .is_some_and(|t| self.oldest_unflushed.is_some_and(|at| at.elapsed() >= t));
        if by_count || by_time {
            self.flush()?;
        }
        Ok(header)
    }

    /// Starts a new active segment when the next batch would overflow `segment.bytes`, the
    /// active segment is older than `segment.ms`, or its offsets would overflow the indexes'
    /// 32-bit relative offsets. The old segment is sealed; once it is fsynced (by
    /// [`Self::flush`] or [`Self::take_pending_flush`]) the recovery point passes it and it is
    /// never scanned again.
    fn maybe_roll(&mut self, batch_size: u64, last_offset: i64) -> Result<()> {
        let config = &self.config;
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size() + batch_size > config.segment_bytes;
        let old = active
            .first_append()
            .is_some_and(|t| t.elapsed() >= config.segment_ms);
        let offsets = last_offset - active.base_offset() > i64::from(i32::MAX);
        if full || old || offsets {
            self.roll()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub fn roll(&mut self) -> Result<()> {
        self.check_online()?;
        let result = self.roll_inner();
        self.fail_on_error(result)
    }

    fn roll_inner(&mut self) -> Result<()> {
        self.mark_dirty()?;
        let next = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        // The sealed segment is fsynced later (flush, or the broker's upkeep through
        // take_pending_flush), not here: a segment-sized fsync would stall every append. The
        // recovery point stays behind it until then, so a crash rescans it.
        self.active_mut().seal()?;
        let segment = Segment::create(&self.dir, next)?;
        self.segments.insert(next, segment);
        // The new file's directory entry is fsynced with the sealed segment, before anything
        // in it counts as durable.
        self.dir_unsynced = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled new segment");
        Ok(())
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (but at least one
    /// whole batch, so a consumer always makes progress). Empty at the log end offset.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.read_below(offset, max_bytes, i64::MAX)
    }

    /// Like [`Self::read`], but returns no batch that starts at or after `upper_bound` (the high
    /// watermark: consumers must not see what is not yet committed).
    pub fn read_below(&self, offset: i64, max_bytes: usize, upper_bound: i64) -> Result<Bytes> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: log_end,
            });
        }
        if offset >= upper_bound.min(log_end) {
            return Ok(Bytes::new());
        }
        for segment in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            let segment = segment.1;
            let Some((position, _)) = segment.find_batch(offset)? else {
                continue;
            };
            let end = if upper_bound < segment.next_offset() {
                segment
                    .find_batch(upper_bound)?
                    .map_or(segment.size(), |(pos, _)| pos)
            } else {
                segment.size()
            };
            return segment.read(position, max_bytes, end);
        }
        Ok(Bytes::new())
    }

    /// The earliest record whose timestamp is `>= timestamp`, as `(offset, timestamp)`; `None`
    /// when every record is older. Kafka's ListOffsets by time.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        for segment in self.segments.values() {
            if segment.next_offset() <= self.log_start_offset
                || segment.largest_timestamp() < timestamp
            {
                continue;
            }
            if let Some(found) =
                segment.find_offset_by_timestamp(timestamp, self.log_start_offset)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Removes every record at `offset` and after (a batch straddling `offset` goes whole), as
    /// a follower does when its log diverged from the leader's. Durable when it returns.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        self.check_online()?;
        if offset < 0 {
            return Err(LogError::InvalidRequest(format!(
                "cannot truncate to negative offset {offset}"
            )));
        }
        if offset >= self.log_end_offset() {
            // Nothing to cut, but an epoch this replica began as leader without writing
            // anything (an entry at the log end) may conflict with the new leader's log: drop
            // it, as Kafka does, so the follower's next OffsetForLeaderEpoch asks for the
            // epoch its records really carry.
            let end = self.log_end_offset();
            let result = self.epochs.truncate_from_end(end);
            return self.fail_on_error(result);
        }
        let first_base = self.segments.keys().next().copied().unwrap_or(0);
        if offset <= first_base || offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        let result = self.truncate_inner(offset);
        self.fail_on_error(result)
    }

    fn truncate_inner(&mut self, offset: i64) -> Result<()> {
        self.mark_dirty()?;
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        let removed = !doomed.is_empty();
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        let end = self.active_mut().truncate_to(offset)?;
        self.epochs.truncate_from_end(end)?;
        self.recovery_point = self.recovery_point.min(end);
        write_atomic(
            &self.dir,
            RECOVERY_POINT_FILE,
            self.recovery_point.to_string().as_bytes(),
        )?;
        tracing::info!(dir = %self.dir.display(), offset, log_end = end, "truncated log");
        Ok(())
    }

    /// Deletes every segment and starts the log empty at `offset` (a follower whose leader's
    /// log starts past this log's end).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<()> {
        self.check_online()?;
        if offset < 0 {
            return Err(LogError::InvalidRequest(format!(
                "cannot start the log at negative offset {offset}"
            )));
        }
        let result = self.reset_inner(offset);
        self.fail_on_error(result)
    }

    fn reset_inner(&mut self, offset: i64) -> Result<()> {
        self.mark_dirty()?;
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete()?;
        }
        sync_dir(&self.dir)?;
        self.segments
            .insert(offset, Segment::create(&self.dir, offset)?);
        sync_dir(&self.dir)?;
        self.epochs.clear()?;
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.unflushed_messages = 0;
        self.oldest_unflushed = None;
        self.checkpoint()
    }

    /// Advances the log start offset to `offset` (Kafka's DeleteRecords): offsets below it can
    /// no longer be read, and segments wholly below it are deleted. Returns the new log start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        self.check_online()?;
        let log_end = self.log_end_offset();
        if offset < 0 || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: log_end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        let result = self.advance_log_start(offset);
        self.fail_on_error(result)?;
        Ok(self.log_start_offset)
    }

    fn advance_log_start(&mut self, offset: i64) -> Result<()> {
        self.mark_dirty()?;
        self.log_start_offset = offset;
        write_atomic(&self.dir, LOG_START_FILE, offset.to_string().as_bytes())?;
        self.epochs.truncate_from_start(offset)?;
        if !self.active().is_empty() && self.active().next_offset() <= offset {
            self.roll_inner()?;
        }
        self.delete_segments_while(|segment, _| segment.next_offset() <= offset)?;
        Ok(())
    }

    /// Deletes sealed segments by `retention.ms` (newest record older than `now_ms - retention`)
    /// and `retention.bytes` (oldest first while the log is larger). The active segment is
    /// never deleted. Call periodically.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome> {
        self.check_online()?;
        let mut outcome = RetentionOutcome::default();
        if let Some(retention) = self.config.retention_ms {
            let cutoff = now_ms.saturating_sub(retention.as_millis() as i64);
            let r = self.delete_segments_while(|segment, _| segment.largest_timestamp() < cutoff);
            let r = self.fail_on_error(r)?;
            outcome.segments += r.segments;
            outcome.bytes += r.bytes;
        }
        if let Some(limit) = self.config.retention_bytes {
            let mut excess = self.size_bytes().saturating_sub(limit);
            let r = self.delete_segments_while(|segment, _| {
                let delete = segment.size() <= excess;
                if delete {
                    excess -= segment.size();
                }
                delete
            });
            let r = self.fail_on_error(r)?;
            outcome.segments += r.segments;
            outcome.bytes += r.bytes;
        }
        Ok(outcome)
    }

    /// Deletes the oldest sealed segments while `delete` says so, moving the log start offset
    /// past them.
    fn delete_segments_while(
        &mut self,
        mut delete: impl FnMut(&Segment, i64) -> bool,
    ) -> Result<RetentionOutcome> {
        let mut outcome = RetentionOutcome::default();
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            if !delete(first, base) {
                break;
            }
            self.mark_dirty()?;
            let Some(segment) = self.segments.remove(&base) else {
                break;
            };
            let next_base = self.segments.keys().next().copied().unwrap_or(base);
            outcome.segments += 1;
            outcome.bytes += segment.size();
            segment.delete()?;
            if next_base > self.log_start_offset {
                self.log_start_offset = next_base;
            }
        }
        if outcome.segments > 0 {
            sync_dir(&self.dir)?;
            write_atomic(
                &self.dir,
                LOG_START_FILE,
                self.log_start_offset.to_string().as_bytes(),
            )?;
            self.epochs.truncate_from_start(self.log_start_offset)?;
            tracing::info!(dir = %self.dir.display(), segments = outcome.segments, bytes = outcome.bytes,
                log_start = self.log_start_offset, "deleted old segments");
        }
        Ok(outcome)
    }

    /// fsyncs everything appended; the recovery point moves to the log end offset. An fsync
    /// error is returned and takes the log offline.
    pub fn flush(&mut self) -> Result<()> {
        self.check_online()?;
        if let Some(pending) = self.take_pending_flush()? {
            let synced = pending.sync();
            self.complete_flush(pending, synced)?;
        }
        let result = self.active_mut().flush();
        self.fail_on_error(result)?;
        self.recovery_point = self.log_end_offset();
        self.unflushed_messages = 0;
        self.oldest_unflushed = None;
        Ok(())
    }

    /// The sealed segments not yet fsynced, as handles to fsync without holding the log:
    /// call [`PendingFlush::sync`] outside any lock, then [`Self::complete_flush`]. `None` when
    /// every sealed segment is durable.
    pub fn take_pending_flush(&mut self) -> Result<Option<PendingFlush>> {
        self.check_online()?;
        let active = self.active().base_offset();
        let mut pending = PendingFlush {
            bases: Vec::new(),
            files: Vec::new(),
            upto: self.recovery_point,
            dir: false,
        };
        if self.dir_unsynced {
            pending
                .files
                .push(std::fs::File::open(&self.dir).ctx("open log directory", &self.dir)?);
            pending.dir = true;
        }
        let sealed: Vec<i64> = self.segments.range(..active).map(|(b, _)| *b).collect();
        for base in sealed {
            let Some(segment) = self.segments.get(&base) else {
                continue;
            };
            let files = segment.sync_handles()?;
            if files.is_empty() {
                continue;
            }
            pending.files.extend(files);
            pending.bases.push(base);
        }
        // Everything below the active segment is durable once these are synced.
        pending.upto = pending.upto.max(active);
        if pending.bases.is_empty() && !pending.dir && pending.upto == self.recovery_point {
            return Ok(None);
        }
        Ok(Some(pending))
    }

    /// Completes a [`Self::take_pending_flush`]: marks its segments durable and moves the
    /// recovery point (checkpointed) past them. A failed fsync takes the log offline.
    pub fn complete_flush(
        &mut self,
        pending: PendingFlush,
        synced: std::io::Result<()>,
    ) -> Result<()> {
        if let Err(source) = synced {
            let result = Err(LogError::Io {
                op: "fsync sealed segment",
                path: self.dir.clone(),
                source,
            });
            return self.fail_on_error(result);
        }
        for base in &pending.bases {
            if let Some(segment) = self.segments.get_mut(base) {
                segment.mark_synced();
            }
        }
        if pending.dir {
            self.dir_unsynced = false;
        }
        // Segments deleted or truncated meanwhile don't matter: the recovery point never
        // passes the log end.
        // The checkpoint file follows at the next checkpoint; until then a crash only scans more.
        let upto = pending.upto.min(self.log_end_offset());
        self.recovery_point = self.recovery_point.max(upto);
        Ok(())
    }

    /// Disk blocks to reserve ahead of the active segment's end, when it is time (see
    /// [`crate::preallocate`]); run it without holding the log. Cheap to call after every
    /// append: usually `None`. Always `None` for an offline log or with
    /// `LogConfig::preallocate_bytes` = 0.
    pub fn take_preallocation(&mut self) -> Result<Option<Preallocation>> {
        if self.offline.is_some() {
            return Ok(None);
        }
        let (window, limit) = (self.config.preallocate_bytes, self.config.segment_bytes);
        self.active_mut().preallocation(window, limit)
    }

    /// Gives back the blocks reserved past the end of sealed segments that were rolled before
    /// they filled their reservation (by `segment.ms`, a truncation, or reservations left from
    /// before a restart), at least [`crate::preallocate::TRIM_THRESHOLD`] each. Returns the bytes
    /// given back. Call periodically, not on the append path: it truncates files, which may
    /// wait on the filesystem's journal.
    pub fn trim_sealed(&mut self) -> Result<u64> {
        self.check_online()?;
        let active = self.active().base_offset();
        let mut trimmed = 0;
        for segment in self.segments.range_mut(..active).map(|(_, s)| s) {
            let extra = segment.reserved_past_end();
            if extra >= crate::preallocate::TRIM_THRESHOLD {
                segment.trim_preallocation()?;
                trimmed += extra;
            }
        }
        Ok(trimmed)
    }

    /// Flushes if `flush.ms` has passed since the oldest unflushed append (call periodically).
    pub fn flush_if_due(&mut self) -> Result<bool> {
        let due = self
            .config
            .flush
            .interval
            .is_some_and(|t| self.oldest_unflushed.is_some_and(|at| at.elapsed() >= t));
        if due {
            self.flush()?;
        }
        Ok(due)
    }

    /// Writes the recovery-point and log-start checkpoints (call periodically so recovery after
    /// a crash scans less). A log shared behind a lock can use [`Self::pending_checkpoint`]
    /// to write them without holding it.
    pub fn checkpoint(&mut self) -> Result<()> {
        if let Some(pending) = self.pending_checkpoint() {
            pending.write()?;
            self.checkpoint_written(&pending);
        }
        Ok(())
    }

    /// The checkpoint values that changed since last written, if any.
    pub fn pending_checkpoint(&self) -> Option<Checkpoint> {
        let recovery_point =
            (self.checkpointed.0 != self.recovery_point).then_some(self.recovery_point);
        let log_start =
            (self.checkpointed.1 != self.log_start_offset).then_some(self.log_start_offset);
        (recovery_point.is_some() || log_start.is_some()).then(|| Checkpoint {
            dir: self.dir.clone(),
            recovery_point,
            log_start,
        })
    }

    /// Records that `written` reached the disk.
    pub fn checkpoint_written(&mut self, written: &Checkpoint) {
        if let Some(v) = written.recovery_point {
            self.checkpointed.0 = v;
        }
        if let Some(v) = written.log_start {
            self.checkpointed.1 = v;
        }
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
