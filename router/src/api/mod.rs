//! The public HTTP API: the routes, the state they share, the middleware that times and counts
//! every request, and extractors whose rejections are [`ApiError`]s (so a malformed body or
//! path gets the same JSON error shape as everything else).
//!
//! - [`content`]: question sets (hosts only).
//! - [`quizzes`]: create a quiz, read it, its final standings.
//! - [`join`]: join a quiz: check, place on the ring, sign a session token.
//! - [`dev`]: the dev token issuer, routed only when enabled.
//!
//! [`cluster_ring`] and [`healthz`] are also served on the admin listener.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query,
    Request, State,
};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use quiz_protocol::{QuizId, UserId};
use quiz_store::Stores;
use serde::de::DeserializeOwned;

use crate::auth::Auth;
use crate::config::Config;
use crate::error::ApiError;
use crate::limit::{RateLimiter, client_key, retry_after_secs};
use crate::membership::{CurrentRing, Placement};
use crate::metrics::{Metrics, status_class};

pub(crate) mod content;
pub(crate) mod dev;
pub(crate) mod join;
mod leagues;
pub(crate) mod quizzes;

/// What every handler shares.
pub(crate) type AppState = Arc<App>;

pub(crate) struct App {
    pub(crate) auth: Auth,
    pub(crate) stores: Stores,
    /// The ring in use: fixed, or kept current by the membership tasks.
    ring: CurrentRing,
    /// Whether the ring follows the leases (`[cluster]`) rather than the config's `nodes`.
    dynamic_membership: bool,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    trust_forwarded_for: bool,
    max_body_bytes: usize,
    request_timeout: Duration,
    /// Quizzes whose standings are being repaired, each behind its own lock: readers of one
    /// quiz wait for a single rebuild instead of each running theirs.
    pub(crate) repairs: std::sync::Mutex<HashMap<QuizId, Arc<tokio::sync::Mutex<()>>>>,
}

/// The rate limiters.
pub(crate) struct Limits {
    /// Join attempts per client address, per user and per quiz.
    pub(crate) join: RateLimiter<IpAddr>,
    pub(crate) join_user: RateLimiter<UserId>,
    pub(crate) join_quiz: RateLimiter<QuizId>,
    /// Lookups of quiz codes that do not exist, per client address and per user.
    pub(crate) failed_lookup: RateLimiter<IpAddr>,
    pub(crate) failed_lookup_user: RateLimiter<UserId>,
    /// Quiz creations per user.
    pub(crate) create_quiz: RateLimiter<UserId>,
}

