//! The node's configuration: one serde struct, every field documented with its default, and
//! validated before any port is bound.

use std::net::SocketAddr;
use std::time::Duration;

use quiz_engine::EngineConfig;
use quiz_store::StoreConfig;
use serde::{Deserialize, Serialize};

/// Everything a shard node needs. Every field has a default, so an empty file is a valid
/// configuration for a local single-node system.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's name in the cluster. Default `node-1`.
    pub node_id: String,
    /// Where phones connect (WebSocket at `/v1/ws`). Default `127.0.0.1:7001`.
    pub listen: SocketAddr,
    /// The admin port: `/metrics` and `/healthz` for anyone who reaches it, and the control
    /// routes (drain, leaderboard rebuild) for holders of `admin_token`. Keep it on the
    /// operator's network. Default `127.0.0.1:9101`.
    pub admin_listen: SocketAddr,
    /// The durable store. Default SQLite at `.local/quiz.db`.
    pub store: StoreConfig,
    /// HS256 secret that session tokens are signed with: the router's `session.secret`, at
    /// least 32 random bytes. Required: a node without one does not start, nor one with a
    /// placeholder or a secret published with the code (unless `allow_dev_secrets`).
    pub session_secret: String,
    /// Bearer token of the admin port's control routes (`POST /admin/drain`, leaderboard
    /// rebuilds, crash points): `Authorization: Bearer <admin_token>`, at least 32 random
    /// bytes. Unset, those routes answer 403 and only `/metrics` and `/healthz` are served.
    /// Default unset.
    pub admin_token: String,
    /// Accept the development secrets published with the code (local clusters and tests
    /// only: anyone can sign session and host tokens with them). Default false.
    pub allow_dev_secrets: bool,
    /// Leeway for session token expiry, seconds. Default 5.
    pub session_leeway_s: u64,
    /// Quiz engine tunables (leaderboard interval, replay buffer, grace, typos).
    pub engine: EngineConfig,
    /// Per-connection and per-node limits.
    pub limits: Limits,
    /// Admission on the phones' port: connection caps counted from accept (in all and per
    /// address, before the upgrade), header and keep-alive timeouts, descriptors kept back.
    pub listener: quiz_net::ListenerConfig,
    /// Log as JSON lines instead of human-readable text. Default false.
    pub log_json: bool,
    /// Membership of a multi-node cluster. Absent (the default): a single node that owns
    /// every quiz.
    pub cluster: Option<ClusterConfig>,
}

/// How a node takes part in a cluster: QUIC to its peers, its lease, the ring.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name; peers of another cluster are refused. Default `quiz`.
    pub name: String,
    /// UDP address for QUIC from other nodes and routers. Default `127.0.0.1:7101`.
    pub listen: SocketAddr,
    /// Where peers reach this node (`host:port`). Default: the bound `listen` address.
    pub advertise_addr: Option<String>,
    /// Where phones reach this node's edge. Default: `ws://{listen}/v1/ws` of the edge (`wss://`
    /// when `listener.tls_cert` is set).
    pub advertise_ws_url: Option<String>,
    /// Share of quizzes relative to other nodes, 1-100. Default 1.
    pub weight: u32,
    /// The cluster CA's certificate: PEM text, or the path of a PEM file.
    pub ca_cert: String,
    /// This node's certificate (issued by the cluster CA for `node_id`): PEM or a path.
    pub cert: String,
    /// Its private key: PEM or a path.
    pub key: String,
    /// How long a lease lasts without renewal, ms. A dead node's quizzes move after about
    /// this long; shorter moves them sooner but makes a briefly stalled node lose them.
    /// Default 1500.
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed, ms. Default 300.
    pub lease_renew_ms: u64,
    /// How often the store's ring is read (routers also push it), ms. Default 500.
    pub ring_poll_ms: u64,
    /// How long a new owner waits for the old one to hand a quiz over before claiming it
    /// anyway (the epoch fences the old one), ms. Default 2000.
    pub handoff_wait_ms: u64,
    /// Connecting to another node, or opening a stream to it, ms. A request to another node
    /// then waits for its reply as long as a local one (`limits.request_timeout_ms`): a busy
    /// owner is not a dead one, and keeps its connection. Default 2000.
    pub peer_timeout_ms: u64,
    /// A QUIC connection with no traffic for this long is dead (keep-alives every quarter),
    /// ms. A node that dies is noticed sooner, by its lease (`lease_ttl_ms`) and the ring; this
    /// catches a peer cut off from this node alone. Short values drop the connections of
    /// nodes that are merely starved of CPU, and every phone subscribed over them resyncs.
    /// Default 10000.
    pub peer_idle_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "quiz".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            advertise_addr: None,
            advertise_ws_url: None,
            weight: 1,
            ca_cert: String::new(),
            cert: String::new(),
            key: String::new(),
            lease_ttl_ms: 1500,
            lease_renew_ms: 300,
            ring_poll_ms: 500,
            handoff_wait_ms: 2000,
            peer_timeout_ms: 2000,
            peer_idle_timeout_ms: 10_000,
        }
    }
}

