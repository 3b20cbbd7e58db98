//! Reads: whole batches from an offset, as stored (no re-encoding), bounded by the high
//! watermark for consumers; and the lookup of an offset by timestamp (ListOffsets). Reads take
//! `&self` and use positioned reads, so they run beside one another under a shared lock.

use bytes::Bytes;

use crate::error::{LogError, Result};

use super::PartitionLog;

impl PartitionLog {
    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (but at least one
    /// whole batch, so a consumer always makes progress). Empty at the log end offset.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.read_below(offset, max_bytes, i64::MAX)
    }

    /// Like [`Self::read`], but returns no batch that starts at or after `upper_bound` (the high
    /// watermark: consumers must not see what is not yet committed).
    pub fn read_below(&self, offset: i64, max_bytes: usize, upper_bound: i64) -> Result<Bytes> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: log_end,
            });
        }
        if offset >= upper_bound.min(log_end) {
            return Ok(Bytes::new());
        }
        for segment in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            let segment = segment.1;
            let Some((position, _)) = segment.find_batch(offset)? else {
                continue;
            };
            let end = if upper_bound < segment.next_offset() {
                segment
                    .find_batch(upper_bound)?
                    .map_or(segment.size(), |(pos, _)| pos)
            } else {
                segment.size()
            };
            return segment.read(position, max_bytes, end);
        }
        Ok(Bytes::new())
    }

    /// The earliest record whose timestamp is `>= timestamp`, as `(offset, timestamp)`; `None`
    /// when every record is older. Kafka's ListOffsets by time.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        for segment in self.segments.values() {
            if segment.next_offset() <= self.log_start_offset
                || segment.largest_timestamp() < timestamp
            {
                continue;
            }
            if let Some(found) =
                segment.find_offset_by_timestamp(timestamp, self.log_start_offset)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}
