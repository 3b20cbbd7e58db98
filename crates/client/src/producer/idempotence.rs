//! The idempotent producer's side of sequence numbers (the broker's is
//! `weir_storage::producer`).
//!
//! The producer gets an id and epoch from InitProducerId when it connects. Each partition
//! numbers the records sent to it from 0 under an [`Identity`]; a batch gets its [`Stamp`] (id,
//! epoch, first sequence) the first time it is sent, so sequences follow send order, and keeps
//! it through every retry: the leader then writes a retried batch once and refuses a batch that
//! would leave a gap (OUT_OF_ORDER_SEQUENCE_NUMBER), which with up to five batches in flight per
//! partition keeps their order across retries.
//!
//! When a stamped batch fails for good (or a partition's leader has lost the producer's state,
//! UNKNOWN_PRODUCER_ID), the partition's identity is retired: every later batch of it that was
//! certainly not written loses its stamp, and once no batch of the old identity is outstanding
//! the partition gets a fresh producer id and numbers from 0 again. A batch was certainly not
//! written when [`may_be_written`] is false for all of its attempts, or when an earlier batch
//! of the same id certainly was not (the leader appends a producer's batches only in sequence
//! order). A batch that may have been written keeps its stamp for good: giving it a new one
//! could write it twice.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use weir_proto::broker::v1 as pb;
use weir_proto::common::v1::ErrorCode;

use crate::error::{check, Error, Result};
use crate::metadata::Cluster;

/// Wait between InitProducerId attempts that failed retriably.
const INIT_BACKOFF: Duration = Duration::from_millis(200);

/// A partition's current producer id, epoch and next sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) producer_id: i64,
    pub(super) epoch: i16,
    pub(super) next_seq: i32,
}

/// What a batch was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) producer_id: i64,
    pub(super) epoch: i16,
    pub(super) seq: i32,
}

impl Identity {
    /// A fresh identity: sequences from 0.
    pub(super) fn new(producer_id: i64, epoch: i16) -> Self {
        Self {
            producer_id,
            epoch,
            next_seq: 0,
        }
    }

    /// The stamp of a batch of `records` records sent next, advancing the sequence (wrapping
    /// from `i32::MAX` to 0, as the broker counts).
    pub(super) fn take(&mut self, records: i32) -> Stamp {
        let stamp = Stamp {
            producer_id: self.producer_id,
            epoch: self.epoch,
            seq: self.next_seq,
        };
        let room = i32::MAX - self.next_seq;
        self.next_seq = if records > room {
            records - room - 1
        } else {
            self.next_seq + records
        };
        stamp
    }
}

/// `bytes` with `stamp` written into its header and its CRC computed (an idempotent
/// producer's batches are built without one: `BatchBuilder::build_unsealed`); no copy when the
/// bytes are not shared, as a batch's are before its first send.
pub(super) fn stamped(bytes: Bytes, stamp: Stamp) -> Bytes {
    let mut owned = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    weir_storage::batch::set_producer(&mut owned, stamp.producer_id, stamp.epoch, stamp.seq);
    owned.freeze()
}

/// Whether an attempt that ended with `error` may have written the batch: no answer came, the
/// answer says the batch was appended but not (yet) committed, or the leader lost its
/// leadership (NOT_LEADER_OR_FOLLOWER also answers an acks=all request whose leader was
/// deposed after the append, and its successor may hold the batch). Every other error is a
/// refusal before the append.
pub(super) fn may_be_written(error: &Error) -> bool {
    match error.code() {
        None => matches!(error, Error::Unavailable(_) | Error::Timeout(_)),
        Some(code) => matches!(
            code,
            ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::KafkaStorageError
                | ErrorCode::UnknownServerError
        ),
    }
}

/// A new producer id and epoch from any broker, retrying retriable failures until `within`
/// has passed.
pub(super) async fn init_producer_id(cluster: &Cluster, within: Duration) -> Result<(i64, i16)> {
    let deadline = Instant::now() + within;
    loop {
        let answer = cluster
            .call_any("InitProducerId", |mut client| async move {
                client
                    .init_producer_id(pb::InitProducerIdRequest {
                        producer_id: -1,
                        producer_epoch: -1,
                    })
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await
            .and_then(|a| {
                check(a.error)?;
                let epoch = i16::try_from(a.producer_epoch).map_err(|_| {
                    Error::Corrupt(format!("producer epoch {} out of range", a.producer_epoch))
                })?;
                Ok((a.producer_id, epoch))
            });
        match answer {
            Err(e) if e.is_retriable() && Instant::now() + INIT_BACKOFF < deadline => {
                tracing::debug!(error = %e, "InitProducerId failed; retrying");
                tokio::time::sleep(INIT_BACKOFF).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_by_record_count_and_wrap() {
        let mut id = Identity::new(7, 2);
        assert_eq!(id.take(3).seq, 0);
        assert_eq!(id.take(1).seq, 3);
        assert_eq!(id.next_seq, 4);
        id.next_seq = i32::MAX - 1;
        assert_eq!(id.take(3).seq, i32::MAX - 1);
        assert_eq!(id.next_seq, 1);
    }

    #[test]
    fn unanswered_appended_or_deposed_attempts_may_have_written() {
        assert!(may_be_written(&Error::Unavailable("stream down".into())));
        assert!(may_be_written(&Error::Timeout("no answer".into())));
        assert!(may_be_written(&Error::server(
            ErrorCode::NotEnoughReplicasAfterAppend,
            ""
        )));
        assert!(
            may_be_written(&Error::server(ErrorCode::NotLeaderOrFollower, "")),
            "a deposed leader's successor may hold the batch"
        );
        assert!(!may_be_written(&Error::server(
            ErrorCode::NotEnoughReplicas,
            ""
        )));
        assert!(!may_be_written(&Error::server(
            ErrorCode::OutOfOrderSequenceNumber,
            ""
        )));
    }

    #[test]
    fn stamping_rewrites_the_header_and_keeps_the_batch_valid() {
        let mut b = weir_storage::BatchBuilder::new(weir_storage::Compression::None);
        b.push(&weir_storage::Record {
            value: Some(Bytes::from_static(b"v")),
            ..Default::default()
        });
        let bytes = stamped(
            b.build(0).unwrap(),
            Stamp {
                producer_id: 11,
                epoch: 1,
                seq: 40,
            },
        );
        let h = weir_storage::batch::validate(&bytes, usize::MAX).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (11, 1, 40)
        );
    }
}
