//! A node's membership in the metadata quorum: the Raft node over its sled store, the gRPC
//! server on the controller listener (Raft RPCs and the controller service), bootstrap, and
//! graceful shutdown.
//!
//! - A voter (controller role) initializes Raft with the static quorum from
//!   `--controller-quorum`; every voter does so with the identical membership, so a fresh
//!   cluster forms by itself, and a restarted voter simply recovers from its sled data.
//! - A broker-only node is a Raft learner: it serves Raft RPCs so the leader can replicate the
//!   metadata log to it, and asks the quorum to add it (JoinQuorum) until it is a member.
//! - On shutdown a leader hands leadership over by asking the most caught-up voter to start an
//!   election (openraft 0.9 has no leader transfer), waiting a bounded time for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use weir_proto::channel::{Channels, Profile};
use weir_proto::controller::v1 as pb;
use weir_proto::controller::v1::controller_client::ControllerClient;

use crate::controller::{Controller, ControllerConfig};
use crate::election::Election;
use crate::network::{raft_server, Network, RaftService};
use crate::state::MetadataState;
use crate::store::{open_store, StateMachineStore};
use crate::types::{NodeId, Raft};

/// Configuration of a node's part in the metadata quorum.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Whether this node is a voter (controller role); otherwise a learner.
    pub voter: bool,
    /// Where to listen for Raft and controller RPCs.
    pub listen: SocketAddr,
    /// The address other nodes dial for this node's controller listener.
    pub advertised: String,
    /// The voters: `(id, controller address)`, identical on every node.
    pub quorum: Vec<(NodeId, String)>,
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// Controller timing.
    pub controller: ControllerConfig,
    /// Leader heartbeat to followers. Default 60 ms.
    pub raft_heartbeat: Duration,
    /// Election timeout range. Default 250–500 ms. openraft's leader lease equals the upper
    /// bound (followers refuse votes until it has passed since the last heartbeat), so a dead
    /// leader is replaced in about 0.5–1 s.
    pub election_timeout: (Duration, Duration),
    /// Take a snapshot (and purge the log before it) every this many entries. Default 5000.
    pub snapshot_every: u64,
    /// Local address this node's connections to other controllers come from; `None`: the
    /// operating system chooses.
    pub source_address: Option<std::net::IpAddr>,
}

impl MetaConfig {
    /// A configuration with default timing.
    pub fn new(
        node_id: NodeId,
        voter: bool,
        listen: SocketAddr,
        advertised: String,
        quorum: Vec<(NodeId, String)>,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            node_id,
            voter,
            listen,
            advertised,
            quorum,
            data_dir,
            controller: ControllerConfig::default(),
            raft_heartbeat: Duration::from_millis(60),
            election_timeout: (Duration::from_millis(250), Duration::from_millis(500)),
            snapshot_every: 5000,
            source_address: None,
        }
    }
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is inconsistent.
    #[error("invalid metadata quorum configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error("opening the metadata store: {0}")]
    Store(String),
    /// Raft could not start.
    #[error("starting raft: {0}")]
    Raft(String),
    /// The controller listener could not be bound.
    #[error("binding the controller listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running member of the metadata quorum.
pub struct MetaNode {
    config: MetaConfig,
    raft: Raft,
    state: StateMachineStore,
    controller: Arc<Controller>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The bound controller listener address.
    local_addr: SocketAddr,
}

