//! The broker's client API (`Broker`): produce, fetch, list offsets, metadata, and admin
//! requests forwarded to the controller quorum. The produce and fetch paths read top to bottom
//! here; partitions do the bookkeeping. The replication API (`Replication`) is served by the
//! same [`BrokerService`], in [`crate::replication::leader`].
//!
//! Bounds: request messages are limited to [`MAX_REQUEST_BYTES`] (1 MiB but for produce:
//! [`crate::limits`]); a Metadata request names at most [`MAX_METADATA_TOPICS`] topics; produce requests hold
//! permits from one shared budget of in-flight bytes ([`MAX_IN_FLIGHT_BYTES`]) until answered;
//! fetch answers are capped at [`MAX_FETCH_BYTES`] and each stream buffers at most two answers,
//! so a slow consumer slows its own stream and costs the broker nothing more. A client that
//! disconnects ends its stream task at the next send.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use weir_common::now_ms;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use weir_proto::broker::v1 as pb;
use weir_proto::controller::v1 as cpb;
use weir_proto::controller::v1::controller_client::ControllerClient;
use weir_storage::batch::{BatchHeader, Batches};

use crate::convert::{encode_plain, record_to_wire};
use crate::error::BrokerError;
use crate::manager::ReplicaManager;
use crate::partition::Partition;

/// Largest request message accepted (a produce batch is further limited by the topic's
/// `max.message.bytes`).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Produce bytes being appended or awaiting acks=all, across all clients.
pub const MAX_IN_FLIGHT_BYTES: usize = 256 * 1024 * 1024;
/// Most distinct topics one Metadata request may name: the answer holds one entry per distinct
/// name, so the names are deduplicated and bounded before any work (a request of 8,000,000
/// empty names once built a ~192 MB answer). More is refused with INVALID_REQUEST. Asking for
/// every topic (no names) is not bounded by this.
pub const MAX_METADATA_TOPICS: usize = 10_000;
/// Bytes of client fetch answers a node holds at once: read from the log and not yet handed to
/// the transport (queued for a stream, or the last one taken while its reader has not read it).
/// A fetch waits for room before it reads, so streams whose readers never read cost the node at
/// most this (they slow every consumer down meanwhile, as Kafka's `queued.max.request.bytes`
/// does), not their number times their answers (200 such streams took a node to 3.2 GB).
pub const FETCH_MEMORY_BYTES: usize = 256 * 1024 * 1024;
/// Largest fetch answer, whatever a client asks for.
pub const MAX_FETCH_BYTES: usize = 8 * 1024 * 1024;
/// acks=all timeout when the request gives none.
const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker's services, sharing one replica manager.
#[derive(Clone)]
pub struct BrokerService {
    manager: Arc<ReplicaManager>,
    in_flight: Arc<Semaphore>,
    /// Bytes of fetch answers read and not yet taken by the transport ([`FETCH_MEMORY_BYTES`]).
    fetch_memory: Arc<Semaphore>,
}

