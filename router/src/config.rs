//! The router's configuration: one TOML file, every field optional with a documented default
//! (`router/router.example.toml` shows them all).
//! [`Config::validate`] checks everything that can be checked without binding a port
//! (addresses, keys, secrets, the node list or the cluster's certificates, limits), so a bad
//! file fails before anything runs.
//!
//! Two ways to know the shard nodes: a static list (`[[nodes]]`: a fixed ring at epoch 1, for
//! single-machine runs and tests), or dynamic membership (`[cluster]`: the ring follows the
//! nodes' leases in the store, see `membership`). Exactly one of them is set.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jsonwebtoken::DecodingKey;
use quiz_cluster::{ClusterTls, TlsError};
use quiz_protocol::NodeId;
use quiz_store::StoreConfig;
use serde::{Deserialize, Serialize};

/// Shortest accepted HMAC secret, in bytes: HS256 keys shorter than the hash are weak.
pub use quiz_protocol::session::MIN_SECRET_BYTES;
/// Largest weight a node may have; the ring holds `weight × vnodes_per_weight` entries per node.
pub const MAX_NODE_WEIGHT: u32 = 100;

/// Everything the router binary reads from its config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public HTTP API (join, create quiz, content). Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`); keep it off the public network. Default
    /// `127.0.0.1:9080`.
    pub admin_addr: SocketAddr,
    /// Where question sets and quizzes live. Default `sqlite://.local/quiz.db`.
    pub store: StoreConfig,
    /// How callers' identity-provider tokens are checked.
    pub auth: AuthConfig,
    /// The session tokens handed out at join, which the nodes check.
    pub session: SessionConfig,
    /// The shard nodes that form a fixed ring (epoch 1). Default: none. Set either this or
    /// `cluster`, not both.
    pub nodes: Vec<NodeConfig>,
    /// Dynamic membership: the ring is made from the nodes' leases in the store, agreed with
    /// the other routers through the store, and pushed to the nodes over QUIC. Default: none
    /// (then `nodes` must list the nodes).
    pub cluster: Option<ClusterConfig>,
    /// Virtual nodes per unit of node weight. More spreads quizzes more evenly; each costs
    /// about 40 bytes and lengthens a lookup by a few nanoseconds. Default 160.
    pub vnodes_per_weight: u32,
    /// Rate limits.
    pub limits: LimitsConfig,
    /// Largest request body, in bytes. A question set of 500 long questions is about 500 KiB.
    /// Default 1 MiB (1048576).
    pub max_body_bytes: usize,
    /// Admission on the public listener: connection caps counted from accept, in all and
    /// per address, header and keep-alive timeouts, descriptors kept back.
    pub listener: quiz_net::ListenerConfig,
    /// A request that takes longer than this is answered 503 `unavailable`, in milliseconds.
    /// Default 10000.
    pub request_timeout_ms: u64,
    /// Rate-limit by the first address of `X-Forwarded-For` instead of the peer address. Only
    /// behind a proxy that sets it: otherwise clients choose their own key. Default false.
    pub trust_forwarded_for: bool,
    /// Accept the development secrets published with the code as `session.secret` and
    /// `auth.hs256_secret` (local clusters and tests only: anyone can sign tokens with them).
    /// Placeholders are refused even so. Default false.
    pub allow_dev_secrets: bool,
    /// How long the binary waits for requests in flight after SIGINT/SIGTERM, in
    /// milliseconds. Default 10000.
    pub shutdown_grace_ms: u64,
    /// How often the router sets the league contributions of every recent quiz to what its
    /// answer log gives, in seconds (the first time at start). Leagues live in the
    /// leaderboard store (Redis in production), which can lose acknowledged writes in a
    /// failover, or everything in a restart, after the quiz that made them has ended. 0 turns
    /// the audit off. Default 300.
    pub league_audit_interval_s: u64,
    /// How far back the league audit goes: quizzes created in the last this many days.
    /// Default 8 (this ISO week and the one before, whatever the day).
    pub league_audit_days: u32,
}