impl MetaNode {
    /// Opens the store, starts Raft and the controller listener, and bootstraps or joins the
    /// quorum. Returns once the listener is bound; the quorum forms in the background.
    pub async fn start(config: MetaConfig) -> Result<Self, NodeError> {
        if config.quorum.is_empty() {
            return Err(NodeError::Config("the controller quorum is empty".into()));
        }
        if config.voter && !config.quorum.iter().any(|(id, _)| *id == config.node_id) {
            return Err(NodeError::Config(format!(
                "node {} has the controller role but is not in the controller quorum",
                config.node_id
            )));
        }
        if !config.voter && config.quorum.iter().any(|(id, _)| *id == config.node_id) {
            return Err(NodeError::Config(format!(
                "node {} is in the controller quorum but lacks the controller role",
                config.node_id
            )));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Store(e.to_string()))?;
        let (log_store, state) =
            open_store(&config.data_dir).map_err(|e| NodeError::Store(e.to_string()))?;

        let raft_config = openraft::Config {
            cluster_name: "weir-metadata".into(),
            heartbeat_interval: config.raft_heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every.min(1000),
            install_snapshot_timeout: 2000,
            // Elections start only after a won pre-vote (crate::election), never from
            // openraft's own timer.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let log_reader = log_store.clone();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::with_channels(
                Channels::new(Profile::CONTROLLER).with_source(config.source_address),
            ),
            log_store,
            state.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        let controller = Controller::new(
            config.node_id,
            raft.clone(),
            state.clone(),
            config.controller.clone(),
            Channels::new(Profile::CONTROLLER.request_timeout(Duration::from_secs(10)))
                .with_source(config.source_address),
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);

        let mut tasks = Vec::new();
        let election = Election::new(
            config.node_id,
            raft.clone(),
            log_reader,
            config.election_timeout,
            Channels::new(Election::profile(config.election_timeout))
                .with_source(config.source_address),
        );
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        if config.voter && !initialized && config.quorum.len() > 1 {
            // Before the listener answers anything: see Election::join below.
            election.withhold_votes();
        }
        let raft_service = RaftService::new(raft.clone()).with_election(Arc::clone(&election));
        let server = Server::builder()
            .max_concurrent_streams(Some(1024))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(raft_server(raft_service))
            .add_service(controller.service())
            .serve_with_incoming_shutdown(
                // TCP_NODELAY on accepted sockets (Raft messages must not wait on Nagle and
                // delayed ACKs); an accept error never ends the listener; bounded connections.
                weir_proto::listen::incoming(
                    listener,
                    "controller",
                    weir_proto::listen::MAX_CONNECTIONS,
                    weir_proto::listen::IDLE_TIMEOUT,
                ),
                {
                    let mut rx = shutdown_rx.clone();
                    async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    }
                },
            );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "controller listener failed");
            }
        }));

        if config.voter {
            let members: BTreeMap<NodeId, BasicNode> = config
                .quorum
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            if !initialized && members.len() == 1 {
                match raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(node = config.node_id, "initialized the metadata quorum")
                    }
                    Err(e) => tracing::debug!(error = %e, "quorum already initialized"),
                }
            } else if !initialized {
                // An empty store in a quorum of several: a new quorum, or this voter lost its
                // store (crate::election, "A voter that lost its metadata store").
                tasks.push(tokio::spawn(
                    Arc::clone(&election).join(members, shutdown_rx.clone()),
                ));
            }
            tasks.push(tokio::spawn(
                Arc::clone(&controller).run(shutdown_rx.clone()),
            ));
            tasks.push(tokio::spawn(election.run(shutdown_rx.clone())));
        } else {
            tasks.push(tokio::spawn(join_as_learner(
                raft.clone(),
                config.clone(),
                shutdown_rx.clone(),
            )));
        }

        Ok(Self {
            config,
            raft,
            state,
            controller,
            shutdown,
            tasks,
            local_addr,
        })
    }

    /// The Raft node.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The controller of this node.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The address the controller listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every applied change, in log order: the metadata image brokers react to.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataState>> {
        self.state.subscribe()
    }

    /// The metadata as applied locally.
    pub fn metadata(&self) -> Arc<MetadataState> {
        self.state.current()
    }

    /// A cheap, cloneable health probe for this node.
    pub fn health(&self) -> Health {
        Health {
            controller: Arc::clone(&self.controller),
        }
    }

    /// Hands leadership over if this node leads, then stops Raft and the listener.
    pub async fn shutdown(self) {
        if self.config.voter {
            hand_over_leadership(&self.raft, self.config.node_id, self.config.source_address).await;
        }
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// A client to the controller at `addr`, each request bounded at 3 s.
fn controller_client(
    addr: &str,
    source: Option<std::net::IpAddr>,
) -> Option<ControllerClient<tonic::transport::Channel>> {
    let profile = Profile::CONTROLLER.request_timeout(Duration::from_secs(3));
    weir_proto::channel::lazy(addr, profile, source)
        .ok()
        .map(ControllerClient::new)
}

/// Asks the most caught-up other voter to start an election, and waits (at most 3 s) until
/// someone else leads.
async fn hand_over_leadership(raft: &Raft, me: NodeId, source: Option<std::net::IpAddr>) {
    let (is_leader, candidate) = {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let best = m.replication.as_ref().and_then(|r| {
            r.iter()
                .filter(|(id, _)| **id != me && membership.voter_ids().any(|v| v == **id))
                .max_by_key(|(_, matched)| matched.map(|l| l.index))
                .and_then(|(id, _)| membership.get_node(id).map(|n| n.addr.clone()))
        });
        (m.state == ServerState::Leader, best)
    };
    let (true, Some(addr)) = (is_leader, candidate) else {
        return;
    };
    tracing::info!(to = %addr, "handing controller leadership over before shutdown");
    if let Some(mut client) = controller_client(&addr, source) {
        let _ = client.trigger_election(pb::TriggerElectionRequest {}).await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut metrics = raft.metrics();
    while Instant::now() < deadline {
        if metrics.borrow().current_leader.is_some_and(|l| l != me) {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await;
    }
}

/// A learner asks the quorum (any controller; they forward) to add it, until it is a member.
async fn join_as_learner(raft: Raft, config: MetaConfig, mut shutdown: watch::Receiver<bool>) {
    let mut attempt = 0usize;
    loop {
        let member = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&config.node_id)
            .is_some();
        if member {
            return;
        }
        let (_, addr) = &config.quorum[attempt % config.quorum.len().max(1)];
        attempt += 1;
        if let Some(mut client) = controller_client(addr, config.source_address) {
            let req = pb::JoinQuorumRequest {
                node_id: config.node_id,
                address: config.advertised.clone(),
            };
            match client.join_quorum(req).await {
                Ok(r) if r.get_ref().error.is_none() => {
                    tracing::info!("asked to join the metadata quorum as a learner")
                }
                Ok(r) => {
                    tracing::debug!(error = ?r.get_ref().error, "join quorum refused; retrying")
                }
                Err(e) => tracing::debug!(error = %e, "join quorum failed; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Answers whether a node has joined the quorum and caught up.
#[derive(Clone)]
pub struct Health {
    controller: Arc<Controller>,
}

impl Health {
    /// Whether the node has joined the quorum and applied the metadata up to the leader's
    /// commit: a leader is known, this node is a member, and its applied index reaches the
    /// version the leader reports after a linearizable read (waiting at most 2 s for it).
    pub async fn is_healthy(&self) -> bool {
        self.controller.caught_up(Duration::from_secs(2)).await
    }
}
