//! The router's HTTP API: dev tokens, question sets, quizzes, join, status and standings.
//!
//! [`RouterClient`] is a thin typed wrapper over `reqwest`: one method per endpoint, a
//! request and a response struct per endpoint, and one error type, [`ClientError`], that
//! carries what the router said (`code`, `message`, `retryable`, HTTP status, `Retry-After`).
//! It does not retry by itself; [`ClientError::retryable`] tells the caller whether it may.
//! The WebSocket side lives in [`crate::connection`]; [`JoinTicket`] is what links the two.

use std::time::Duration;

use quiz_protocol::client::Role;
use quiz_protocol::{ContentError, ErrorCode, Mode, Phase, QuestionSet, QuizId, QuizSettings};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connection::Refresh;

/// Largest error body kept in [`ClientError::Status`], so a proxy's HTML page stays short.
const MAX_ERROR_BODY: usize = 512;

/// A client of the router's HTTP API, authenticated as one user.
///
/// Cloning is cheap and shares the connection pool; [`RouterClient::with_token`] makes a
/// client for another user on the same pool (a load generator has thousands of users).
#[derive(Clone, Debug)]
pub struct RouterClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Body of `POST /v1/dev/token`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct DevTokenRequest {
    pub user: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A token from the dev issuer.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct DevToken {
    pub token: String,
    pub expires_in_s: u64,
}

/// Reply to `PUT /v1/question-sets/{id}`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct StoredQuestionSet {
    pub id: String,
    /// How many questions the set holds.
    pub questions: u32,
}

/// Body of `POST /v1/quizzes`. Only `question_set` is required.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct CreateQuiz {
    pub question_set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Question ids to use, in order; default: the whole set (or `count` of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub questions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<QuizSettings>,
}

/// Reply to `POST /v1/quizzes`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct CreatedQuiz {
    pub quiz_id: QuizId,
    pub title: String,
    pub question_count: u32,
    pub settings: QuizSettings,
}

/// Body of `POST /v1/quizzes/{id}/join`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct JoinRequest {
    pub nickname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// Reply to join: what a phone needs to open its WebSocket. Give it to
/// [`crate::QuizConnection::connect`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct JoinTicket {
    pub quiz_id: QuizId,
    pub role: Role,
    /// The nickname asked for (the quiz's owner may add a suffix; `welcome` says).
    pub nickname: String,
    /// Short-lived token bound to (user, quiz, role); appended to the URL as `?token=`.
    pub session_token: String,
    /// Edges to try, best first (usually the quiz owner's own edge).
    pub ws_urls: Vec<String>,
    pub expires_in_s: u64,
}

/// Reply to `GET /v1/quizzes/{id}`.
#[derive(Clone, PartialEq, Debug, Deserialize)]
pub struct QuizStatus {
    pub quiz_id: QuizId,
    pub title: String,
    pub mode: Mode,
    pub phase: Phase,
    pub question_count: u32,
    pub players: u32,
    /// When the quiz was created, in Unix milliseconds.
    pub created_at: i64,
}

/// Reply to `GET /v1/quizzes/{id}/standings`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct Standings {
    pub quiz_id: QuizId,
    pub players: u32,
    pub standings: Vec<Standing>,
}

/// One row of the standings.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct Standing {
    pub rank: u32,
    pub nickname: String,
    pub score: u32,
}

/// An error the router returned as `{"code","message","retryable"}`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    /// From the `Retry-After` header (seconds), on 429 and 503.
    pub retry_after: Option<Duration>,
    /// `invalid_content` only: every problem found, with the field's path.
    pub errors: Vec<ContentError>,
}

/// Why a router call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The router answered with an error body it documents.
    #[error("{} {}: {}", .0.status, .0.code, .0.message)]
    Api(Box<ApiError>),
    /// A non-success status without the documented error body (a proxy, an old router).
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer: connection refused, reset, timeout.
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// A success status whose body is not what the endpoint promises.
    #[error("unexpected response body: {0}")]
    Decode(String),
}