/// Checking the identity provider's tokens (`Authorization: Bearer <JWT>`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The `iss` every token must carry. Default `quiz-dev`.
    pub issuer: String,
    /// The `aud` every token must carry. Default `quiz-app`.
    pub audience: String,
    /// HS256 shared secret (at least 32 bytes). Exactly one of the three keys must be set.
    /// Default none.
    pub hs256_secret: Option<String>,
    /// RS256 public key, PEM (`-----BEGIN PUBLIC KEY-----`). Default none.
    pub rs256_public_key_pem: Option<String>,
    /// ES256 (P-256) public key, PEM. Default none.
    pub es256_public_key_pem: Option<String>,
    /// The identity provider's JWKS URL (`https://…/.well-known/jwks.json`): RS256 and ES256
    /// keys by `kid`, cached, fetched again on an unknown `kid`. Default none.
    pub jwks_url: Option<String>,
    /// Keys from `jwks_url` are fetched again when older than this, in seconds. Default 600.
    pub jwks_refresh_s: u64,
    /// At most one fetch of `jwks_url` per this many seconds, however many unknown `kid`s
    /// arrive. Default 10.
    pub jwks_min_refetch_s: u64,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 5.
    pub leeway_s: u64,
    /// Serve `POST /v1/dev/token`, which signs tokens for any user with the HS256 secret. For
    /// local runs and tests only. Default false.
    pub dev_tokens: bool,
    /// Users (the tokens' `sub`) with the admin role: they read every question set with its
    /// answers and may replace any set (its owner stays). Default none.
    pub admin_users: Vec<String>,
}

/// The session tokens the router signs at join and the nodes check.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// HS256 secret shared with every node (at least 32 bytes). Default none (refused).
    pub secret: String,
    /// Lifetime of a session token, in seconds. A phone that reconnects after this joins again
    /// through the router. Default 3600.
    pub ttl_s: u64,
}

/// One shard node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's stable name, such as `node-1`.
    pub id: String,
    /// Where phones open their WebSocket, such as `wss://n1.example.com/v1/ws`.
    pub ws_url: String,
    /// Share of quizzes relative to other nodes, 1-100. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

/// Dynamic membership: how this router joins the cluster's QUIC network, and how often it reads
/// the leases and pushes the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name; the nodes refuse a peer that names another. Default `quiz`.
    pub name: String,
    /// This router's name in the cluster, such as `router-1`. Its certificate must be issued
    /// for this name. Default `router`.
    pub router_id: String,
    /// The cluster CA's certificate, a PEM file (a bundle of several while rotating the CA).
    /// Required.
    pub ca_cert: PathBuf,
    /// This router's certificate chain, a PEM file, leaf first, issued by the CA for
    /// `router_id` (`quizctl ca` issues one). Required.
    pub cert: PathBuf,
    /// This router's private key, a PEM file (PKCS#8, PKCS#1 or SEC1). Required.
    pub key: PathBuf,
    /// The UDP address the router's QUIC endpoint binds; it only connects out, so port 0 is
    /// fine. Use `[::]:0` when nodes have IPv6 addresses. Default `0.0.0.0:0`.
    pub bind_addr: SocketAddr,
    /// How often the leases (and the stored ring) are read, in milliseconds: how late, at
    /// most, a lost or new node is noticed after its lease says so. Each poll is two small
    /// reads from the store. Default 250.
    pub poll_interval_ms: u64,
    /// The current ring is pushed to every node this often even when it has not changed, in
    /// milliseconds (a new epoch is pushed at once): how late a node that missed a push, or
    /// restarted, learns the ring. Default 2000.
    pub push_interval_ms: u64,
    /// One push to one node (connecting included) gives up after this, in milliseconds; the
    /// node is retried at the next push. Default 1000.
    pub push_timeout_ms: u64,
}

