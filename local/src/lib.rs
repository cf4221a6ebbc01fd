//! A whole quiz system on one machine: the router and shard nodes in this process, on the
//! embedded store, with the question bank loaded. `quizctl up` runs it; integration tests,
//! the bench and chaos start it on port 0.
//!
//! Secrets here are development secrets: this is for local use and tests only.

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
/// Issuer and audience of local identity tokens.
pub const DEV_ISSUER: &str = "quiz-local";
pub const DEV_AUDIENCE: &str = "quiz-app";
/// The user that owns the demo quiz; `quizctl host` acts as this user by default.
pub const DEMO_HOST: &str = "demo-host";

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
        }
    }
}

/// A running local system.
pub struct LocalSystem {
    pub router: quiz_router::RouterHandle,
    pub nodes: Vec<quiz_node::NodeHandle>,
    pub stores: Stores,
    pub store: StoreConfig,
    shutdown: CancellationToken,
    _tempdir: Option<TempDir>,
}

impl LocalSystem {
    pub async fn start(options: LocalOptions) -> anyhow::Result<LocalSystem> {
        let (store, tempdir) = match options.store {
            Some(store) => (store, None),
            None => {
                let dir = TempDir::new()?;
                let url = format!("sqlite://{}", dir.path().join("quiz.db").display());
                (StoreConfig::sql(url), Some(dir))
            }
        };
        let stores = Stores::open(&store).await.context("opening the store")?;
        if options.seed_content {
            seed(&stores).await?;
        }
        let shutdown = CancellationToken::new();
        let mut nodes = Vec::new();
        for (i, (ws, admin)) in options.nodes.iter().enumerate() {
            let mut config = quiz_node::Config::for_test(&store.database_url);
            config.store = store.clone();
            config.node_id = format!("node-{}", i + 1);
            config.listen = *ws;
            config.admin_listen = *admin;
            config.session_secret = DEV_SESSION_SECRET.into();
            (options.node_config)(&mut config);
            let node = quiz_node::start(config, stores.clone(), shutdown.child_token())
                .await
                .with_context(|| format!("starting node-{}", i + 1))?;
            nodes.push(node);
        }
        let config = quiz_router::Config {
            http_addr: options.router_addr,
            admin_addr: options.router_admin_addr,
            store: store.clone(),
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
            // Local systems are driven by tests and terminals from one address: no join
            // limits that a test of 50+ phones would trip over.
            limits: quiz_router::LimitsConfig {
                joins_per_ip_per_minute: 1_000_000,
                join_burst: 1_000_000,
                ..Default::default()
            },
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| quiz_router::NodeConfig {
                    id: format!("node-{}", i + 1),
                    ws_url: n.ws_url(),
                    weight: 1,
                })
                .collect(),
            ..Default::default()
        };
        let router = quiz_router::start(config, stores.clone(), shutdown.child_token())
            .await
            .context("starting the router")?;
        Ok(LocalSystem {
            router,
            nodes,
            stores,
            store,
            shutdown,
            _tempdir: tempdir,
        })
    }

    /// The router's base URL, such as `http://127.0.0.1:8080`.
    pub fn router_url(&self) -> String {
        format!("http://{}", self.router.http_addr())
    }

    /// A router client acting as `user` with `role` (a dev token).
    pub async fn client(&self, user: &str, role: Role) -> anyhow::Result<RouterClient> {
        let token = RouterClient::dev_token(&self.router_url(), user, role).await?;
        Ok(RouterClient::new(self.router_url(), token))
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
        self.router.wait().await;
        for node in self.nodes {
            node.wait().await;
        }
    }
}

/// Loads the shipped question sets (the English bank and the demo) into the store.
pub async fn seed(stores: &Stores) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    for json in [ENGLISH_BANK_JSON, DEMO_SET_JSON] {
        let set = parse_set(json)?;
        stores.content.put_question_set(&set, now).await?;
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