/// The documented error body.
#[derive(Deserialize)]
struct ErrorBody {
    code: ErrorCode,
    message: String,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    errors: Vec<ContentError>,
}

impl ClientError {
    /// The router's error code, when it sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// The HTTP status, when there was a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.status),
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Transport(e) => e.status().map(|s| s.as_u16()),
            ClientError::Decode(_) => None,
        }
    }

    /// How long the router asked to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api(e) => e.retry_after,
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Api(e) => e.retryable,
            ClientError::Status { status, .. } => *status == 429 || *status >= 500,
            ClientError::Transport(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            ClientError::Decode(_) => false,
        }
    }

    /// Builds the error for a non-success response from its status, headers and body.
    pub(crate) fn from_response(
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => ClientError::Api(Box::new(ApiError {
                status,
                retryable: b.retryable.unwrap_or_else(|| b.code.retryable()),
                code: b.code,
                message: b.message,
                retry_after,
                errors: b.errors,
            })),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let mut end = text.len().min(MAX_ERROR_BODY);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                ClientError::Status {
                    status,
                    body: text[..end].to_owned(),
                    retry_after,
                }
            }
        }
    }
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is not used by the router).
pub(crate) fn parse_retry_after(value: Option<&[u8]>) -> Option<Duration> {
    let secs: u64 = std::str::from_utf8(value?).ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

impl RouterClient {
    /// A client for the router at `base_url` (such as `http://127.0.0.1:8080`), sending
    /// `idp_token` (the identity provider's JWT) as a Bearer token.
    pub fn new(base_url: impl Into<String>, idp_token: impl Into<String>) -> Self {
        Self::with_http(reqwest::Client::new(), base_url, idp_token)
    }

    /// Like [`RouterClient::new`], on a `reqwest::Client` the caller configured and may share.
    pub fn with_http(
        http: reqwest::Client,
        base_url: impl Into<String>,
        idp_token: impl Into<String>,
    ) -> Self {
        let base = base_url.into().trim_end_matches('/').to_owned();
        Self {
            http,
            base,
            token: idp_token.into(),
        }
    }

    /// The same router and connection pool, as another user.
    pub fn with_token(&self, idp_token: impl Into<String>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token: idp_token.into(),
        }
    }

    /// The router's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Gets a token from the dev issuer (`POST /v1/dev/token`; dev setups only).
    pub async fn dev_token(base_url: &str, user: &str, role: Role) -> Result<String, ClientError> {
        let req = DevTokenRequest {
            user: user.to_owned(),
            role,
            ttl_s: None,
        };
        Ok(Self::dev_token_with(base_url, &req).await?.token)
    }

    /// A client acting as `user` with `role`, with a token from the dev issuer (dev setups
    /// only).
    pub async fn dev(base_url: &str, user: &str, role: Role) -> Result<RouterClient, ClientError> {
        let token = Self::dev_token(base_url, user, role).await?;
        Ok(RouterClient::new(base_url, token))
    }

    /// [`RouterClient::dev_token`] with every field of the request.
    pub async fn dev_token_with(
        base_url: &str,
        req: &DevTokenRequest,
    ) -> Result<DevToken, ClientError> {
        let client = RouterClient::new(base_url, "");
        let url = format!("{}/v1/dev/token", client.base);
        send(client.http.post(url).json(req)).await
    }

    /// Stores (creates or replaces) a question set: `PUT /v1/question-sets/{id}`. Content
    /// problems come back as [`ErrorCode::InvalidContent`] with [`ApiError::errors`] filled.
    pub async fn put_question_set(
        &self,
        set: &QuestionSet,
    ) -> Result<StoredQuestionSet, ClientError> {
        let url = format!("{}/v1/question-sets/{}", self.base, encode_path(&set.id));
        send(self.authed(self.http.put(url)).json(set)).await
    }

    /// Creates a quiz from a stored question set: `POST /v1/quizzes`.
    pub async fn create_quiz(&self, req: &CreateQuiz) -> Result<CreatedQuiz, ClientError> {
        let url = format!("{}/v1/quizzes", self.base);
        send(self.authed(self.http.post(url)).json(req)).await
    }

    /// Joins a quiz and gets a ticket for its WebSocket: `POST /v1/quizzes/{id}/join`.
    /// `role` defaults to player on the router.
    pub async fn join(
        &self,
        quiz: &QuizId,
        nickname: &str,
        role: Option<Role>,
    ) -> Result<JoinTicket, ClientError> {
        let url = format!("{}/v1/quizzes/{}/join", self.base, quiz);
        let body = JoinRequest {
            nickname: nickname.to_owned(),
            role,
        };
        send(self.authed(self.http.post(url)).json(&body)).await
    }

    /// A quiz's status: `GET /v1/quizzes/{id}`.
    pub async fn quiz(&self, quiz: &QuizId) -> Result<QuizStatus, ClientError> {
        let url = format!("{}/v1/quizzes/{}", self.base, quiz);
        send(self.authed(self.http.get(url))).await
    }

    /// The top `limit` of a quiz's standings: `GET /v1/quizzes/{id}/standings`.
    pub async fn standings(
        &self,
        quiz: &QuizId,
        limit: Option<u32>,
    ) -> Result<Standings, ClientError> {
        let mut url = format!("{}/v1/quizzes/{}/standings", self.base, quiz);
        if let Some(limit) = limit {
            url.push_str(&format!("?limit={limit}"));
        }
        send(self.authed(self.http.get(url))).await
    }

    /// A refresh hook for [`crate::Options::refresh`] that joins `quiz` again as this user
    /// whenever the session token has expired.
    pub fn refresher(&self, quiz: QuizId, nickname: String, role: Option<Role>) -> Refresh {
        let client = self.clone();
        Refresh::new(move || {
            let (client, quiz, nickname) = (client.clone(), quiz.clone(), nickname.clone());
            async move { client.join(&quiz, &nickname, role).await }
        })
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(&self.token)
    }
}