/// The limits of a node. Every one bounds memory, CPU or abuse; each says what it costs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame (and largest reassembled message) a phone may send, bytes; bigger closes
    /// the socket with 1009. Default 65536.
    pub max_frame_bytes: usize,
    /// Frames queued for one phone before it counts as too slow and is dropped (close 4008).
    /// Each queued frame is shared with other phones, so this costs little. Default 256.
    pub send_queue_frames: usize,
    /// Bytes queued for one phone before it counts as too slow (close 4008); a single frame
    /// bigger than this still goes out when nothing else is queued. Default 1048576.
    pub send_queue_bytes: usize,
    /// Sustained requests per second one connection may send (answers, host commands and
    /// `next` share the budget); more get `rate_limited`. Default 5.
    pub answers_per_sec: u32,
    /// Burst of those requests allowed above the sustained rate. Default 10.
    pub answer_burst: u32,
    /// Bad frames (malformed, unknown type...) one connection may send per minute before it is
    /// closed with 1008. Default 20.
    pub bad_frames_per_min: u32,
    /// Seconds between server pings; keeps mobile NAT mappings alive. Default 25.
    pub ping_interval_s: u64,
    /// A connection with no frame (pongs included) for this long is closed with 4009.
    /// Default 70.
    pub idle_timeout_s: u64,
    /// Seconds a phone has to send `join` after connecting, and to send it again after a
    /// refused join. Default 10.
    pub join_timeout_s: u64,
    /// Answers accepted by a quiz but not yet durable; past this, new answers get a retryable
    /// `unavailable`. Default 20000.
    pub max_pending_answers: usize,
    /// Most answers written to the store in one batch (group commit). Default 512.
    pub max_write_batch: usize,
    /// Least time between two leaderboard store (Redis) batches of one quiz, ms: longer makes
    /// fewer, bigger writes, and the stored standings (the router's standings endpoint,
    /// leagues) lag by up to this much. Acks never wait for it. Default 100.
    pub leaderboard_store_interval_ms: u64,
    /// Least time between two `leaderboard` frames to a player whose only news is what others
    /// did, ms: the players count (a lobby filling up) and its rank moving while its own score
    /// did not (others scoring). In a big quiz nearly every rank moves on every board push, and
    /// a join storm changes the count on every push. A change of its own score, of the top,
    /// or a host's `answered` is not held, and held news rides along with it. Default 1000.
    pub drift_interval_ms: u64,
    /// How long an edge waits for the quiz's owner to answer a request, ms. Default 10000.
    pub request_timeout_ms: u64,
    /// Events queued from a quiz to one edge before that edge is dropped and must resync.
    /// Default 4096.
    pub edge_queue_events: usize,
    /// Requests queued for one quiz before edges get `unavailable`. Default 8192.
    pub quiz_queue_requests: usize,
    /// Seconds an ended quiz stays loaded (phones can still see the final standings).
    /// Default 600.
    pub ended_linger_s: u64,
    /// Seconds a quiz with no connected phones and no activity stays loaded. Default 3600.
    pub idle_quiz_linger_s: u64,
    /// Grace period for graceful shutdown, seconds. Default 10.
    pub shutdown_grace_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            send_queue_frames: 256,
            send_queue_bytes: 1 << 20,
            answers_per_sec: 5,
            answer_burst: 10,
            bad_frames_per_min: 20,
            ping_interval_s: 25,
            idle_timeout_s: 70,
            join_timeout_s: 10,
            max_pending_answers: 20_000,
            max_write_batch: 512,
            leaderboard_store_interval_ms: 100,
            drift_interval_ms: 1000,
            request_timeout_ms: 10_000,
            edge_queue_events: 4096,
            quiz_queue_requests: 8192,
            ended_linger_s: 600,
            idle_quiz_linger_s: 3600,
            shutdown_grace_s: 10,
        }
    }
}

