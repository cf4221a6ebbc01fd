//! Checking session tokens when a phone opens its WebSocket.
//!
//! The router signs session tokens (HS256, the cluster's session secret) with the claims of
//! [`SessionClaims`]; the edge accepts only tokens with the session audience and issuer, an
//! unexpired `exp`, and a valid quiz code and user id.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use quiz_protocol::client::Role;
use quiz_protocol::session::{SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims};
use quiz_protocol::{QuizId, UserId};

/// Who a connection is, once its token checks out.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) user: UserId,
    pub(crate) quiz: QuizId,
    pub(crate) role: Role,
    pub(crate) nickname: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TokenError {
    #[error("the session token has expired; join again")]
    Expired,
    #[error("invalid session token: {0}")]
    Invalid(String),
}

/// Validates session tokens.
pub(crate) struct SessionKeys {
    key: DecodingKey,
    validation: Validation,
}

impl SessionKeys {
    pub(crate) fn new(secret: &str, leeway_s: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[SESSION_AUDIENCE]);
        validation.set_issuer(&[SESSION_ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = leeway_s;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub(crate) fn check(&self, token: &str) -> Result<Session, TokenError> {
        let claims = decode::<SessionClaims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience".into()),
                ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                _ => TokenError::Invalid(e.to_string()),
            })?
            .claims;
        let quiz = QuizId::parse(&claims.quiz)
            .map_err(|_| TokenError::Invalid("the token names no valid quiz".into()))?;
        let user = UserId::parse(&claims.sub)
            .map_err(|_| TokenError::Invalid("the token names no valid user".into()))?;
        Ok(Session {
            user,
            quiz,
            role: claims.role,
            nickname: claims.nick,
        })
    }
}
