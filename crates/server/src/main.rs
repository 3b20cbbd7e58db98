//! `weir-server`: one Weir node. Wires the roles together — the metadata quorum member
//! (voter with the controller role, learner otherwise), the broker's session with the
//! controller, and the HTTP endpoint — and shuts them down cleanly on SIGTERM or Ctrl-C.

mod config;
mod http;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use weir_broker::lifecycle::{self, LifecycleConfig};
use weir_broker::{BrokerConfig, BrokerService, ReplicaManager};
use weir_meta::controller::ControllerConfig;
use weir_meta::node::{MetaConfig, MetaNode};

use crate::config::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .init();
    let config = Args::parse().validate()?;
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
        ..ControllerConfig::default()
    };
    meta_config.snapshot_every = config.snapshot_entries;
    let meta = MetaNode::start(meta_config)
        .await
        .context("starting the metadata quorum member")?;
    tracing::info!(addr = %meta.local_addr(), "controller listener up");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let broker = config.roles.broker.then(|| {
        lifecycle::spawn(
            LifecycleConfig {
                broker_id: config.node_id,
                advertised: config.advertised.clone(),
                rack: config.rack.clone(),
                controllers: config.quorum.iter().map(|(_, a)| a.clone()).collect(),
                heartbeat_interval: config.heartbeat,
            },
            meta.subscribe(),
            shutdown_rx.clone(),
        )
    });

    let data_path = match config.roles.broker {
        true => Some(start_broker(&config, &meta, shutdown_rx.clone()).await?),
        false => None,
    };

    let probe = http::Probe {
        meta: meta.health(),
        broker: broker.as_ref().map(|(_, status)| status.clone()),
    };
    let http = http::serve(config.http_listen, probe, shutdown_rx.clone())
        .await
        .with_context(|| format!("binding the HTTP listener {}", config.http_listen))?;

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    if let Some((server, manager)) = data_path {
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        // The replica manager closes every log cleanly before it returns.
        let _ = tokio::time::timeout(Duration::from_secs(30), manager).await;
    }
    if let Some((task, _)) = broker {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    meta.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the broker's data path: the replica manager following the metadata, and the broker
/// listener serving the client and replication APIs.
async fn start_broker(
    config: &config::ServerConfig,
    meta: &MetaNode,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let manager = ReplicaManager::new(
        BrokerConfig {
            broker_id: config.node_id,
            logs_dir: config.data_dir.join("logs"),
            replica_lag_time_max: config.replica_lag_time_max,
            controllers: config.quorum.iter().map(|(_, a)| a.clone()).collect(),
        },
        meta.subscribe(),
    );
    let service = BrokerService::new(Arc::clone(&manager));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the broker listener {}", config.listen))?;
    tracing::info!(addr = %config.listen, advertised = %config.advertised, "broker listener up");
    let mut stop = shutdown.clone();
    // HTTP/2 flow-control windows sized for 64 KiB-1 MiB batches with several in flight:
    // at h2's default 64 KiB, each batch would stall on a window update.
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .add_service(service.broker_server())
        .add_service(service.replication_server())
        .serve_with_incoming_shutdown(
            // Accepted sockets get TCP_NODELAY here: the builder's own setting only
            // applies to listeners tonic binds itself. Without it, Nagle and delayed ACKs
            // add ~40 ms to every reply larger than a segment or two.
            tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
                .map_err(|e| anyhow::anyhow!("broker listener: {e}"))?,
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
    Ok((server, manager))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
