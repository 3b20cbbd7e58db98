//! The controller: the cluster's decisions, made on whichever controller is the Raft leader.
//!
//! - Broker liveness is kept in memory from heartbeats, never written per beat. A broker that
//!   misses its session timeout is fenced (one log entry); applying that entry moves the
//!   leadership of every partition it led to the next live ISR member, bumping the epoch.
//! - A controller that just became leader gives every broker a fresh session (a grace period)
//!   instead of fencing them all for heartbeats it never saw.
//! - Topic creation validates the request and chooses replica placement here; the log gets the
//!   outcome only.
//! - Requests that reach a controller that is not the leader are forwarded to the leader (one
//!   hop: a forwarded request is never forwarded again) and its answer relayed; with no known
//!   leader the answer is NOT_CONTROLLER naming the last known leader's address.
//! - Admin reads (describe) are linearizable: `ensure_linearizable` on the leader first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::sync::MutexExt;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use weir_proto::channel::Channels;
use weir_proto::common::v1::{Error as WireError, ErrorCode};
use weir_proto::controller::v1 as pb;
use weir_proto::controller::v1::controller_client::ControllerClient;

use crate::command::{Command, MetaError};
use crate::state::{validate_topic_name, MetadataState, PartitionInfo, TopicInfo};
use crate::store::StateMachineStore;
use crate::types::{NodeId, Raft};
use weir_common::{random_u64, topic_config};

/// Request metadata key marking a request forwarded by another controller.
const FORWARDED: &str = "x-weir-forwarded";

/// Controller timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// A broker that sends no heartbeat for this long is fenced. Default 3 s (Kafka: 9 s).
    pub session_timeout: Duration,
    /// How often the leader checks sessions. Default 250 ms.
    pub liveness_check_interval: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(3),
            liveness_check_interval: Duration::from_millis(250),
        }
    }
}

/// Broker sessions as the current leader sees them.
#[derive(Debug, Default)]
struct Liveness {
    /// The term in which this node last started leading; `None` while not leader.
    leading_term: Option<u64>,
    /// Last heartbeat (or grace start) per broker.
    last_seen: HashMap<NodeId, Instant>,
}

/// The controller of one node; acts only while its node leads the quorum.
pub struct Controller {
    id: NodeId,
    raft: Raft,
    state: StateMachineStore,
    config: ControllerConfig,
    liveness: Mutex<Liveness>,
    /// One cached channel per peer controller address, for forwarding.
    /// Channels to the other controllers, for forwarding to the leader.
    peers: Channels,
    /// When TriggerElection last started an election here.
    last_election_trigger: Mutex<Option<Instant>>,
}

/// Where a request is handled.
enum Route {
    Local,
    Forward(ControllerClient<Channel>),
    NoLeader(Option<String>),
}

fn wire_error(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError {
        code: code as i32,
        message: message.into(),
    }
}

fn meta_error(e: &MetaError) -> WireError {
    WireError {
        code: e.code(),
        message: e.to_string(),
    }
}

fn not_controller(leader: Option<String>) -> WireError {
    let message = match leader {
        Some(addr) => format!("this node is not the controller leader; the leader is at {addr}"),
        None => "no controller leader is known yet; retry shortly".to_owned(),
    };
    wire_error(ErrorCode::NotController, message)
}

/// Responses that carry an `error` field, so routing can answer any of them.
trait WithError: Default {
    fn with_error(error: WireError) -> Self;
}

macro_rules! with_error {
    ($($t:ty),*) => {$(
        // Some responses have no field but `error`; the macro treats them all alike.
        #[allow(clippy::needless_update)]
        impl WithError for $t {
            fn with_error(error: WireError) -> Self {
                Self { error: Some(error), ..Default::default() }
            }
        }
    )*};
}

with_error!(
    pb::RegisterBrokerResponse,
    pb::BrokerHeartbeatResponse,
    pb::ControlledShutdownResponse,
    pb::AlterPartitionResponse,
    pb::JoinQuorumResponse,
    pb::TriggerElectionResponse,
    pb::CreateTopicResponse,
    pb::DeleteTopicResponse,
    pb::AlterTopicConfigResponse,
    pb::DescribeClusterResponse,
    pb::DescribeTopicsResponse
);

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
                return Ok(Response::new(WithError::with_error(not_controller(leader))));
            }
        }
    };
}

