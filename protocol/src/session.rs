//! The session token: what the router hands a phone at join, and what an edge checks when the
//! phone opens its WebSocket. It binds one user to one quiz with one role, for a short time.
//! It is a JWT (HS256 with the cluster's session secret); signing and checking live in the
//! router and the node, this module only fixes its contents.

use serde::{Deserialize, Serialize};

use crate::client::Role;

/// `aud` of every session token.
pub const SESSION_AUDIENCE: &str = "quiz-edge";
/// `iss` of every session token.
pub const SESSION_ISSUER: &str = "quiz-router";

/// The claims of a session token.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The user (the identity provider's `sub`).
    pub sub: String,
    /// The quiz code.
    pub quiz: String,
    pub role: Role,
    /// The nickname asked for at join (the owner may add a suffix). Empty for a host.
    pub nick: String,
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

/// Shortest secret accepted for signing tokens, in bytes: HS256 keys shorter than the hash
/// are weak.
pub const MIN_SECRET_BYTES: usize = 32;

/// Secrets this repository publishes (development defaults, local clusters, examples). Anyone
/// can sign tokens with them, so a service refuses them unless told it is a development one.
pub const PUBLISHED_SECRETS: &[&str] = &[
    "dev-session-secret-change-me-0123456789",
    "local-session-secret-local-session-0123",
    "local-idp-secret-local-idp-secret-0123",
    "example-only-replace-with-32-bytes-or-more",
    "example-only-shared-with-the-nodes-32b+",
    "local-admin-token-local-admin-token-0123",
];

/// Why `secret` must not sign tokens in production, or `None` when it may.
pub fn secret_weakness(secret: &str) -> Option<&'static str> {
    if secret.is_empty() {
        return Some("is not set");
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Some("must be at least 32 bytes");
    }
    if PUBLISHED_SECRETS.contains(&secret) {
        return Some("is a development secret published with the code; anyone can sign with it");
    }
    let lower = secret.to_ascii_lowercase();
    if ["replace", "change-me", "changeme", "placeholder", "example"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return Some("is a placeholder; put at least 32 random bytes here");
    }
    let mut distinct: Vec<u8> = secret.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some("has fewer than 8 different characters; use random bytes");
    }
    None
}

/// Why `secret` may not sign tokens here: [`secret_weakness`], except that a development
/// secret published with the code is let through when `allow_dev` (placeholders never are).
pub fn secret_refusal(secret: &str, allow_dev: bool) -> Option<&'static str> {
    let weakness = secret_weakness(secret)?;
    let development = allow_dev && PUBLISHED_SECRETS.contains(&secret);
    (!development).then_some(weakness)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_published_and_weak_secrets_are_named() {
        for secret in PUBLISHED_SECRETS {
            assert!(secret_weakness(secret).is_some(), "{secret}");
        }
        assert_eq!(secret_weakness(""), Some("is not set"));
        assert!(secret_weakness("short").unwrap().contains("32 bytes"));
        assert!(secret_weakness("Replace-me-with-something-long-enough").is_some());
        assert!(
            secret_weakness(&"ab".repeat(20))
                .unwrap()
                .contains("different")
        );
        assert_eq!(secret_weakness("q8Vw1xZr3LpT6nYc0sHf2jKd9mAe5uBg"), None);
    }
}
