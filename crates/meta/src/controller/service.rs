//! The tonic edge of the controller: each method routes the request (here, forwarded to the
//! leader, or NOT_CONTROLLER), calls one [`Controller`] method and turns its outcome into a
//! response through [`WithError`]. No decisions are made here.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use weir_proto::common::v1::WithError;
use weir_proto::controller::v1 as pb;

use super::{Controller, Route, FORWARDED};
use crate::command::{Command, MetaError};
use crate::wire::{partition_to_wire, topic_to_wire};

/// The tonic service around a [`Controller`].
pub struct ControllerService {
    inner: Arc<Controller>,
}

impl ControllerService {
    pub(super) fn new(inner: Arc<Controller>) -> Self {
        Self { inner }
    }
}

/// Handles the request here, or forwards it to the leader, or answers NOT_CONTROLLER.
macro_rules! route {
    ($self:ident, $req:ident, $method:ident) => {
        match $self.inner.route(&$req) {
            Route::Local => {}
            Route::Forward(mut client) => {
                let mut forwarded = Request::new($req.into_inner());
                forwarded
                    .metadata_mut()
                    .insert(FORWARDED, MetadataValue::from_static("1"));
                return client.$method(forwarded).await;
            }
            Route::NoLeader(leader) => {
                return answer(Err(MetaError::NotController { leader }));
            }
        }
    };
}

/// The response for `result`: its own, or one carrying the error.
// The Err side is tonic's own `Status`, as the generated trait requires.
#[allow(clippy::result_large_err)]
fn answer<T: WithError>(result: Result<T, MetaError>) -> Result<Response<T>, Status> {
    Ok(Response::new(
        result.unwrap_or_else(|e| T::with_error(e.to_wire())),
    ))
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerService {
    async fn register_broker(
        &self,
        req: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        route!(self, req, register_broker);
        let req = req.into_inner();
        let result = self
            .inner
            .register_broker(req.broker_id, req.address, req.rack, req.incarnation)
            .await;
        answer(result.map(|broker_epoch| pb::RegisterBrokerResponse {
            error: None,
            broker_epoch,
        }))
    }

    async fn broker_heartbeat(
        &self,
        req: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        route!(self, req, broker_heartbeat);
        let req = req.into_inner();
        let result = self
            .inner
            .heartbeat(req.broker_id, req.incarnation, req.metadata_version)
            .await;
        answer(result.map(|beat| pb::BrokerHeartbeatResponse {
            error: None,
            fenced: beat.fenced,
            should_register: beat.should_register,
        }))
    }

    async fn controlled_shutdown(
        &self,
        req: Request<pb::ControlledShutdownRequest>,
    ) -> Result<Response<pb::ControlledShutdownResponse>, Status> {
        route!(self, req, controlled_shutdown);
        let req = req.into_inner();
        let result = self
            .inner
            .controlled_shutdown(req.broker_id, req.incarnation)
            .await;
        answer(result.map(|()| pb::ControlledShutdownResponse { error: None }))
    }

    async fn alter_partition(
        &self,
        req: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        route!(self, req, alter_partition);
        let req = req.into_inner();
        let (topic, partition) = (req.topic.clone(), req.partition as usize);
        let result = self
            .inner
            .write(Command::AlterPartition {
                topic: req.topic,
                partition: req.partition,
                leader: req.leader,
                leader_epoch: req.leader_epoch,
                partition_epoch: req.partition_epoch,
                isr: req.isr,
                added: req.added.iter().map(|b| (b.id, b.epoch)).collect(),
            })
            .await;
        // Applied or not, the leader learns the partition's current state.
        let state = self.inner.state.current();
        let current = state
            .topics
            .get(&topic)
            .and_then(|t| t.partitions.get(partition))
            .map(|p| partition_to_wire(partition, p));
        Ok(Response::new(pb::AlterPartitionResponse {
            error: result.err().map(|e| e.to_wire()),
            partition: current,
        }))
    }

    async fn join_quorum(
        &self,
        req: Request<pb::JoinQuorumRequest>,
    ) -> Result<Response<pb::JoinQuorumResponse>, Status> {
        route!(self, req, join_quorum);
        let req = req.into_inner();
        let result = self.inner.join_quorum(req.node_id, req.address).await;
        answer(result.map(|()| pb::JoinQuorumResponse { error: None }))
    }

    async fn trigger_election(
        &self,
        _req: Request<pb::TriggerElectionRequest>,
    ) -> Result<Response<pb::TriggerElectionResponse>, Status> {
        let result = self.inner.trigger_election().await;
        answer(result.map(|()| pb::TriggerElectionResponse { error: None }))
    }

    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        route!(self, req, create_topic);
        let req = req.into_inner();
        let result = self
            .inner
            .create_topic(
                req.name,
                req.partitions,
                req.replication_factor,
                req.configs.into_iter().collect(),
            )
            .await;
        answer(result.map(|topic| pb::CreateTopicResponse {
            error: None,
            topic: Some(topic_to_wire(&topic, &self.inner.config.topic_defaults)),
        }))
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        route!(self, req, delete_topic);
        let result = self.inner.delete_topic(req.into_inner().name).await;
        answer(result.map(|()| pb::DeleteTopicResponse { error: None }))
    }

    async fn alter_topic_config(
        &self,
        req: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        route!(self, req, alter_topic_config);
        let req = req.into_inner();
        let result = self
            .inner
            .alter_topic_config(req.name, req.set.into_iter().collect(), req.delete)
            .await;
        answer(result.map(|()| pb::AlterTopicConfigResponse { error: None }))
    }

    async fn describe_cluster(
        &self,
        req: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        route!(self, req, describe_cluster);
        let result = self.inner.linearize().await;
        answer(result.map(|state| self.inner.describe_cluster(&state)))
    }

    async fn unregister_broker(
        &self,
        req: Request<pb::UnregisterBrokerRequest>,
    ) -> Result<Response<pb::UnregisterBrokerResponse>, Status> {
        route!(self, req, unregister_broker);
        let result = self
            .inner
            .unregister_broker(req.into_inner().broker_id)
            .await;
        answer(result.map(|()| pb::UnregisterBrokerResponse { error: None }))
    }

    async fn allocate_producer_ids(
        &self,
        req: Request<pb::AllocateProducerIdsRequest>,
    ) -> Result<Response<pb::AllocateProducerIdsResponse>, Status> {
        route!(self, req, allocate_producer_ids);
        let req = req.into_inner();
        let result = self
            .inner
            .allocate_producer_ids(req.broker_id, req.broker_epoch)
            .await;
        answer(
            result.map(|(first, count)| pb::AllocateProducerIdsResponse {
                error: None,
                first_producer_id: first,
                count: count as i32,
            }),
        )
    }

    async fn describe_topics(
        &self,
        req: Request<pb::DescribeTopicsRequest>,
    ) -> Result<Response<pb::DescribeTopicsResponse>, Status> {
        route!(self, req, describe_topics);
        let req = req.into_inner();
        let result = self.inner.describe_topics(&req.names).await;
        answer(result.map(|(state, topics)| {
            pb::DescribeTopicsResponse {
                error: None,
                topics: topics
                    .iter()
                    .map(|t| topic_to_wire(t, &self.inner.config.topic_defaults))
                    .collect(),
                metadata_version: state.version,
            }
        }))
    }
}