/// Converts a partition to its wire form.
pub fn partition_to_wire(index: usize, p: &PartitionInfo) -> pb::PartitionState {
    pb::PartitionState {
        partition: index as u32,
        replicas: p.replicas.clone(),
        leader: p.leader.map_or(-1, |l| l as i64),
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: p.isr.clone(),
    }
}

/// Converts a topic to its wire form.
pub fn topic_to_wire(t: &TopicInfo) -> pb::TopicDescription {
    pb::TopicDescription {
        name: t.name.clone(),
        id: t.id.clone(),
        configs: t.configs.clone().into_iter().collect(),
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_to_wire(i, p))
            .collect(),
    }
}

fn new_topic_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// Longest broker address (`host:port`) or rack name a broker may register: every Metadata
/// answer carries them, so they are bounded (a 4 MB address once made every answer exceed its
/// limit, for good).
pub const MAX_REGISTRATION_FIELD: usize = 255;

/// Most brokers the cluster registers; a registration of a new id past it is refused (brokers
/// are never removed yet, so registrations of made-up ids must not grow every Metadata answer
/// without end).
pub const MAX_BROKERS: usize = 1000;

/// Least time between two elections triggered on one node through TriggerElection.
pub const ELECTION_TRIGGER_INTERVAL: Duration = Duration::from_secs(5);

/// Whether `address` is a `host:port` and `rack` a name, both within
/// [`MAX_REGISTRATION_FIELD`] bytes of printable ASCII.
fn check_registration(address: &str, rack: &str) -> Result<(), String> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if address.is_empty() || address.len() > MAX_REGISTRATION_FIELD || !printable(address) {
        return Err(format!(
            "a broker address is host:port, at most {MAX_REGISTRATION_FIELD} printable bytes"
        ));
    }
    let port = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok());
    if port.is_none_or(|p| p == 0) {
        return Err(format!("broker address `{address}` is not host:port"));
    }
    if rack.len() > MAX_REGISTRATION_FIELD || !printable(rack) {
        return Err(format!(
            "a rack name is at most {MAX_REGISTRATION_FIELD} printable bytes"
        ));
    }
    Ok(())
}