/// Sends a request and decodes a success body as `T`, or the error body as [`ClientError`].
async fn send<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, ClientError> {
    let resp = req.send().await.map_err(ClientError::Transport)?;
    let status = resp.status();
    let retry_after = parse_retry_after(
        resp.headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
    );
    let body = resp.bytes().await.map_err(ClientError::Transport)?;
    if !status.is_success() {
        return Err(ClientError::from_response(
            status.as_u16(),
            retry_after,
            &body,
        ));
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Percent-encodes a path segment (question set ids are slugs, but a caller may pass
/// anything).
pub(crate) fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_maps_to_api_error() {
        let body = br#"{"code":"rate_limited","message":"slow down","retryable":true}"#;
        let e = ClientError::from_response(429, Some(Duration::from_secs(3)), body);
        assert_eq!(e.code(), Some(ErrorCode::RateLimited));
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.retryable());
    }

    #[test]
    fn retryable_defaults_to_the_codes_rule() {
        let e = ClientError::from_response(503, None, br#"{"code":"unavailable","message":"x"}"#);
        assert!(e.retryable());
        let e = ClientError::from_response(404, None, br#"{"code":"not_found","message":"x"}"#);
        assert!(!e.retryable());
    }

    #[test]
    fn unknown_bodies_are_kept_short() {
        let body = "é".repeat(1000);
        let e = ClientError::from_response(502, None, body.as_bytes());
        match &e {
            ClientError::Status { status, body, .. } => {
                assert_eq!(*status, 502);
                assert!(body.len() <= MAX_ERROR_BODY);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.retryable());
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(
            parse_retry_after(Some(b" 7 ")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(Some(b"Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path("english-a1"), "english-a1");
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
    }
}