/// Token buckets: `per_minute` refills the bucket, `burst` is its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Join attempts per client IP (IPv6: per /64) per minute, checked before the token (so
    /// a flood of bad tokens costs no signature checks). A classroom or a school shares one
    /// address: the burst is sized for a class joining at once. Default 600.
    pub joins_per_ip_per_minute: u32,
    /// Join attempts per client IP in a burst. Default 300 (200 phones behind one NAT
    /// address join within a second).
    pub join_burst: u32,
    /// Join attempts per user (the identity token's `sub`) per minute. Default 30.
    pub joins_per_user_per_minute: u32,
    /// Join attempts per user in a burst. Default 10.
    pub join_user_burst: u32,
    /// Joins of one quiz per minute, from everyone. Default 60000.
    pub joins_per_quiz_per_minute: u32,
    /// Joins of one quiz in a burst. Default 20000.
    pub join_quiz_burst: u32,
    /// Failed lookups of a quiz code (unknown or ill-formed) per client IP per minute: what
    /// bounds guessing codes from one address, whatever accounts it uses. Past it every
    /// lookup from the address, right codes included, is refused until the budget refills
    /// (else a guesser would learn from 429 vs 200). Default 60.
    pub failed_joins_per_ip_per_minute: u32,
    /// Failed lookups per client IP in a burst (a class's typos). Default 30.
    pub failed_join_burst: u32,
    /// Failed lookups per user per minute: a pupil who mistypes only locks out themself, for
    /// a while. Default 10.
    pub failed_joins_per_user_per_minute: u32,
    /// Failed lookups per user in a burst. Default 10.
    pub failed_join_user_burst: u32,
    /// Quizzes a user may create per minute. Default 10.
    pub quiz_creations_per_user_per_minute: u32,
    /// Quiz creations per user in a burst. Default 10.
    pub quiz_creation_burst: u32,
    /// Clients tracked per limiter; past it the least recently seen is forgotten (and starts
    /// again with a full bucket). About 150 bytes each. Default 100000.
    pub max_tracked_clients: usize,
}

fn one() -> u32 {
    1
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "quiz".into(),
            router_id: "router".into(),
            ca_cert: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            poll_interval_ms: 250,
            push_interval_ms: 2000,
            push_timeout_ms: 1000,
        }
    }
}

impl ClusterConfig {
    /// Loads the CA, the certificate and the key, and checks that the certificate is the
    /// CA's and issued for `router_id`.
    pub fn tls(&self) -> Result<ClusterTls, TlsError> {
        let tls = ClusterTls::from_pem_files(&self.ca_cert, &self.cert, &self.key)?;
        if !tls.is_valid_for(&NodeId(self.router_id.clone())) {
            return Err(TlsError::Config(format!(
                "the certificate is not issued for router_id {:?}",
                self.router_id
            )));
        }
        Ok(tls)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9080)),
            store: StoreConfig {
                database_url: "sqlite://.local/quiz.db".into(),
                pool_size: 8,
                redis: None,
                membership_url: None,
            },
            auth: AuthConfig::default(),
            session: SessionConfig::default(),
            nodes: Vec::new(),
            cluster: None,
            vnodes_per_weight: quiz_protocol::ring::DEFAULT_VNODES_PER_WEIGHT,
            limits: LimitsConfig::default(),
            max_body_bytes: 1 << 20,
            listener: quiz_net::ListenerConfig::default(),
            request_timeout_ms: 10_000,
            trust_forwarded_for: false,
            allow_dev_secrets: false,
            shutdown_grace_ms: 10_000,
            league_audit_interval_s: 300,
            league_audit_days: 8,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "quiz-dev".into(),
            audience: "quiz-app".into(),
            hs256_secret: None,
            rs256_public_key_pem: None,
            es256_public_key_pem: None,
            jwks_url: None,
            jwks_refresh_s: 600,
            jwks_min_refetch_s: 10,
            leeway_s: 5,
            dev_tokens: false,
            admin_users: Vec::new(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            secret: String::new(),
            ttl_s: 3600,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            joins_per_ip_per_minute: 600,
            join_burst: 300,
            joins_per_user_per_minute: 30,
            join_user_burst: 10,
            joins_per_quiz_per_minute: 60_000,
            join_quiz_burst: 20_000,
            failed_joins_per_ip_per_minute: 60,
            failed_join_burst: 30,
            failed_joins_per_user_per_minute: 10,
            failed_join_user_burst: 10,
            quiz_creations_per_user_per_minute: 10,
            quiz_creation_burst: 10,
            max_tracked_clients: 100_000,
        }
    }
}

