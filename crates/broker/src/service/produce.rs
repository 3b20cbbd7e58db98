//! The produce path, top to bottom: validate, encode plain records, take room in the in-flight
//! budget, append as leader, and for acks=all wait for the ISR; the stream form keeps each
//! stream's appends and answers in its order.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Produce requests slower than this, from arrival to answer, are logged at debug level with
/// where the time went ([`Stages`]).
const SLOW_PRODUCE: Duration = Duration::from_millis(10);

/// When a produce request passed each stage of the path, so a slow one can be split the way
/// Kafka's request log splits it (queue, local, remote, response queue) and its latency
/// pinned on the budget, the blocking pool, the log, replication or the stream's order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stages {
    /// The request was read off its stream.
    received: Instant,
    /// The in-flight budget had room for its batch.
    admitted: Instant,
    /// A blocking thread began the append.
    append_started: Instant,
    /// The append was done (on the blocking thread).
    appended: Instant,
    /// The async side saw the append done.
    resumed: Instant,
}

impl Stages {
    fn at(received: Instant) -> Self {
        Self {
            received,
            admitted: received,
            append_started: received,
            appended: received,
            resumed: received,
        }
    }

    /// Logs the request at debug level when it took [`SLOW_PRODUCE`] or more from arrival to
    /// `answered`; `committed` is when its wait for acks=all ended (when it was appended,
    /// without one).
    pub(super) fn log_if_slow(
        &self,
        topic: &str,
        partition: u32,
        committed: Instant,
        answered: Instant,
    ) {
        let total = answered.saturating_duration_since(self.received);
        if total < SLOW_PRODUCE {
            return;
        }
        let ms =
            |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
        tracing::debug!(
            topic,
            partition,
            total_ms = ms(self.received, answered),
            budget_ms = ms(self.received, self.admitted),
            blocking_queue_ms = ms(self.admitted, self.append_started),
            append_ms = ms(self.append_started, self.appended),
            resume_ms = ms(self.appended, self.resumed),
            replication_ms = ms(self.resumed, committed),
            answer_queue_ms = ms(committed, answered),
            "slow produce"
        );
    }
}

/// What the answer loop needs to log a slow request once its answer is sent.
struct Timing {
    /// The request's stages up to its append.
    stages: Stages,
    /// When its acks=all wait ended (when it was appended, without one).
    committed: Instant,
    /// Its topic.
    topic: String,
    /// Its partition.
    partition: u32,
}

/// A request's answer, with its [`Timing`] when it was appended.
type PendingAnswer =
    Pin<Box<dyn std::future::Future<Output = (pb::ProduceResponse, Option<Timing>)> + Send>>;
pub(super) type ProduceStream =
    Pin<Box<dyn Stream<Item = Result<pb::ProduceResponse, Status>> + Send>>;

impl BrokerService {
    /// The produce path up to the append: validate, encode plain records, append. What is
    /// left for acks=all is the wait in [`Appended::finish`].
    pub(super) async fn append(&self, req: pb::ProduceRequest) -> Result<Appended, BrokerError> {
        let mut stages = Stages::at(Instant::now());
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
        stages.admitted = Instant::now();
        let acks_all = req.acks == -1;
        let appender = Arc::clone(&part);
        let append = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = appender.append_as_leader(batch, acks_all);
            drop(permit);
            (result, started, Instant::now())
        });
        let joined = append.await;
        if let Ok((_, started, appended)) = &joined {
            (stages.append_started, stages.appended, stages.resumed) =
                (*started, *appended, Instant::now());
        }
        if req.acks == 0 {
            // acks=0 answers without the append's outcome (the producer asked not to hear
            // about it), but only once the append is done: a stream's appends happen in its
            // order, and a later request must not overtake this one (Kafka, too, handles one
            // request per connection at a time).
            if let Ok((Err(e), _, _)) = &joined {
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
                stages,
            });
        }
        let (result, _, _) = joined.map_err(|e| BrokerError::Internal(e.to_string()))?;
        let (info, epoch) = result?;
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
            stages,
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
                    let (result, stages) = match appended {
                        Ok(a) => {
                            let stages = a.stages;
                            (a.finish().await, Some(stages))
                        }
                        Err(e) => (Err(e), None),
                    };
                    let committed = Instant::now();
                    let response = answerer.answer(result, &topic, index);
                    let timing = stages.map(|stages| Timing {
                        stages,
                        committed,
                        topic,
                        partition: index,
                    });
                    (response, timing)
                });
                if pending_tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        // Answers go out in the same order.
        tokio::spawn(async move {
            while let Some(answer) = pending_rx.recv().await {
                let (response, timing) = answer.await;
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
                if let Some(t) = timing {
                    let answered = Instant::now();
                    t.stages
                        .log_if_slow(&t.topic, t.partition, t.committed, answered);
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
    /// When it passed each stage so far.
    pub(super) stages: Stages,
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
