//! Joining a quiz: the router's half of the Join flow. It checks the caller, the quiz and the
//! nickname, picks WebSocket URLs from the ring (the owner's own edge first), and signs a
//! session token bound to (user, quiz, role). Adding the player is the owner's job, when the
//! phone opens its WebSocket; kicks and quiz size are enforced there.
//!
//! Join attempts are limited per client address (before the token is read), per user and per
//! quiz; failed lookups (a code that is ill-formed or unknown) per address and per user, apart
//! from valid joins: that is what makes guessing quiz codes impractical while a class behind
//! one NAT address joins at once, and a pupil's typos lock out only that pupil.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use quiz_engine::nickname;
use quiz_protocol::client::Role;
use quiz_protocol::{Phase, QuizId};
use serde::{Deserialize, Serialize};

use super::quizzes::find_quiz;
use super::{App, AppState, ClientIp, JsonBody, PathId, now_s};
use crate::auth::Caller;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinRequest {
    /// Required for players; a host may leave it empty.
    #[serde(default)]
    nickname: String,
    /// `player` unless asked otherwise.
    #[serde(default)]
    role: Option<Role>,
}

#[derive(Serialize)]
pub(crate) struct Joined {
    quiz_id: QuizId,
    role: Role,
    nickname: String,
    session_token: String,
    /// Where to open the WebSocket: the owner's edge first, then fallbacks.
    ws_urls: Vec<String>,
    expires_in_s: u64,
}

/// `POST /v1/quizzes/{id}/join`.
pub(crate) async fn join(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    PathId(code): PathId,
    body: Result<JsonBody<JoinRequest>, ApiError>,
) -> Result<Json<Joined>, ApiError> {
    // The limit comes before the token is checked: bad tokens spend the budget too, and a
    // flood of them costs no signature checks.
    let outcome = match app.limits.join.acquire(&ip, Instant::now()) {
        Err(wait) => Err(app.rate_limited("join", wait)),
        Ok(()) => match (app.auth.caller(&headers).await, body) {
            (Ok(caller), Ok(JsonBody(request))) => admit(&app, ip, caller, &code, request).await,
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
    };
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.status_and_code().1.as_str(),
    };
    app.metrics.joins.with_label_values(&[label]).inc();
    outcome.map(Json)
}

async fn admit(
    app: &App,
    ip: std::net::IpAddr,
    caller: Caller,
    code: &str,
    request: JoinRequest,
) -> Result<Joined, ApiError> {
    let now = Instant::now();
    if let Err(wait) = app.limits.join_user.acquire(&caller.user, now) {
        return Err(app.rate_limited("join_user", wait));
    }
    let quiz = find_quiz(app, ip, &caller.user, code).await?;
    if let Err(wait) = app.limits.join_quiz.acquire(&quiz.id, now) {
        return Err(app.rate_limited("join_quiz", wait));
    }
    if quiz.progress.phase == Phase::Ended {
        return Err(ApiError::QuizEnded);
    }
    let role = request.role.unwrap_or(Role::Player);
    let nickname = match role {
        Role::Host => {
            if caller.role != Role::Host || caller.user != quiz.host {
                return Err(ApiError::Forbidden(
                    "only the quiz's creator may host it".into(),
                ));
            }
            if request.nickname.trim().is_empty() {
                String::new()
            } else {
                clean(&request.nickname)?
            }
        }
        Role::Player => clean(&request.nickname)?,
    };
    let ws_urls = app.placement().ws_urls(&quiz.id);
    if ws_urls.is_empty() {
        return Err(ApiError::NoNodeServing);
    }
    let session_token =
        app.auth
            .session_token(&caller.user, quiz.id.as_str(), role, &nickname, now_s())?;
    tracing::debug!(quiz = %quiz.id, user = %caller.user, ?role, "join admitted");
    Ok(Joined {
        quiz_id: quiz.id,
        role,
        nickname,
        session_token,
        ws_urls,
        expires_in_s: app.auth.session_ttl_s(),
    })
}

fn clean(nickname: &str) -> Result<String, ApiError> {
    nickname::clean(nickname).map_err(|reject| ApiError::Nickname {
        code: reject.code,
        message: reject.message,
    })
}
