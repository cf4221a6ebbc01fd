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

#[cfg(test)]
mod tests {
    //! The session-token check under arbitrary and mutated tokens (a fuzz target on the
    //! stable toolchain; `QUIZ_FUZZ_CASES` sets the cases, as in `protocol/tests/fuzz.rs`).
    use super::*;
    use proptest::prelude::*;
    use quiz_protocol::client::Role;
    use quiz_protocol::session::{SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims};

    const SECRET: &str = "q8Vw1xZr3LpT6nYc0sHf2jKd9mAe5uBg";

    fn valid_token() -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = SessionClaims {
            sub: "user-1".into(),
            quiz: "ACDEFG".into(),
            role: Role::Player,
            nick: "Pat".into(),
            aud: SESSION_AUDIENCE.into(),
            iss: SESSION_ISSUER.into(),
            iat: now,
            exp: now + 600,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    fn config() -> ProptestConfig {
        let cases = std::env::var("QUIZ_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    #[test]
    fn the_valid_token_passes() {
        let keys = SessionKeys::new(SECRET, 5);
        let checked = keys.check(&valid_token());
        assert!(checked.is_ok(), "{:?}", checked.err());
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_tokens_are_refused(token in ".{0,600}") {
            let keys = SessionKeys::new(SECRET, 5);
            prop_assert!(keys.check(&token).is_err());
        }

        #[test]
        fn a_token_with_any_byte_changed_is_refused_or_unchanged(
            at in any::<usize>(),
            byte in 0x21u8..0x7f,
        ) {
            let keys = SessionKeys::new(SECRET, 5);
            let token = valid_token();
            let mut bytes = token.clone().into_bytes();
            let at = at % bytes.len();
            bytes[at] = byte;
            let edited = String::from_utf8(bytes).unwrap();
            // The last character of each base64url segment carries spare bits: some edits
            // there decode to the same bytes. Every other change must be refused.
            let segment_ends: Vec<usize> = token
                .match_indices('.')
                .map(|(i, _)| i - 1)
                .chain([token.len() - 1])
                .collect();
            if edited != token && !segment_ends.contains(&at) {
                prop_assert!(keys.check(&edited).is_err(), "accepted {edited}");
            }
        }
    }
}