// Secrets stay out of logs.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rs256_public_key_pem", &self.rs256_public_key_pem.is_some())
            .field("es256_public_key_pem", &self.es256_public_key_pem.is_some())
            .field("jwks_url", &self.jwks_url)
            .field("leeway_s", &self.leeway_s)
            .field("dev_tokens", &self.dev_tokens)
            .field("admin_users", &self.admin_users)
            .finish()
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("secret", &"<redacted>")
            .field("ttl_s", &self.ttl_s)
            .finish()
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse the config: {0}")]
    Parse(String),
    /// Every problem found, each naming its field.
    #[error("invalid config: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The listener's TLS certificate or key.
    #[error("{0}")]
    Tls(String),
}

impl Config {
    /// Reads a TOML file. Missing fields take their defaults; unknown fields are refused (a
    /// typo would otherwise silently fall back to a default).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// A config for tests: ports 0, a throwaway database URL (the caller opens its own stores),
    /// fixed test secrets, dev tokens on, generous rate limits, and three nodes at made-up URLs.
    pub fn for_test() -> Config {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreConfig {
                database_url: "sqlite::memory:".into(),
                pool_size: 1,
                redis: None,
                membership_url: None,
            },
            auth: AuthConfig {
                issuer: "quiz-test-idp".into(),
                audience: "quiz-test-app".into(),
                hs256_secret: Some("test-idp-secret-test-idp-secret-0123".into()),
                dev_tokens: true,
                ..AuthConfig::default()
            },
            session: SessionConfig {
                secret: "test-session-secret-test-session-0123".into(),
                ttl_s: 600,
            },
            nodes: (1..=3)
                .map(|i| NodeConfig {
                    id: format!("node-{i}"),
                    ws_url: format!("ws://127.0.0.1:{}/v1/ws", 7000 + i),
                    weight: 1,
                })
                .collect(),
            // Generous, so that only the tests about limits meet them.
            limits: LimitsConfig {
                joins_per_ip_per_minute: 10_000,
                join_burst: 10_000,
                failed_joins_per_ip_per_minute: 10_000,
                failed_join_burst: 10_000,
                joins_per_user_per_minute: 10_000,
                join_user_burst: 10_000,
                joins_per_quiz_per_minute: 10_000,
                join_quiz_burst: 10_000,
                failed_joins_per_user_per_minute: 10_000,
                failed_join_user_burst: 10_000,
                quiz_creations_per_user_per_minute: 10_000,
                quiz_creation_burst: 10_000,
                max_tracked_clients: 1_000,
            },
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 2_000,
            ..Config::default()
        }
    }

    /// Every problem with this config, each naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, problem: &str| problems.push(format!("{field}: {problem}"));

        if self.http_addr == self.admin_addr && self.http_addr.port() != 0 {
            bad("admin_addr", "must differ from http_addr");
        }
        if self.store.database_url.trim().is_empty() {
            bad("store.database_url", "must be set");
        }
        self.auth.check(&mut bad);
        if let Some(secret) = &self.auth.hs256_secret {
            check_secret(
                "auth.hs256_secret",
                secret,
                self.allow_dev_secrets,
                &mut bad,
            );
        }
        check_secret(
            "session.secret",
            &self.session.secret,
            self.allow_dev_secrets,
            &mut bad,
        );
        if self.auth.hs256_secret.as_deref() == Some(self.session.secret.as_str()) {
            bad(
                "session.secret",
                "must differ from auth.hs256_secret (else an identity token could pass as a session)",
            );
        }
        if !(60..=86_400).contains(&self.session.ttl_s) {
            bad("session.ttl_s", "must be 60-86400 seconds");
        }
        self.check_nodes(&mut bad);
        if !(1..=3660).contains(&self.league_audit_days) {
            bad("league_audit_days", "must be 1-3660");
        }
        if !(1..=10_000).contains(&self.vnodes_per_weight) {
            bad("vnodes_per_weight", "must be 1-10000");
        }
        self.limits.check(&mut bad);
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            bad("max_body_bytes", "must be 1 KiB to 64 MiB");
        }
        self.listener.check(&mut bad);
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            bad("request_timeout_ms", "must be 100-600000");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn check_nodes(&self, bad: &mut impl FnMut(&str, &str)) {
        match (&self.cluster, self.nodes.is_empty()) {
            (None, true) => bad(
                "nodes",
                "list at least one shard node, or set [cluster] for dynamic membership",
            ),
            (Some(_), false) => bad(
                "cluster",
                "set either nodes (a fixed ring) or [cluster] (dynamic membership), not both",
            ),
            (Some(cluster), true) => cluster.check(bad),
            (None, false) => {}
        }
        let mut ids = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let at = |f: &str| format!("nodes[{i}].{f}");
            if node.id.is_empty() || node.id.len() > 64 || node.id.chars().any(char::is_control) {
                bad(&at("id"), "must be 1-64 characters");
            } else if !ids.insert(node.id.as_str()) {
                bad(&at("id"), "is used by an earlier node");
            }
            let scheme_ok = node.ws_url.starts_with("ws://") || node.ws_url.starts_with("wss://");
            if !scheme_ok || node.ws_url.len() > 512 {
                bad(&at("ws_url"), "must be a ws:// or wss:// URL");
            }
            if !(1..=MAX_NODE_WEIGHT).contains(&node.weight) {
                bad(&at("weight"), "must be 1-100");
            }
        }
    }
}

