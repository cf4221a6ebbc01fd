//! A shard node: the owner of some quizzes (the [`shard`]) and a WebSocket edge for phones
//! (the [`edge`]), plus its admin endpoint (`/metrics`, `/healthz`).
//!
//! [`start`] binds everything and returns a [`NodeHandle`]; the binary in `main.rs` only parses
//! configuration, installs tracing and waits for a signal. Tests start nodes in-process on port
//! 0 the same way.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod auth;
pub mod config;
mod edge;
pub mod metrics;
mod shard;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
pub use config::Config;
pub use quiz_engine::Millis;
use quiz_store::Stores;
pub use shard::Shard;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node.
pub struct NodeHandle {
    ws_addr: SocketAddr,
    admin_addr: SocketAddr,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl NodeHandle {
    /// Where phones connect; the WebSocket endpoint is `ws://{ws_addr}/v1/ws`.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.ws_addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops accepting, closes phones with 1001, flushes every quiz's writes, and waits (at most
    /// the configured grace period).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the node has stopped (after its shutdown token is cancelled).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; some tasks were still running");
        }
    }
}

/// Binds the node's listeners and starts serving. Cancelling `shutdown` stops it.
pub async fn start(
    config: Config,
    stores: Stores,
    shutdown: CancellationToken,
) -> Result<NodeHandle, StartError> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Metrics::new();
    let tracker = TaskTracker::new();
    let shard = Shard::new(
        config.clone(),
        stores,
        metrics.clone(),
        tracker.clone(),
        shutdown.clone(),
    );
    let edge = edge::Edge::new(
        config.clone(),
        shard,
        metrics.clone(),
        tracker.clone(),
        shutdown.clone(),
    );

    let ws = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    let ws_addr = local_addr(&ws, config.listen)?;
    let admin_addr = local_addr(&admin, config.admin_listen)?;

    let app = edge
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    // Frames are small and latency matters more than packet count.
    let ws = ws.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(ws, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "WebSocket listener failed");
        }
    });
    let admin_metrics = metrics.clone();
    let admin_app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(admin_metrics.render())),
        )
        .route("/healthz", get(|| async { "ok" }));
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(admin, admin_app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(node = %config.node_id, %ws_addr, %admin_addr, "node started");
    Ok(NodeHandle {
        ws_addr,
        admin_addr,
        metrics,
        shutdown,
        tracker,
        grace: Duration::from_secs(config.limits.shutdown_grace_s),
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Wall-clock milliseconds since the Unix epoch: the engine's clock.
pub(crate) fn now_ms() -> Millis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as Millis
}
