//! The broker's session with the controller: register at start with a fresh incarnation,
//! heartbeat every `heartbeat_interval` reporting the metadata version applied locally, and
//! register again whenever the controller no longer knows this incarnation.
//!
//! Any controller will do: one that is not the leader forwards to it. The controller keeps the
//! broker fenced after (re)registration until a heartbeat shows the broker has applied the
//! metadata up to its registration.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use weir_meta::{MetadataState, NodeId};
use weir_proto::controller::v1 as pb;
use weir_proto::controller::v1::controller_client::ControllerClient;

/// How a broker reaches the controllers.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Broker id (= node id).
    pub broker_id: NodeId,
    /// The address clients should use for this broker.
    pub advertised: String,
    /// Rack, if any.
    pub rack: Option<String>,
    /// Controller listener addresses of the quorum.
    pub controllers: Vec<String>,
    /// Heartbeat period. Default 500 ms.
    pub heartbeat_interval: Duration,
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
}

fn random_incarnation() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
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
        let incarnation = random_incarnation();
        let clients: Vec<ControllerClient<Channel>> = config
            .controllers
            .iter()
            .filter_map(|addr| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
                let channel = endpoint
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(Duration::from_secs(3))
                    .tcp_nodelay(true)
                    .connect_lazy();
                Some(ControllerClient::new(channel))
            })
            .collect();
        if clients.is_empty() {
            tracing::error!("no valid controller address; the broker cannot register");
            return;
        }
        let mut next = 0usize;
        let mut status = BrokerStatus {
            fenced: true,
            ..BrokerStatus::default()
        };
        let mut interval = tokio::time::interval(config.heartbeat_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            let mut client = clients[next % clients.len()].clone();
            let ok = if !status.registered {
                let req = pb::RegisterBrokerRequest {
                    broker_id: config.broker_id,
                    address: config.advertised.clone(),
                    rack: config.rack.clone().unwrap_or_default(),
                    incarnation,
                };
                match client.register_broker(req).await {
                    Ok(r) if r.get_ref().error.is_none() => {
                        status = BrokerStatus {
                            registered: true,
                            fenced: true,
                            epoch: r.get_ref().broker_epoch,
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
                    incarnation,
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
            };
            if !ok {
                // Try another controller next time.
                next += 1;
            }
            status_tx.send_replace(status);
        }
    });
    (task, status_rx)
}
