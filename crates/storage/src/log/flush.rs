//! Durability: fsyncing what was appended (at once by [`PartitionLog::flush`], or, for a log
//! shared behind a lock, in three steps that keep the fsync outside it: take, sync,
//! complete), the `flush.ms` policy, and the recovery-point and log-start checkpoints that
//! bound how much the next open must scan.

use std::path::PathBuf;

use crate::checkpoint::write_atomic;
use crate::error::{IoContext, LogError, Result};

use super::{PartitionLog, LOG_START_FILE, RECOVERY_POINT_FILE};

/// Checkpoint values to write, taken from a log by [`PartitionLog::pending_checkpoint`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The partition directory the checkpoint files are written in.
    dir: PathBuf,
    /// The recovery point to write; `None` when the file already holds it.
    recovery_point: Option<i64>,
    /// The log start offset to write; `None` when the file already holds it.
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
    /// Base offsets of the sealed segments whose handles are in `files`, marked synced when
    /// the flush completes.
    bases: Vec<i64>,
    /// Handles to fsync: each such segment's unsynced log and index files, and the directory
    /// when `dir` is set.
    files: Vec<std::fs::File>,
    /// The recovery point once every file is synced: the active segment's base offset, or
    /// the current recovery point if that is further.
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

impl PartitionLog {
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
}