impl BrokerService {
    /// The replica manager the services work on.
    pub(crate) fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    /// Services over `manager`.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self {
            manager,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES)),
            fetch_memory: Arc::new(Semaphore::new(FETCH_MEMORY_BYTES)),
        }
    }

    /// The client API server (requests of all methods but the produce ones capped at
    /// [`crate::limits::SMALL_REQUEST_BYTES`]).
    pub fn broker_server(
        &self,
    ) -> crate::limits::SmallRequests<pb::broker_server::BrokerServer<Self>> {
        crate::limits::SmallRequests::new(
            pb::broker_server::BrokerServer::new(self.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_FETCH_BYTES + 1024 * 1024),
        )
    }

    /// The replication API server.
    pub fn replication_server(&self) -> pb::replication_server::ReplicationServer<Self> {
        pb::replication_server::ReplicationServer::new(self.clone())
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// The partition if this broker holds it; UNKNOWN_TOPIC_OR_PARTITION, or
    /// NOT_LEADER_OR_FOLLOWER when the partition exists elsewhere.
    fn replica(&self, topic: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
        if let Some(p) = self.manager.partition(topic, index) {
            return Ok(p);
        }
        let exists = {
            let state = self.manager.metadata();
            state
                .topics
                .get(topic)
                .is_some_and(|t| (index as usize) < t.partitions.len())
        };
        if exists {
            Err(BrokerError::not_leader(
                topic,
                index,
                self.manager.leader_address(topic, index),
            ))
        } else {
            Err(BrokerError::unknown(topic, index))
        }
    }

    /// The partition if this broker leads it.
    pub(crate) fn leader(&self, topic: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
        let part = self.replica(topic, index)?;
        if part.leader_epoch().is_none() {
            return Err(BrokerError::not_leader(
                topic,
                index,
                self.manager.leader_address(topic, index),
            ));
        }
        Ok(part)
    }

    /// `e`, naming the partition's leader when it is NOT_LEADER_OR_FOLLOWER without one.
    fn with_leader(&self, e: BrokerError, topic: &str, index: u32) -> BrokerError {
        match e {
            BrokerError::NotLeader { leader: None, .. } => {
                BrokerError::not_leader(topic, index, self.manager.leader_address(topic, index))
            }
            e => e,
        }
    }

    /// The produce path up to the append: validate, encode plain records, append. What is
    /// left for acks=all is the wait in [`Appended::finish`].
    async fn append(&self, req: pb::ProduceRequest) -> Result<Appended, BrokerError> {
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
            // acks=0 answers at once; the producer asked not to hear about the append.
            let (topic, index) = (req.topic.clone(), req.partition);
            tokio::spawn(async move {
                if let Ok(Err(e)) = append.await {
                    tracing::debug!(%topic, partition = index, error = %e, "acks=0 append failed");
                }
            });
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
    fn answer(
        &self,
        result: Result<pb::ProduceResponse, BrokerError>,
        topic: &str,
        index: u32,
    ) -> pb::ProduceResponse {
        result.unwrap_or_else(|e| self.with_leader(e, topic, index).answer())
    }
}

/// How long one controller may take to answer a forwarded admin request.
const ADMIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

impl BrokerService {
    /// Forwards an admin request to the controller quorum: to each controller in turn (any of
    /// them forwards to the leader), each attempt bounded by [`ADMIN_ATTEMPT_TIMEOUT`], moving
    /// on when one is unreachable or silent. Answers (errors included) come back as they are.
    async fn to_controller<Req, Resp, F, Fut>(
        &self,
        req: Req,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(ControllerClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut last = Status::unavailable("no controller configured");
        for _ in 0..self.manager.controller_count().max(1) {
            let Some(client) = self.manager.controller() else {
                break;
            };
            match tokio::time::timeout(ADMIN_ATTEMPT_TIMEOUT, call(client, req.clone())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(status))
                    if matches!(
                        status.code(),
                        Code::Unavailable
                            | Code::Unknown
                            | Code::Cancelled
                            | Code::DeadlineExceeded
                    ) =>
                {
                    last = status
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => last = Status::deadline_exceeded("a controller did not answer in time"),
            }
        }
        Err(last)
    }
}

/// A produce request whose batch is appended; acks=all still waits for the ISR.
struct Appended {
    part: Arc<Partition>,
    response: pb::ProduceResponse,
    /// (last offset, leader epoch, timeout) for acks=all.
    wait: Option<(i64, i32, Duration)>,
}

impl Appended {
    async fn finish(self) -> Result<pb::ProduceResponse, BrokerError> {
        if let Some((last_offset, epoch, timeout)) = self.wait {
            self.part
                .wait_committed(last_offset, epoch, timeout)
                .await?;
        }
        Ok(self.response)
    }
}

/// Requests a produce stream may have appended and not yet answered.
const STREAM_IN_FLIGHT: usize = 64;

type PendingAnswer = Pin<Box<dyn std::future::Future<Output = pb::ProduceResponse> + Send>>;
type ProduceStream = Pin<Box<dyn Stream<Item = Result<pb::ProduceResponse, Status>> + Send>>;

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;

/// A fetch answer and its share of [`FETCH_MEMORY_BYTES`].
type FetchItem = (
    Result<pb::FetchResponse, Status>,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

/// The answers of one fetch stream, each holding its share of the fetch memory until the
/// transport asks for the next one: an answer handed to a reader that does not read stays in
/// the HTTP/2 send buffer, and is still counted.
struct Budgeted {
    rx: mpsc::Receiver<FetchItem>,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Stream for Budgeted {
    type Item = Result<pb::FetchResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // Asked for the next answer: the transport has taken the last one.
        self.held = None;
        match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some((answer, held))) => {
                self.held = held;
                std::task::Poll::Ready(Some(answer))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// The offset after the last batch in `bytes`.
fn next_offset_after(bytes: &Bytes, fallback: i64) -> i64 {
    let mut next = fallback;
    let mut rest: &[u8] = bytes;
    while let Ok(h) = BatchHeader::parse(rest) {
        next = h.next_offset();
        if h.total_size() > rest.len() {
            break;
        }
        rest = &rest[h.total_size()..];
    }
    next
}

/// One consumer fetch stream: answers as committed batches arrive, heartbeats (empty answers
/// with the high watermark) every `max_wait`, ends on error or disconnect.
async fn fetch_loop(
    part: Arc<Partition>,
    req: pb::FetchRequest,
    tx: mpsc::Sender<FetchItem>,
    memory: Arc<Semaphore>,
) {
    let max_bytes = (req.max_bytes as usize).clamp(1, MAX_FETCH_BYTES);
    let max_bytes = if req.max_bytes == 0 {
        1024 * 1024
    } else {
        max_bytes
    };
    let max_wait = Duration::from_millis(u64::from(req.max_wait_ms.clamp(1, 30_000)));
    // A wait for more than one answer can hold would never end early and would re-read up to
    // `max_bytes` on every append (`min_bytes: u32::MAX`): at most `max_bytes`.
    let min_bytes = (req.min_bytes as usize).min(max_bytes);
    let mut offset = req.offset;
    let mut views = part.subscribe();
    loop {
        let deadline = tokio::time::Instant::now() + max_wait;
        // Wait for committed data past `offset` (and min_bytes of it), up to max_wait.
        let (bytes, held) = loop {
            let view = *views.borrow_and_update();
            if !view.leading {
                let e = BrokerError::not_leader(&part.topic, part.index, None);
                let _ = tx.send((Ok(e.answer()), None)).await;
                return;
            }
            if offset < view.log_start || offset > view.log_end {
                let e = BrokerError::OffsetOutOfRange {
                    offset,
                    log_start: view.log_start,
                    log_end: view.log_end,
                };
                let _ = tx.send((Ok(e.answer()), None)).await;
                return;
            }
            let (bytes, held) = if view.high_watermark > offset {
                // Room for a whole answer first (max_bytes <= MAX_FETCH_BYTES fits in u32).
                let room = tokio::select! {
                    room = Arc::clone(&memory).acquire_many_owned(max_bytes as u32) => room,
                    _ = tx.closed() => return,
                };
                let Ok(mut room) = room else {
                    return;
                };
                match part.read(offset, max_bytes, view.high_watermark) {
                    Ok(bytes) => {
                        // Keep what the answer holds; give the rest back now.
                        let held = room.split(bytes.len()).unwrap_or(room);
                        (bytes, Some(held))
                    }
                    Err(e) => {
                        let _ = tx.send((Ok(e.answer()), None)).await;
                        return;
                    }
                }
            } else {
                (Bytes::new(), None)
            };
            if !bytes.is_empty() && bytes.len() >= min_bytes {
                break (bytes, held);
            }
            // Not enough yet: hold nothing while waiting.
            drop(held);
            match tokio::time::timeout_at(deadline, views.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => break (bytes, None),
            }
        };
        let view = part.view();
        let next = next_offset_after(&bytes, offset);
        let mut response = pb::FetchResponse {
            error: None,
            high_watermark: view.high_watermark,
            log_start_offset: view.log_start,
            next_offset: next,
            ..Default::default()
        };
        if req.decode {
            for batch in Batches::new(bytes) {
                let records = batch.and_then(|b| b.records());
                match records {
                    Ok(records) => response.records.extend(
                        records
                            .into_iter()
                            .filter(|r| r.offset >= offset)
                            .map(record_to_wire),
                    ),
                    Err(e) => {
                        let e = BrokerError::CorruptMessage(e.to_string());
                        let _ = tx.send((Ok(e.answer()), None)).await;
                        return;
                    }
                }
            }
        } else {
            response.batches = bytes;
        }
        if tx.send((Ok(response), held)).await.is_err() {
            return; // the consumer went away
        }
        offset = next;
    }
}

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerService {
    async fn metadata(
        &self,
        req: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let req = req.into_inner();
        let mut seen = std::collections::HashSet::new();
        let names: Vec<&String> = req
            .topics
            .iter()
            .filter(|n| seen.len() <= MAX_METADATA_TOPICS && seen.insert(n.as_str()))
            .collect();
        if names.len() > MAX_METADATA_TOPICS {
            let e = BrokerError::InvalidRequest(format!(
                "a Metadata request may name at most {MAX_METADATA_TOPICS} distinct topics"
            ));
            return Ok(Response::new(e.answer_plain()));
        }
        let state = self.manager.metadata();
        let brokers = state
            .brokers
            .values()
            .map(|b| pb::BrokerEndpoint {
                id: b.id,
                address: b.address.clone(),
                rack: b.rack.clone().unwrap_or_default(),
                fenced: b.fenced,
            })
            .collect();
        let describe = |t: &weir_meta::TopicInfo| pb::TopicMetadata {
            name: t.name.clone(),
            id: t.id.clone(),
            error: None,
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| pb::PartitionMetadata {
                    partition: i as u32,
                    leader: p.leader.map_or(-1, |l| l as i64),
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                })
                .collect(),
        };
        let topics = if names.is_empty() {
            state.topics.values().map(describe).collect()
        } else {
            names
                .into_iter()
                .map(|name| match state.topics.get(name) {
                    Some(t) => describe(t),
                    None => pb::TopicMetadata {
                        name: name.clone(),
                        error: Some(BrokerError::UnknownTopic(name.clone()).to_wire()),
                        ..Default::default()
                    },
                })
                .collect()
        };
        Ok(Response::new(pb::MetadataResponse {
            brokers,
            topics,
            controller_id: self.manager.controller_leader().unwrap_or(0),
            metadata_version: state.version,
            error: None,
        }))
    }

    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = req.into_inner();
        let (topic, index) = (req.topic.clone(), req.partition);
        let result = match self.append(req).await {
            Ok(appended) => appended.finish().await,
            Err(e) => Err(e),
        };
        Ok(Response::new(self.answer(result, &topic, index)))
    }

    type ProduceStreamStream = ProduceStream;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = req.into_inner();
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(1);
        match self.leader(&req.topic, req.partition) {
            Ok(part) => {
                tokio::spawn(fetch_loop(part, req, tx, Arc::clone(&self.fetch_memory)));
            }
            Err(e) => {
                let _ = tx.send((Ok(e.answer()), None)).await;
            }
        }
        Ok(Response::new(Box::pin(Budgeted { rx, held: None })))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = req.into_inner();
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
        let response = match result {
            Ok((offset, timestamp)) => pb::ListOffsetsResponse {
                error: None,
                offset,
                timestamp,
                leader_address: String::new(),
            },
            Err(e) => e.answer(),
        };
        Ok(Response::new(response))
    }

    async fn create_topic(
        &self,
        req: Request<cpb::CreateTopicRequest>,
    ) -> Result<Response<cpb::CreateTopicResponse>, Status> {
        self.to_controller(req.into_inner(), |mut c, r| async move {
            c.create_topic(r).await
        })
        .await
    }

    async fn delete_topic(
        &self,
        req: Request<cpb::DeleteTopicRequest>,
    ) -> Result<Response<cpb::DeleteTopicResponse>, Status> {
        self.to_controller(req.into_inner(), |mut c, r| async move {
            c.delete_topic(r).await
        })
        .await
    }

    async fn alter_topic_config(
        &self,
        req: Request<cpb::AlterTopicConfigRequest>,
    ) -> Result<Response<cpb::AlterTopicConfigResponse>, Status> {
        self.to_controller(req.into_inner(), |mut c, r| async move {
            c.alter_topic_config(r).await
        })
        .await
    }

    async fn describe_cluster(
        &self,
        req: Request<cpb::DescribeClusterRequest>,
    ) -> Result<Response<cpb::DescribeClusterResponse>, Status> {
        self.to_controller(req.into_inner(), |mut c, r| async move {
            c.describe_cluster(r).await
        })
        .await
    }

    async fn describe_topics(
        &self,
        req: Request<cpb::DescribeTopicsRequest>,
    ) -> Result<Response<cpb::DescribeTopicsResponse>, Status> {
        self.to_controller(req.into_inner(), |mut c, r| async move {
            c.describe_topics(r).await
        })
        .await
    }

    async fn partition_offsets(
        &self,
        req: Request<pb::PartitionOffsetsRequest>,
    ) -> Result<Response<pb::PartitionOffsetsResponse>, Status> {
        let topic = req.into_inner().topic;
        let state = self.manager.metadata();
        let Some(info) = state.topics.get(&topic) else {
            return Ok(Response::new(
                BrokerError::UnknownTopic(topic).answer_plain(),
            ));
        };
        let partitions = (0..info.partitions.len() as u32)
            .map(|i| match self.leader(&topic, i) {
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
        Ok(Response::new(pb::PartitionOffsetsResponse {
            error: None,
            partitions,
        }))
    }
}