impl ClusterConfig {
    fn check(&self, bad: &mut impl FnMut(&str, &str)) {
        if self.name.is_empty() || self.name.len() > 64 {
            bad("cluster.name", "must be 1-64 characters");
        }
        let id = &self.router_id;
        if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
            bad("cluster.router_id", "must be 1-64 characters");
        }
        let paths = [
            ("cluster.ca_cert", &self.ca_cert),
            ("cluster.cert", &self.cert),
            ("cluster.key", &self.key),
        ];
        let mut missing = false;
        for (field, path) in paths {
            if path.as_os_str().is_empty() {
                bad(field, "must be set (a PEM file)");
                missing = true;
            }
        }
        if !missing && let Err(e) = self.tls() {
            bad("cluster", &e.to_string());
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            bad("cluster.poll_interval_ms", "must be 10-60000");
        }
        if !(100..=600_000).contains(&self.push_interval_ms) {
            bad("cluster.push_interval_ms", "must be 100-600000");
        }
        if !(50..=60_000).contains(&self.push_timeout_ms) {
            bad("cluster.push_timeout_ms", "must be 50-60000");
        }
    }
}

/// Refuses a secret that is short, a placeholder, or published with the code (the last only
/// when development secrets are not allowed).
fn check_secret(field: &str, secret: &str, allow_dev: bool, bad: &mut impl FnMut(&str, &str)) {
    if let Some(why) = quiz_protocol::session::secret_refusal(secret, allow_dev) {
        bad(field, why);
    }
}

