//! Tokens: checking the identity provider's JWTs (who is calling, and as host or player),
//! signing dev tokens when enabled, and signing the session tokens the nodes check.
//!
//! The algorithm is pinned by the configured key (HS256, RS256 or ES256; with a JWKS URL, by
//! the key the token's `kid` names, see [`crate::jwks`]): a token whose header names another
//! one is refused, whatever its signature. `iss`, `aud`, `exp` and `sub` are
//! required; `nbf` is checked when present. Leeway is small and configured.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quiz_protocol::UserId;
use quiz_protocol::client::Role;
use quiz_protocol::session::{SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims};
use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::config::{AuthConfig, SessionConfig};
use crate::error::ApiError;

/// Longest bearer token accepted, in bytes; real ones are well under 2 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Checks and issues tokens.
pub(crate) struct Auth {
    keys: Keys,
    validation: Validation,
    issuer: String,
    audience: String,
    /// The IdP secret, when dev tokens are on.
    dev_key: Option<EncodingKey>,
    session_key: EncodingKey,
    session_ttl_s: u64,
    /// Users with the admin role (`auth.admin_users`).
    admins: std::collections::HashSet<String>,
}

/// Where the identity provider's verifying keys come from.
enum Keys {
    /// One key from the config.
    Fixed(Algorithm, DecodingKey),
    /// Keys by `kid` from the provider's JWKS URL.
    Jwks(crate::jwks::Jwks),
}

/// Why an `Auth` could not be built (the config validation catches these first).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no identity-provider key configured")]
    Missing,
    #[error("bad identity-provider key: {0}")]
    Bad(#[from] jsonwebtoken::errors::Error),
}

/// The claims the router reads from an identity-provider token.
#[derive(Deserialize)]
struct IdpClaims {
    sub: String,
    /// `host` or `player`; a token without it is a player's.
    #[serde(default)]
    role: Option<Role>,
}

/// What a dev token carries (and what an identity provider's token looks like).
#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    role: Role,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) user: UserId,
    pub(crate) role: Role,
    /// Listed in `auth.admin_users`: reads and replaces every question set.
    pub(crate) admin: bool,
}

impl Auth {
    pub(crate) fn new(auth: &AuthConfig, session: &SessionConfig) -> Result<Auth, KeyError> {
        let keys = if let Some(secret) = &auth.hs256_secret {
            Keys::Fixed(
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )
        } else if let Some(pem) = &auth.rs256_public_key_pem {
            Keys::Fixed(Algorithm::RS256, DecodingKey::from_rsa_pem(pem.as_bytes())?)
        } else if let Some(pem) = &auth.es256_public_key_pem {
            Keys::Fixed(Algorithm::ES256, DecodingKey::from_ec_pem(pem.as_bytes())?)
        } else if let Some(url) = &auth.jwks_url {
            Keys::Jwks(crate::jwks::Jwks::new(
                url,
                std::time::Duration::from_secs(auth.jwks_refresh_s),
                std::time::Duration::from_secs(auth.jwks_min_refetch_s),
            ))
        } else {
            return Err(KeyError::Missing);
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&auth.audience]);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = auth.leeway_s;
        validation.validate_nbf = true;
        let dev_key = match (&auth.hs256_secret, auth.dev_tokens) {
            (Some(secret), true) => Some(EncodingKey::from_secret(secret.as_bytes())),
            _ => None,
        };
        Ok(Auth {
            keys,
            validation,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            dev_key,
            session_key: EncodingKey::from_secret(session.secret.as_bytes()),
            session_ttl_s: session.ttl_s,
            admins: auth.admin_users.iter().cloned().collect(),
        })
    }

    /// Whether `POST /v1/dev/token` is served.
    pub(crate) fn dev_tokens(&self) -> bool {
        self.dev_key.is_some()
    }

    pub(crate) fn session_ttl_s(&self) -> u64 {
        self.session_ttl_s
    }

    /// The caller named by an `Authorization: Bearer` header.
    pub(crate) async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::Unauthorized("expected Authorization: Bearer <token>".into())
            })?;
        self.verify(token).await
    }

    /// Checks an identity-provider token.
    pub(crate) async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized("token too long".into()));
        }
        let fetched;
        let (algorithm, key) = match &self.keys {
            Keys::Fixed(algorithm, key) => (*algorithm, key),
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| ApiError::Unauthorized("malformed token".into()))?;
                let kid = header
                    .kid
                    .ok_or_else(|| ApiError::Unauthorized("the token names no key (kid)".into()))?;
                fetched = jwks.key(&kid).await.map_err(|e| match e {
                    crate::jwks::KeyLookup::Unknown(_) => ApiError::Unauthorized(e.to_string()),
                    crate::jwks::KeyLookup::Unavailable(_) => ApiError::Unavailable(e.to_string()),
                })?;
                (fetched.0, &fetched.1)
            }
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let data = jsonwebtoken::decode::<IdpClaims>(token, key, &validation)
            .map_err(|e| self.refusal(e.kind(), algorithm))?;
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| ApiError::Unauthorized("the token's sub is not a valid user id".into()))?;
        Ok(Caller {
            admin: self.admins.contains(user.as_str()),
            user,
            role: data.claims.role.unwrap_or(Role::Player),
        })
    }

    fn refusal(&self, kind: &ErrorKind, algorithm: Algorithm) -> ApiError {
        let message = match kind {
            ErrorKind::ExpiredSignature => return ApiError::TokenExpired,
            ErrorKind::InvalidAudience => format!("token audience is not {:?}", self.audience),
            ErrorKind::InvalidIssuer => format!("token issuer is not {:?}", self.issuer),
            ErrorKind::InvalidAlgorithm => {
                format!("token must be signed with {algorithm:?}")
            }
            ErrorKind::InvalidSignature => "bad token signature".into(),
            ErrorKind::ImmatureSignature => "token not valid yet".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the {claim} claim"),
            _ => "malformed token".into(),
        };
        ApiError::Unauthorized(message)
    }

    /// Signs an identity token with the HS256 IdP secret; `None` when dev tokens are off.
    pub(crate) fn dev_token(
        &self,
        user: &UserId,
        role: Role,
        now_s: u64,
        ttl_s: u64,
    ) -> Option<String> {
        let key = self.dev_key.as_ref()?;
        let claims = DevClaims {
            sub: user.as_str(),
            role,
            iss: &self.issuer,
            aud: &self.audience,
            iat: now_s,
            exp: now_s + ttl_s,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }

    /// Signs a session token binding `user` to `quiz` with `role`.
    pub(crate) fn session_token(
        &self,
        user: &UserId,
        quiz: &str,
        role: Role,
        nick: &str,
        now_s: u64,
    ) -> Result<String, ApiError> {
        let claims = SessionClaims {
            sub: user.as_str().to_owned(),
            quiz: quiz.to_owned(),
            role,
            nick: nick.to_owned(),
            aud: SESSION_AUDIENCE.to_owned(),
            iss: SESSION_ISSUER.to_owned(),
            iat: now_s,
            exp: now_s + self.session_ttl_s,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.session_key)
            .map_err(|e| ApiError::Internal(format!("signing a session token: {e}")))
    }
}

impl Caller {
    /// Refuses callers whose token is not a host's.
    pub(crate) fn require_host(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Host => Ok(()),
            Role::Player => Err(ApiError::Forbidden("this needs a host's token".into())),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.caller(&parts.headers).await
    }
}