impl Controller {
    /// A controller for node `id`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: StateMachineStore,
        config: ControllerConfig,
        peers: Channels,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            raft,
            state,
            config,
            liveness: Mutex::new(Liveness::default()),
            peers,
            last_election_trigger: Mutex::new(None),
        })
    }

    /// The gRPC service for this controller.
    pub fn service(self: &Arc<Self>) -> pb::controller_server::ControllerServer<ControllerService> {
        pb::controller_server::ControllerServer::new(ControllerService {
            inner: Arc::clone(self),
        })
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// The leader's node id and controller address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    fn client(&self, addr: &str) -> Result<ControllerClient<Channel>, String> {
        self.peers
            .get(addr)
            .map(ControllerClient::new)
            .map_err(|e| e.to_string())
    }

    fn route<T>(&self, req: &Request<T>) -> Route {
        if self.is_leader() {
            return Route::Local;
        }
        let forwarded = req.metadata().get(FORWARDED).is_some();
        match self.leader() {
            Some((id, addr)) if id != self.id && !forwarded => match self.client(&addr) {
                Ok(client) => Route::Forward(client),
                Err(_) => Route::NoLeader(Some(addr)),
            },
            Some((_, addr)) => Route::NoLeader(Some(addr)),
            None => Route::NoLeader(None),
        }
    }

    /// Whether this node is a member of the quorum, knows a leader, and has applied the
    /// metadata up to what the leader had applied when asked (a linearizable read on the
    /// leader), waiting at most `wait` for it.
    pub async fn caught_up(&self, wait: Duration) -> bool {
        let (member, running) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.membership_config
                    .membership()
                    .get_node(&self.id)
                    .is_some(),
                m.running_state.is_ok(),
            )
        };
        if !member || !running {
            return false;
        }
        if self.is_leader() {
            return self.linearize().await.is_ok();
        }
        let Some((leader, addr)) = self.leader() else {
            return false;
        };
        if leader == self.id {
            return false;
        }
        let Ok(mut client) = self.client(&addr) else {
            return false;
        };
        let mut request = Request::new(pb::DescribeClusterRequest {});
        request
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        request.set_timeout(wait);
        let target = match client.describe_cluster(request).await {
            Ok(r) if r.get_ref().error.is_none() => r.get_ref().metadata_version,
            _ => return false,
        };
        let waiter = self.raft.wait(Some(wait));
        waiter
            .applied_index_at_least(Some(target), "caught up with the leader")
            .await
            .is_ok()
    }

    /// Writes a command through Raft; returns the metadata version after it was applied.
    pub async fn write(&self, command: Command) -> Result<u64, WireError> {
        match self.raft.client_write(command).await {
            Ok(response) => response.data.into_result().map_err(|e| meta_error(&e)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_controller(f.leader_node.map(|n| n.addr)))
            }
            Err(e) => Err(wire_error(
                ErrorCode::UnknownServerError,
                format!("metadata write failed: {e}"),
            )),
        }
    }

    /// Waits until this leader's state machine reflects everything committed before now.
    async fn linearize(&self) -> Result<Arc<MetadataState>, WireError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.state.current()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_controller(f.leader_node.map(|n| n.addr)))
            }
            Err(e) => Err(wire_error(
                ErrorCode::NotController,
                format!("cannot confirm leadership: {e}"),
            )),
        }
    }

    fn touch(&self, broker: NodeId) {
        let mut liveness = self.liveness.locked();
        liveness.last_seen.insert(broker, Instant::now());
    }

    /// One pass of the leader's duties: start a grace period after gaining leadership, fence
    /// brokers whose session expired, and elect leaders uncleanly where a topic allows it.
    pub async fn tick(&self) {
        let (leading, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self.id),
                m.current_term,
            )
        };
        let state = self.state.current();
        let expired: Vec<NodeId> = {
            let mut liveness = self.liveness.locked();
            if !leading {
                liveness.leading_term = None;
                return;
            }
            let now = Instant::now();
            if liveness.leading_term != Some(term) {
                liveness.leading_term = Some(term);
                liveness.last_seen = state.brokers.keys().map(|id| (*id, now)).collect();
                tracing::info!(
                    node = self.id,
                    term,
                    "became controller leader; brokers get a grace period"
                );
            }
            state
                .live_brokers()
                .filter(|b| {
                    let seen = *liveness.last_seen.entry(b.id).or_insert(now);
                    now.duration_since(seen) > self.config.session_timeout
                })
                .map(|b| b.id)
                .collect()
        };
        for id in expired {
            tracing::warn!(broker = id, "broker session expired; fencing it");
            if let Err(e) = self.write(Command::FenceBroker { id }).await {
                tracing::warn!(broker = id, error = %e.message, "fencing failed");
            }
        }
        for (name, topic) in &state.topics {
            if !topic_config::unclean_leader_election(&topic.configs) {
                continue;
            }
            for (i, p) in topic.partitions.iter().enumerate() {
                let any_live = p
                    .replicas
                    .iter()
                    .any(|r| state.brokers.get(r).is_some_and(|b| !b.fenced));
                if p.leader.is_none() && any_live {
                    let cmd = Command::ElectLeader {
                        topic: name.clone(),
                        partition: i as u32,
                        unclean: true,
                    };
                    if let Err(e) = self.write(cmd).await {
                        tracing::warn!(topic = %name, partition = i, error = %e.message, "unclean election failed");
                    }
                }
            }
        }
    }

    /// Runs [`Controller::tick`] until `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.liveness_check_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick().await,
                _ = shutdown.changed() => break,
            }
        }
    }

    async fn create_topic(
        &self,
        req: pb::CreateTopicRequest,
    ) -> Result<pb::TopicDescription, WireError> {
        validate_topic_name(&req.name).map_err(|e| meta_error(&e))?;
        if req.partitions < 1 || req.partitions > 100_000 {
            return Err(meta_error(&MetaError::InvalidPartitions(
                req.partitions.into(),
            )));
        }
        if req.replication_factor < 1 {
            return Err(meta_error(&MetaError::InvalidReplicationFactor {
                factor: req.replication_factor.into(),
                reason: "must be at least 1".into(),
            }));
        }
        let configs: BTreeMap<String, String> = req.configs.into_iter().collect();
        topic_config::validate(&configs, req.replication_factor as u32)
            .map_err(|e| meta_error(&e.into()))?;
        let state = self.state.current();
        if state.topics.contains_key(&req.name) {
            return Err(meta_error(&MetaError::TopicExists(req.name)));
        }
        let assignment = state
            .place_replicas(req.partitions as u32, req.replication_factor as u32)
            .map_err(|e| meta_error(&e))?;
        let name = req.name.clone();
        self.write(Command::CreateTopic {
            name: req.name,
            topic_id: new_topic_id(),
            assignment,
            configs,
        })
        .await?;
        let state = self.state.current();
        let topic = state
            .topics
            .get(&name)
            .ok_or_else(|| meta_error(&MetaError::UnknownTopic(name.clone())))?;
        Ok(topic_to_wire(topic))
    }

    async fn heartbeat(
        &self,
        req: pb::BrokerHeartbeatRequest,
    ) -> Result<pb::BrokerHeartbeatResponse, WireError> {
        let state = self.state.current();
        let Some(broker) = state
            .brokers
            .get(&req.broker_id)
            .filter(|b| b.incarnation == req.incarnation)
        else {
            return Ok(pb::BrokerHeartbeatResponse {
                error: None,
                fenced: true,
                should_register: true,
            });
        };
        self.touch(req.broker_id);
        let mut fenced = broker.fenced;
        if fenced && req.metadata_version >= broker.epoch {
            self.write(Command::UnfenceBroker { id: req.broker_id })
                .await?;
            tracing::info!(broker = req.broker_id, "broker caught up; unfenced");
            fenced = false;
        }
        Ok(pb::BrokerHeartbeatResponse {
            error: None,
            fenced,
            should_register: false,
        })
    }

    fn describe_cluster(&self, state: &MetadataState) -> pb::DescribeClusterResponse {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let last = m.last_log_index.unwrap_or(0);
        let member = |id: &NodeId| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(if *id == self.id { last } else { 0 }, |l| l.index);
            pb::QuorumMember {
                id: *id,
                address: membership
                    .get_node(id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default(),
                match_index: matched,
                lag: last.saturating_sub(matched),
            }
        };
        pb::DescribeClusterResponse {
            error: None,
            controller_leader: m.current_leader.unwrap_or(0),
            brokers: state
                .brokers
                .values()
                .map(|b| pb::BrokerDescription {
                    id: b.id,
                    address: b.address.clone(),
                    rack: b.rack.clone().unwrap_or_default(),
                    state: if b.fenced { "fenced" } else { "active" }.to_owned(),
                    epoch: b.epoch,
                })
                .collect(),
            voters: membership.voter_ids().map(|id| member(&id)).collect(),
            learners: membership.learner_ids().map(|id| member(&id)).collect(),
            metadata_version: state.version,
            term: m.current_term,
        }
    }
}

