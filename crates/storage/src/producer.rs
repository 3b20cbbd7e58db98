//! Idempotent producers' state in one partition (Kafka's `ProducerStateManager`).
//!
//! An idempotent producer stamps every batch with its producer id, epoch and the sequence
//! number of the batch's first record (per partition, counting records from 0). For each
//! producer id the partition keeps its epoch and the sequence ranges and offsets of its last
//! [`MAX_CACHED_BATCHES`] batches. The leader checks each produced batch against it
//! ([`ProducerStates::check`]):
//!
//! - a batch equal to one of the cached five (same epoch, first and last sequence) is a retry
//!   of a batch already written: it is not written again, and its original offsets are
//!   answered ([`Check::Duplicate`]);
//! - a batch whose first sequence is not the last one plus 1 is refused with
//!   [`LogError::OutOfOrderSequence`]: an earlier batch is missing (the producer retries it
//!   first, so order is kept with up to five requests in flight);
//! - a batch with an older epoch than the producer's current one is refused with
//!   [`LogError::ProducerFenced`]; a newer epoch must start at sequence 0;
//! - a producer id this partition does not know, sending a sequence other than 0, is refused
//!   with [`LogError::UnknownProducerId`]: its state expired (or was never here), so a retry
//!   could not be told from a new batch.
//!
//! Every replica builds the same state from the batches it appends ([`ProducerStates::update`],
//! with no checks on a follower, as in Kafka), so a new leader dedupes retries of what its
//! predecessor wrote. The state is written to `<offset>.snapshot` files in the partition
//! directory when a segment rolls and when the log closes ([`write_snapshot`]); on open, and
//! after a truncation, it is the newest snapshot at or below the log end plus the batches after
//! it ([`PartitionLog`](crate::PartitionLog) replays their headers), so recovery never
//! rescans whole logs.
//!
//! Bounds: a producer not seen for `producer.id.expiration.ms` (default 1 day, as in Kafka) is
//! dropped by [`ProducerStates::expire`]; at most `max_producers` ids are kept per partition
//! (the least recently seen is dropped first, with a warning). "Seen" is this broker's clock
//! when it appended (or, on replay, reloaded) the producer's batch, not the batch's
//! timestamp: a producer replaying old data must not expire on arrival.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut};

use crate::batch::BatchHeader;
use crate::checkpoint::{sync_dir, write_atomic};
use crate::error::{IoContext, LogError, Result};

/// Batches remembered per producer: Kafka's five, which bounds the producer's requests in
/// flight per partition.
pub const MAX_CACHED_BATCHES: usize = 5;
/// Suffix of producer-state snapshot files: `<20-digit offset>.snapshot`.
pub const SNAPSHOT_SUFFIX: &str = "snapshot";
/// Snapshots kept per partition (the newest): enough to roll back a truncated tail without a
/// full replay.
pub const SNAPSHOTS_KEPT: usize = 3;

const SNAPSHOT_MAGIC: u32 = 0x5750_5332; // "WPS2"
const SNAPSHOT_HEADER: usize = 4 + 8 + 4; // magic, offset, producer count
const ENTRY_FIXED: usize = 8 + 2 + 8 + 1; // id, epoch, last seen, batch count
const BATCH_META: usize = 4 + 4 + 8 + 8 + 8; // first/last sequence, first/last offset, time

/// One of a producer's recent batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub first_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its `maxTimestamp` as written (the broker's append time under LogAppendTime), which
    /// the answer to a retry of it reports.
    pub max_timestamp: i64,
}

/// What the partition knows of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The producer's current epoch here.
    epoch: i16,
    /// Its last batches, oldest first; at most [`MAX_CACHED_BATCHES`], never empty.
    batches: VecDeque<BatchMeta>,
    /// When this broker last appended one of its batches (ms since the epoch).
    last_seen: i64,
}

/// The leader's verdict on a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer these offsets, write nothing.
    Duplicate(BatchMeta),
}

/// Every idempotent producer's state in one partition, as of [`Self::end_offset`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, Entry>,
    /// The log end offset this state reflects: every batch below it has been applied.
    end_offset: i64,
}

/// Sequence `n` after `seq`, wrapping from `i32::MAX` to 0 as Kafka does.
fn seq_add(seq: i32, n: i32) -> i32 {
    let room = i32::MAX - seq;
    if n > room {
        n - room - 1
    } else {
        seq + n
    }
}

impl ProducerStates {
    /// An empty state at `end_offset`.
    pub fn empty_at(end_offset: i64) -> Self {
        Self {
            producers: HashMap::new(),
            end_offset,
        }
    }

