//! The active segment's lifecycle: rolling (sealing it and starting the next, by
//! `segment.bytes`, `segment.ms` or offset range), the disk blocks reserved ahead of it
//! (see [`crate::preallocate`]), and giving back what sealed segments reserved but never
//! filled.

use crate::error::Result;
use crate::preallocate::Preallocation;
use crate::segment::Segment;

use super::PartitionLog;

impl PartitionLog {
    /// Starts a new active segment when the next batch would overflow `segment.bytes`, the
    /// active segment is older than `segment.ms`, or its offsets would overflow the indexes'
    /// 32-bit relative offsets. The old segment is sealed; once it is fsynced (by
    /// [`Self::flush`] or [`Self::take_pending_flush`]) the recovery point passes it and it is
    /// never scanned again.
    pub(super) fn maybe_roll(&mut self, batch_size: u64, last_offset: i64) -> Result<()> {
        self.count_segments();
        let config = &self.config;
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size() + batch_size > config.segment_bytes;
        let old = active
            .first_append()
            .is_some_and(|t| t.elapsed() >= config.segment_ms);
        // The offset range and the 32-bit positions in the indexes must roll whatever the cap.
        let offsets = last_offset - active.base_offset() > i64::from(i32::MAX)
            || active.size() + batch_size > i32::MAX as u64;
        // Size and age give way to the caps on segments, the partition's and the node's.
        let capped = self.segments.len() >= config.max_segments;
        let node_capped = config.node_segments.full();
        if (full || old) && (capped || node_capped) && !offsets {
            if !self.roll_capped {
                let cap = if capped {
                    "the partition's (--max-segments-per-partition)"
                } else {
                    "the node's (--max-segments-per-node)"
                };
                tracing::warn!(dir = %self.dir.display(), segments = self.segments.len(),
                    node_segments = config.node_segments.open(), cap,
                    "the most segments allowed are open: the active segment grows past \
                     segment.bytes and segment.ms until retention deletes old ones");
                self.roll_capped = true;
            }
            return Ok(());
        }
        if full || old || offsets {
            self.roll_capped = false;
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

    pub(super) fn roll_inner(&mut self) -> Result<()> {
        self.mark_dirty()?;
        let next = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        // The sealed segment is fsynced later (flush, or the broker's upkeep through
        // take_pending_flush), not here: a segment-sized fsync would stall every append. The
        // recovery point stays behind it until then, so a crash rescans it.
        self.active_mut().seal()?;
        // The producers' state as of the new segment's base: recovery and truncation replay
        // from here instead of from the log start.
        self.snapshot_producers(false)?;
        let segment = Segment::create(&self.dir, next)?;
        self.segments.insert(next, segment);
        self.count_segments();
        // The new file's directory entry is fsynced with the sealed segment, before anything
        // in it counts as durable.
        self.dir_unsynced = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled new segment");
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
}