impl AuthConfig {
    fn check(&self, bad: &mut impl FnMut(&str, &str)) {
        if self.issuer.is_empty() {
            bad("auth.issuer", "must be set");
        }
        if self.audience.is_empty() {
            bad("auth.audience", "must be set");
        }
        let keys = [
            self.hs256_secret.is_some(),
            self.rs256_public_key_pem.is_some(),
            self.es256_public_key_pem.is_some(),
            self.jwks_url.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => bad(
                "auth",
                "set one of hs256_secret, rs256_public_key_pem, es256_public_key_pem, jwks_url",
            ),
            1 => {}
            _ => bad(
                "auth",
                "set only one of hs256_secret, rs256_public_key_pem, es256_public_key_pem, \
                 jwks_url",
            ),
        }
        if let Some(url) = &self.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            bad("auth.jwks_url", "must be an http:// or https:// URL");
        }
        if !(1..=86_400).contains(&self.jwks_refresh_s) {
            bad("auth.jwks_refresh_s", "must be 1-86400");
        }
        if self.jwks_min_refetch_s > self.jwks_refresh_s {
            bad("auth.jwks_min_refetch_s", "must be at most jwks_refresh_s");
        }
        if let Some(pem) = &self.rs256_public_key_pem
            && DecodingKey::from_rsa_pem(pem.as_bytes()).is_err()
        {
            bad(
                "auth.rs256_public_key_pem",
                "is not an RSA public key in PEM",
            );
        }
        if let Some(pem) = &self.es256_public_key_pem
            && DecodingKey::from_ec_pem(pem.as_bytes()).is_err()
        {
            bad(
                "auth.es256_public_key_pem",
                "is not an EC public key in PEM",
            );
        }
        if self.leeway_s > 300 {
            bad("auth.leeway_s", "must be at most 300 seconds");
        }
        if self.dev_tokens && self.hs256_secret.is_none() {
            bad("auth.dev_tokens", "needs auth.hs256_secret to sign with");
        }
    }
}

