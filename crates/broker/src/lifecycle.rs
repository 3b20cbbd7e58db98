//! The broker's session with the controller: register at start with a fresh incarnation,
//! heartbeat every `heartbeat_interval` reporting the metadata version applied locally, and
//! register again whenever the controller no longer knows this incarnation.
//!
//! Requests go to the active controller when this node knows it (`leader_hint`, from its own
//! view of the metadata quorum), else to the controllers in turn (one that is not the leader
//! forwards to it). Each attempt is bounded by `request_timeout`, well below the controller's
//! session timeout (3 s by default), and a failed attempt moves on to the next controller at
//! once, within the same beat: one unreachable or paused controller must not cost a healthy
//! broker its session. (Kafka likewise heartbeats the active controller with a request timeout
//! below the session timeout.)
//!
//! The controller keeps the broker fenced after (re)registration until a heartbeat shows the
//! broker has applied the metadata up to its registration.
//!
//! On `shutdown` the session ends with a controlled shutdown (Kafka's): heartbeats stop, the
//! broker asks the controller to fence it now, and waits (at most [`CONTROLLED_SHUTDOWN`]) until
//! its local metadata shows it leads nothing — its leaderships moved to other in-sync replicas
//! — so the node stops its listener only after clients have somewhere else to go. The caller
//! stops the data path after this task ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;
use weir_meta::{MetadataState, NodeId};
use weir_proto::channel::{Channels, Profile};
use weir_proto::controller::v1 as pb;
use weir_proto::controller::v1::controller_client::ControllerClient;

/// The longest a controlled shutdown waits for the controller and for leaderships to move.
pub const CONTROLLED_SHUTDOWN: Duration = Duration::from_secs(5);

/// Tells the controller address of the quorum's current leader, as this node knows it.
pub type LeaderHint = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How a broker reaches the controllers.
#[derive(Clone)]
pub struct LifecycleConfig {
    /// Broker id (= node id).
    pub broker_id: NodeId,
    /// This process's incarnation ([`new_incarnation`]), registered with the controller.
    pub incarnation: u64,
    /// The address clients should use for this broker.
    pub advertised: String,
    /// Rack, if any.
    pub rack: Option<String>,
    /// Controller listener addresses of the quorum.
    pub controllers: Vec<String>,
    /// Heartbeat period. Default 500 ms.
    pub heartbeat_interval: Duration,
    /// Bound on one registration or heartbeat attempt. Default 1 s: with the default 3 s
    /// session timeout a beat can fail over to another controller twice before the session
    /// is in danger.
    pub request_timeout: Duration,
    /// The active controller's address, when this node knows it.
    pub leader_hint: LeaderHint,
    /// Local address the connections to controllers come from; `None`: the OS chooses.
    pub source_address: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for LifecycleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleConfig")
            .field("broker_id", &self.broker_id)
            .field("incarnation", &self.incarnation)
            .field("advertised", &self.advertised)
            .field("controllers", &self.controllers)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// What the broker knows of its own standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStatus {
    /// Registered with the current incarnation.
    pub registered: bool,
    /// Fenced by the controller (must not lead or count in an ISR).
    pub fenced: bool,
    /// Broker epoch of the registration.
    pub epoch: u64,
    /// This process's incarnation.
    pub incarnation: u64,
}

/// A fresh random incarnation for this process: it changes at every start, so the controller
/// tells a restarted broker (which lost its in-memory state) from the one it knew.
pub fn new_incarnation() -> u64 {
    weir_common::random_u64()
}

