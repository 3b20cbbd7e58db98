//! A Weir node, as a library: the wiring of its roles — the metadata quorum member (voter with
//! the controller role, learner otherwise), the broker's session with the controller and its
//! data path, and the HTTP endpoint — started by [`Node::start`] and stopped cleanly by
//! [`Node::shutdown`]. The `weir-server` binary is this plus flags and signals; tests and
//! embedders run a node in-process the same way.

pub mod config;
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_broker::lifecycle::{self, LifecycleConfig};
use weir_broker::{BrokerConfig, BrokerService, ReplicaManager};
use weir_meta::controller::ControllerConfig;
use weir_meta::node::{MetaConfig, MetaNode, NodeError};

pub use crate::config::{Args, ConfigError, Roles, ServerConfig};

/// Most concurrent gRPC streams on one broker connection: a consumer or a follower opens one
/// per partition it reads, so this bounds partitions per peer, not requests; past it the peer's
/// new streams are refused (REFUSED_STREAM) until one ends.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16_384;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metadata quorum member did not start.
    #[error("starting the metadata quorum member: {0}")]
    Meta(#[from] NodeError),
    /// A listener could not be bound.
    #[error("binding the {what} listener {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    meta: MetaNode,
    shutdown: watch::Sender<bool>,
    /// Ends the broker session first (a controlled shutdown), before anything else stops.
    lifecycle_stop: watch::Sender<bool>,
    lifecycle: Option<JoinHandle<()>>,
    data_path: Option<(JoinHandle<()>, JoinHandle<()>)>,
    http: JoinHandle<()>,
}

impl Node {
    /// Starts every role `config` names; returns once all listeners are bound, and has then
    /// written their addresses to [`LISTENERS_FILE`] in the data directory.
    ///
    /// The broker and HTTP listeners may be given port 0: the node binds a free port, and
    /// advertises the bound broker port unless `--advertised-listener` says otherwise (the
    /// file and the log tell which ports were bound). The controller listener's port is part
    /// of the quorum's configuration (`--controller-quorum`, as Kafka's
    /// `controller.quorum.voters`), so it is never chosen at start.
    pub async fn start(mut config: ServerConfig) -> Result<Self, StartError> {
        let listeners_file = config.data_dir.join(LISTENERS_FILE);
        // A file left by an earlier run must not be read as this run's.
        let _ = std::fs::remove_file(&listeners_file);
        tracing::info!(node = config.node_id, roles = ?config.roles, listen = %config.listen, data_dir = %config.data_dir.display(), "starting weir-server");
        let mut meta_config = MetaConfig::new(
            config.node_id,
            config.roles.controller,
            config.controller_listen,
            config.advertised_controller.clone(),
            config.quorum.clone(),
            config.data_dir.join("metadata"),
        );
        meta_config.controller = ControllerConfig {
            session_timeout: config.session_timeout,
            topic_defaults: config.topic_defaults.clone(),
            ..ControllerConfig::default()
        };
        meta_config.snapshot_every = config.snapshot_entries;
        meta_config.source_address = config.source_address;
        let meta = MetaNode::start(meta_config).await?;
        tracing::info!(addr = %meta.local_addr(), "controller listener up");

        // The broker listener is bound before the broker registers, so a port-0 listener
        // registers the port it got.
        let broker_listener = match config.roles.broker {
            true => Some(bind_broker(&mut config).await?),
            false => None,
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (lifecycle_stop, lifecycle_stop_rx) = watch::channel(false);
        let incarnation = lifecycle::new_incarnation();
        let broker = config.roles.broker.then(|| {
            let raft = meta.raft().clone();
            let leader_hint: lifecycle::LeaderHint = Arc::new(move || {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                let leader = m.current_leader?;
                let node = m.membership_config.membership().get_node(&leader)?;
                Some(node.addr.clone())
            });
            lifecycle::spawn(
                LifecycleConfig {
                    broker_id: config.node_id,
                    incarnation,
                    advertised: config.advertised.clone(),
                    rack: config.rack.clone(),
                    controllers: config.quorum.iter().map(|(_, a)| a.clone()).collect(),
                    heartbeat_interval: config.heartbeat,
                    // Well below the session timeout: a beat that hangs on one controller
                    // still has time to reach another (see weir_broker::lifecycle).
                    request_timeout: (config.session_timeout / 3)
                        .clamp(Duration::from_millis(100), Duration::from_secs(1)),
                    leader_hint,
                    source_address: config.source_address,
                },
                meta.subscribe(),
                lifecycle_stop_rx,
            )
        });
        let broker_addr = broker_listener.as_ref().and_then(|l| l.local_addr().ok());
        let data_path = broker_listener.map(|listener| {
            start_broker(&config, listener, &meta, incarnation, shutdown_rx.clone())
        });
        let probe = http::Probe {
            meta: meta.health(),
            broker: broker.as_ref().map(|(_, status)| status.clone()),
        };
        let (http, http_addr) = http::serve(config.http_listen, probe, shutdown_rx.clone())
            .await
            .map_err(|source| StartError::Bind {
                what: "HTTP",
                addr: config.http_listen,
                source,
            })?;
        let bound = format!(
            "broker={}\ncontroller={}\nhttp={http_addr}\n",
            broker_addr.map_or_else(String::new, |a| a.to_string()),
            meta.local_addr(),
        );
        if let Err(e) = write_atomically(&listeners_file, bound.as_bytes()) {
            tracing::warn!(file = %listeners_file.display(), error = %e, "could not record the bound listeners");
        }
        tracing::info!(broker = ?broker_addr, controller = %meta.local_addr(), http = %http_addr, "listeners bound");
        Ok(Self {
            meta,
            shutdown,
            lifecycle_stop,
            lifecycle: broker.map(|(task, _)| task),
            data_path,
            http,
        })
    }

    /// Ends the broker session with a controlled shutdown (its leaderships move to other
    /// in-sync replicas first, at most `lifecycle::CONTROLLED_SHUTDOWN`), stops accepting
    /// requests, closes every partition log cleanly, hands controller leadership over where
    /// possible, and stops Raft.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.lifecycle_stop.send(true);
        if let Some(task) = self.lifecycle {
            let bound = lifecycle::CONTROLLED_SHUTDOWN + Duration::from_secs(1);
            let _ = tokio::time::timeout(bound, task).await;
        }
        let _ = self.shutdown.send(true);
        if let Some((server, manager)) = self.data_path {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
            // The replica manager closes every log cleanly before it returns.
            let _ = tokio::time::timeout(Duration::from_secs(30), manager).await;
        }
        self.meta.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        tracing::info!("stopped");
    }
}