/// The tonic service around a [`Controller`].
pub struct ControllerService {
    inner: Arc<Controller>,
}

// The Err side is tonic's own `Status`, as the generated trait requires.
#[allow(clippy::result_large_err)]
fn answer<T: WithError>(result: Result<T, WireError>) -> Result<Response<T>, Status> {
    Ok(Response::new(result.unwrap_or_else(T::with_error)))
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerService {
    async fn register_broker(
        &self,
        req: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        route!(self, req, register_broker);
        let req = req.into_inner();
        if let Err(why) = check_registration(&req.address, &req.rack) {
            return answer(Err(wire_error(ErrorCode::InvalidRequest, &why)));
        }
        let known = self
            .inner
            .state
            .current()
            .brokers
            .contains_key(&req.broker_id);
        if !known && self.inner.state.current().brokers.len() >= MAX_BROKERS {
            return answer(Err(wire_error(
                ErrorCode::InvalidRequest,
                format!("the cluster already has {MAX_BROKERS} registered brokers"),
            )));
        }
        let command = Command::RegisterBroker {
            id: req.broker_id,
            address: req.address,
            rack: (!req.rack.is_empty()).then_some(req.rack),
            incarnation: req.incarnation,
        };
        let result = self.inner.write(command).await;
        if result.is_ok() {
            self.inner.touch(req.broker_id);
        }
        answer(result.map(|version| {
            let epoch = self
                .inner
                .state
                .current()
                .brokers
                .get(&req.broker_id)
                .map_or(version, |b| b.epoch);
            pb::RegisterBrokerResponse {
                error: None,
                broker_epoch: epoch,
            }
        }))
    }

    async fn broker_heartbeat(
        &self,
        req: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        route!(self, req, broker_heartbeat);
        answer(self.inner.heartbeat(req.into_inner()).await)
    }

    async fn controlled_shutdown(
        &self,
        req: Request<pb::ControlledShutdownRequest>,
    ) -> Result<Response<pb::ControlledShutdownResponse>, Status> {
        route!(self, req, controlled_shutdown);
        let req = req.into_inner();
        let state = self.inner.state.current();
        let known = state
            .brokers
            .get(&req.broker_id)
            .is_some_and(|b| b.incarnation == req.incarnation);
        if !known {
            return answer(Err(wire_error(
                ErrorCode::InvalidRequest,
                format!(
                    "broker {} is not registered with incarnation {}",
                    req.broker_id, req.incarnation
                ),
            )));
        }
        tracing::info!(
            broker = req.broker_id,
            "controlled shutdown: fencing the broker"
        );
        let result = self
            .inner
            .write(Command::FenceBroker { id: req.broker_id })
            .await;
        answer(result.map(|_| pb::ControlledShutdownResponse { error: None }))
    }

    async fn alter_partition(
        &self,
        req: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        route!(self, req, alter_partition);
        let req = req.into_inner();
        let (topic, partition) = (req.topic.clone(), req.partition);
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
        let state = self.inner.state.current();
        let current = state
            .topics
            .get(&topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|p| partition_to_wire(partition as usize, p));
        Ok(Response::new(pb::AlterPartitionResponse {
            error: result.err(),
            partition: current,
        }))
    }

    async fn join_quorum(
        &self,
        req: Request<pb::JoinQuorumRequest>,
    ) -> Result<Response<pb::JoinQuorumResponse>, Status> {
        route!(self, req, join_quorum);
        let req = req.into_inner();
        if let Err(why) = check_registration(&req.address, "") {
            return answer(Err(wire_error(ErrorCode::InvalidRequest, why)));
        }
        let (known, voter, members) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            (
                membership.get_node(&req.node_id).map(|n| n.addr.clone()),
                membership.voter_ids().any(|v| v == req.node_id),
                membership.nodes().count(),
            )
        };
        if known.as_deref() == Some(req.address.as_str()) {
            return answer(Ok(pb::JoinQuorumResponse { error: None }));
        }
        // A voter's address is part of the quorum's configuration: JoinQuorum (open to anyone
        // until security lands) must not re-point it.
        if voter || req.node_id == 0 {
            return answer(Err(wire_error(
                ErrorCode::InvalidRequest,
                format!(
                    "node {} is a voter (or 0) and cannot join as a learner",
                    req.node_id
                ),
            )));
        }
        if known.is_none() && members >= MAX_BROKERS {
            return answer(Err(wire_error(
                ErrorCode::InvalidRequest,
                format!("the quorum already has {MAX_BROKERS} members"),
            )));
        }
        let result = self
            .inner
            .raft
            .add_learner(req.node_id, BasicNode { addr: req.address }, false)
            .await;
        answer(
            result
                .map(|_| pb::JoinQuorumResponse { error: None })
                .map_err(|e| {
                    wire_error(
                        ErrorCode::UnknownServerError,
                        format!("adding learner failed: {e}"),
                    )
                }),
        )
    }

    async fn trigger_election(
        &self,
        _req: Request<pb::TriggerElectionRequest>,
    ) -> Result<Response<pb::TriggerElectionResponse>, Status> {
        // Open to anyone until security lands, and each one deposes the leader: at most one
        // per ELECTION_TRIGGER_INTERVAL on this node (a hand-over at shutdown needs one).
        {
            let mut last = self.inner.last_election_trigger.locked();
            if last.is_some_and(|t| t.elapsed() < ELECTION_TRIGGER_INTERVAL) {
                return answer(Err(wire_error(
                    ErrorCode::ThrottlingQuotaExceeded,
                    format!(
                        "an election was triggered on this node less than {} s ago",
                        ELECTION_TRIGGER_INTERVAL.as_secs()
                    ),
                )));
            }
            *last = Some(Instant::now());
        }
        let result = self.inner.raft.trigger().elect().await;
        answer(
            result
                .map(|_| pb::TriggerElectionResponse { error: None })
                .map_err(|e| wire_error(ErrorCode::UnknownServerError, e.to_string())),
        )
    }

    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        route!(self, req, create_topic);
        let result = self.inner.create_topic(req.into_inner()).await;
        answer(result.map(|topic| pb::CreateTopicResponse {
            error: None,
            topic: Some(topic),
        }))
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        route!(self, req, delete_topic);
        let result = self
            .inner
            .write(Command::DeleteTopic {
                name: req.into_inner().name,
            })
            .await;
        answer(result.map(|_| pb::DeleteTopicResponse { error: None }))
    }

    async fn alter_topic_config(
        &self,
        req: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        route!(self, req, alter_topic_config);
        let req = req.into_inner();
        let state = self.inner.state.current();
        let Some(topic) = state.topics.get(&req.name) else {
            return answer(Err(meta_error(&MetaError::UnknownTopic(req.name))));
        };
        let rf = topic
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len() as u32);
        let set: BTreeMap<String, String> = req.set.into_iter().collect();
        let mut merged = topic.configs.clone();
        for key in &req.delete {
            merged.remove(key);
        }
        merged.extend(set.clone());
        if let Err(e) = topic_config::validate(&merged, rf) {
            return answer(Err(meta_error(&e.into())));
        }
        let result = self
            .inner
            .write(Command::AlterTopicConfig {
                name: req.name,
                set,
                delete: req.delete,
            })
            .await;
        answer(result.map(|_| pb::AlterTopicConfigResponse { error: None }))
    }

    async fn describe_cluster(
        &self,
        req: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        route!(self, req, describe_cluster);
        let result = self.inner.linearize().await;
        answer(result.map(|state| self.inner.describe_cluster(&state)))
    }

    async fn describe_topics(
        &self,
        req: Request<pb::DescribeTopicsRequest>,
    ) -> Result<Response<pb::DescribeTopicsResponse>, Status> {
        route!(self, req, describe_topics);
        let req = req.into_inner();
        let state = match self.inner.linearize().await {
            Ok(state) => state,
            Err(e) => return answer(Err(e)),
        };
        let mut topics = Vec::new();
        if req.names.is_empty() {
            topics.extend(state.topics.values().map(topic_to_wire));
        } else {
            for name in &req.names {
                match state.topics.get(name) {
                    Some(t) => topics.push(topic_to_wire(t)),
                    None => return answer(Err(meta_error(&MetaError::UnknownTopic(name.clone())))),
                }
            }
        }
        answer(Ok(pb::DescribeTopicsResponse {
            error: None,
            topics,
            metadata_version: state.version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::check_registration;

    #[test]
    fn registrations_are_bounded_host_ports_and_racks() {
        assert!(check_registration("127.0.0.1:9700", "").is_ok());
        assert!(check_registration("broker-1.example:9700", "rack-a").is_ok());
        assert!(check_registration("[::1]:9700", "").is_ok());
        let long = format!("{}:1", "a".repeat(300));
        for bad in [
            "",
            "no-port",
            ":9700",
            "h:0",
            "h:99999",
            "h :1",
            long.as_str(),
        ] {
            assert!(check_registration(bad, "").is_err(), "{bad:?}");
        }
        assert!(check_registration("h:1", &"r".repeat(256)).is_err());
        assert!(check_registration("h:1", "a rack").is_err());
    }
}
