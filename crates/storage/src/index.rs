//! Sparse segment indexes: `.index` (offset → file position) and `.timeindex`
//! (timestamp → offset), one entry per `index.interval.bytes` of log.
//!
//! Both are rebuildable from the `.log` file, so they are written lazily: entries collect in
//! memory and reach the file when the segment is flushed, rolled or closed. A file that fails
//! validation on open (wrong size, entries out of order, positions past the log) is discarded
//! and rebuilt by scanning the segment.
//!
//! On disk, big-endian:
//! - `.index`: 8-byte entries `relative_offset: u32, position: u32`, where relative_offset
//!   is the base offset of the batch at `position` minus the segment's base offset.
//! - `.timeindex`: 12-byte entries `timestamp: i64, relative_offset: u32`: every batch up to
//!   and including offset `relative_offset` has records no newer than `timestamp`. Timestamps
//!   strictly increase from entry to entry.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Largest index file loaded (bytes): a 1 GiB segment indexed every 4 KiB needs 2 MiB of offset
/// index and 3 MiB of time index; with `index.interval.bytes` at its smallest still far less.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// One fixed-size index entry.
pub trait IndexEntry: Copy + std::fmt::Debug {
    /// Encoded size.
    const SIZE: usize;
    /// The key entries are ordered and searched by.
    fn key(&self) -> i64;
    /// Writes the entry's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads an entry from exactly `SIZE` bytes.
    fn decode(buf: &[u8]) -> Self;
}

/// An `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Batch base offset minus segment base offset.
    pub relative_offset: u32,
    /// Byte position of that batch in the `.log` file.
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let mut rel = [0u8; 4];
        let mut pos = [0u8; 4];
        rel.copy_from_slice(&buf[0..4]);
        pos.copy_from_slice(&buf[4..8]);
        Self {
            relative_offset: u32::from_be_bytes(rel),
            position: u32::from_be_bytes(pos),
        }
    }
}

/// A `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp of the segment up to `relative_offset`.
    pub timestamp: i64,
    /// Offset (relative to the segment) of the last record covered.
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        let mut rel = [0u8; 4];
        ts.copy_from_slice(&buf[0..8]);
        rel.copy_from_slice(&buf[8..12]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes(rel),
        }
    }
}

/// A sparse index: sorted entries in memory, mirrored to a file.
#[derive(Debug)]
pub struct Index<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries already in the file; the rest are written on [`Index::flush`].
    persisted: usize,
    /// Whether the file has bytes not yet fsynced.
    dirty: bool,
}

impl<E: IndexEntry> Index<E> {
    /// A new, empty index; the file is (re)created empty.
    pub fn create(path: &Path) -> Result<Self> {
        File::create(path).ctx("create index", path)?;
        // Empty, so nothing to fsync; the caller fsyncs the directory for the file itself.
        Ok(Self {
            path: path.to_owned(),
            entries: Vec::new(),
            persisted: 0,
            dirty: false,
        })
    }

