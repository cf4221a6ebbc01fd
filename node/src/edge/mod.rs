//! The WebSocket edge: where phones connect.
//!
//! The upgrade handler checks the session token and the connection limits before upgrading;
//! each accepted phone gets a reader and a writer task ([`conn`]). Phones of one quiz on this
//! edge share a [`room`], the one subscriber to the quiz's owner from this edge: the owner sends
//! each event once per edge and the room fans it out.

mod conn;
mod frames;
mod outbox;
mod room;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fastwebsockets::upgrade::IncomingUpgrade;
use quiz_protocol::ErrorCode;
use quiz_protocol::QuizId;
use quiz_protocol::cluster::Rejection;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::{SessionKeys, TokenError};
use crate::cluster::Owners;
use crate::config::Config;
use crate::metrics::Metrics;

pub(crate) use room::RoomHandle;

/// The state shared by every connection of this edge.
pub(crate) struct Edge {
    pub(crate) config: Arc<Config>,
    pub(crate) owners: Arc<Owners>,
    pub(crate) metrics: Metrics,
    keys: SessionKeys,
    rooms: Mutex<HashMap<QuizId, RoomHandle>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Edge {
    pub(crate) fn new(
        config: Arc<Config>,
        owners: Arc<Owners>,
        metrics: Metrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            keys: SessionKeys::new(&config.session_secret, config.session_leeway_s),
            config,
            owners,
            metrics,
            rooms: Mutex::new(HashMap::new()),
            tracker,
            shutdown,
        })
    }

    pub(crate) fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/ws", get(upgrade))
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|| async {
                http_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
            })
            .method_not_allowed_fallback(|| async {
                http_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    ErrorCode::BadRequest,
                    "the WebSocket upgrade is a GET",
                )
            })
            .with_state(self.clone())
    }

    /// The room of a quiz on this edge, subscribing to its owner if there is none yet.
    pub(crate) async fn room(self: &Arc<Self>, quiz: &QuizId) -> Result<RoomHandle, Rejection> {
        loop {
            let existing = crate::shard::lock(&self.rooms).get(quiz).cloned();
            if let Some(room) = existing {
                if room.is_open() {
                    return Ok(room);
                }
                self.drop_room(quiz, &room);
                continue;
            }
            // Two phones may race to open the same room; the loser's subscription is dropped.
            let room = room::open(self.clone(), quiz.clone()).await?;
            let mut rooms = crate::shard::lock(&self.rooms);
            let kept = rooms
                .entry(quiz.clone())
                .or_insert_with(|| room.clone())
                .clone();
            if !kept.same(&room) {
                room.close();
            }
            return Ok(kept);
        }
    }

    /// Forgets a room if it is still `room`.
    pub(crate) fn drop_room(&self, quiz: &QuizId, room: &RoomHandle) {
        let mut rooms = crate::shard::lock(&self.rooms);
        if rooms.get(quiz).is_some_and(|r| r.same(room)) {
            rooms.remove(quiz);
        }
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn upgrade(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<IncomingUpgrade, StatusCode>,
) -> Response {
    // Not an upgrade at all (no `Upgrade: websocket`, no key, another version): the JSON body
    // every refusal has, rather than fastwebsockets' empty one.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(status) => {
            edge.metrics
                .refused
                .with_label_values(&["not_websocket"])
                .inc();
            return http_error(
                status,
                ErrorCode::BadRequest,
                "not a WebSocket upgrade: send GET with Upgrade: websocket, Connection: \
                 upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            );
        }
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = query.token.or(bearer) else {
        edge.metrics.refused.with_label_values(&["token"]).inc();
        return http_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a session token is required",
        );
    };
    let session = match edge.keys.check(&token) {
        Ok(s) => s,
        Err(e) => {
            edge.metrics.refused.with_label_values(&["token"]).inc();
            let code = match e {
                TokenError::Expired => ErrorCode::TokenExpired,
                TokenError::Invalid(_) => ErrorCode::Unauthorized,
            };
            return http_error(StatusCode::UNAUTHORIZED, code, &e.to_string());
        }
    };
    let (response, socket) = match upgrade.upgrade() {
        Ok(pair) => pair,
        Err(e) => {
            return http_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &e.to_string(),
            );
        }
    };
    // A debug span: an enabled span per connection costs about 1.6 KiB of a node's memory
    // for as long as the phone stays; the few info lines of a connection name their quiz.
    let span = tracing::debug_span!("conn", %peer, quiz = %session.quiz, user = %session.user);
    let tracker = edge.tracker.clone();
    tracker.spawn(
        async move {
            match socket.await {
                Ok(ws) => conn::serve(edge, ws, session).await,
                Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
            }
        }
        .instrument(span),
    );
    response.into_response()
}

/// A JSON error response in the shape every client error has.
pub(crate) fn http_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code,
        "message": message,
        "retryable": code.retryable(),
    });
    (status, axum::Json(body)).into_response()
}