    /// The log end offset this state reflects.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Number of producer ids known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer id is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The epoch and last sequence known for `producer_id`.
    #[cfg(test)]
    fn last_sequence(&self, producer_id: i64) -> Option<(i16, i32)> {
        let entry = self.producers.get(&producer_id)?;
        Some((entry.epoch, entry.batches.back()?.last_seq))
    }

    /// Checks a batch a producer sent to the leader (see the module docs). A batch without a
    /// producer id is always appended.
    pub fn check(&self, header: &BatchHeader) -> Result<Check> {
        let producer_id = header.producer_id;
        if producer_id < 0 {
            return Ok(Check::Append);
        }
        let (epoch, first_seq) = (header.producer_epoch, header.base_sequence);
        if epoch < 0 || first_seq < 0 {
            return Err(LogError::InvalidRequest(format!(
                "producer {producer_id}: an idempotent batch needs an epoch and a base sequence \
                 >= 0 (got epoch {epoch}, sequence {first_seq})"
            )));
        }
        let last_seq = seq_add(first_seq, header.last_offset_delta);
        let Some(entry) = self.producers.get(&producer_id) else {
            if first_seq == 0 {
                return Ok(Check::Append);
            }
            return Err(LogError::UnknownProducerId {
                producer_id,
                sequence: first_seq,
            });
        };
        if epoch < entry.epoch {
            return Err(LogError::ProducerFenced {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            if first_seq != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(Check::Append);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate(*dup));
        }
        let expected = entry.batches.back().map(|b| seq_add(b.last_seq, 1));
        match expected {
            Some(expected) if expected != first_seq => Err(LogError::OutOfOrderSequence {
                producer_id,
                expected,
                got: first_seq,
            }),
            _ => Ok(Check::Append),
        }
    }

    /// Applies a batch appended at the offsets its header names (leader, follower or replay),
    /// seen at `now_ms`; keeps at most `max_producers` ids.
    pub fn update(&mut self, header: &BatchHeader, now_ms: i64, max_producers: usize) {
        self.end_offset = self.end_offset.max(header.next_offset());
        let producer_id = header.producer_id;
        if producer_id < 0 || header.base_sequence < 0 || header.producer_epoch < 0 {
            return;
        }
        let meta = BatchMeta {
            first_seq: header.base_sequence,
            last_seq: seq_add(header.base_sequence, header.last_offset_delta),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        };
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= max_producers {
            self.evict_least_recent();
        }
        let entry = self.producers.entry(producer_id).or_insert_with(|| Entry {
            epoch: header.producer_epoch,
            batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
            last_seen: now_ms,
        });
        if entry.epoch != header.producer_epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
        entry.last_seen = entry.last_seen.max(now_ms);
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            tracing::warn!(
                producer_id = id,
                "too many producer ids in one partition: forgetting the least recently seen"
            );
            self.producers.remove(&id);
        }
    }

    /// Drops every producer not seen for `expiration_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_seen) < expiration_ms);
        before - self.producers.len()
    }

    /// The snapshot file's bytes (big-endian): magic, end offset, producer count, then per
    /// producer its id, epoch, last seen time, batch count and batches (sequences, offsets,
    /// max timestamp); a CRC-32C of it all.
    fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(
            SNAPSHOT_HEADER
                + self.producers.len() * (ENTRY_FIXED + MAX_CACHED_BATCHES * BATCH_META)
                + 4,
        );
        buf.put_u32(SNAPSHOT_MAGIC);
        buf.put_i64(self.end_offset);
        buf.put_u32(self.producers.len() as u32);
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let entry = &self.producers[id];
            buf.put_i64(*id);
            buf.put_i16(entry.epoch);
            buf.put_i64(entry.last_seen);
            buf.put_u8(entry.batches.len() as u8);
            for b in &entry.batches {
                buf.put_i32(b.first_seq);
                buf.put_i32(b.last_seq);
                buf.put_i64(b.first_offset);
                buf.put_i64(b.last_offset);
                buf.put_i64(b.max_timestamp);
            }
        }
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        buf
    }

    /// Parses a snapshot file's bytes; every count is checked against the bytes present
    /// before anything is allocated.
    fn decode(bytes: &[u8]) -> std::result::Result<Self, &'static str> {
        if bytes.len() < SNAPSHOT_HEADER + 4 {
            return Err("shorter than a snapshot header");
        }
        let (body, mut crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != crc.get_u32() {
            return Err("checksum mismatch");
        }
        let mut buf = body;
        if buf.get_u32() != SNAPSHOT_MAGIC {
            return Err("not a producer-state snapshot");
        }
        let end_offset = buf.get_i64();
        let count = buf.get_u32() as usize;
        if count > buf.remaining() / ENTRY_FIXED {
            return Err("producer count exceeds the file");
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            if buf.remaining() < ENTRY_FIXED {
                return Err("truncated producer entry");
            }
            let id = buf.get_i64();
            let epoch = buf.get_i16();
            let last_seen = buf.get_i64();
            let n = buf.get_u8() as usize;
            if n == 0 || n > MAX_CACHED_BATCHES || buf.remaining() < n * BATCH_META {
                return Err("bad batch count in a producer entry");
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let meta = BatchMeta {
                    first_seq: buf.get_i32(),
                    last_seq: buf.get_i32(),
                    first_offset: buf.get_i64(),
                    last_offset: buf.get_i64(),
                    max_timestamp: buf.get_i64(),
                };
                if meta.first_offset > meta.last_offset || meta.last_offset >= end_offset {
                    return Err("batch offsets outside the snapshot");
                }
                batches.push_back(meta);
            }
            if id < 0
                || epoch < 0
                || producers
                    .insert(
                        id,
                        Entry {
                            epoch,
                            batches,
                            last_seen,
                        },
                    )
                    .is_some()
            {
                return Err("bad or repeated producer id");
            }
        }
        if buf.has_remaining() {
            return Err("trailing bytes");
        }
        Ok(Self {
            producers,
            end_offset,
        })
    }
}