/// Largest HTTP/2 frame the broker listener accepts (h2's default is 16 KiB; the protocol's
/// maximum is 16 MiB - 1): 1 MiB holds a whole default-size batch.
const MAX_FRAME_SIZE: u32 = 1 << 20;

/// The file in the data directory that names the bound listeners once a node has started, one
/// `name=host:port` line each (`broker`, empty on a controller-only node; `controller`;
/// `http`): how a script or test learns the ports a node given port 0 bound.
pub const LISTENERS_FILE: &str = "listeners";

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader sees all of it
/// or nothing.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Binds the broker listener; with port 0 and no `--advertised-listener`, the advertised
/// address takes the bound port.
async fn bind_broker(config: &mut ServerConfig) -> Result<tokio::net::TcpListener, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "broker",
            addr: config.listen,
            source,
        })?;
    if config.listen.port() == 0 {
        if let (Ok(bound), Some(host)) =
            (listener.local_addr(), config.advertised.strip_suffix(":0"))
        {
            config.advertised = format!("{host}:{}", bound.port());
        }
    }
    Ok(listener)
}

/// Starts the broker's data path: the replica manager following the metadata, and the broker
/// listener serving the client and replication APIs.
fn start_broker(
    config: &ServerConfig,
    listener: tokio::net::TcpListener,
    meta: &MetaNode,
    incarnation: u64,
    shutdown: watch::Receiver<bool>,
) -> (JoinHandle<()>, JoinHandle<()>) {
    let manager = ReplicaManager::new(
        BrokerConfig {
            broker_id: config.node_id,
            logs_dir: config.data_dir.join("logs"),
            replica_lag_time_max: config.replica_lag_time_max,
            log_preallocate_bytes: config.log_preallocate_bytes,
            producer_id_expiration: config.producer_id_expiration,
            max_producers_per_partition: config.max_producers_per_partition,
            topic_defaults: config.topic_defaults.clone(),
            max_segments_per_partition: config.max_segments_per_partition,
            node_segments: weir_storage::NodeSegments::new(config.max_segments_per_node),
            controllers: config.quorum.iter().map(|(_, a)| a.clone()).collect(),
            incarnation,
            source_address: config.source_address,
            delete_delay: config.file_delete_delay,
        },
        meta.subscribe(),
        {
            let raft = meta.raft().clone();
            Arc::new(move || raft.metrics().borrow().current_leader)
        },
    );
    let service = BrokerService::new(Arc::clone(&manager));
    tracing::info!(addr = ?listener.local_addr(), advertised = %config.advertised, "broker listener up");
    let mut stop = shutdown.clone();
    // HTTP/2 flow-control windows sized for 64 KiB-1 MiB batches with several in flight:
    // at h2's default 64 KiB, each batch would stall on a window update.
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        // Let clients send a batch in one HTTP/2 DATA frame rather than sixteen-KiB pieces:
        // fewer frames, wakeups and syscalls per byte on the produce path.
        .max_frame_size(Some(MAX_FRAME_SIZE))
        // Every client connection streams: bounded per connection (a consumer or a follower
        // opens a stream per partition) and checked for liveness by HTTP/2 pings.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service.broker_server())
        .add_service(service.replication_server())
        .serve_with_incoming_shutdown(
            // An accept error (EMFILE) never ends it; at most MAX_CONNECTIONS at once; accepted
            // sockets get TCP_NODELAY (Nagle and delayed ACKs add ~40 ms to every reply larger
            // than a segment or two) and keep-alive.
            weir_proto::listen::incoming(
                listener,
                "broker",
                weir_proto::listen::MAX_CONNECTIONS,
                config.connections_max_idle,
            ),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        );
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "broker listener failed");
        }
    });
    let manager = tokio::spawn(manager.run(shutdown));
    (server, manager)
}
