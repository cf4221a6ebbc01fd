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
