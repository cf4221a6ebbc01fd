//! `POST /v1/dev/token`: signs an identity token for any user, with the configured HS256
//! identity-provider secret, so local runs and tests need no identity provider. Routed only
//! when `auth.dev_tokens` is on; never in production.

use axum::Json;
use axum::extract::State;
use quiz_protocol::UserId;
use quiz_protocol::client::Role;
use serde::{Deserialize, Serialize};

use super::{AppState, JsonBody, now_s};
use crate::error::ApiError;

/// Lifetime of a dev token unless asked otherwise, and the longest one may ask for.
const DEFAULT_TTL_S: u64 = 3600;
const MAX_TTL_S: u64 = 7 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevTokenRequest {
    user: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct DevToken {
    token: String,
    expires_in_s: u64,
}

pub(crate) async fn token(
    State(app): State<AppState>,
    JsonBody(request): JsonBody<DevTokenRequest>,
) -> Result<Json<DevToken>, ApiError> {
    let user = UserId::parse(&request.user).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ttl_s = request.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_TTL_S).contains(&ttl_s) {
        return Err(ApiError::BadRequest(format!("ttl_s must be 1-{MAX_TTL_S}")));
    }
    let role = request.role.unwrap_or(Role::Player);
    let token = app
        .auth
        .dev_token(&user, role, now_s(), ttl_s)
        .ok_or_else(|| ApiError::Internal("dev token requested with dev tokens off".into()))?;
    Ok(Json(DevToken {
        token,
        expires_in_s: ttl_s,
    }))
}
