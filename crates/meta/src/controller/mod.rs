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
//!
//! Rooms: this module holds the [`Controller`] itself — where requests are handled, and the two
//! ways it touches the quorum (a write through Raft, a linearizable read). The decisions live
//! beside it, each returning [`MetaError`] and knowing nothing of protobuf:
//! - `liveness`: broker sessions, heartbeats, fencing, unclean elections (the leader's tick);
//! - `brokers`: what brokers ask — registration (bounded), controlled shutdown, ISR changes;
//! - `topics`: create, delete, alter configs, describe;
//! - `quorum`: joining learners, triggered elections, describing the quorum.
//!
//! [`ControllerService`] (in `service`) is the tonic edge: it routes, calls one of these and
//! turns the outcome into a response; [`crate::wire`] holds the conversions.

mod brokers;
mod liveness;
mod quorum;
mod service;
mod topics;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;
use weir_proto::channel::Channels;
use weir_proto::controller::v1 as pb;
use weir_proto::controller::v1::controller_client::ControllerClient;

use crate::command::{Command, CommandResult, MetaError};
use crate::state::MetadataState;
use crate::store::StateMachineStore;
use crate::types::{NodeId, Raft};

pub use brokers::{MAX_BROKERS, MAX_REGISTRATION_FIELD};
pub use quorum::ELECTION_TRIGGER_INTERVAL;
pub use service::ControllerService;

/// Request metadata key marking a request forwarded by another controller.
const FORWARDED: &str = "x-weir-forwarded";

/// Controller timing, and the server's topic defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// A broker that sends no heartbeat for this long is fenced. Default 3 s (Kafka: 9 s).
    pub session_timeout: Duration,
    /// How often the leader checks sessions. Default 250 ms.
    pub liveness_check_interval: Duration,
    /// The server's defaults for every topic (`--topic-config-default`): what DescribeTopics
    /// reports as server defaults, and what unclean leader election reads under a topic's
    /// overrides. Every node should be started with the same, as Kafka's static broker
    /// configs should.
    pub topic_defaults: std::collections::BTreeMap<String, String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(3),
            liveness_check_interval: Duration::from_millis(250),
            topic_defaults: Default::default(),
        }
    }
}

/// The controller of one node; acts only while its node leads the quorum.
pub struct Controller {
    /// This node's id: the controller acts when the Raft leader is this id.
    id: NodeId,
    /// The quorum: writes go through it, leadership and membership are read from its metrics.
    raft: Raft,
    /// The applied metadata, read without a Raft round trip (linearize first where a read must
    /// not be stale).
    state: StateMachineStore,
    /// Session timeout and tick interval.
    config: ControllerConfig,
    /// Broker sessions as this node, while it leads, has seen them (never written to the log).
    liveness: Mutex<liveness::Liveness>,
    /// Channels to the other controllers, for forwarding to the leader.
    peers: Channels,
    /// When TriggerElection last started an election here (at most one per
    /// [`ELECTION_TRIGGER_INTERVAL`]).
    last_election_trigger: Mutex<Option<Instant>>,
}

/// Where a request is handled.
enum Route {
    /// Here: this node leads.
    Local,
    /// At the leader, through this client (once; a forwarded request is not forwarded again).
    Forward(ControllerClient<Channel>),
    /// Nowhere now: NOT_CONTROLLER naming the last known leader's address.
    NoLeader(Option<String>),
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
            liveness: Mutex::new(liveness::Liveness::default()),
            peers,
            last_election_trigger: Mutex::new(None),
        })
    }

    /// The gRPC service for this controller.
    pub fn service(self: &Arc<Self>) -> pb::controller_server::ControllerServer<ControllerService> {
        pb::controller_server::ControllerServer::new(ControllerService::new(Arc::clone(self)))
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
    pub async fn write(&self, command: Command) -> Result<u64, MetaError> {
        self.write_for_result(command).await?.into_result()
    }

    /// Writes a command through Raft; returns what applying it answered.
    async fn write_for_result(&self, command: Command) -> Result<CommandResult, MetaError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(MetaError::NotController {
                    leader: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(MetaError::Internal(format!("metadata write failed: {e}"))),
        }
    }

    /// Waits until this leader's state machine reflects everything committed before now.
    async fn linearize(&self) -> Result<Arc<MetadataState>, MetaError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(self.state.current()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(MetaError::NotController {
                    leader: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot confirm leadership");
                Err(MetaError::NotController { leader: None })
            }
        }
    }
}
