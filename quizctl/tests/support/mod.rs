//! A real cluster for multi-process tests: PostgreSQL (a throwaway database), a Redis Cluster
//! (3 masters, 3 replicas), a shard node running as a separate OS process (this package's
//! `quizctl node`, so it can be SIGKILLed and started again), and the router in this process.
#![allow(dead_code, unreachable_pub)]

mod game;
#[allow(unused_imports)]
pub use game::*;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_client::{Event, Options, QuizConnection, QuizView, RouterClient};
use quiz_harness::{PgDatabase, RedisCluster};
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{QuizId, QuizSettings};
use quiz_store::{RedisConfig, StoreConfig, Stores};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const SESSION_SECRET: &str = "mp-test-session-secret-mp-test-session-0123";
pub const IDP_SECRET: &str = "mp-test-idp-secret-mp-test-idp-secret-0123";

/// Every multi-process test runs under this timeout.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").port()
}

/// A shard node in its own process.
pub struct NodeProcess {
    pub ws_port: u16,
    pub admin_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl NodeProcess {
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.ws_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Starts the process and waits until its admin port answers.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_quizctl"))
            .args(["node", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn quizctl node");
        self.child = Some(child);
        self.starts += 1;
        let health = format!("{}/healthz", self.admin_url());
        for _ in 0..300 {
            if reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "node did not come up; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL: no goodbye, no flush.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL the node");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A throwaway PostgreSQL database and a Redis Cluster (3 masters, 3 replicas) of this test's
/// own, with the shipped question sets loaded.
pub struct Backends {
    pub pg: Option<PgDatabase>,
    pub redis: RedisCluster,
    pub store: StoreConfig,
    pub stores: Stores,
}

impl Backends {
    pub async fn start(name: &str) -> Backends {
        let pg = PgDatabase::create(name)
            .await
            .expect("a PostgreSQL database");
        let redis = RedisCluster::start(3, 1).await.expect("a Redis Cluster");
        let store = StoreConfig {
            redis: Some(RedisConfig {
                nodes: redis.seed_urls(),
                connect_timeout_ms: 500,
                response_timeout_ms: 500,
                retries: 2,
                weekly_league_weeks_kept: 8,
            }),
            ..StoreConfig::sql(pg.url())
        };
        let stores = Stores::open(&store).await.expect("stores open");
        quiz_local::seed(&stores).await.expect("content seeded");
        Backends {
            pg: Some(pg),
            redis,
            store,
            stores,
        }
    }

    /// Drops the database (the Redis Cluster stops when dropped).
    pub async fn stop(mut self) {
        if let Some(pg) = self.pg.take() {
            drop(self.stores);
            let _ = pg.drop_database().await;
        }
    }
}

/// PostgreSQL + Redis Cluster + one node process + an in-process router.
pub struct RealCluster {
    pub pg: Option<PgDatabase>,
    pub redis: RedisCluster,
    pub store: StoreConfig,
    pub stores: Stores,
    pub node: NodeProcess,
    pub router: quiz_router::RouterHandle,
    pub shutdown: CancellationToken,
    pub dir: PathBuf,
}

impl RealCluster {
    pub async fn start(name: &str) -> RealCluster {
        let Backends {
            pg,
            redis,
            store,
            stores,
        } = Backends::start(name).await;
        let dir = std::env::temp_dir().join(format!("quiz-mp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ws_port, admin_port) = (free_port(), free_port());
        let mut config = quiz_node::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], ws_port)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            store: store.clone(),
            session_secret: SESSION_SECRET.into(),
            ..Default::default()
        };
        config.limits.shutdown_grace_s = 2;
        let config_path = dir.join("node.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&config).expect("node config as TOML"),
        )
        .unwrap();
        let mut node = NodeProcess {
            ws_port,
            admin_port,
            config: config_path,
            log: dir.join("node.log"),
            child: None,
            starts: 0,
        };
        node.start().await;

        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let router_config = quiz_router::Config {
            http_addr: any,
            admin_addr: any,
            store: store.clone(),
            auth: quiz_router::AuthConfig {
                issuer: "mp-test".into(),
                audience: "quiz-app".into(),
                hs256_secret: Some(IDP_SECRET.into()),
                dev_tokens: true,
                ..Default::default()
            },
            session: quiz_router::SessionConfig {
                secret: SESSION_SECRET.into(),
                ..Default::default()
            },
            limits: quiz_router::LimitsConfig {
                joins_per_ip_per_minute: 1_000_000,
                join_burst: 1_000_000,
                ..Default::default()
            },
            nodes: vec![quiz_router::NodeConfig {
                id: "node-1".into(),
                ws_url: node.ws_url(),
                weight: 1,
            }],
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let router = quiz_router::start(router_config, stores.clone(), shutdown.child_token())
            .await
            .expect("router starts");
        RealCluster {
            pg,
            redis,
            store,
            stores,
            node,
            router,
            shutdown,
            dir,
        }
    }

    pub fn router_url(&self) -> String {
        format!("http://{}", self.router.http_addr())
    }

    pub async fn client(&self, user: &str, role: Role) -> RouterClient {
        dev_client(&self.router_url(), user, role).await
    }

    pub async fn quiz(&self, set_json: &str, settings: QuizSettings) -> QuizId {
        create_quiz(&self.router_url(), set_json, settings).await
    }

    pub async fn stop(mut self) {
        self.node.kill().await;
        self.shutdown.cancel();
        if let Some(pg) = self.pg.take() {
            self.stores.quizzes.live_quizzes().await.ok();
            drop(self.stores);
            let _ = pg.drop_database().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A router client acting as `user` with `role`, with a dev token from the router at `url`.
pub async fn dev_client(url: &str, user: &str, role: Role) -> RouterClient {
    RouterClient::dev(url, user, role).await.expect("dev token")
}

/// Imports `set_json` and creates a quiz of it, hosted by `host`, through the router at `url`.
pub async fn create_quiz(url: &str, set_json: &str, settings: QuizSettings) -> QuizId {
    let host = dev_client(url, "host", Role::Host).await;
    let set = quiz_local::parse_set(set_json).expect("valid set");
    host.put_question_set(&set).await.expect("set imported");
    let created = host
        .create_quiz(&quiz_client::CreateQuiz {
            question_set: set.id.clone(),
            settings: Some(settings),
            ..Default::default()
        })
        .await
        .expect("quiz created");
    created.quiz_id
}

/// A set of `questions` single-choice questions (options a-d; question q's right option is
/// q % 4) with `time_limit_s` each, in the import format.
pub fn single_choice_set(id: &str, questions: u32, time_limit_s: u32) -> String {
    let questions: Vec<String> = (0..questions)
        .map(|q| {
            format!(
                r#"{{"id":"q{q}","level":"A2","topic":"vocabulary","prompt":"Question {q}?",
                   "kind":"single_choice","options":["a","b","c","d"],"answer":{},"time_limit_s":{time_limit_s}}}"#,
                q % 4
            )
        })
        .collect();
    format!(
        r#"{{"id":"{id}","title":"Test set {id}","questions":[{}]}}"#,
        questions.join(",")
    )
}

/// Reconnect patiently: a node restart takes a second or two.
pub fn patient_options() -> Options {
    quiz_local::patient_options()
}

/// A phone: a connection and what it has seen.
#[derive(Clone)]
pub struct Phone {
    pub name: String,
    pub conn: QuizConnection,
    pub view: Arc<Mutex<QuizView>>,
    pub changed: Arc<Notify>,
    /// `welcome` and `resumed` frames received: the first join, then every rejoin.
    pub joins: Arc<std::sync::atomic::AtomicU32>,
}

impl Phone {
    pub async fn join(
        cluster: &RealCluster,
        quiz: &QuizId,
        user: &str,
        name: &str,
        role: Role,
    ) -> Phone {
        let router = cluster.client(user, role).await;
        Phone::connect(&router, quiz, name, role).await
    }

    /// Joins through `router` (whose token says who the phone is).
    pub async fn connect(router: &RouterClient, quiz: &QuizId, name: &str, role: Role) -> Phone {
        Phone::connect_at(router, quiz, name, role, None).await
    }

    /// Joins through `router`, trying the edge `first` (one of the ticket's) before the others:
    /// how a test spreads phones over every node.
    pub async fn connect_at(
        router: &RouterClient,
        quiz: &QuizId,
        name: &str,
        role: Role,
        first: Option<&str>,
    ) -> Phone {
        let mut ticket = router
            .join(quiz, name, (role == Role::Host).then_some(Role::Host))
            .await
            .expect("join");
        if let Some(first) = first {
            let at = ticket
                .ws_urls
                .iter()
                .position(|u| u == first)
                .expect("the edge is in the ticket");
            ticket.ws_urls.rotate_left(at);
        }
        let options = patient_options().with_refresh(router.refresher(
            quiz.clone(),
            name.into(),
            (role == Role::Host).then_some(Role::Host),
        ));
        let (conn, mut events) = QuizConnection::connect(ticket, options)
            .await
            .expect("connect");
        let view = Arc::new(Mutex::new(QuizView::new()));
        let changed = Arc::new(Notify::new());
        let joins = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (v, c, w) = (view.clone(), changed.clone(), joins.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Frame(f) = &event
                    && let ServerMessage::Welcome(_) | ServerMessage::Resumed(_) = f.as_ref()
                {
                    w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                v.lock().unwrap().apply_event(&event);
                c.notify_waiters();
            }
        });
        Phone {
            name: name.into(),
            conn,
            view,
            changed,
            joins,
        }
    }

    /// Waits (up to `limit`) until `check` holds on the phone's view.
    pub async fn until<T>(
        &self,
        limit: Duration,
        mut check: impl FnMut(&QuizView) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if let Some(v) = check(&self.view.lock().unwrap()) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.view.lock().unwrap());
            }
        }
    }

    pub fn view(&self) -> QuizView {
        self.view.lock().unwrap().clone()
    }
}
