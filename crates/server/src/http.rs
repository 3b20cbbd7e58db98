//! The HTTP endpoint: `/health` answers 200 once the node has joined the metadata quorum and
//! applied the metadata up to the leader's commit — and, on a broker, once the broker is
//! registered and unfenced — and 503 before (and whenever it has no leader).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use weir_broker::lifecycle::BrokerStatus;
use weir_meta::node::Health;

/// What /health looks at.
#[derive(Clone)]
pub struct Probe {
    /// The metadata quorum member.
    pub meta: Health,
    /// The broker's session, on nodes with the broker role.
    pub broker: Option<watch::Receiver<BrokerStatus>>,
}

async fn health(State(probe): State<Probe>) -> (StatusCode, &'static str) {
    if !probe.meta.is_healthy().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no controller leader yet, or catching up\n",
        );
    }
    let broker_ready = probe.broker.as_ref().is_none_or(|b| {
        let status = *b.borrow();
        status.registered && !status.fenced
    });
    if !broker_ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: broker not registered or fenced\n",
        );
    }
    (StatusCode::OK, "ok\n")
}

/// Binds `addr` and serves until `shutdown` fires; returns the task and the bound address.
pub async fn serve(
    addr: SocketAddr,
    probe: Probe,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .with_state(probe);
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    });
    Ok((task, bound))
}
