//! A segment: one `.log` file of whole record batches, named by the base offset of its first
//! batch, with its `.index` and `.timeindex` (see [`crate::index`]).
//!
//! Only the newest segment of a log (the active one) is appended to. Appends are one vectored
//! write of the batch as it came from the producer, with its first 16 bytes (base offset,
//! length, leader epoch) replaced: the records are never re-encoded or copied into a buffer.
//! Reads use positioned reads (`pread`) and so need no lock against each other.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;

use crate::batch::{BatchError, BatchHeader, RecordBatch, HEADER_LEN};
use crate::error::{IoContext, LogError, Result};
use crate::index::{Index, OffsetEntry, TimeEntry};
use crate::preallocate::{self, Preallocation};

/// Extension of the data file.
pub const LOG_SUFFIX: &str = "log";
/// Extension of the offset index.
pub const INDEX_SUFFIX: &str = "index";
/// Extension of the time index.
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Chunk size for streaming CRC checks during recovery.
const SCAN_CHUNK: usize = 1 << 20;

/// `dir/<20-digit base offset>.<suffix>`.
pub fn file_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Where a scan of a segment stopped.
#[derive(Debug)]
pub struct ScanEnd {
    /// Position after the last good batch.
    pub valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub error: Option<String>,
}

impl ScanEnd {
    fn stop(valid_bytes: u64, why: impl std::fmt::Display) -> Self {
        Self {
            valid_bytes,
            error: Some(why.to_string()),
        }
    }
}

/// One segment of a partition log.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    file: File,
    size: u64,
    next_offset: i64,
    index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    /// Largest batch `maxTimestamp` in the segment, -1 when none.
    max_timestamp: i64,
    /// Last offset of the batch holding `max_timestamp`.
    offset_of_max_timestamp: i64,
    bytes_since_index: u64,
    /// When the first batch was appended in this process (for `segment.ms`).
    first_append: Option<Instant>,
    /// Whether appended bytes await fsync.
    unflushed: bool,
    /// How far disk blocks are reserved (see [`crate::preallocate`]); at least `size` when
    /// known, possibly more after a [`Preallocation`] was handed out.
    allocated_to: u64,
}

