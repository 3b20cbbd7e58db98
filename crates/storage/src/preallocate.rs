//! Reserving disk blocks ahead of the active segment's end, off the append path.
//!
//! Why: an append is a buffered `write` past the end of the file. On ext4 each new block then
//! needs a delayed-allocation reservation, and that takes the inode's block-map lock for
//! reading; while the kernel's writeback is allocating blocks for the same file (which it does
//! holding that lock for writing, and which can take long on a busy disk), the append waits
//! too (kernel stacks sampled during such stalls end in `ext4_da_get_block_prep`). Measured
//! on the development VM (`scripts/write-stalls.py`: 3 files appended at 380 MB/s in 64 KiB
//! writes for 15 s; docs/BENCHMARKS.md): without preallocation, stalls of 50 ms to ~1 s once
//! the dirty pages reach the background writeback threshold; with 256 MiB reserved ahead from
//! another thread, no stall over 263 ms in any run, though stalls of 50-120 ms remain (a
//! reservation holds the inode lock, and an append may wait for it). Each stall holds every
//! producer of the partition, so it is what an acks=all p99 shows.
//!
//! How: the log hands out a [`Preallocation`] (a file handle and a range past the end of the
//! file) when the reserved room ahead of the active segment's end falls below half of the
//! window; its owner runs it on another thread. The blocks are reserved with Linux's
//! `fallocate(FALLOC_FL_KEEP_SIZE)`: the file's length does not change, so readers, recovery
//! and the on-disk format see nothing of it, and a crash leaves at most unused blocks past the
//! end. The window grows with the segment (as large as the segment already is, from 1 MiB up
//! to `LogConfig::preallocate_bytes`, never past `segment.bytes`), so an idle partition
//! reserves nothing and a busy one at most one window. A segment sealed before it was full
//! (by `segment.ms`, say) gets its unused blocks back in [`crate::PartitionLog::trim_sealed`].
//!
//! Preallocation is a hint: when the filesystem does not support it or the disk is full, the
//! appends still work (and fail on their own when they can't write).

use std::fs::File;

/// The smallest window reserved ahead, once a segment has any data.
pub const MIN_WINDOW: u64 = 1 << 20;

/// A sealed segment's reservation past its end is given back when at least this large
/// (smaller ones are the file system's block rounding, or not worth a truncation).
pub const TRIM_THRESHOLD: u64 = 64 << 10;

/// Blocks to reserve past the end of a segment file; run it with [`Preallocation::run`]
/// without holding the log.
#[derive(Debug)]
pub struct Preallocation {
    file: File,
    /// First byte to reserve.
    pub from: u64,
    /// Bytes to reserve.
    pub len: u64,
}

impl Preallocation {
    pub(crate) fn new(file: File, from: u64, len: u64) -> Self {
        Self { file, from, len }
    }

    /// Reserves the blocks. The file's length is unchanged; an error means only that the
    /// blocks are not reserved (appends allocate them as usual).
    pub fn run(&self) -> std::io::Result<()> {
        reserve(&self.file, self.from, self.len)
    }
}

#[cfg(target_os = "linux")]
fn reserve(file: &File, from: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    fallocate(file, FallocateFlags::KEEP_SIZE, from, len).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _from: u64, _len: u64) -> std::io::Result<()> {
    Ok(())
}

/// The range to reserve for a segment of `size` bytes with blocks reserved up to
/// `allocated_to`, a largest window of `max_window` and a segment limit of `limit` bytes;
/// `None` when at least half a window is still reserved ahead (or preallocation is off).
pub fn next_range(size: u64, allocated_to: u64, max_window: u64, limit: u64) -> Option<(u64, u64)> {
    if max_window == 0 || size == 0 {
        return None;
    }
    let window = size.max(MIN_WINDOW).min(max_window);
    if allocated_to.saturating_sub(size) >= window / 2 {
        return None;
    }
    let from = allocated_to.max(size);
    let to = size.saturating_add(window).min(limit);
    (to > from).then(|| (from, to - from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn idle_or_disabled_segments_reserve_nothing() {
        assert_eq!(next_range(0, 0, 256 * MIB, 1 << 30), None);
        assert_eq!(next_range(10 * MIB, 0, 0, 1 << 30), None);
    }

    #[test]
    fn window_grows_with_the_segment_up_to_the_maximum() {
        assert_eq!(next_range(1000, 0, 256 * MIB, 1 << 30), Some((1000, MIB)));
        assert_eq!(
            next_range(8 * MIB, 8 * MIB, 256 * MIB, 1 << 30),
            Some((8 * MIB, 8 * MIB))
        );
        assert_eq!(
            next_range(600 * MIB, 600 * MIB, 256 * MIB, 1 << 30),
            Some((600 * MIB, 256 * MIB))
        );
    }

    #[test]
    fn nothing_while_half_a_window_is_left_and_the_rest_when_less() {
        assert_eq!(next_range(300 * MIB, 430 * MIB, 256 * MIB, 1 << 30), None);
        assert_eq!(
            next_range(300 * MIB, 420 * MIB, 256 * MIB, 1 << 30),
            Some((420 * MIB, 136 * MIB))
        );
    }

    #[test]
    fn never_past_the_segment_limit() {
        let limit = 1 << 30;
        assert_eq!(
            next_range(limit - MIB, limit - MIB, 256 * MIB, limit),
            Some((limit - MIB, MIB))
        );
        assert_eq!(next_range(limit - MIB, limit, 256 * MIB, limit), None);
        // A tiny segment limit (tests use a few KiB) caps the window too.
        assert_eq!(next_range(100, 0, 256 * MIB, 4096), Some((100, 3996)));
    }
}