/// The development session secret; [`Config::validate`] warns about it outside local use.
pub const DEV_SESSION_SECRET: &str = "dev-session-secret-change-me-0123456789";
/// The admin token of local clusters and tests (published: development only).
pub const DEV_ADMIN_TOKEN: &str = "local-admin-token-local-admin-token-0123";

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            store: StoreConfig {
                database_url: "sqlite://.local/quiz.db".into(),
                pool_size: 8,
                redis: None,
                membership_url: None,
            },
            session_secret: String::new(),
            allow_dev_secrets: false,
            admin_token: String::new(),
            session_leeway_s: 5,
            engine: EngineConfig::default(),
            limits: Limits::default(),
            listener: quiz_net::ListenerConfig::default(),
            log_json: false,
            cluster: None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid node config: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Ports 0 and short intervals, for tests.
    pub fn for_test(database_url: &str) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: any,
            admin_listen: any,
            store: StoreConfig {
                database_url: database_url.into(),
                pool_size: 4,
                redis: None,
                membership_url: None,
            },
            limits: Limits {
                shutdown_grace_s: 2,
                // Test clients give up on a socket silent for 5 s; a phone whose quiz has
                // ended hears nothing but pings.
                ping_interval_s: 1,
                ..Limits::default()
            },
            session_secret: DEV_SESSION_SECRET.into(),
            admin_token: DEV_ADMIN_TOKEN.into(),
            allow_dev_secrets: true,
            ..Self::default()
        }
    }

    /// Reads a TOML file; missing fields take their defaults, unknown ones are refused.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("parsing {}: {e}", path.display())))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.into()));
        let l = &self.limits;
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return bad("node_id must be 1-64 characters");
        }
        self.check_secret("session_secret", &self.session_secret)?;
        if !self.admin_token.is_empty() {
            self.check_secret("admin_token", &self.admin_token)?;
        }
        let mut listener = Ok(());
        self.listener.check(|field, problem| {
            if listener.is_ok() {
                listener = Err(ConfigError(format!("{field}: {problem}")));
            }
        });
        listener?;
        if !(1024..=16 * 1024 * 1024).contains(&l.max_frame_bytes) {
            return bad("limits.max_frame_bytes must be 1 KiB to 16 MiB");
        }
        if l.send_queue_frames == 0
            || l.send_queue_bytes == 0
            || l.edge_queue_events == 0
            || l.quiz_queue_requests == 0
        {
            return bad("queue sizes must be at least 1");
        }
        if l.answers_per_sec == 0 || l.answer_burst == 0 {
            return bad("limits.answers_per_sec and answer_burst must be at least 1");
        }
        if l.ping_interval_s == 0 || l.idle_timeout_s <= l.ping_interval_s {
            return bad("limits.idle_timeout_s must be longer than ping_interval_s (> 0)");
        }
        if l.leaderboard_store_interval_ms > 10_000 {
            return bad("limits.leaderboard_store_interval_ms must be at most 10000");
        }
        if l.drift_interval_ms > 10_000 {
            return bad("limits.drift_interval_ms must be at most 10000");
        }
        if l.max_write_batch == 0 || l.max_pending_answers == 0 {
            return bad("limits.max_write_batch and max_pending_answers must be at least 1");
        }
        if self.engine.leaderboard_interval_ms == 0 || self.engine.leaderboard_interval_ms > 5000 {
            return bad("engine.leaderboard_interval_ms must be 1-5000");
        }
        if self.engine.rejoin_grace_ms > 60_000 {
            return bad("engine.rejoin_grace_ms must be at most 60000");
        }
        if let Some(c) = &self.cluster {
            if c.ca_cert.is_empty() || c.cert.is_empty() || c.key.is_empty() {
                return bad("cluster.ca_cert, cluster.cert and cluster.key must be set");
            }
            if !(1..=100).contains(&c.weight) {
                return bad("cluster.weight must be 1-100");
            }
            if c.lease_renew_ms == 0 || c.lease_ttl_ms < 2 * c.lease_renew_ms {
                return bad("cluster.lease_ttl_ms must be at least twice lease_renew_ms (> 0)");
            }
            if c.ring_poll_ms == 0 || c.peer_timeout_ms == 0 || c.peer_idle_timeout_ms < 100 {
                return bad("cluster intervals must be positive (peer_idle_timeout_ms >= 100)");
            }
        }
        Ok(())
    }

    /// Refuses a secret that is short, a placeholder, or published with the code (the last
    /// only without `allow_dev_secrets`), naming `field`.
    fn check_secret(&self, field: &str, secret: &str) -> Result<(), ConfigError> {
        match quiz_protocol::session::secret_refusal(secret, self.allow_dev_secrets) {
            Some(why) => Err(ConfigError(format!("{field} {why}"))),
            None => Ok(()),
        }
    }

    /// `wss` when the phones' port serves TLS, else `ws`.
    pub fn ws_scheme(&self) -> &'static str {
        if self.listener.tls_cert.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_but_for_the_secret_and_an_empty_file_parses() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c.limits.max_frame_bytes, 65536);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("session_secret is not set"), "{e}");
        Config {
            session_secret: "q8Vw1xZr3LpT6nYc0sHf2jKd9mAe5uBg".into(),
            ..Config::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn published_and_placeholder_secrets_are_refused_unless_allowed_for_development() {
        let mut c = Config {
            session_secret: DEV_SESSION_SECRET.into(),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("session_secret is a development secret"), "{e}");
        c.allow_dev_secrets = true;
        c.validate().unwrap();
        // A placeholder is not a development secret: the flag does not let it through.
        c.session_secret = "REPLACE-ME-with-thirty-two-random-bytes".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("session_secret is a placeholder"), "{e}");
    }

    #[test]
    fn the_shipped_configs_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in [
            "deploy/local/node.toml",
            "deploy/local/cluster/node-1.toml",
            "deploy/local/cluster/node-2.toml",
            "deploy/local/cluster/node-3.toml",
        ] {
            let config = Config::load(&root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        // The production template does not start until its placeholder secret is replaced.
        let mut production = Config::load(&root.join("deploy/production/node.toml")).unwrap();
        let e = production.validate().unwrap_err().to_string();
        assert!(e.contains("session_secret is a placeholder"), "{e}");
        production.session_secret = "q8Vw1xZr3LpT6nYc0sHf2jKd9mAe5uBg".into();
        production.validate().unwrap();
        assert_eq!(production.store.redis.map(|r| r.nodes.len()), Some(3));
        assert!(production.cluster.is_some());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let mut c = Config::for_test("sqlite::memory:");
        c.limits.idle_timeout_s = 1;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("idle_timeout_s"), "{e}");
        let mut c = Config::for_test("sqlite::memory:");
        c.listener.max_handshaking_per_ip = c.listener.max_handshaking + 1;
        let e = c.validate().unwrap_err();
        assert!(
            e.to_string().contains("listener.max_handshaking_per_ip"),
            "{e}"
        );
        assert!(serde_json::from_str::<Config>(r#"{"limitz":{}}"#).is_err());
    }
}
