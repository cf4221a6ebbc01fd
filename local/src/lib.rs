//! A whole quiz system on one machine: the router and shard nodes in this process, on the
//! embedded store, with the question bank loaded. `quizctl up` runs it; integration tests,
//! the bench and chaos start it on port 0.
//!
//! Secrets here are development secrets: this is for local use and tests only.

pub mod processes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use quiz_client::router::{CreateQuiz, RouterClient};
use quiz_protocol::client::Role;
use quiz_protocol::{QuestionSet, QuizId, QuizSettings};
use quiz_store::{StoreConfig, Stores};
use tokio_util::sync::CancellationToken;

/// The identity-provider secret of local systems (dev tokens are signed with it).
pub const DEV_IDP_SECRET: &str = "local-idp-secret-local-idp-secret-0123";
/// The session secret shared by the local router and nodes.
pub const DEV_SESSION_SECRET: &str = "local-session-secret-local-session-0123";
/// The admin token of local nodes (their control routes: drain, rebuild, crash points).
pub use quiz_node::config::DEV_ADMIN_TOKEN;
/// Issuer and audience of local identity tokens.
pub const DEV_ISSUER: &str = "quiz-local";
pub const DEV_AUDIENCE: &str = "quiz-app";
/// The user that owns the demo quiz; `quizctl host` acts as this user by default.
pub const DEMO_HOST: &str = "demo-host";

/// Client options for test phones that must ride out a node going away: quick reconnects
/// (50 ms doubling to 500 ms, 200 attempts), and answers retried every 200 ms at most until a
/// 60 s answer timeout.
pub fn patient_options() -> quiz_client::Options {
    let mut o = quiz_client::Options::for_test();
    o.reconnect.base = std::time::Duration::from_millis(50);
    o.reconnect.cap = std::time::Duration::from_millis(500);
    o.reconnect.max_attempts = 200;
    o.answer_timeout = std::time::Duration::from_secs(60);
    o.answer_retry.cap = std::time::Duration::from_millis(200);
    o.answer_retry.max_attempts = 1000;
    o
}

/// A router for a local system on `store`: development secrets, dev tokens for any user, and
/// no join or creation limits (tests and terminals drive it from one address; a test of 50+
/// phones would trip over them).
pub fn dev_router_config(
    store: StoreConfig,
    http: SocketAddr,
    admin: SocketAddr,
) -> quiz_router::Config {
    quiz_router::Config {
        http_addr: http,
        admin_addr: admin,
        store,
        auth: quiz_router::AuthConfig {
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            hs256_secret: Some(DEV_IDP_SECRET.into()),
            dev_tokens: true,
            ..Default::default()
        },
        session: quiz_router::SessionConfig {
            secret: DEV_SESSION_SECRET.into(),
            ..Default::default()
        },
        limits: quiz_router::LimitsConfig {
            joins_per_ip_per_minute: 1_000_000,
            join_burst: 1_000_000,
            quiz_creations_per_user_per_minute: 1_000_000,
            quiz_creation_burst: 1_000_000,
            ..Default::default()
        },
        // The secrets above are published with the code: a local system only.
        allow_dev_secrets: true,
        ..Default::default()
    }
}

/// A node's cluster settings for tests: the cluster `local`, QUIC on `listen`, and quick
/// leases, so that a dead node's quizzes move after about a second.
pub fn quick_cluster_config(
    listen: SocketAddr,
    ca_cert: String,
    cert: String,
    key: String,
) -> quiz_node::config::ClusterConfig {
    quiz_node::config::ClusterConfig {
        name: "local".into(),
        listen,
        ca_cert,
        cert,
        key,
        lease_ttl_ms: 1000,
        lease_renew_ms: 200,
        ring_poll_ms: 200,
        handoff_wait_ms: 1000,
        peer_timeout_ms: 2000,
        peer_idle_timeout_ms: 2000,
        ..Default::default()
    }
}

/// The English question bank shipped with the project.
pub const ENGLISH_BANK_JSON: &str = include_str!("../../content/english-a1-b2.json");
/// The six-question demo set.
pub const DEMO_SET_JSON: &str = include_str!("../../content/demo.json");

/// How to run a local system.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The stores; `None` makes a fresh SQLite file in a temporary directory.
    pub store: Option<StoreConfig>,
    /// The router's public address (port 0 picks a free one).
    pub router_addr: SocketAddr,
    /// The router's admin address.
    pub router_admin_addr: SocketAddr,
    /// One (WebSocket, admin) address pair per node.
    pub nodes: Vec<(SocketAddr, SocketAddr)>,
    /// Load the shipped question sets into the store.
    pub seed_content: bool,
    /// Changes to every node's configuration (limits, engine settings).
    pub node_config: fn(&mut quiz_node::Config),
    /// Run the nodes as a cluster: QUIC between them under a CA made for the run, leases, and
    /// a router that builds the ring from the leases. Without it the router has a fixed ring.
    pub cluster: bool,
}