/// The snapshot file for `offset` in `dir`.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(snapshot_name(offset))
}

fn snapshot_name(offset: i64) -> String {
    format!("{offset:020}.{SNAPSHOT_SUFFIX}")
}

/// Offsets of the snapshot files in `dir`, sorted.
pub fn list_snapshots(dir: &Path) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list log directory", dir)? {
        let path = entry.ctx("list log directory", dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name
            .strip_suffix(SNAPSHOT_SUFFIX)
            .and_then(|s| s.strip_suffix('.'))
        else {
            continue;
        };
        if stem.len() == 20 {
            if let Ok(offset) = stem.parse::<i64>() {
                offsets.push(offset);
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Writes `state` as the snapshot at its end offset, then deletes all but the newest
/// [`SNAPSHOTS_KEPT`]; with `durable`, the file and the directory are fsynced (else the page
/// cache writes them back: a snapshot a crash cut short fails its CRC at load and is replaced
/// by a replay).
pub fn write_snapshot(dir: &Path, state: &ProducerStates, durable: bool) -> Result<()> {
    let name = snapshot_name(state.end_offset);
    if durable {
        write_atomic(dir, &name, &state.encode())?;
    } else {
        let path = dir.join(&name);
        std::fs::write(&path, state.encode()).ctx("write producer snapshot", &path)?;
    }
    let offsets = list_snapshots(dir)?;
    if offsets.len() > SNAPSHOTS_KEPT {
        for &offset in &offsets[..offsets.len() - SNAPSHOTS_KEPT] {
            remove_snapshot(dir, offset)?;
        }
        if durable {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

fn remove_snapshot(dir: &Path, offset: i64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("remove producer snapshot", &path),
    }
}

/// Deletes every snapshot past `offset` (the log was cut there), durably.
pub fn remove_snapshots_after(dir: &Path, offset: i64) -> Result<()> {
    let doomed: Vec<i64> = list_snapshots(dir)?
        .into_iter()
        .filter(|o| *o > offset)
        .collect();
    for &o in &doomed {
        remove_snapshot(dir, o)?;
    }
    if !doomed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The newest readable snapshot at or below `offset`, or `None`. A damaged snapshot is
/// deleted with a warning and an older one tried: it only costs a longer replay.
pub fn load_latest_snapshot(dir: &Path, offset: i64) -> Result<Option<ProducerStates>> {
    for o in list_snapshots(dir)?
        .into_iter()
        .rev()
        .filter(|o| *o <= offset)
    {
        let path = snapshot_path(dir, o);
        let bytes = std::fs::read(&path).ctx("read producer snapshot", &path)?;
        match ProducerStates::decode(&bytes) {
            Ok(state) if state.end_offset == o => return Ok(Some(state)),
            Ok(_) => {
                tracing::warn!(file = %path.display(), "producer snapshot names another offset; deleting it");
            }
            Err(why) => {
                tracing::warn!(file = %path.display(), why, "damaged producer snapshot; deleting it");
            }
        }
        remove_snapshot(dir, o)?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::NO_PRODUCER_ID;

    fn header(pid: i64, epoch: i16, seq: i32, base_offset: i64, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            attributes: 0,
            crc: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    fn apply(state: &mut ProducerStates, h: &BatchHeader) {
        assert_eq!(state.check(h).unwrap(), Check::Append);
        state.update(h, 1_000, 100);
    }

    #[test]
    fn next_in_sequence_appends_and_a_retry_gets_its_offsets() {
        let mut s = ProducerStates::empty_at(0);
        apply(&mut s, &header(7, 0, 0, 0, 3));
        apply(&mut s, &header(7, 0, 3, 3, 2));
        let retry = header(7, 0, 0, 99, 3);
        assert_eq!(
            s.check(&retry).unwrap(),
            Check::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 2,
                first_offset: 0,
                last_offset: 2,
                max_timestamp: 0
            })
        );
        assert_eq!(s.last_sequence(7), Some((0, 4)));
        assert_eq!(s.end_offset(), 5);
    }

    #[test]
    fn gaps_stale_epochs_and_unknown_ids_are_refused() {
        let mut s = ProducerStates::empty_at(0);
        apply(&mut s, &header(7, 1, 0, 0, 3));
        assert!(matches!(
            s.check(&header(7, 1, 5, 3, 1)),
            Err(LogError::OutOfOrderSequence {
                expected: 3,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(7, 0, 3, 3, 1)),
            Err(LogError::ProducerFenced {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(7, 2, 3, 3, 1)),
            Err(LogError::OutOfOrderSequence {
                expected: 0,
                got: 3,
                ..
            })
        ));
        assert_eq!(s.check(&header(7, 2, 0, 3, 1)).unwrap(), Check::Append);
        assert!(matches!(
            s.check(&header(8, 0, 4, 3, 1)),
            Err(LogError::UnknownProducerId {
                producer_id: 8,
                sequence: 4
            })
        ));
        assert!(matches!(
            s.check(&header(8, -1, 0, 3, 1)),
            Err(LogError::InvalidRequest(_))
        ));
        assert_eq!(
            s.check(&header(NO_PRODUCER_ID, -1, -1, 3, 1)).unwrap(),
            Check::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::empty_at(0);
        for i in 0..7 {
            apply(&mut s, &header(1, 0, i, i64::from(i), 1));
        }
        // Batches 0 and 1 fell out of the cache: a "retry" of them is out of order now.
        assert!(matches!(
            s.check(&header(1, 0, 1, 7, 1)),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            s.check(&header(1, 0, 2, 7, 1)),
            Ok(Check::Duplicate(_))
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::empty_at(0);
        apply(&mut s, &header(1, 0, 0, 0, 1));
        s.producers
            .get_mut(&1)
            .unwrap()
            .batches
            .back_mut()
            .unwrap()
            .last_seq = i32::MAX - 1;
        apply(&mut s, &header(1, 0, i32::MAX, 1, 2));
        assert_eq!(s.last_sequence(1), Some((0, 0)));
        apply(&mut s, &header(1, 0, 1, 3, 1));
    }

    #[test]
    fn expiry_and_the_producer_cap_bound_the_state() {
        let mut s = ProducerStates::empty_at(0);
        s.update(&header(1, 0, 0, 0, 1), 1_000, 2);
        s.update(&header(2, 0, 0, 1, 1), 2_000, 2);
        s.update(&header(3, 0, 0, 2, 1), 3_000, 2);
        assert_eq!(s.len(), 2);
        assert_eq!(s.last_sequence(1), None, "the least recently seen went");
        assert_eq!(s.expire(10_000, 7_500), 1);
        assert_eq!(s.last_sequence(3), Some((0, 0)));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::empty_at(0);
        for i in 0..3 {
            apply(&mut s, &header(i, 0, 0, i, 1));
        }
        apply(&mut s, &header(0, 0, 1, 3, 4));
        write_snapshot(dir.path(), &s, true).unwrap();
        assert_eq!(
            load_latest_snapshot(dir.path(), 100).unwrap(),
            Some(s.clone())
        );
        assert_eq!(
            load_latest_snapshot(dir.path(), 6).unwrap(),
            None,
            "it is at offset 7"
        );

        let bytes = s.encode();
        for cut in 0..bytes.len() {
            assert!(
                ProducerStates::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[SNAPSHOT_HEADER + 3] ^= 1;
        assert!(ProducerStates::decode(&flipped).is_err());

        std::fs::write(snapshot_path(dir.path(), 7), &flipped).unwrap();
        assert_eq!(load_latest_snapshot(dir.path(), 100).unwrap(), None);
        assert!(
            list_snapshots(dir.path()).unwrap().is_empty(),
            "the damaged one is gone"
        );
    }

    #[test]
    fn only_the_newest_snapshots_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for end in [10, 20, 30, 40, 50] {
            write_snapshot(dir.path(), &ProducerStates::empty_at(end), true).unwrap();
        }
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![30, 40, 50]);
        remove_snapshots_after(dir.path(), 35).unwrap();
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![30]);
    }
}
