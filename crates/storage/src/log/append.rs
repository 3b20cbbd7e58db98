//! Appends: the leader's (validating a producer's batch, then assigning it offsets, its
//! leader epoch and, with `LogAppendTime`, its timestamp) and the follower's (batches copied
//! from the leader, which keep theirs), both written by `write_batch` under the flush
//! policy. Kafka splits this between `LogValidator` and `UnifiedLog.append`.

use std::time::Instant;

use bytes::Bytes;
use weir_common::now_ms;

use crate::batch::{self, BatchError, BatchHeader, TimestampType};
use crate::config::Recompression;
use crate::error::{LogError, Result};
use crate::producer::Check;

use super::PartitionLog;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest record timestamp appended.
    pub max_timestamp: i64,
    /// The broker time stamped on the batch when the log uses `LogAppendTime`.
    pub log_append_time: Option<i64>,
    /// Records appended.
    pub record_count: i64,
    /// Bytes appended.
    pub bytes: usize,
    /// The batch was an idempotent producer's retry of one already in the log: nothing was
    /// written, and the offsets and timestamps are the original batch's.
    pub duplicate: bool,
}

impl PartitionLog {
    /// `message.timestamp.before.max.ms` / `after.max.ms` against this broker's clock, for the
    /// oldest and newest timestamps of a batch (its records' and its header's `maxTimestamp`,
    /// which retention reads).
    fn check_timestamps(&self, oldest: i64, newest: i64) -> Result<()> {
        let now = now_ms();
        let limits = [
            (
                self.config.timestamp_before_max,
                oldest,
                now.saturating_sub(oldest),
                "before",
            ),
            (
                self.config.timestamp_after_max,
                newest,
                newest.saturating_sub(now),
                "after",
            ),
        ];
        for (bound, timestamp, off, side) in limits {
            let Some(bound) = bound else {
                continue;
            };
            let limit = bound.as_millis().min(i64::MAX as u128) as i64;
            if off > limit {
                return Err(LogError::InvalidTimestamp {
                    timestamp,
                    reason: format!(
                        "more than message.timestamp.{side}.max.ms = {limit} {side} the broker's clock"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Appends one batch from a producer as the partition leader in `leader_epoch`: validates
    /// it (size, length, CRC, and every record: [`batch::check_records`]) and, for an
    /// idempotent producer, its sequence ([`crate::producer`]; a retry of a batch already
    /// written is answered with the original offsets and `duplicate` set), assigns it the next
    /// offsets by rewriting the base offset and leader epoch in its header, and writes it.
    /// With `compression.type` naming a codec, a batch in another one is recompressed first
    /// (and must still fit `max.message.bytes`). Invalid input changes nothing. Durable when it returns only if the flush policy says so; see [`Self::flush`].
    pub fn append_as_leader(&mut self, mut batch: Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        self.check_online()?;
        let mut header = batch::validate(&batch, usize::MAX)?;
        if header.total_size() != batch.len() {
            return Err(
                BatchError::InvalidLength(batch.len() as i64 - batch::LOG_OVERHEAD as i64).into(),
            );
        }
        if batch.len() > self.config.max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size: batch.len(),
                max: self.config.max_message_bytes,
            });
        }
        if header.is_control() {
            return Err(LogError::InvalidRequest(
                "control batches are written by the broker, not produced".into(),
            ));
        }
        if header.records_count < 1 {
            return Err(LogError::InvalidRequest(
                "a produced batch must hold at least one record".into(),
            ));
        }
        if header.last_offset_delta != header.records_count - 1 {
            return Err(
                BatchError::InvalidCount("lastOffsetDelta must be recordsCount - 1").into(),
            );
        }
        // Decompressed, a batch may be at most 8 times max.message.bytes (8 MiB by default):
        // a small batch of zeros must not cost every consumer hundreds of MB to decode.
        let max_decompressed = self.config.max_decompressed();
        let timestamps = batch::check_records(&batch, &header, max_decompressed)?;
        if self.config.timestamp_type == TimestampType::CreateTime {
            let (lo, hi) = timestamps.unwrap_or((header.max_timestamp, header.max_timestamp));
            self.check_timestamps(lo.min(header.max_timestamp), hi.max(header.max_timestamp))?;
        }
        if leader_epoch < 0 {
            return Err(LogError::InvalidRequest(format!(
                "leader epoch {leader_epoch} is negative"
            )));
        }
        if let Some(latest) = self
            .epochs
            .latest_epoch()
            .filter(|latest| leader_epoch < *latest)
        {
            return Err(LogError::StaleEpoch {
                epoch: leader_epoch,
                latest,
            });
        }
        if let Check::Duplicate(original) = self.producers.check(&header)? {
            let log_append = self.config.timestamp_type == TimestampType::LogAppendTime;
            return Ok(AppendInfo {
                base_offset: original.first_offset,
                last_offset: original.last_offset,
                max_timestamp: original.max_timestamp,
                log_append_time: log_append.then_some(original.max_timestamp),
                record_count: original.last_offset - original.first_offset + 1,
                bytes: 0,
                duplicate: true,
            });
        }
        let recompression = self.config.recompression();
        if let Some((codec, level)) = recompression.target(header.compression()?) {
            // The broker recompresses outside the log's lock first ([`recompressed`]); this
            // catches a batch that came another way, or a config changed in between. The
            // batch built here is whole: its header is read, not validated again.
            batch = batch::recompress(&batch, codec, level, recompression.max_decompressed)?;
            header = BatchHeader::parse(&batch)?;
            if batch.len() > self.config.max_message_bytes {
                return Err(LogError::RecordTooLarge {
                    size: batch.len(),
                    max: self.config.max_message_bytes,
                });
            }
        }

        let base_offset = self.log_end_offset();
        header.base_offset = base_offset;
        header.partition_leader_epoch = leader_epoch;
        let log_append_time =
            (self.config.timestamp_type == TimestampType::LogAppendTime).then(now_ms);
        let result = self.write_batch(
            &header,
            |prefix| {
                batch::set_base_offset_and_epoch(prefix, base_offset, leader_epoch);
            },
            &batch,
            log_append_time,
        );
        let header = self.fail_on_error(result)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            log_append_time,
            record_count: i64::from(header.records_count),
            bytes: batch.len(),
            duplicate: false,
        })
    }

    /// Appends batches copied from the leader (a follower's append): they keep their offsets
    /// and epochs, and the first must start at this log's end offset. Each batch is validated;
    /// on the first invalid one nothing more is appended and the error is returned (the ones
    /// before it stay). Returns the info of everything appended, `None` for an empty input.
    pub fn append_as_follower(&mut self, mut batches: Bytes) -> Result<Option<AppendInfo>> {
        self.check_online()?;
        let mut info: Option<AppendInfo> = None;
        while !batches.is_empty() {
            let header = batch::validate(&batches, usize::MAX)?;
            let expected = self.log_end_offset();
            if header.base_offset != expected {
                return Err(LogError::InvalidRequest(format!(
                    "replicated batch starts at offset {}, but the log ends at {expected}",
                    header.base_offset
                )));
            }
            if let Some(latest) = self
                .epochs
                .latest_epoch()
                .filter(|l| header.partition_leader_epoch < *l)
            {
                return Err(LogError::StaleEpoch {
                    epoch: header.partition_leader_epoch,
                    latest,
                });
            }
            let bytes = batches.split_to(header.total_size());
            let result = self.write_batch(&header, |_| {}, &bytes, None);
            let header = self.fail_on_error(result)?;
            let this = AppendInfo {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                max_timestamp: header.max_timestamp,
                log_append_time: None,
                record_count: i64::from(header.records_count),
                bytes: bytes.len(),
                duplicate: false,
            };
            info = Some(match info {
                None => this,
                Some(prev) => AppendInfo {
                    last_offset: this.last_offset,
                    max_timestamp: prev.max_timestamp.max(this.max_timestamp),
                    record_count: prev.record_count + this.record_count,
                    bytes: prev.bytes + this.bytes,
                    ..prev
                },
            });
        }
        Ok(info)
    }

    /// Rolls if needed, records a new epoch, and writes the batch with its first 16 bytes
    /// patched by `patch` (or, with log-append time, the whole batch restamped). Applies the
    /// flush policy. Returns the header as written.
    fn write_batch(
        &mut self,
        header: &BatchHeader,
        patch: impl FnOnce(&mut [u8]),
        batch: &[u8],
        log_append_time: Option<i64>,
    ) -> Result<BatchHeader> {
        self.mark_dirty()?;
        self.maybe_roll(batch.len() as u64, header.last_offset())?;
        self.epochs
            .assign(header.partition_leader_epoch, header.base_offset)?;
        let interval = self.config.index_interval_bytes;
        let mut header = *header;
        match log_append_time {
            Some(now) => {
                let mut owned = batch.to_vec();
                patch(&mut owned[..16]);
                batch::set_log_append_time(&mut owned, now);
                header.max_timestamp = now;
                self.active_mut().append(&header, &[&owned], interval)?;
            }
            None => {
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&batch[..16]);
                patch(&mut prefix);
                self.active_mut()
                    .append(&header, &[&prefix, &batch[16..]], interval)?;
            }
        }
        self.producers
            .update(&header, now_ms(), self.config.max_producers);
        self.unflushed_messages += header.records_count.max(0) as u64;
        self.oldest_unflushed.get_or_insert_with(Instant::now);
        let policy = self.config.flush;
        let by_count = policy
            .messages
            .is_some_and(|n| self.unflushed_messages >= n);
        let by_time = policy
            .interval
            .is_some_and(|t| self.oldest_unflushed.is_some_and(|at| at.elapsed() >= t));
        if by_count || by_time {
            self.flush()?;
        }
        Ok(header)
    }
}

/// `batch` as a log with these settings ([`crate::LogConfig::recompression`]) stores it:
/// recompressed when `compression.type` names another codec than the batch's (decompressing at
/// most [`Recompression::max_decompressed`]), else as it is. Pure work, no log needed: the broker runs it before taking the log's lock, so a slow
/// codec level does not stall the partition's readers and writers.
pub fn recompressed(recompression: &Recompression, batch: Bytes) -> Result<Bytes> {
    if recompression.keeps_producers_codec() {
        return Ok(batch);
    }
    // The header alone says the codec; `recompress` validates the whole batch as it decodes
    // it, and a batch kept as it is gets validated by the append.
    let header = BatchHeader::parse(&batch)?;
    match recompression.target(header.compression()?) {
        None => Ok(batch),
        Some((codec, level)) => Ok(batch::recompress(
            &batch,
            codec,
            level,
            recompression.max_decompressed,
        )?),
    }
}
