//! Offsets: ListOffsets (earliest, latest or by timestamp, on the leader) and the offsets of
//! every partition of a topic this broker leads.

use weir_proto::broker::v1 as pb;

use super::BrokerService;
use crate::error::BrokerError;

impl BrokerService {
    /// The answer to ListOffsets: -2 earliest, -1 latest (the high watermark), or the first
    /// offset whose timestamp is at least the one asked.
    pub(super) fn list_offsets_answer(
        &self,
        req: pb::ListOffsetsRequest,
    ) -> pb::ListOffsetsResponse {
        let result = self.leader(&req.topic, req.partition).and_then(|part| {
            let view = part.view();
            match req.timestamp {
                -2 => Ok((view.log_start, -1)),
                -1 => Ok((view.high_watermark, -1)),
                ts if ts < 0 => Err(BrokerError::InvalidRequest(format!(
                    "timestamp {ts} is neither -1, -2 nor a time"
                ))),
                ts => Ok(part.offset_for_timestamp(ts)?.unwrap_or((-1, -1))),
            }
        });
        match result {
            Ok((offset, timestamp)) => pb::ListOffsetsResponse {
                error: None,
                offset,
                timestamp,
                leader_address: String::new(),
            },
            Err(e) => e.answer(),
        }
    }

    /// Log start, high watermark and log end of each partition of `topic` this broker leads
    /// (NOT_LEADER_OR_FOLLOWER for the others).
    pub(super) fn partition_offsets_answer(&self, topic: &str) -> pb::PartitionOffsetsResponse {
        let state = self.manager.metadata();
        let Some(info) = state.topics.get(topic) else {
            return BrokerError::UnknownTopic(topic.to_owned()).answer_plain();
        };
        let partitions = (0..info.partitions.len() as u32)
            .map(|i| match self.leader(topic, i) {
                Ok(part) => {
                    let v = part.view();
                    pb::PartitionOffsets {
                        partition: i,
                        error: None,
                        log_start_offset: v.log_start,
                        high_watermark: v.high_watermark,
                        log_end_offset: v.log_end,
                    }
                }
                Err(e) => pb::PartitionOffsets {
                    partition: i,
                    error: Some(e.to_wire()),
                    log_start_offset: -1,
                    high_watermark: -1,
                    log_end_offset: -1,
                },
            })
            .collect();
        pb::PartitionOffsetsResponse {
            error: None,
            partitions,
        }
    }
}