impl LimitsConfig {
    fn check(&self, bad: &mut impl FnMut(&str, &str)) {
        let rates = [
            (
                "limits.joins_per_ip_per_minute",
                self.joins_per_ip_per_minute,
            ),
            ("limits.join_burst", self.join_burst),
            (
                "limits.failed_joins_per_ip_per_minute",
                self.failed_joins_per_ip_per_minute,
            ),
            ("limits.failed_join_burst", self.failed_join_burst),
            (
                "limits.joins_per_user_per_minute",
                self.joins_per_user_per_minute,
            ),
            ("limits.join_user_burst", self.join_user_burst),
            (
                "limits.joins_per_quiz_per_minute",
                self.joins_per_quiz_per_minute,
            ),
            ("limits.join_quiz_burst", self.join_quiz_burst),
            (
                "limits.failed_joins_per_user_per_minute",
                self.failed_joins_per_user_per_minute,
            ),
            ("limits.failed_join_user_burst", self.failed_join_user_burst),
            (
                "limits.quiz_creations_per_user_per_minute",
                self.quiz_creations_per_user_per_minute,
            ),
            ("limits.quiz_creation_burst", self.quiz_creation_burst),
        ];
        for (field, value) in rates {
            if !(1..=1_000_000).contains(&value) {
                bad(field, "must be 1-1000000");
            }
        }
        if !(1..=10_000_000).contains(&self.max_tracked_clients) {
            bad("limits.max_tracked_clients", "must be 1-10000000");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let local = Config::load(&root.join("deploy/local/router.toml")).unwrap();
        local.validate().unwrap();
        let cluster = Config::load(&root.join("deploy/local/cluster/router.toml")).unwrap();
        assert!(cluster.cluster.is_some() && cluster.nodes.is_empty());
        // The production file parses, and does not start until its placeholders are replaced.
        let production = Config::load(&root.join("deploy/production/router.toml")).unwrap();
        let e = problems(&production);
        assert!(e.contains("session.secret: is a placeholder"), "{e}");
        assert!(production.store.redis.is_some());
        assert!(!production.auth.dev_tokens);
        assert!(production.cluster.is_some() && production.nodes.is_empty());
    }

    fn problems(config: &Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn test_config_is_valid() {
        Config::for_test().validate().unwrap();
    }

    #[test]
    fn an_empty_file_takes_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:9080");
        assert_eq!(config.store.database_url, "sqlite://.local/quiz.db");
        assert_eq!(config.auth.leeway_s, 5);
        assert_eq!(config.session.ttl_s, 3600);
        assert_eq!(config.vnodes_per_weight, 160);
        assert_eq!(config.limits.joins_per_ip_per_minute, 600);
        assert_eq!(config.max_body_bytes, 1 << 20);
        assert!(!config.auth.dev_tokens && !config.trust_forwarded_for);
        // The defaults alone name no key, secret or node: refused, with each field named.
        let msg = problems(&config);
        for field in ["auth:", "session.secret", "nodes:"] {
            assert!(msg.contains(field), "{msg}");
        }
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
            http_addr = "0.0.0.0:80"
            admin_addr = "127.0.0.1:9999"
            trust_forwarded_for = true
            [store]
            database_url = "postgres://quiz@db/quiz"
            [auth]
            issuer = "https://id.example.com"
            audience = "english-app"
            hs256_secret = "0123456789abcdef0123456789abcdef"
            [session]
            secret = "fedcba9876543210fedcba9876543210"
            [[nodes]]
            id = "node-1"
            ws_url = "wss://n1.example.com/v1/ws"
            [[nodes]]
            id = "node-2"
            ws_url = "wss://n2.example.com/v1/ws"
            weight = 2
            [limits]
            join_burst = 20
        "#;
        let config = Config::from_toml(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.nodes[0].weight, 1);
        assert_eq!(config.nodes[1].weight, 2);
        assert_eq!(config.limits.join_burst, 20);
        assert_eq!(config.limits.joins_per_ip_per_minute, 600);
        assert_eq!(config.store.pool_size, 8);
    }

    #[test]
    fn the_example_file_is_valid_once_its_secrets_are_replaced() {
        let mut config = Config::from_toml(include_str!("../router.example.toml")).unwrap();
        let e = problems(&config);
        assert!(
            e.contains("auth.hs256_secret: is a development secret"),
            "{e}"
        );
        assert!(e.contains("session.secret: is a development secret"), "{e}");
        config.auth.hs256_secret = Some("Zt4vQ9pL2wX7kR1mN8sB3cF6hJ0gD5yA".into());
        config.session.secret = "q8Vw1xZr3LpT6nYc0sHf2jKd9mAe5uBg".into();
        config.validate().unwrap();
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.limits, LimitsConfig::default());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Config::from_toml("htp_addr = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("htp_addr"), "{err}");
    }

    #[test]
    fn exactly_one_idp_key() {
        let mut config = Config::for_test();
        config.auth.hs256_secret = None;
        config.auth.dev_tokens = false;
        assert!(problems(&config).contains("set one of"));
        config.auth.hs256_secret = Some("x".repeat(32));
        config.auth.rs256_public_key_pem = Some("not a pem".into());
        let msg = problems(&config);
        assert!(msg.contains("set only one of"), "{msg}");
        assert!(msg.contains("auth.rs256_public_key_pem"), "{msg}");
    }

    #[test]
    fn dev_tokens_need_an_hs256_secret() {
        let mut config = Config::for_test();
        config.auth.hs256_secret = None;
        config.auth.es256_public_key_pem = Some("junk".into());
        assert!(problems(&config).contains("auth.dev_tokens"));
    }

    #[test]
    fn nodes_are_checked() {
        let mut config = Config::for_test();
        config.nodes[1].id = "node-1".into();
        config.nodes[2].ws_url = "http://x".into();
        config.nodes[0].weight = 0;
        let msg = problems(&config);
        assert!(msg.contains("nodes[1].id"), "{msg}");
        assert!(msg.contains("nodes[2].ws_url"), "{msg}");
        assert!(msg.contains("nodes[0].weight"), "{msg}");
    }

    #[test]
    fn short_or_shared_secrets_are_refused() {
        let mut config = Config::for_test();
        config.session.secret = "short".into();
        assert!(problems(&config).contains("session.secret"));
        config.session.secret = config.auth.hs256_secret.clone().unwrap();
        assert!(problems(&config).contains("must differ"));
    }

    /// A `[cluster]` section with certificate files from a fresh CA, issued for `issued_for`.
    fn cluster_files(dir: &Path, issued_for: &str) -> String {
        let ca = quiz_cluster::ClusterCa::generate("quiz").unwrap();
        let issued = ca.issue(issued_for).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("router.pem"), issued.cert_pem).unwrap();
        std::fs::write(dir.join("router.key"), issued.key_pem).unwrap();
        format!(
            r#"
            [auth]
            hs256_secret = "0123456789abcdef0123456789abcdef"
            [session]
            secret = "fedcba9876543210fedcba9876543210"
            [cluster]
            router_id = "router-1"
            ca_cert = "{0}/ca.pem"
            cert = "{0}/router.pem"
            key = "{0}/router.key"
            "#,
            dir.display()
        )
    }