impl App {
    pub(crate) fn new(
        config: &Config,
        auth: Auth,
        stores: Stores,
        metrics: Metrics,
        ring: CurrentRing,
    ) -> App {
        let l = &config.limits;
        App {
            auth,
            stores,
            ring,
            dynamic_membership: config.cluster.is_some(),
            limits: Limits {
                join: RateLimiter::new(
                    l.joins_per_ip_per_minute,
                    l.join_burst,
                    l.max_tracked_clients,
                ),
                join_user: RateLimiter::new(
                    l.joins_per_user_per_minute,
                    l.join_user_burst,
                    l.max_tracked_clients,
                ),
                join_quiz: RateLimiter::new(
                    l.joins_per_quiz_per_minute,
                    l.join_quiz_burst,
                    l.max_tracked_clients,
                ),
                failed_lookup: RateLimiter::new(
                    l.failed_joins_per_ip_per_minute,
                    l.failed_join_burst,
                    l.max_tracked_clients,
                ),
                failed_lookup_user: RateLimiter::new(
                    l.failed_joins_per_user_per_minute,
                    l.failed_join_user_burst,
                    l.max_tracked_clients,
                ),
                create_quiz: RateLimiter::new(
                    l.quiz_creations_per_user_per_minute,
                    l.quiz_creation_burst,
                    l.max_tracked_clients,
                ),
            },
            metrics,
            trust_forwarded_for: config.trust_forwarded_for,
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            repairs: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Counts a refusal by the limiter named `limit` and builds its error.
    pub(crate) fn rate_limited(&self, limit: &str, wait: Duration) -> ApiError {
        self.metrics.rate_limited.with_label_values(&[limit]).inc();
        ApiError::RateLimited {
            retry_after_s: retry_after_secs(wait),
        }
    }

    /// The ring in use now. A clone of the current epoch's placement: the watch is not held.
    pub(crate) fn placement(&self) -> Arc<Placement> {
        Arc::clone(&self.ring.borrow())
    }
}

/// The public API's routes.
pub(crate) fn routes(app: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/question-sets", get(content::list))
        .route(
            "/v1/question-sets/{id}",
            put(content::put).get(content::get),
        )
        .route("/v1/quizzes", post(quizzes::create))
        .route("/v1/quizzes/{id}", get(quizzes::info))
        .route("/v1/quizzes/{id}/standings", get(quizzes::standings))
        .route("/v1/quizzes/{id}/join", post(join::join))
        .route("/v1/leagues/weekly/{week}", get(leagues::weekly))
        .route("/v1/leagues/all-time", get(leagues::all_time));
    // Absent, not refused, when disabled: a production router has no such route at all.
    if app.auth.dev_tokens() {
        router = router.route("/v1/dev/token", post(dev::token));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .with_state(app)
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /v1/cluster/ring` (admin listener): the ring in use, for operators and tests:
/// `{"mode": "static"|"dynamic", "epoch", "updated_at", "members": [{"node", "weight",
/// "ws_url", "cluster_addr"}]}`. Epoch 0 and no members before the first ring is published;
/// a fixed ring has epoch 1, no `updated_at`, and empty cluster addresses. With
/// `?quiz=CODE`, also `"quiz": {"quiz", "nodes"}`: the quiz's owner first, then its fallbacks.
pub(crate) async fn cluster_ring(
    State(app): State<AppState>,
    Query(query): Query<RingQuery>,
) -> Result<Response, ApiError> {
    let quiz = match query.quiz.as_deref() {
        Some(code) => {
            Some(QuizId::parse(code).map_err(|e| ApiError::BadRequest(format!("quiz: {e}")))?)
        }
        None => None,
    };
    let placement = app.placement();
    Ok(Json(placement.view(app.dynamic_membership, quiz)).into_response())
}

#[derive(serde::Deserialize)]
pub(crate) struct RingQuery {
    quiz: Option<String>,
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Bounds every request's time, and counts and times it by route template.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = match tokio::time::timeout(app.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!("{route} timed out")).into_response(),
    };
    let status = status_class(response.status().as_u16());
    let m = &app.metrics;
    m.http_requests.with_label_values(&[&route, status]).inc();
    m.http_latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A JSON body; malformed → 400, too large → 413, wrong content type → 415.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(r) => Err(body_rejection(r.status(), r.body_text(), state)),
        }
    }
}

/// A UTF-8 text body, with the same rejections as [`JsonBody`].
pub(crate) struct TextBody(pub(crate) String);

impl FromRequest<AppState> for TextBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        match String::from_request(request, state).await {
            Ok(text) => Ok(TextBody(text)),
            Err(r) => Err(body_rejection(r.status(), r.body_text(), state)),
        }
    }
}

fn body_rejection(status: StatusCode, text: String, state: &AppState) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(state.max_body_bytes),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        _ => ApiError::BadRequest(text),
    }
}

/// The one `{id}` segment of a path.
pub(crate) struct PathId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::BadRequest(r.body_text()))?;
        Ok(PathId(id))
    }
}

/// A query string; malformed → 400.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::BadRequest(r.body_text()))?;
        Ok(QueryParams(q))
    }
}

/// The address a request is rate-limited by (see [`client_key`]).
pub(crate) struct ClientIp(pub(crate) IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::Internal("served without connect info".into()))?;
        Ok(ClientIp(client_key(
            peer,
            &parts.headers,
            state.trust_forwarded_for,
        )))
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Wall-clock seconds since the Unix epoch (JWT times).
pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