    /// An index for `path` with no entries that does not touch the file: a placeholder until
    /// the index is loaded or rebuilt with [`Index::replace`].
    pub fn unloaded(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            entries: Vec::new(),
            persisted: 0,
            dirty: false,
        }
    }

    /// Loads the index file (at most [`MAX_INDEX_BYTES`]) and validates it with `valid` (called with each entry and the one
    /// before it, if any). `Ok(None)` when the file is missing or invalid: rebuild it.
    pub fn load(path: &Path, valid: impl Fn(Option<&E>, &E) -> bool) -> Result<Option<Self>> {
        // An index holds one entry per `index.interval.bytes` of a segment: far below this.
        // A larger file is damage (or hostile), and is rebuilt rather than read whole.
        match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_INDEX_BYTES => {
                tracing::warn!(file = %path.display(), bytes = m.len(), "index file too large; rebuilding it");
                return Ok(None);
            }
            _ => {}
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx("read index", path),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let mut entries: Vec<E> = Vec::with_capacity(bytes.len() / E::SIZE);
        for chunk in bytes.chunks_exact(E::SIZE) {
            let entry = E::decode(chunk);
            if !valid(entries.last(), &entry) {
                return Ok(None);
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok(Some(Self {
            path: path.to_owned(),
            entries,
            persisted,
            dirty: false,
        }))
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries.
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// The newest entry.
    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Adds an entry; it must sort after the last one (callers guarantee it).
    pub fn push(&mut self, entry: E) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|last| last.key() < entry.key()));
        self.entries.push(entry);
    }

    /// The last entry whose key is `<= key` (`strict`: `< key`).
    pub fn floor(&self, key: i64, strict: bool) -> Option<&E> {
        let n = self.entries.partition_point(|e| {
            if strict {
                e.key() < key
            } else {
                e.key() <= key
            }
        });
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// Keeps only the entries for which `keep` holds (a prefix), rewriting the file's tail.
    pub fn truncate(&mut self, keep: impl Fn(&E) -> bool) -> Result<()> {
        let n = self.entries.partition_point(keep);
        if n == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(n);
        if self.persisted > n {
            self.persisted = n;
            let file = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .ctx("open index", &self.path)?;
            file.set_len((n * E::SIZE) as u64)
                .ctx("truncate index", &self.path)?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Writes entries not yet in the file and fsyncs it.
    pub fn flush(&mut self) -> Result<()> {
        self.write_pending()?;
        if self.dirty {
            File::open(&self.path)
                .and_then(|f| f.sync_all())
                .ctx("fsync index", &self.path)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// A handle to fsync the file with later (without `&mut self`), if it has unsynced bytes.
    pub fn sync_handle(&self) -> Result<Option<File>> {
        if !self.dirty {
            return Ok(None);
        }
        File::open(&self.path)
            .map(Some)
            .ctx("open index", &self.path)
    }

    /// Records that the file was fsynced through a [`Index::sync_handle`].
    pub fn mark_synced(&mut self) {
        self.dirty = false;
    }

    /// Writes entries not yet in the file, without fsync.
    pub fn write_pending(&mut self) -> Result<()> {
        if self.persisted < self.entries.len() {
            let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
            for e in &self.entries[self.persisted..] {
                e.encode(&mut buf);
            }
            let mut file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .ctx("open index", &self.path)?;
            file.write_all(&buf).ctx("write index", &self.path)?;
            self.persisted = self.entries.len();
            self.dirty = true;
        }
        Ok(())
    }

    /// Replaces every entry and rewrites the file from scratch (after a rebuild).
    pub fn replace(&mut self, entries: Vec<E>) -> Result<()> {
        File::create(&self.path).ctx("create index", &self.path)?;
        self.entries = entries;
        self.persisted = 0;
        self.dirty = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_lazily_and_validates_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = Index::<OffsetEntry>::create(&path).unwrap();
        for i in 0..10u32 {
            index.push(OffsetEntry {
                relative_offset: i * 10,
                position: i * 4096,
            });
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "written lazily");
        index.flush().unwrap();
        assert_eq!(index.floor(35, false).unwrap().relative_offset, 30);
        assert_eq!(index.floor(30, true).unwrap().relative_offset, 20);
        assert!(index.floor(-1, false).is_none());

        index.truncate(|e| e.relative_offset < 50).unwrap();
        index.flush().unwrap();
        let ordered = |prev: Option<&OffsetEntry>, e: &OffsetEntry| {
            prev.is_none_or(|p| p.relative_offset < e.relative_offset && p.position < e.position)
        };
        let loaded = Index::<OffsetEntry>::load(&path, ordered).unwrap().unwrap();
        assert_eq!(loaded.entries().len(), 5);

        // A torn file is rejected.
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(Index::<OffsetEntry>::load(&path, ordered)
            .unwrap()
            .is_none());
        // Out-of-order entries are rejected.
        let mut buf = Vec::new();
        OffsetEntry {
            relative_offset: 9,
            position: 9,
        }
        .encode(&mut buf);
        OffsetEntry {
            relative_offset: 3,
            position: 99,
        }
        .encode(&mut buf);
        std::fs::write(&path, buf).unwrap();
        assert!(Index::<OffsetEntry>::load(&path, ordered)
            .unwrap()
            .is_none());
        // Missing is not an error.
        std::fs::remove_file(&path).unwrap();
        assert!(Index::<OffsetEntry>::load(&path, ordered)
            .unwrap()
            .is_none());
    }
}
