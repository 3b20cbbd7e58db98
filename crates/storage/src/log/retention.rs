//! The log start offset and what moves it: retention by `retention.ms` and `retention.bytes`
//! (whole sealed segments, oldest first) and DeleteRecords (any offset up to the log end).
//! The new log start is checkpointed and the leader epochs below it are dropped.

use crate::checkpoint::{sync_dir, write_atomic};
use crate::error::{LogError, Result};
use crate::segment::Segment;

use super::{PartitionLog, LOG_START_FILE};

/// What retention removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes deleted.
    pub bytes: u64,
}

impl PartitionLog {
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
            self.count_segments();
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
}
