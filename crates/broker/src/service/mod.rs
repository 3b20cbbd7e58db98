//! The broker's client API (`Broker`): produce, fetch, list offsets, metadata, and admin
//! requests forwarded to the controller quorum. The replication API (`Replication`) is served
//! by the same [`BrokerService`], in [`crate::replication::leader`].
//!
//! Rooms: this module holds the service, its bounds, the partition lookups every request starts
//! with, and the tonic trait, whose methods only hand the request to one room and wrap the
//! answer. The produce path (`produce`) and the fetch path (`fetch`) read top to bottom in
//! their rooms; `offsets` answers ListOffsets and PartitionOffsets, `metadata` the Metadata
//! request, `producer_ids` InitProducerId, `admin` forwards admin requests to the controllers. Partitions do the bookkeeping;
//! [`crate::wire`] holds the protobuf conversions.
//!
//! Bounds: request messages are limited to [`MAX_REQUEST_BYTES`] (1 MiB but for produce:
//! [`crate::limits`]); a Metadata request names at most [`MAX_METADATA_TOPICS`] topics;
//! produce requests hold permits from one shared budget of in-flight bytes
//! ([`MAX_IN_FLIGHT_BYTES`]) until answered; fetch answers are capped at [`MAX_FETCH_BYTES`],
//! and each stream holds at most three (the transport's, one queued, one waiting to be), all
//! counted in [`FETCH_MEMORY_BYTES`], so a slow consumer slows itself and costs the node no
//! more than the budget. A client that disconnects ends its stream task at the next send.

mod admin;
mod fetch;
mod metadata;
mod offsets;
mod produce;
mod producer_ids;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};
use weir_proto::broker::v1 as pb;
use weir_proto::controller::v1 as cpb;

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
///
/// 32 MiB: four of the largest answers ([`MAX_FETCH_BYTES`]) at once, or 32 of a consumer's
/// default 1 MiB. An answer is held only until its reader has taken it off the transport
/// (milliseconds for a reading consumer), and one stream holds at most two, so a reading
/// consumer is not held up by it; what it bounds is what readers that stop reading can pin
/// (with 256 MiB, 200 of them took a node from 47 to 400 MB; with 64 MiB, to 153-162 MB).
pub const FETCH_MEMORY_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of replica fetch answers a leader holds at once (read and not yet taken by the
/// transport), as [`FETCH_MEMORY_BYTES`] is for consumers but a budget of its own: consumers
/// cannot starve replication, and streams posing as followers that never read cost the node
/// at most this (each could hold two 64 MiB answers before).
pub const REPLICATION_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// Largest fetch answer, whatever a client asks for.
pub const MAX_FETCH_BYTES: usize = 8 * 1024 * 1024;

/// The broker's services, sharing one replica manager.
#[derive(Clone)]
pub struct BrokerService {
    /// The partitions this broker holds and its copy of the metadata.
    manager: Arc<ReplicaManager>,
    /// Bytes of produce requests being appended or awaiting acks=all
    /// ([`MAX_IN_FLIGHT_BYTES`]).
    in_flight: Arc<Semaphore>,
    /// Bytes of fetch answers read and not yet taken by the transport ([`FETCH_MEMORY_BYTES`]).
    fetch_memory: Arc<Semaphore>,
    /// The same for replica fetch answers ([`REPLICATION_MEMORY_BYTES`]), with each
    /// follower's share.
    replication: Arc<crate::replication::leader::ReplicationBudgets>,
    /// The block of producer ids InitProducerId hands out from.
    producer_ids: Arc<tokio::sync::Mutex<producer_ids::ProducerIdBlock>>,
}

impl BrokerService {
    /// The replica manager the services work on.
    pub(crate) fn manager(&self) -> &Arc<ReplicaManager> {
        &self.manager
    }

    /// The replication answers' budgets ([`REPLICATION_MEMORY_BYTES`] and each follower's).
    pub(crate) fn replication_budgets(
        &self,
    ) -> &Arc<crate::replication::leader::ReplicationBudgets> {
        &self.replication
    }

    /// Services over `manager`.
    pub fn new(manager: Arc<ReplicaManager>) -> Self {
        Self {
            manager,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES)),
            fetch_memory: Arc::new(Semaphore::new(FETCH_MEMORY_BYTES)),
            replication: Arc::new(crate::replication::leader::ReplicationBudgets::new(
                REPLICATION_MEMORY_BYTES,
            )),
            producer_ids: Arc::default(),
        }
    }

    /// The client API server (requests of all methods but the produce ones capped at
    /// [`crate::limits::SMALL_REQUEST_BYTES`], fetch answers counted until written: see
    /// [`crate::limits::Limited`]).
    pub fn broker_server(&self) -> crate::limits::Limited<pb::broker_server::BrokerServer<Self>> {
        crate::limits::Limited::new(
            pb::broker_server::BrokerServer::new(self.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_FETCH_BYTES + 1024 * 1024),
        )
    }

    /// The replication API server (replica answers counted until written, see
    /// [`crate::limits::Limited`]).
    pub fn replication_server(
        &self,
    ) -> crate::limits::Limited<pb::replication_server::ReplicationServer<Self>> {
        crate::limits::Limited::new(
            pb::replication_server::ReplicationServer::new(self.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
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
}

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerService {
    async fn metadata(
        &self,
        req: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        Ok(Response::new(self.metadata_answer(req.into_inner())))
    }

    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = req.into_inner();
        let (topic, index) = (req.topic.clone(), req.partition);
        let result = match self.append(req).await {
            Ok(appended) => {
                let stages = appended.stages;
                let result = appended.finish().await;
                let done = std::time::Instant::now();
                stages.log_if_slow(&topic, index, done, done);
                result
            }
            Err(e) => Err(e),
        };
        Ok(Response::new(self.answer(result, &topic, index)))
    }

    type ProduceStreamStream = produce::ProduceStream;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        Ok(Response::new(self.produce_stream_answers(req.into_inner())))
    }

    type FetchStream = fetch::FetchStream;

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let handoff = req.extensions().get::<crate::budget::Handoff>().cloned();
        Ok(Response::new(
            self.fetch_answers(req.into_inner(), handoff).await,
        ))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Ok(Response::new(self.list_offsets_answer(req.into_inner())))
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

    async fn unregister_broker(
        &self,
        req: Request<cpb::UnregisterBrokerRequest>,
    ) -> Result<Response<cpb::UnregisterBrokerResponse>, Status> {
        self.to_controller(req.into_inner(), |mut c, r| async move {
            c.unregister_broker(r).await
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

    async fn init_producer_id(
        &self,
        req: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let result = self.init_producer_id(req.into_inner()).await;
        Ok(Response::new(result.unwrap_or_else(|e| e.answer_plain())))
    }

    async fn partition_offsets(
        &self,
        req: Request<pb::PartitionOffsetsRequest>,
    ) -> Result<Response<pb::PartitionOffsetsResponse>, Status> {
        Ok(Response::new(
            self.partition_offsets_answer(&req.into_inner().topic),
        ))
    }
}
