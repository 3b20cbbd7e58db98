//! The idempotent producers' state of the log (see [`crate::producer`]): loaded on open and
//! after a truncation from the newest snapshot at or below the log end, plus the headers of the
//! batches after it; snapshotted when a segment rolls and when the log closes; expired by the
//! broker's upkeep.

use weir_common::now_ms;

use crate::error::Result;
use crate::producer::{self, ProducerStates};

use super::PartitionLog;

impl PartitionLog {
    /// The producers' state as of the log end: the newest snapshot at or below it (snapshots
    /// past it, left by a cut tail, are deleted first) and every batch after the snapshot.
    /// Without a snapshot, every segment is replayed (once: the next roll or close writes one).
    pub(super) fn load_producers(&self) -> Result<ProducerStates> {
        let end = self.log_end_offset();
        producer::remove_snapshots_after(&self.dir, end)?;
        let first_base = self.segments.keys().next().copied().unwrap_or(0);
        let mut state = producer::load_latest_snapshot(&self.dir, end)?
            .unwrap_or_else(|| ProducerStates::empty_at(first_base));
        let from = state.end_offset();
        let (now, max) = (now_ms(), self.config.max_producers);
        let mut replayed = 0usize;
        for segment in self.segments.values().filter(|s| s.next_offset() > from) {
            segment.for_each_header(|h| {
                if h.base_offset >= from {
                    state.update(h, now, max);
                    replayed += 1;
                }
            })?;
        }
        tracing::debug!(dir = %self.dir.display(), from, end, replayed, producers = state.len(),
            "loaded producer state");
        Ok(state)
    }

    /// Writes the producers' state as the snapshot at the log end: fsynced when `durable`
    /// (at close), else left to the page cache (at a roll, under the log's lock, where an
    /// fsync would stall every append). A snapshot a crash cut short fails its CRC and one at
    /// offsets the crash lost is deleted at open ([`Self::load_producers`]): either costs a
    /// longer replay of batch headers, never a wrong state.
    pub(super) fn snapshot_producers(&self, durable: bool) -> Result<()> {
        producer::write_snapshot(&self.dir, &self.producers, durable)
    }

    /// The producers' state (for the broker's InitProducerId and for tests).
    pub fn producer_states(&self) -> &ProducerStates {
        &self.producers
    }

    /// Forgets producers not seen for `producer.id.expiration.ms`; returns how many. Call
    /// periodically.
    pub fn expire_producers(&mut self, now_ms: i64) -> usize {
        let expiration = self
            .config
            .producer_id_expiration
            .as_millis()
            .min(i64::MAX as u128) as i64;
        let expired = self.producers.expire(now_ms, expiration);
        if expired > 0 {
            tracing::info!(dir = %self.dir.display(), expired, "expired idle producer ids");
        }
        expired
    }
}
