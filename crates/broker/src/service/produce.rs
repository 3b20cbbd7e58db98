//! The produce path, top to bottom: validate, encode plain records, take room in the in-flight
//! budget, append as leader, and for acks=all wait for the ISR; the stream form keeps each
//! stream's appends and answers in its order.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use weir_common::now_ms;
use weir_proto::broker::v1 as pb;

use super::{BrokerService, MAX_IN_FLIGHT_BYTES};
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::wire::encode_plain;

/// acks=all timeout when the request gives none.
const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests a produce stream may have appended and not yet answered.
const STREAM_IN_FLIGHT: usize = 64;

type PendingAnswer = Pin<Box<dyn std::future::Future<Output = pb::ProduceResponse> + Send>>;
pub(super) type ProduceStream =
    Pin<Box<dyn Stream<Item = Result<pb::ProduceResponse, Status>> + Send>>;

impl BrokerService {
    /// The produce path up to the append: validate, encode plain records, append. What is
    /// left for acks=all is the wait in [`Appended::finish`].
    pub(super) async fn append(&self, req: pb::ProduceRequest) -> Result<Appended, BrokerError> {
        if !(-1..=1).contains(&req.acks) {
            return Err(BrokerError::InvalidRequiredAcks(req.acks));
        }
        let part = self.leader(&req.topic, req.partition)?;
        let batch = match req.records {
            Some(pb::produce_request::Records::Batch(batch)) => batch,
            Some(pb::produce_request::Records::Plain(list)) => {
                if list.records.is_empty() {
                    return Err(BrokerError::InvalidRequest("no records to produce".into()));
                }
                encode_plain(&list.records, now_ms())
                    .map_err(|e| BrokerError::CorruptMessage(e.to_string()))?
            }
            None => return Err(BrokerError::InvalidRequest("no records to produce".into())),
        };
        // The batch's bytes count against the in-flight budget until they are written.
        let permits = batch.len().clamp(1, MAX_IN_FLIGHT_BYTES) as u32;
        let permit = Arc::clone(&self.in_flight)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        let acks_all = req.acks == -1;
        let appender = Arc::clone(&part);
        let append = tokio::task::spawn_blocking(move || {
            let result = appender.append_as_leader(batch, acks_all);
            drop(permit);
            result
        });
        if req.acks == 0 {
            // acks=0 answers without the append's outcome (the producer asked not to hear
            // about it), but only once the append is done: a stream's appends happen in its
            // order, and a later request must not overtake this one (Kafka, too, handles one
            // request per connection at a time).
            if let Ok(Err(e)) = append.await {
                tracing::debug!(topic = %req.topic, partition = req.partition, error = %e, "acks=0 append failed");
            }
            let response = pb::ProduceResponse {
                error: None,
                base_offset: -1,
                log_append_time: -1,
                log_start_offset: part.view().log_start,
                leader_address: String::new(),
            };
            return Ok(Appended {
                part,
                response,
                wait: None,
            });
        }
        let (info, epoch) = append
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_PRODUCE_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        let response = pb::ProduceResponse {
            error: None,
            base_offset: info.base_offset,
            log_append_time: info.log_append_time.unwrap_or(-1),
            log_start_offset: part.view().log_start,
            leader_address: String::new(),
        };
        let wait = acks_all.then_some((info.last_offset, epoch, timeout));
        Ok(Appended {
            part,
            response,
            wait,
        })
    }

    /// The answer to a produce request: its response, or its error with the leader's address.
    pub(super) fn answer(
        &self,
        result: Result<pb::ProduceResponse, BrokerError>,
        topic: &str,
        index: u32,
    ) -> pb::ProduceResponse {
        result.unwrap_or_else(|e| self.with_leader(e, topic, index).answer())
    }

    /// The answers to one produce stream, in its order: appends happen one request after
    /// another as they arrive, answers go out as each completes, in the same order.
    pub(super) fn produce_stream_answers(
        &self,
        mut inbound: Streaming<pb::ProduceRequest>,
    ) -> ProduceStream {
        let (pending_tx, mut pending_rx) = mpsc::channel::<PendingAnswer>(STREAM_IN_FLIGHT);
        let (tx, rx) = mpsc::channel(STREAM_IN_FLIGHT);
        // Appends happen here, one request after another, in stream order.
        let service = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let (topic, index) = (req.topic.clone(), req.partition);
                let appended = service.append(req).await;
                let answerer = service.clone();
                let answer: PendingAnswer = Box::pin(async move {
                    let result = match appended {
                        Ok(a) => a.finish().await,
                        Err(e) => Err(e),
                    };
                    answerer.answer(result, &topic, index)
                });
                if pending_tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        // Answers go out in the same order.
        tokio::spawn(async move {
            while let Some(answer) = pending_rx.recv().await {
                if tx.send(Ok(answer.await)).await.is_err() {
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// A produce request whose batch is appended; acks=all still waits for the ISR.
pub(super) struct Appended {
    part: Arc<Partition>,
    response: pb::ProduceResponse,
    /// (last offset, leader epoch, timeout) for acks=all.
    wait: Option<(i64, i32, Duration)>,
}

impl Appended {
    pub(super) async fn finish(self) -> Result<pb::ProduceResponse, BrokerError> {
        if let Some((last_offset, epoch, timeout)) = self.wait {
            self.part
                .wait_committed(last_offset, epoch, timeout)
                .await?;
        }
        Ok(self.response)
    }
}