    #[test]
    fn a_cluster_section_replaces_the_node_list() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(&cluster_files(dir.path(), "router-1")).unwrap();
        config.validate().unwrap();
        let cluster = config.cluster.as_ref().unwrap();
        assert_eq!(cluster.name, "quiz");
        assert_eq!(cluster.bind_addr.to_string(), "0.0.0.0:0");
        assert_eq!(
            (
                cluster.poll_interval_ms,
                cluster.push_interval_ms,
                cluster.push_timeout_ms
            ),
            (250, 2000, 1000)
        );

        // Both ways at once is refused, as is a section that names no certificates.
        let mut both = config.clone();
        both.nodes = Config::for_test().nodes;
        assert!(problems(&both).contains("cluster: set either nodes"));
        let mut bare = config.clone();
        bare.cluster = Some(ClusterConfig::default());
        let msg = problems(&bare);
        for field in ["cluster.ca_cert", "cluster.cert", "cluster.key"] {
            assert!(msg.contains(field), "{msg}");
        }
    }

    #[test]
    fn cluster_certificates_and_intervals_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        // A certificate issued for another name.
        let config = Config::from_toml(&cluster_files(dir.path(), "router-2")).unwrap();
        assert!(
            problems(&config).contains("not issued for router_id \"router-1\""),
            "{}",
            problems(&config)
        );
        // A missing file.
        let mut config = Config::from_toml(&cluster_files(dir.path(), "router-1")).unwrap();
        let cluster = config.cluster.as_mut().unwrap();
        cluster.key = dir.path().join("missing.key");
        assert!(
            problems(&config).contains("missing.key"),
            "{}",
            problems(&config)
        );

        let mut config = Config::from_toml(&cluster_files(dir.path(), "router-1")).unwrap();
        let cluster = config.cluster.as_mut().unwrap();
        cluster.poll_interval_ms = 0;
        cluster.push_interval_ms = 10;
        cluster.push_timeout_ms = 0;
        cluster.router_id = String::new();
        cluster.name = String::new();
        let msg = problems(&config);
        for field in [
            "cluster.poll_interval_ms",
            "cluster.push_interval_ms",
            "cluster.push_timeout_ms",
            "cluster.router_id",
            "cluster.name",
        ] {
            assert!(msg.contains(field), "{field}: {msg}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config::for_test();
        let text = format!("{config:?}");
        assert!(!text.contains("test-idp-secret"), "{text}");
        assert!(!text.contains("test-session-secret"), "{text}");
    }
}