/// Runs the session until `shutdown`; publishes the broker's status on the returned watch.
pub fn spawn(
    config: LifecycleConfig,
    metadata: watch::Receiver<Arc<MetadataState>>,
    mut shutdown: watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<BrokerStatus>) {
    let (status_tx, status_rx) = watch::channel(BrokerStatus {
        fenced: true,
        ..BrokerStatus::default()
    });
    let task = tokio::spawn(async move {
        let incarnation = config.incarnation;
        let channels = Channels::new(Profile::CONTROLLER).with_source(config.source_address);
        let client_for = |addr: &str| -> Option<ControllerClient<Channel>> {
            channels.get(addr).ok().map(ControllerClient::new)
        };
        if config.controllers.is_empty() {
            tracing::error!("no controller address; the broker cannot register");
            return;
        }
        // The controller (index) that answered last: tried first after the known leader.
        let mut preferred = 0usize;
        let mut status = BrokerStatus {
            fenced: true,
            incarnation,
            ..BrokerStatus::default()
        };
        let mut interval = tokio::time::interval(config.heartbeat_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => {
                    if status.registered {
                        controlled_shutdown(&config, &metadata, &client_for).await;
                    }
                    return;
                }
            }
            for (index, addr) in attempt_order(&config, preferred) {
                let Some(client) = client_for(&addr) else {
                    continue;
                };
                let beat = beat(&config, &metadata, client, &mut status);
                match tokio::time::timeout(config.request_timeout, beat).await {
                    Ok(true) => {
                        preferred = index.unwrap_or(preferred);
                        break;
                    }
                    Ok(false) => {}
                    Err(_) => {
                        tracing::debug!(controller = %addr, "controller did not answer in time")
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            status_tx.send_replace(status);
        }
    });
    (task, status_rx)
}

/// Where one beat's attempts go: the active controller first when this node knows it, then
/// every controller once, starting with `preferred` (the last one that answered), each with
/// its index in the controller list.
fn attempt_order(config: &LifecycleConfig, preferred: usize) -> Vec<(Option<usize>, String)> {
    let n = config.controllers.len();
    let hint = (config.leader_hint)().map(|addr| (None, addr));
    let each = (0..n).map(|k| {
        let i = (preferred + k) % n;
        (Some(i), config.controllers[i].clone())
    });
    hint.into_iter().chain(each).collect()
}

/// Asks the controller to fence this broker (its leaderships move), then waits until the local
/// metadata shows it leads nothing; bounded by [`CONTROLLED_SHUTDOWN`] in all. Failures are
/// logged: the broker then stops anyway and the controller fences it when its session expires.
async fn controlled_shutdown(
    config: &LifecycleConfig,
    metadata: &watch::Receiver<Arc<MetadataState>>,
    client_for: &impl Fn(&str) -> Option<ControllerClient<Channel>>,
) {
    let deadline = tokio::time::Instant::now() + CONTROLLED_SHUTDOWN;
    let me = config.broker_id;
    let mut asked = false;
    for (_, addr) in attempt_order(config, 0) {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let Some(mut client) = client_for(&addr) else {
            continue;
        };
        let req = pb::ControlledShutdownRequest {
            broker_id: me,
            incarnation: config.incarnation,
        };
        match tokio::time::timeout(config.request_timeout, client.controlled_shutdown(req)).await {
            Ok(Ok(r)) if r.get_ref().error.is_none() => {
                asked = true;
                break;
            }
            Ok(Ok(r)) => {
                tracing::debug!(error = ?r.get_ref().error, "controlled shutdown refused")
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "controlled shutdown failed"),
            Err(_) => tracing::debug!(controller = %addr, "controller did not answer in time"),
        }
    }
    if !asked {
        tracing::warn!("controlled shutdown: no controller answered; stopping without it");
        return;
    }
    let leads_nothing = |state: &MetadataState| {
        !state
            .topics
            .values()
            .any(|t| t.partitions.iter().any(|p| p.leader == Some(me)))
    };
    let mut metadata = metadata.clone();
    let moved = tokio::time::timeout_at(deadline, metadata.wait_for(|s| leads_nothing(s))).await;
    match moved {
        Ok(Ok(_)) => tracing::info!("controlled shutdown: leaderships moved; stopping"),
        _ => tracing::warn!("controlled shutdown: leaderships did not all move in time; stopping"),
    }
}

/// One registration (while not registered) or heartbeat through `client`; updates `status`
/// and says whether the controller answered.
async fn beat(
    config: &LifecycleConfig,
    metadata: &watch::Receiver<Arc<MetadataState>>,
    mut client: ControllerClient<Channel>,
    status: &mut BrokerStatus,
) -> bool {
    if !status.registered {
        let req = pb::RegisterBrokerRequest {
            broker_id: config.broker_id,
            address: config.advertised.clone(),
            rack: config.rack.clone().unwrap_or_default(),
            incarnation: config.incarnation,
        };
        match client.register_broker(req).await {
            Ok(r) if r.get_ref().error.is_none() => {
                *status = BrokerStatus {
                    registered: true,
                    fenced: true,
                    epoch: r.get_ref().broker_epoch,
                    incarnation: config.incarnation,
                };
                tracing::info!(
                    broker = config.broker_id,
                    epoch = status.epoch,
                    "registered with the controller"
                );
                true
            }
            Ok(r) => {
                tracing::debug!(error = ?r.get_ref().error, "registration refused; retrying");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "registration failed; retrying");
                false
            }
        }
    } else {
        let version = metadata.borrow().version;
        let req = pb::BrokerHeartbeatRequest {
            broker_id: config.broker_id,
            incarnation: config.incarnation,
            metadata_version: version,
        };
        match client.broker_heartbeat(req).await {
            Ok(r) if r.get_ref().error.is_none() => {
                let r = r.into_inner();
                if r.should_register {
                    tracing::info!("controller asked the broker to register again");
                    status.registered = false;
                }
                status.fenced = r.fenced;
                true
            }
            Ok(r) => {
                tracing::debug!(error = ?r.get_ref().error, "heartbeat refused");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                false
            }
        }
    }
}
