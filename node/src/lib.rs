//! A shard node: the owner of some quizzes (the [`shard`]) and a WebSocket edge for phones
//! (the [`edge`]), plus its admin endpoint (`/metrics`, `/healthz`).
//!
//! [`start`] binds everything and returns a [`NodeHandle`]; the binary in `main.rs` only parses
//! configuration, installs tracing and waits for a signal. Tests start nodes in-process on port
//! 0 the same way.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod auth;
mod cluster;
pub mod config;
mod edge;
mod event;
pub mod failpoints;
mod lease;
pub mod metrics;
mod placement;
mod shard;
#[cfg(test)]
mod sim;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
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
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A running node.
pub struct NodeHandle {
    crashed: Arc<std::sync::atomic::AtomicBool>,
    ws_addr: SocketAddr,
    /// `wss` when the phones' port serves TLS.
    ws_scheme: &'static str,
    admin_addr: SocketAddr,
    cluster_addr: Option<SocketAddr>,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl NodeHandle {
    /// Where phones connect; the WebSocket endpoint is `ws://{ws_addr}/v1/ws` (`wss://` with TLS).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn ws_url(&self) -> String {
        format!("{}://{}/v1/ws", self.ws_scheme, self.ws_addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where peers reach this node over QUIC, when it is in a cluster.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
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

    /// Stops the node as a crash would look to the rest of the cluster: its lease is not
    /// released, so its quizzes move only once the lease expires. (In-process tests; the
    /// multi-process ones SIGKILL a real process.)
    pub async fn crash(self) {
        self.crashed
            .store(true, std::sync::atomic::Ordering::Release);
        self.shutdown().await;
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

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("opening the store at {url}: {source}")]
    Store {
        url: String,
        source: quiz_store::StoreError,
    },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What the `quiz-node` binary does: validate the config, open the stores, serve until
/// `stop` resolves, then shut down gracefully.
pub async fn serve(config: Config, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    config.validate()?;
    let stores = Stores::open(&config.store)
        .await
        .map_err(|source| ServeError::Store {
            url: config.store.database_url.clone(),
            source,
        })?;
    let node = start(config, stores, CancellationToken::new()).await?;
    stop.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
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
    let me = quiz_protocol::NodeId(config.node_id.clone());
    let placement = match &config.cluster {
        Some(_) => placement::Placement::clustered(me),
        None => placement::Placement::single(me),
    };
    let shard = Shard::new(
        config.clone(),
        placement.clone(),
        stores.clone(),
        metrics.clone(),
        tracker.clone(),
        shutdown.clone(),
    );
    let (m, t, s) = (metrics.clone(), tracker.clone(), shutdown.clone());
    let owners = match &config.cluster {
        Some(c) => cluster::Owners::clustered(c, placement, shard.clone(), config.clone(), m, t, s)
            .map_err(StartError::Cluster)?,
        None => cluster::Owners::single(placement, shard.clone(), config.clone(), m, t, s),
    };
    let edge = edge::Edge::new(
        config.clone(),
        owners.clone(),
        metrics.clone(),
        tracker.clone(),
        shutdown.clone(),
    );

    let ws = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    let ws_addr = local_addr(&ws, config.listen)?;
    let admin_addr = local_addr(&admin, config.admin_listen)?;
    let cluster_addr = owners.cluster_addr();
    if let Some(c) = &config.cluster {
        let ws_url = c
            .advertise_ws_url
            .clone()
            .unwrap_or_else(|| format!("{}://{ws_addr}/v1/ws", config.ws_scheme()));
        tracker.spawn(owners.clone().serve_peers());
        tracker.spawn(owners.clone().run_membership(stores, ws_url));
    }

    let tls = config
        .listener
        .tls()
        .map_err(|e| StartError::Config(config::ConfigError(e)))?;
    tracker.spawn(quiz_net::serve(
        ws,
        edge.router(),
        config.listener.limits(),
        metrics.listener.clone(),
        tls,
        shutdown.clone(),
    ));
    let admin_metrics = metrics.clone();
    let control = Router::new()
        .route(
            "/admin/quizzes/{id}/rebuild-leaderboard",
            post(rebuild_leaderboard),
        )
        .route("/admin/drain", post(drain));
    let control = if failpoints::armable() {
        tracing::warn!(
            "crash points can be armed on the admin port ({})",
            failpoints::ADMIN_ENV
        );
        control.route("/admin/failpoints/{name}", post(arm_failpoint))
    } else {
        control
    };
    let token: Arc<str> = config.admin_token.as_str().into();
    let control = control.layer(axum::middleware::from_fn(move |request, next| {
        admin_only(token.clone(), request, next)
    }));
    let admin_app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(admin_metrics.render())),
        )
        .route("/healthz", get(|| async { "ok" }))
        .merge(control)
        .with_state(shard.clone());
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(admin, admin_app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    // A restarted node picks its live quizzes up at once, so that their deadlines and
    // auto-advance run even before any phone reconnects.
    tracker.spawn(async move {
        match shard.load_live().await {
            Ok(n) if n > 0 => tracing::info!(quizzes = n, "live quizzes loaded"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not list live quizzes"),
        }
    });
    tracing::info!(node = %config.node_id, %ws_addr, %admin_addr, "node started");
    Ok(NodeHandle {
        crashed: owners.crashed.clone(),
        ws_addr,
        ws_scheme: config.ws_scheme(),
        admin_addr,
        cluster_addr,
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

/// Lets a request to a control route through only with `Authorization: Bearer <admin_token>`;
/// with no token configured, control routes are off.
async fn admin_only(
    token: Arc<str>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use quiz_protocol::ErrorCode;
    if token.is_empty() {
        return edge::http_error(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "control routes are off: set admin_token in the node's config",
        );
    }
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !same_secret(given.as_bytes(), token.as_bytes()) {
        return edge::http_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "control routes need Authorization: Bearer <admin_token>",
        );
    }
    next.run(request).await
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /admin/quizzes/{id}/rebuild-leaderboard` on the admin port: rebuilds the quiz's
/// standings in the leaderboard store from its answer log.
async fn rebuild_leaderboard(
    axum::extract::State(shard): axum::extract::State<Shard>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use quiz_protocol::ErrorCode;
    let Ok(quiz) = quiz_protocol::QuizId::parse(&id) else {
        return edge::http_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "not a quiz code",
        );
    };
    match shard.rebuild_leaderboard(&quiz).await {
        Ok(()) => {
            axum::Json(serde_json::json!({ "quiz_id": quiz, "rebuilt": true })).into_response()
        }
        Err(r) => {
            let status = match r.code {
                ErrorCode::UnknownQuiz => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            edge::http_error(status, r.code, &r.message)
        }
    }
}

/// `POST /admin/drain` on the admin port: the node leaves the ring (its quizzes move to other
/// nodes) but keeps serving phones as an edge.
async fn drain(axum::extract::State(shard): axum::extract::State<Shard>) -> &'static str {
    shard.drain();
    "draining"
}

/// `POST /admin/failpoints/{name}` (only on a node that allows it, see [`failpoints`]): arms
/// a crash point with the action in the body.
async fn arm_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
    actions: String,
) -> (axum::http::StatusCode, String) {
    match failpoints::arm(&name, actions.trim()) {
        Ok(()) => (
            axum::http::StatusCode::OK,
            format!("{name} armed: {actions}"),
        ),
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e),
    }
}

/// Wall-clock milliseconds since the Unix epoch: the engine's clock. (In the simulation, the
/// thread's simulated clock: see `sim`.)
pub(crate) fn now_ms() -> Millis {
    #[cfg(test)]
    if let Some(ms) = sim::clock::now_ms() {
        return ms;
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_millis() as Millis
}