impl LocalOptions {
    /// Everything on port 0, one node, a fresh database: for tests.
    pub fn for_test() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            store: None,
            router_addr: any,
            router_admin_addr: any,
            nodes: vec![(any, any)],
            seed_content: true,
            node_config: |_| {},
            cluster: false,
        }
    }

    /// `nodes` nodes in a cluster, everything on port 0, short leases: for cluster tests.
    pub fn cluster_for_test(nodes: usize) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            nodes: vec![(any, any); nodes],
            cluster: true,
            ..Self::for_test()
        }
    }

    /// The fixed ports `quizctl up` uses: router 8080 (admin 9080), node 7001 (admin 9101).
    pub fn fixed(store: StoreConfig) -> Self {
        let at = |p| SocketAddr::from(([127, 0, 0, 1], p));
        Self {
            store: Some(store),
            router_addr: at(8080),
            router_admin_addr: at(9080),
            nodes: vec![(at(7001), at(9101))],
            seed_content: true,
            node_config: |_| {},
            cluster: false,
        }
    }
}

/// A running local system.
pub struct LocalSystem {
    router: Option<quiz_router::RouterHandle>,
    /// The nodes; `None` while one is stopped.
    pub nodes: Vec<Option<quiz_node::NodeHandle>>,
    /// Each node's configuration, with the ports it bound (so a restart reuses them).
    node_configs: Vec<quiz_node::Config>,
    ca: Option<quiz_cluster::ClusterCa>,
    pub stores: Stores,
    pub store: StoreConfig,
    shutdown: CancellationToken,
    options: LocalOptions,
    _tempdir: TempDir,
}

impl LocalSystem {
    pub async fn start(options: LocalOptions) -> anyhow::Result<LocalSystem> {
        let dir = TempDir::new()?;
        let store = match &options.store {
            Some(store) => store.clone(),
            None => StoreConfig::sql(format!("sqlite://{}", dir.path().join("quiz.db").display())),
        };
        let stores = Stores::open(&store).await.context("opening the store")?;
        if options.seed_content {
            seed(&stores).await?;
        }
        let ca = match options.cluster {
            true => Some(quiz_cluster::ClusterCa::generate("local").context("a cluster CA")?),
            false => None,
        };
        let mut system = LocalSystem {
            router: None,
            nodes: Vec::new(),
            node_configs: Vec::new(),
            ca,
            stores,
            store,
            shutdown: CancellationToken::new(),
            options: options.clone(),
            _tempdir: dir,
        };
        for (ws, admin) in options.nodes.clone() {
            system.add_node(ws, admin).await?;
        }
        system.router = Some(system.start_router().await?);
        if system.ca.is_some() {
            system.wait_for_ring(system.nodes.len()).await?;
        }
        Ok(system)
    }

