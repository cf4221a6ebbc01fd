//! The router: the cluster's front door over HTTP. It authenticates callers (identity-provider
//! JWTs), imports question sets, creates quizzes, and answers joins with a session token and
//! the WebSocket URLs of the quiz's nodes, taken from the hash ring
//! ([`quiz_protocol::ring`]). It holds no quiz state: the store has the quizzes, the nodes run
//! them. With `[cluster]` configured it also keeps the ring: it follows the nodes' leases,
//! agrees on each ring epoch with the other routers through the store, and pushes it to the
//! nodes over QUIC.
//!
//! - [`config`]: the config file, its defaults and its validation.
//! - `api`: the public HTTP API; `auth`: tokens; `limit`: rate limits in bounded memory;
//!   `metrics`: Prometheus metrics, served with `/healthz` and `/v1/cluster/ring` on a
//!   separate admin listener.
//! - `membership`: the ring in use, fixed or from the leases, and its push to the nodes.
//!
//! Embedding: [`start`] binds both listeners and returns a [`RouterHandle`]; [`run`] also
//! waits until the shutdown token is cancelled and requests in flight are done.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use quiz_store::Stores;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod api;
mod auth;
pub mod config;
mod error;
mod jwks;
mod limit;
mod membership;
mod metrics;

pub use auth::KeyError;
pub use config::{
    AuthConfig, ClusterConfig, Config, ConfigError, LimitsConfig, NodeConfig, SessionConfig,
};

use api::{App, AppState};
use metrics::Metrics;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The cluster certificates, or the QUIC endpoint of dynamic membership.
    #[error("cluster: {0}")]
    Cluster(#[from] quiz_cluster::ClusterError),
}

/// A running router. Dropping it leaves the router running until the token passed to
/// [`start`] is cancelled.
#[derive(Debug)]
pub struct RouterHandle {
    http_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RouterHandle {
    /// Where the public API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where `/metrics`, `/healthz` and `/v1/cluster/ring` listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Stops accepting, lets requests in flight finish, and returns when both listeners are
    /// closed.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
    }

    /// Returns once the router has stopped (after the shutdown token was cancelled).
    pub async fn wait(self) {
        self.tasks.wait().await;
    }
}

/// Sets the leagues to what the answer log gives, every `every` (the first time at once), for
/// the quizzes of the last `days` days.
async fn audit_leagues(stores: Stores, every: Duration, days: u32, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let since = api::now_ms() - i64::from(days) * 86_400_000;
        let started = std::time::Instant::now();
        match stores.repair_leagues(since).await {
            Ok(quizzes) => tracing::debug!(
                quizzes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "leagues audited against the answer log"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "auditing the leagues failed; trying again at the next interval")
            }
        }
    }
}

/// Validates `config`, binds both listeners (and, with `[cluster]`, the QUIC endpoint) and
/// starts serving. Cancelling `shutdown` (or calling [`RouterHandle::shutdown`]) stops it
/// gracefully. With `[cluster]`, the ring already in the store is in use when this returns.
pub async fn start(
    config: Config,
    stores: Stores,
    shutdown: CancellationToken,
) -> Result<RouterHandle, StartError> {
    config.validate()?;
    let auth = auth::Auth::new(&config.auth, &config.session)?;
    let metrics = Metrics::new()?;

    let http = bind(config.http_addr).await?;
    let admin = bind(config.admin_addr).await?;
    let http_addr = local_addr(&http, config.http_addr)?;
    let admin_addr = local_addr(&admin, config.admin_addr)?;

    let (ring, dynamic) = match &config.cluster {
        None => (membership::fixed(&config, &metrics.ring), None),
        Some(cluster) => {
            let (dynamic, ring) = membership::Dynamic::prepare(
                cluster,
                config.vnodes_per_weight,
                stores.membership.clone(),
                metrics.ring.clone(),
            )
            .await?;
            (ring, Some(dynamic))
        }
    };
    let app: AppState = Arc::new(App::new(&config, auth, stores, metrics, ring));

    let shutdown = shutdown.child_token();
    let tasks = TaskTracker::new();
    if let Some(dynamic) = dynamic {
        dynamic.spawn(&tasks, shutdown.clone());
    }
    if config.league_audit_interval_s > 0 {
        tasks.spawn(audit_leagues(
            app.stores.clone(),
            Duration::from_secs(config.league_audit_interval_s),
            config.league_audit_days,
            shutdown.clone(),
        ));
    }

    let public = api::routes(app.clone());
    let tls = config.listener.tls().map_err(ConfigError::Tls)?;
    tasks.spawn(quiz_net::serve(
        http,
        public,
        config.listener.limits(),
        app.metrics.listener.clone(),
        tls,
        shutdown.clone(),
    ));

    let admin_routes = admin_routes(app);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(admin, admin_routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tasks.close();
    let membership = match &config.cluster {
        None => "static",
        Some(_) => "dynamic",
    };
    tracing::info!(%http_addr, %admin_addr, membership, nodes = config.nodes.len(), "router serving");
    Ok(RouterHandle {
        http_addr,
        admin_addr,
        shutdown,
        tasks,
    })
}

/// [`start`], then wait until `shutdown` is cancelled and the listeners have closed.
pub async fn run(
    config: Config,
    stores: Stores,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    start(config, stores, shutdown).await?.wait().await;
    Ok(())
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the store at {url}: {source}")]
    Store {
        url: String,
        source: quiz_store::StoreError,
    },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What the `quiz-router` binary does: validate the config, open the stores, serve until
/// `stop` resolves, then wait for requests in flight (up to the configured grace period).
pub async fn serve(config: Config, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    config.validate()?;
    let stores = Stores::open(&config.store)
        .await
        .map_err(|source| ServeError::Store {
            url: config.store.database_url.clone(),
            source,
        })?;
    let grace = std::time::Duration::from_millis(config.shutdown_grace_ms);
    let shutdown = CancellationToken::new();
    let router = start(config, stores, shutdown.clone()).await?;
    tracing::info!(http = %router.http_addr(), admin = %router.admin_addr(), "quiz-router up");
    stop.await;
    tracing::info!("shutting down");
    shutdown.cancel();
    if tokio::time::timeout(grace, router.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "requests still in flight after the grace period; exiting"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// The admin listener: metrics, health and the ring in use, for the operator's network only.
fn admin_routes(app: AppState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(api::healthz))
        .route("/v1/cluster/ring", get(api::cluster_ring))
        .with_state(app)
}

async fn render_metrics(State(app): State<AppState>) -> Response {
    match app.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
