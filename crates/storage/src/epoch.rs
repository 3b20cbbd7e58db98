//! The leader-epoch checkpoint: for each leader epoch, the first offset written in it
//! (Kafka's `leader-epoch-checkpoint`, KIP-101/279).
//!
//! A replica that becomes a follower asks the new leader where its own latest epoch ended
//! ([`LeaderEpochCache::end_offset_for`] on the leader) and truncates past that point, so
//! replicas never diverge. The file has Kafka's text format: a version line (`0`), a count
//! line, then one `epoch start_offset` line per entry. It is rewritten whole, atomically,
//! whenever it changes (new epoch, truncation), which happens at leader changes only.

use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::Result;

/// File name inside the partition directory.
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// One epoch and the first offset its leader wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// Leader epoch.
    pub epoch: i32,
    /// First offset appended in this epoch.
    pub start_offset: i64,
}

/// Epoch → start offset, in memory and in the checkpoint file.
#[derive(Debug)]
pub struct LeaderEpochCache {
    dir: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint from `dir`. Returns `None` as the second value's `false` when the
    /// file is missing or malformed, so the caller can rebuild it from the batches.
    pub fn load(dir: &Path) -> (Self, bool) {
        let parsed = std::fs::read_to_string(dir.join(FILE_NAME))
            .ok()
            .and_then(|t| parse(&t));
        let valid = parsed.is_some();
        let cache = Self {
            dir: dir.to_owned(),
            entries: parsed.unwrap_or_default(),
        };
        (cache, valid)
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest epoch, if any batch carried one.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The epoch that offset `offset` was written in, by the entries' start offsets.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let idx = self.entries.partition_point(|e| e.start_offset <= offset);
        idx.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest epoch;
    /// persists the change before returning. Older or equal epochs change nothing.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool> {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return Ok(false);
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()?;
        Ok(true)
    }

    /// Drops entries that start at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.persist()?;
        }
        Ok(())
    }

    /// The log now starts at `start_offset`: entries wholly before it are dropped and the
    /// entry covering it starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if covering == 0 {
            return Ok(());
        }
        let first = covering - 1;
        if first == 0 && self.entries[0].start_offset == start_offset {
            return Ok(());
        }
        self.entries.drain(..first);
        self.entries[0].start_offset = start_offset;
        self.persist()
    }

    /// Removes every entry (the log was emptied).
    pub fn clear(&mut self) -> Result<()> {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.persist()?;
        }
        Ok(())
    }

    /// Where `epoch` ended, as Kafka's OffsetForLeaderEpoch answers: `(epoch, end offset)`
    /// where the epoch returned is the largest known epoch ≤ the one asked for, and the end
    /// offset is the start of the next larger epoch (or `log_end_offset` for the latest).
    /// `None` when `epoch` is newer than every known epoch, or nothing is known.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.latest_epoch()?;
        if epoch == latest {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.partition_point(|e| e.epoch <= epoch);
        let next = self.entries.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, next.start_offset)),
            // Older than the first known epoch: it ended where the first known one started.
            None => Some((epoch, next.start_offset)),
        }
    }

    fn persist(&self) -> Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        checkpoint::write_atomic(&self.dir, FILE_NAME, text.as_bytes())
    }

    /// Rebuilds the entries from the epochs of the batches, in offset order, and persists.
    pub fn rebuild(&mut self, batches: impl IntoIterator<Item = (i32, i64)>) -> Result<()> {
        self.entries.clear();
        for (epoch, base_offset) in batches {
            if epoch >= 0 && self.latest_epoch().is_none_or(|latest| epoch > latest) {
                self.entries.push(EpochEntry {
                    epoch,
                    start_offset: base_offset,
                });
            }
        }
        // No epochs at all is what a missing file says already.
        if self.entries.is_empty() {
            return Ok(());
        }
        self.persist()
    }
}

fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let epoch = fields.next()?.parse().ok()?;
        let start_offset = fields.next()?.parse().ok()?;
        if fields.next().is_some() || epoch < 0 || start_offset < 0 {
            return None;
        }
        if let Some(last) = entries.last() {
            if epoch <= last.epoch || start_offset < last.start_offset {
                return None;
            }
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    (entries.len() == count && lines.all(|l| l.trim().is_empty())).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = LeaderEpochCache::load(dir.path());
        for &(e, o) in entries {
            c.assign(e, o).unwrap();
        }
        (dir, c)
    }

    #[test]
    fn end_offset_for_epoch_answers_like_kafka() {
        let (_dir, c) = cache(&[(1, 0), (3, 100), (5, 250)]);
        assert_eq!(c.end_offset_for(5, 300), Some((5, 300)));
        assert_eq!(c.end_offset_for(3, 300), Some((3, 250)));
        assert_eq!(c.end_offset_for(4, 300), Some((3, 250)));
        assert_eq!(c.end_offset_for(2, 300), Some((1, 100)));
        assert_eq!(c.end_offset_for(0, 300), Some((0, 0)));
        assert_eq!(c.end_offset_for(6, 300), None);
    }

    #[test]
    fn survives_reload_and_truncation() {
        let (dir, mut c) = cache(&[(1, 0), (3, 100), (5, 250)]);
        assert!(!c.assign(4, 260).unwrap(), "older epochs are ignored");
        c.truncate_from_end(250).unwrap();
        assert_eq!(c.latest_epoch(), Some(3));
        c.truncate_from_start(120).unwrap();
        let (reloaded, valid) = LeaderEpochCache::load(dir.path());
        assert!(valid);
        assert_eq!(
            reloaded.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 120
            }]
        );
        assert_eq!(reloaded.epoch_for_offset(119), None);
        assert_eq!(reloaded.epoch_for_offset(500), Some(3));
    }

    #[test]
    fn malformed_files_are_reported_not_trusted() {
        for text in [
            "",
            "1\n0\n",
            "0\n2\n1 0\n",
            "0\n1\nx 0\n",
            "0\n2\n3 10\n2 20\n",
            "0\n1\n1 -5\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
            let (c, valid) = LeaderEpochCache::load(dir.path());
            assert!(!valid, "{text:?} must be rejected");
            assert!(c.entries().is_empty());
        }
    }
}
