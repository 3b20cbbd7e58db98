//! InitProducerId: ids and epochs for idempotent producers. Ids come from blocks the
//! controller quorum hands this broker (AllocateProducerIds, [`weir_meta::state::PRODUCER_ID_BLOCK`]
//! at a time, as Kafka's brokers do), so they are unique across the cluster, survive a controller
//! failover, and cost one metadata write per block rather than per producer. The sequence
//! checks themselves are the partition log's ([`weir_storage::producer`]).

use weir_proto::broker::v1 as pb;
use weir_proto::common::v1::{Error as WireError, ErrorCode};
use weir_proto::controller::v1 as cpb;

use super::BrokerService;
use crate::error::BrokerError;

/// The ids of the block this broker hands out: `next..end`.
#[derive(Debug, Default)]
pub(crate) struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl BrokerService {
    /// Answers InitProducerId: a new id with epoch 0, or the producer's own id with the next
    /// epoch (a new id once the epoch would pass `i16::MAX`).
    pub(super) async fn init_producer_id(
        &self,
        req: pb::InitProducerIdRequest,
    ) -> Result<pb::InitProducerIdResponse, BrokerError> {
        let answer = |producer_id, producer_epoch| pb::InitProducerIdResponse {
            error: None,
            producer_id,
            producer_epoch,
        };
        match (req.producer_id, req.producer_epoch) {
            (-1, -1) => {}
            (id, epoch) if id >= 0 && (0..i32::from(i16::MAX)).contains(&epoch) => {
                return Ok(answer(id, epoch + 1));
            }
            (id, epoch) if id >= 0 && epoch == i32::from(i16::MAX) => {}
            (id, epoch) => {
                return Err(BrokerError::InvalidRequest(format!(
                    "InitProducerId takes -1/-1 for a new producer id, or an id >= 0 with its \
                     epoch (0..=32767); not {id}/{epoch}"
                )))
            }
        }
        Ok(answer(self.next_producer_id().await?, 0))
    }

    /// The next id of this broker's block, asking the controllers for a new block when it is
    /// used up. Callers queue on the block's lock while a block is being fetched.
    async fn next_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock().await;
        if block.next >= block.end {
            let not_yet = || {
                BrokerError::Controller(WireError::new(
                    ErrorCode::NotController,
                    "this broker's registration is not current yet, so it cannot be given \
                     producer ids; retry shortly",
                ))
            };
            if self.manager.broker_epoch() == 0 {
                return Err(not_yet());
            }
            let req = cpb::AllocateProducerIdsRequest {
                broker_id: self.manager.broker_id(),
                broker_epoch: self.manager.broker_epoch(),
            };
            let response = self
                .to_controller(
                    req,
                    |mut c, r| async move { c.allocate_producer_ids(r).await },
                )
                .await
                .map_err(|status| {
                    BrokerError::Controller(WireError::new(
                        ErrorCode::NotController,
                        format!(
                            "no controller could allocate producer ids: {}",
                            status.message()
                        ),
                    ))
                })?
                .into_inner();
            if let Some(error) = response.error.filter(|e| e.code != ErrorCode::None as i32) {
                // A registration the controller has moved past (a restart racing this
                // request) is this broker's to catch up with: the client retries.
                if error.code == ErrorCode::StaleBrokerEpoch as i32 {
                    return Err(not_yet());
                }
                return Err(BrokerError::Controller(error));
            }
            if response.first_producer_id < 0 || response.count <= 0 {
                return Err(BrokerError::Internal(format!(
                    "the controller allocated an empty block of producer ids ({} + {})",
                    response.first_producer_id, response.count
                )));
            }
            block.next = response.first_producer_id;
            block.end = response
                .first_producer_id
                .saturating_add(i64::from(response.count));
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }
}