    fn node_config(
        &self,
        i: usize,
        ws: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<quiz_node::Config> {
        let mut config = quiz_node::Config::for_test(&self.store.database_url);
        config.store = self.store.clone();
        config.node_id = format!("node-{}", i + 1);
        config.listen = ws;
        config.admin_listen = admin;
        config.session_secret = DEV_SESSION_SECRET.into();
        if let Some(ca) = &self.ca {
            let issued = ca.issue(&config.node_id).context("a node certificate")?;
            config.cluster = Some(quick_cluster_config(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                ca.cert_pem(),
                issued.cert_pem,
                issued.key_pem,
            ));
        }
        (self.options.node_config)(&mut config);
        Ok(config)
    }

    /// Starts one more node (in a cluster it joins the ring).
    pub async fn add_node(&mut self, ws: SocketAddr, admin: SocketAddr) -> anyhow::Result<usize> {
        let i = self.node_configs.len();
        let config = self.node_config(i, ws, admin)?;
        self.node_configs.push(config);
        self.nodes.push(None);
        self.start_node(i).await?;
        Ok(i)
    }

    /// Starts node `i` (again), on the ports it had.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let config = self.node_configs[i].clone();
        // A node stopped a moment ago may still be letting go of its ports (connections
        // draining): try again for a few seconds.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let node = loop {
            match quiz_node::start(
                config.clone(),
                self.stores.clone(),
                self.shutdown.child_token(),
            )
            .await
            {
                Ok(node) => break node,
                Err(e) if port_in_use(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("starting node-{}", i + 1)),
            }
        };
        // Pin the ports it bound, so that a restart keeps its URLs.
        let c = &mut self.node_configs[i];
        c.listen = node.ws_addr();
        c.admin_listen = node.admin_addr();
        if let (Some(cluster), Some(addr)) = (c.cluster.as_mut(), node.cluster_addr()) {
            cluster.listen = addr;
        }
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Stops node `i`: gracefully (its quizzes move at once), or as a crash (they move when
    /// its lease expires).
    pub async fn stop_node(&mut self, i: usize, crash: bool) {
        if let Some(node) = self.nodes[i].take() {
            if crash {
                node.crash().await;
            } else {
                node.shutdown().await;
            }
        }
    }

    /// Stops the router and starts a new one on the same stores, as after a router restart.
    /// Addresses of port 0 get new ports; [`LocalSystem::router_url`] and clients made
    /// afterwards follow.
    pub async fn restart_router(&mut self) -> anyhow::Result<()> {
        if let Some(router) = self.router.take() {
            router.shutdown().await;
        }
        self.router = Some(self.start_router().await?);
        Ok(())
    }

    /// The router.
    pub fn router(&self) -> &quiz_router::RouterHandle {
        // Set by `start` before it returns the system.
        self.router
            .as_ref()
            .unwrap_or_else(|| unreachable!("the router starts with the system"))
    }

    /// A running node.
    pub fn node(&self, i: usize) -> &quiz_node::NodeHandle {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node-{} is stopped", i + 1))
    }

    async fn start_router(&self) -> anyhow::Result<quiz_router::RouterHandle> {
        let mut config = dev_router_config(
            self.store.clone(),
            self.options.router_addr,
            self.options.router_admin_addr,
        );
        match &self.ca {
            None => {
                config.nodes = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
                    .map(|(i, n)| quiz_router::NodeConfig {
                        id: format!("node-{}", i + 1),
                        ws_url: n.ws_url(),
                        weight: 1,
                    })
                    .collect();
            }
            Some(ca) => {
                let issued = ca.issue("router").context("the router's certificate")?;
                let dir = self._tempdir.path();
                let (ca_path, cert, key) = (
                    dir.join("ca.pem"),
                    dir.join("router.pem"),
                    dir.join("router.key"),
                );
                std::fs::write(&ca_path, ca.cert_pem())?;
                std::fs::write(&cert, issued.cert_pem)?;
                std::fs::write(&key, issued.key_pem)?;
                config.cluster = Some(quiz_router::ClusterConfig {
                    name: "local".into(),
                    router_id: "router".into(),
                    ca_cert: ca_path,
                    cert,
                    key,
                    bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    poll_interval_ms: 100,
                    push_interval_ms: 1000,
                    push_timeout_ms: 1000,
                });
            }
        }
        quiz_router::start(config, self.stores.clone(), self.shutdown.child_token())
            .await
            .context("starting the router")
    }

    /// Waits until the stored ring has `members` members (a cluster forming, or changing).
    pub async fn wait_for_ring(&self, members: usize) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(ring) = self.stores.membership.ring().await?
                && ring.members.len() == members
            {
                return Ok(ring.epoch);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the ring never reached {members} members"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The router's base URL, such as `http://127.0.0.1:8080`.
    pub fn router_url(&self) -> String {
        format!("http://{}", self.router().http_addr())
    }

    /// A router client acting as `user` with `role` (a dev token).
    pub async fn client(&self, user: &str, role: Role) -> anyhow::Result<RouterClient> {
        Ok(RouterClient::dev(&self.router_url(), user, role).await?)
    }

    /// Creates a quiz from a stored question set, hosted by `host`.
    pub async fn create_quiz(
        &self,
        host: &str,
        question_set: &str,
        settings: QuizSettings,
    ) -> anyhow::Result<QuizId> {
        let client = self.client(host, Role::Host).await?;
        let created = client
            .create_quiz(&CreateQuiz {
                question_set: question_set.into(),
                settings: Some(settings),
                ..Default::default()
            })
            .await?;
        Ok(created.quiz_id)
    }

    /// Stops the router and nodes, flushing every quiz's writes.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Some(router) = self.router {
            router.wait().await;
        }
        for node in self.nodes.into_iter().flatten() {
            node.wait().await;
        }
    }
}

/// Whether a node failed to start only because a port it wants is still held.
fn port_in_use(e: &quiz_node::StartError) -> bool {
    match e {
        quiz_node::StartError::Bind { source, .. } => {
            source.kind() == std::io::ErrorKind::AddrInUse
        }
        quiz_node::StartError::Cluster(message) => message.contains("in use"),
        _ => false,
    }
}

/// Loads the shipped question sets (the English bank and the demo) into the store, as the
/// system's, public: every host may create quizzes from them; only admins read their answers.
pub async fn seed(stores: &Stores) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    for json in [ENGLISH_BANK_JSON, DEMO_SET_JSON] {
        let set = parse_set(json)?;
        let access = quiz_store::SetAccess::public("");
        stores
            .content
            .put_question_set(&set, &access, true, now)
            .await?;
    }
    Ok(())
}

/// Parses a question set, with every problem in the error.
pub fn parse_set(json: &str) -> anyhow::Result<QuestionSet> {
    QuestionSet::from_json(json).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid question set:\n  {}", lines.join("\n  "))
    })
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let unique = format!("quiz-local-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
