//! Truncation: a follower cutting the tail where its log diverged from the leader's (and the
//! leader epochs with it), or deleting everything to start anew at the leader's log start.

use crate::checkpoint::{sync_dir, write_atomic};
use crate::error::{LogError, Result};
use crate::segment::Segment;

use super::{PartitionLog, RECOVERY_POINT_FILE};

impl PartitionLog {
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
                self.count_segments();
                segment.delete()?;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        let end = self.active_mut().truncate_to(offset)?;
        self.epochs.truncate_from_end(end)?;
        // Producers must forget the batches cut off, or a retry of one would be answered with
        // offsets that no longer hold it.
        self.producers = self.load_producers()?;
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
        self.count_segments();
        self.segments
            .insert(offset, Segment::create(&self.dir, offset)?);
        self.count_segments();
        sync_dir(&self.dir)?;
        self.epochs.clear()?;
        crate::producer::remove_snapshots_after(&self.dir, -1)?;
        self.producers = crate::producer::ProducerStates::empty_at(offset);
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.unflushed_messages = 0;
        self.oldest_unflushed = None;
        self.checkpoint()
    }
}
