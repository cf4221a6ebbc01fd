//! The HTTP API's error type. A handler returns [`ApiError`]; the client gets
//! `{"code", "message", "retryable"}` (plus `errors` for content problems) with a fitting
//! status, and the log gets the detail, which never reaches the client for server faults.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quiz_protocol::{ContentError, ErrorCode};
use quiz_store::StoreError;
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("token expired")]
    TokenExpired,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body over {0} bytes")]
    PayloadTooLarge(usize),
    #[error("no quiz with this code")]
    UnknownQuiz,
    #[error("the quiz has ended")]
    QuizEnded,
    #[error("conflict: {0}")]
    Conflict(String),
    /// Problems with submitted content, each naming its field.
    #[error("invalid content: {0:?}")]
    InvalidContent(Vec<ContentError>),
    /// A nickname refused by the nickname rules.
    #[error("{code}: {message}")]
    Nickname { code: ErrorCode, message: String },
    #[error("rate limited; retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// A fault the client cannot fix but may retry: the detail is logged, not sent.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The ring has no node to place a quiz on (none has a live lease, or all are draining).
    /// Retryable: nodes come back or join.
    #[error("no node in the ring")]
    NoNodeServing,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A bug or an impossible state: the detail is logged, not sent.
    #[error("internal: {0}")]
    Internal(String),
}

/// The body of every error response.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
    retryable: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ContentError],
}

impl ApiError {
    /// The status and wire code of this error.
    pub(crate) fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        use ApiError::*;
        match self {
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            TokenExpired => (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired),
            Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::BadRequest),
            NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BadRequest),
            UnknownQuiz => (StatusCode::NOT_FOUND, ErrorCode::UnknownQuiz),
            QuizEnded => (StatusCode::GONE, ErrorCode::QuizEnded),
            Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            InvalidContent(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidContent),
            Nickname { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, *code),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Unavailable(_) | NoNodeServing | Store(StoreError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
            }
            Store(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }

    /// What the client reads: short, and free of internal detail.
    fn client_message(&self) -> String {
        use ApiError::*;
        match self {
            Unauthorized(m)
            | Forbidden(m)
            | BadRequest(m)
            | UnsupportedMediaType(m)
            | NotFound(m)
            | Conflict(m) => m.clone(),
            Nickname { message, .. } => message.clone(),
            TokenExpired => "the token has expired; sign in again".into(),
            MethodNotAllowed => "this method is not allowed here".into(),
            PayloadTooLarge(max) => format!("the request body is over {max} bytes"),
            UnknownQuiz => "no quiz with this code".into(),
            NoNodeServing => "no node is serving; retry".into(),
            QuizEnded => "this quiz has ended".into(),
            InvalidContent(_) => "the content is invalid; see errors".into(),
            RateLimited { retry_after_s } => {
                format!("too many requests; try again in {retry_after_s} s")
            }
            Unavailable(_) | Store(StoreError::Unavailable(_)) => {
                "the service is unavailable; try again".into()
            }
            Store(_) | Internal(_) => "internal error".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::NoNodeServing = self {
            // A state of the cluster, logged by the membership task when it begins; not a
            // fault of this request, and every join would repeat it.
            tracing::debug!(%code, error = %self, "request refused");
        } else if status.is_server_error() {
            tracing::error!(%code, error = %self, "request failed");
        } else {
            tracing::debug!(%code, error = %self, "request refused");
        }
        let message = self.client_message();
        let errors = match &self {
            ApiError::InvalidContent(errors) => errors.as_slice(),
            _ => &[],
        };
        let body = ErrorBody {
            code,
            message: &message,
            retryable: code.retryable(),
            errors,
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_s } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        response
    }
}

/// One content problem, for the `errors` list.
pub(crate) fn problem(path: impl Into<String>, problem: impl Into<String>) -> ContentError {
    ContentError {
        path: path.into(),
        problem: problem.into(),
    }
}