impl Segment {
    /// Creates an empty segment starting at `base_offset`. Fails if its log file exists.
    pub fn create(dir: &Path, base_offset: i64) -> Result<Self> {
        let log_path = file_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&log_path)
            .ctx("create segment", &log_path)?;
        Ok(Self {
            base_offset,
            file,
            size: 0,
            next_offset: base_offset,
            index: Index::create(&file_path(dir, base_offset, INDEX_SUFFIX))?,
            time_index: Index::create(&file_path(dir, base_offset, TIME_INDEX_SUFFIX))?,
            log_path,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            bytes_since_index: 0,
            first_append: None,
            // Empty: nothing to fsync. The caller fsyncs the directory to make the new
            // files themselves durable.
            unflushed: false,
            allocated_to: 0,
        })
    }

    /// Opens an existing segment whose log is trusted (sealed, or the active segment after a
    /// clean shutdown). Indexes that fail validation are rebuilt from batch headers. Returns
    /// `Ok(None)` when the batch headers themselves don't add up, so the caller must recover
    /// the segment by [`Segment::recover`] instead.
    pub fn open(dir: &Path, base_offset: i64, index_interval: u64) -> Result<Option<Self>> {
        let mut segment = Self::open_files(dir, base_offset)?;
        let size = segment.size;
        let base = base_offset;
        let index = Index::<OffsetEntry>::load(&file_path(dir, base, INDEX_SUFFIX), |prev, e| {
            u64::from(e.position) < size
                && prev.is_none_or(|p| {
                    p.relative_offset < e.relative_offset && p.position < e.position
                })
        })?;
        let time_index =
            Index::<TimeEntry>::load(&file_path(dir, base, TIME_INDEX_SUFFIX), |prev, e| {
                prev.is_none_or(|p| {
                    p.timestamp < e.timestamp && p.relative_offset <= e.relative_offset
                })
            })?;
        let (Some(index), Some(time_index)) = (index, time_index) else {
            tracing::warn!(segment = %segment.log_path.display(), "index missing or invalid; rebuilding");
            let end = segment.rebuild_indexes(false, index_interval, &mut |_| Ok(()))?;
            if end.error.is_some() || end.valid_bytes != size {
                return Ok(None);
            }
            segment.index.flush()?;
            segment.time_index.flush()?;
            return Ok(Some(segment));
        };
        segment.index = index;
        segment.time_index = time_index;
        if let Some(last) = segment.time_index.last() {
            segment.max_timestamp = last.timestamp;
            segment.offset_of_max_timestamp = base + i64::from(last.relative_offset);
        }
        // Walk the batches after the last index entry to find the segment's end.
        let start = segment.index.last().map_or(0, |e| u64::from(e.position));
        let mut max = (segment.max_timestamp, segment.offset_of_max_timestamp);
        let mut next = segment.next_offset;
        let mut since_index = 0;
        let end = segment.scan(start, false, |_, header| {
            if header.max_timestamp > max.0 {
                max = (header.max_timestamp, header.last_offset());
            }
            next = header.next_offset();
            since_index += header.total_size() as u64;
            Ok(())
        })?;
        if end.error.is_some() || end.valid_bytes != size {
            return Ok(None);
        }
        (segment.max_timestamp, segment.offset_of_max_timestamp) = max;
        segment.next_offset = next;
        segment.bytes_since_index = since_index;
        segment.unflushed = false;
        Ok(Some(segment))
    }

    /// Opens a segment's log file; the indexes are placeholders until loaded or rebuilt.
    pub fn open_files(dir: &Path, base_offset: i64) -> Result<Self> {
        let log_path = file_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .ctx("open segment", &log_path)?;
        let meta = file.metadata().ctx("stat segment", &log_path)?;
        let size = meta.len();
        // Blocks reserved past the end before a restart are still there; counting them keeps
        // them from being reserved twice and lets a sealed segment give them back.
        let allocated_to = size.max(meta.blocks().saturating_mul(512));
        let index_path = file_path(dir, base_offset, INDEX_SUFFIX);
        let time_path = file_path(dir, base_offset, TIME_INDEX_SUFFIX);
        Ok(Self {
            base_offset,
            file,
            size,
            next_offset: base_offset,
            index: Index::unloaded(&index_path),
            time_index: Index::unloaded(&time_path),
            log_path,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            bytes_since_index: 0,
            first_append: None,
            unflushed: false,
            allocated_to,
        })
    }

    /// Scans the whole segment, checking every batch's length, magic and CRC (and anything
    /// `accept` adds, such as the expected leader epoch), rebuilds both indexes, truncates the
    /// file at the first batch that fails, and fsyncs. Returns the number of bytes cut off.
    pub fn recover(
        &mut self,
        index_interval: u64,
        accept: &mut dyn FnMut(&BatchHeader) -> Result<(), &'static str>,
    ) -> Result<u64> {
        let end = self.rebuild_indexes(true, index_interval, accept)?;
        let cut = self.size - end.valid_bytes;
        if cut > 0 {
            tracing::warn!(
                segment = %self.log_path.display(),
                position = end.valid_bytes,
                bytes = cut,
                reason = end.error.as_deref().unwrap_or("trailing bytes"),
                "truncating torn or corrupt tail of segment"
            );
            self.file
                .set_len(end.valid_bytes)
                .ctx("truncate segment", &self.log_path)?;
            self.size = end.valid_bytes;
            // Truncation frees every block past the new end.
            self.allocated_to = self.size;
        }
        self.unflushed = true;
        self.flush()?;
        Ok(cut)
    }

    /// Rebuilds the indexes from the batches, stopping at the first bad one (or one `accept`
    /// refuses). Leaves `size` as the file size; the caller decides what to do with a tail.
    fn rebuild_indexes(
        &mut self,
        verify_crc: bool,
        interval: u64,
        accept: &mut dyn FnMut(&BatchHeader) -> Result<(), &'static str>,
    ) -> Result<ScanEnd> {
        let mut offsets = Vec::new();
        let mut times: Vec<TimeEntry> = Vec::new();
        let mut since = 0u64;
        let base = self.base_offset;
        let mut max = (-1i64, base);
        let mut next = base;
        let end = self.scan(0, verify_crc, |pos, header| {
            accept(header)?;
            if header.max_timestamp > max.0 {
                max = (header.max_timestamp, header.last_offset());
            }
            if since > interval {
                offsets.push(OffsetEntry {
                    relative_offset: (header.base_offset - base) as u32,
                    position: pos as u32,
                });
                if times.last().is_none_or(|t| max.0 > t.timestamp) {
                    times.push(TimeEntry {
                        timestamp: max.0,
                        relative_offset: (max.1 - base) as u32,
                    });
                }
                since = 0;
            }
            since += header.total_size() as u64;
            next = header.next_offset();
            Ok(())
        })?;
        self.index.replace(offsets)?;
        self.time_index.replace(times)?;
        (self.max_timestamp, self.offset_of_max_timestamp) = max;
        self.next_offset = next;
        self.bytes_since_index = since;
        Ok(end)
    }

    /// Visits each batch header from `start` on, in order, checking structure and offset sanity
    /// (and the CRC when `verify_crc`). Stops at the end of the file or the first bad batch;
    /// never reads past the file or allocates more than one chunk whatever the headers say.
    fn scan(
        &self,
        start: u64,
        verify_crc: bool,
        mut visit: impl FnMut(u64, &BatchHeader) -> Result<(), &'static str>,
    ) -> Result<ScanEnd> {
        let mut pos = start;
        let mut head = [0u8; HEADER_LEN];
        let mut chunk = Vec::new();
        let mut expected_next: Option<i64> = None;
        while pos < self.size {
            let available = self.size - pos;
            if available < HEADER_LEN as u64 {
                let why = BatchError::Truncated {
                    needed: HEADER_LEN,
                    available: available as usize,
                };
                return Ok(ScanEnd::stop(pos, why));
            }
            self.file
                .read_exact_at(&mut head, pos)
                .ctx("read segment", &self.log_path)?;
            let header = match BatchHeader::parse(&head) {
                Ok(h) => h,
                Err(e) => return Ok(ScanEnd::stop(pos, e)),
            };
            let size = header.total_size() as u64;
            if size > available {
                let why = BatchError::Truncated {
                    needed: size as usize,
                    available: available as usize,
                };
                return Ok(ScanEnd::stop(pos, why));
            }
            let offsets_ok = header.base_offset >= self.base_offset
                && header.last_offset_delta >= 0
                && header.last_offset() - self.base_offset <= i64::from(u32::MAX)
                && expected_next.is_none_or(|next| header.base_offset == next);
            if !offsets_ok {
                return Ok(ScanEnd::stop(pos, "batch offsets are out of sequence"));
            }
            if verify_crc {
                let mut crc = 0u32;
                let mut at = pos + 21;
                let end = pos + size;
                while at < end {
                    let n = ((end - at) as usize).min(SCAN_CHUNK);
                    chunk.resize(n, 0);
                    self.file
                        .read_exact_at(&mut chunk, at)
                        .ctx("read segment", &self.log_path)?;
                    crc = crc32c::crc32c_append(crc, &chunk);
                    at += n as u64;
                }
                if crc != header.crc {
                    let why = BatchError::CrcMismatch {
                        stored: header.crc,
                        computed: crc,
                    };
                    return Ok(ScanEnd::stop(pos, why));
                }
            }
            if let Err(why) = visit(pos, &header) {
                return Ok(ScanEnd::stop(pos, why));
            }
            expected_next = Some(header.next_offset());
            pos += size;
        }
        Ok(ScanEnd {
            valid_bytes: pos,
            error: None,
        })
    }

    /// Calls `f` with every batch header, in order, without checking CRCs.
    pub fn for_each_header(&self, mut f: impl FnMut(&BatchHeader)) -> Result<()> {
        self.scan(0, false, |_, h| {
            f(h);
            Ok(())
        })?;
        Ok(())
    }

    /// Appends one batch whose header is `header` (already validated, offsets assigned): the
    /// bytes are `parts` concatenated. Not durable until [`Segment::flush`].
    pub fn append(&mut self, header: &BatchHeader, parts: &[&[u8]], interval: u64) -> Result<()> {
        let position = self.size;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        if self.bytes_since_index > interval {
            self.index.push(OffsetEntry {
                relative_offset: (header.base_offset - self.base_offset) as u32,
                position: position as u32,
            });
            self.maybe_append_time_entry();
            self.bytes_since_index = 0;
        }
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        let written: usize = parts.iter().map(|p| p.len()).sum();
        while !slices.is_empty() {
            match (&self.file).write_vectored(slices) {
                Ok(0) => {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero))
                        .ctx("append to segment", &self.log_path)
                }
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).ctx("append to segment", &self.log_path),
            }
        }
        self.size += written as u64;
        self.bytes_since_index += written as u64;
        self.next_offset = header.next_offset();
        self.first_append.get_or_insert_with(Instant::now);
        self.unflushed = true;
        Ok(())
    }

    fn maybe_append_time_entry(&mut self) {
        if self.max_timestamp >= 0
            && self
                .time_index
                .last()
                .is_none_or(|t| self.max_timestamp > t.timestamp)
        {
            self.time_index.push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
            });
        }
    }

    /// The position and header of the first batch whose last offset is `>= offset`, or `None`
    /// when every batch of the segment is below `offset`.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        let start = self
            .index
            .floor(offset - self.base_offset, false)
            .map_or(0, |e| u64::from(e.position));
        self.find_batch_from(start, |h| h.last_offset() >= offset)
    }

    fn find_batch_from(
        &self,
        start: u64,
        want: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>> {
        let mut pos = start;
        let mut head = [0u8; HEADER_LEN];
        while pos + HEADER_LEN as u64 <= self.size {
            self.file
                .read_exact_at(&mut head, pos)
                .ctx("read segment", &self.log_path)?;
            let header = BatchHeader::parse(&head).map_err(LogError::Corrupt)?;
            if want(&header) {
                return Ok(Some((pos, header)));
            }
            pos += header.total_size() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches starting at `position`, at most `max_bytes` of them unless the first
    /// batch alone is larger (it is then returned whole, so a consumer always makes progress),
    /// and never past `end_position`.
    pub fn read(&self, position: u64, max_bytes: usize, end_position: u64) -> Result<Bytes> {
        let end = end_position.min(self.size);
        if position >= end {
            return Ok(Bytes::new());
        }
        let available = end - position;
        let want = (max_bytes as u64)
            .min(available)
            .max(HEADER_LEN as u64)
            .min(available) as usize;
        let mut buf = vec![0u8; want];
        self.file
            .read_exact_at(&mut buf, position)
            .ctx("read segment", &self.log_path)?;
        // Cut at the last whole batch.
        let mut whole = 0usize;
        while whole + HEADER_LEN <= buf.len() {
            let header = BatchHeader::parse(&buf[whole..]).map_err(LogError::Corrupt)?;
            let size = header.total_size();
            if whole + size > buf.len() {
                if whole == 0 {
                    // The first batch is larger than max_bytes: return it whole.
                    let size = (size as u64).min(available) as usize;
                    buf.resize(size, 0);
                    self.file
                        .read_exact_at(&mut buf, position)
                        .ctx("read segment", &self.log_path)?;
                    whole = size;
                }
                break;
            }
            whole += size;
        }
        buf.truncate(whole);
        Ok(Bytes::from(buf))
    }

    /// The first record at or after offset `from` whose timestamp is `>= timestamp`, as
    /// `(offset, timestamp)`.
    pub fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<(i64, i64)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        // Every record up to the entry's offset is older than `timestamp`.
        let after = self
            .time_index
            .floor(timestamp, true)
            .map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.relative_offset) + 1
            })
            .max(from);
        let start = self
            .index
            .floor(after - self.base_offset, false)
            .map_or(0, |e| u64::from(e.position));
        let Some((pos, header)) = self.find_batch_from(start, |h| {
            h.last_offset() >= after && h.max_timestamp >= timestamp
        })?
        else {
            return Ok(None);
        };
        let bytes = self.read(pos, header.total_size(), self.size)?;
        let batch = RecordBatch::decode(bytes).map_err(LogError::Corrupt)?;
        let found = batch
            .records()
            .map_err(LogError::Corrupt)?
            .into_iter()
            .find(|r| r.offset >= after && r.timestamp >= timestamp)
            .map(|r| (r.offset, r.timestamp));
        Ok(found)
    }

    /// Removes every batch whose last offset is `>= offset` (a batch straddling `offset` goes
    /// whole), fsyncs, and returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64> {
        let Some((pos, header)) = self.find_batch(offset)? else {
            return Ok(self.next_offset);
        };
        self.file
            .set_len(pos)
            .ctx("truncate segment", &self.log_path)?;
        self.file.sync_all().ctx("fsync segment", &self.log_path)?;
        self.size = pos;
        self.allocated_to = pos;
        self.next_offset = header.base_offset;
        let rel_end = header.base_offset - self.base_offset;
        self.index.truncate(|e| u64::from(e.position) < pos)?;
        self.time_index
            .truncate(|e| i64::from(e.relative_offset) < rel_end)?;
        // Recompute the newest timestamp from the kept time index and the batches after the
        // last kept offset-index entry.
        (self.max_timestamp, self.offset_of_max_timestamp) =
            self.time_index.last().map_or((-1, self.base_offset), |t| {
                (t.timestamp, self.base_offset + i64::from(t.relative_offset))
            });
        let start = self.index.last().map_or(0, |e| u64::from(e.position));
        let mut max = (self.max_timestamp, self.offset_of_max_timestamp);
        let mut since = 0;
        self.scan(start, false, |_, h| {
            if h.max_timestamp > max.0 {
                max = (h.max_timestamp, h.last_offset());
            }
            since += h.total_size() as u64;
            Ok(())
        })?;
        (self.max_timestamp, self.offset_of_max_timestamp) = max;
        self.bytes_since_index = since;
        self.index.flush()?;
        self.time_index.flush()?;
        Ok(self.next_offset)
    }

    /// Makes everything appended durable: the log's data, then both indexes.
    pub fn flush(&mut self) -> Result<()> {
        if self.unflushed {
            self.file.sync_data().ctx("fsync segment", &self.log_path)?;
            self.unflushed = false;
        }
        self.index.flush()?;
        self.time_index.flush()
    }

    /// Called when the segment stops being the active one: records the final time-index entry
    /// (so the newest timestamp is known without a scan after restart) and writes the indexes'
    /// pending entries. Not durable yet: fsync later through [`Segment::sync_handles`], so a
    /// roll never stalls appends on a segment-sized fsync.
    pub fn seal(&mut self) -> Result<()> {
        self.maybe_append_time_entry();
        self.index.write_pending()?;
        self.time_index.write_pending()
    }

    /// Blocks to reserve ahead of the end of the file, if it is time (see
    /// [`crate::preallocate`]): windows up to `max_window` bytes, never past `limit`.
    pub fn preallocation(&mut self, max_window: u64, limit: u64) -> Result<Option<Preallocation>> {
        let Some((from, len)) =
            preallocate::next_range(self.size, self.allocated_to, max_window, limit)
        else {
            return Ok(None);
        };
        let file = self
            .file
            .try_clone()
            .ctx("clone segment handle", &self.log_path)?;
        self.allocated_to = from + len;
        Ok(Some(Preallocation::new(file, from, len)))
    }

    /// Gives back blocks reserved past the end of the file (a sealed segment that did not
    /// fill its reservation). Call with the log held: it truncates the file to its own length.
    pub fn trim_preallocation(&mut self) -> Result<()> {
        if self.allocated_to > self.size {
            self.file
                .set_len(self.size)
                .ctx("trim segment reservation", &self.log_path)?;
            self.allocated_to = self.size;
        }
        Ok(())
    }

    /// Bytes reserved past the end of the file, as far as this process knows.
    pub fn reserved_past_end(&self) -> u64 {
        self.allocated_to.saturating_sub(self.size)
    }

    /// Handles to fsync this segment's unsynced files with, outside any lock on the log.
    pub fn sync_handles(&self) -> Result<Vec<File>> {
        let mut files = Vec::new();
        if self.unflushed {
            files.push(
                self.file
                    .try_clone()
                    .ctx("clone segment handle", &self.log_path)?,
            );
        }
        files.extend(self.index.sync_handle()?);
        files.extend(self.time_index.sync_handle()?);
        Ok(files)
    }

    /// Records that the handles from [`Segment::sync_handles`] were fsynced.
    pub fn mark_synced(&mut self) {
        self.unflushed = false;
        self.index.mark_synced();
        self.time_index.mark_synced();
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> Result<()> {
        for path in [&self.log_path, self.index.path(), self.time_index.path()] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("delete segment file", path),
            }
        }
        Ok(())
    }

    /// Offset of the first batch (the file's name).
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes in the log file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Largest record timestamp in the segment, or the file's modification time when no
    /// batch carries a timestamp (as Kafka does for retention).
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// When this process first appended to the segment.
    pub fn first_append(&self) -> Option<Instant> {
        self.first_append
    }
}
