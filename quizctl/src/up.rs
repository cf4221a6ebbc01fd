//! `quizctl up`: the whole system on this machine. By default a cluster of separate processes
//! (the router and three nodes, configured by `deploy/local/cluster/`, talking QUIC under a CA
//! made on first use); with `--single`, the router and one node inside this process. Storage is
//! the embedded SQLite file unless `--real` asks for PostgreSQL and a Redis Cluster started for
//! the run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use quiz_harness::{PgDatabase, RedisCluster};
use quiz_local::processes::{Plan, ProcessCluster, ensure_certs};
use quiz_local::{DEMO_HOST, LocalOptions, LocalSystem};
use quiz_protocol::QuizSettings;
use quiz_protocol::client::Role;
use quiz_store::{RedisConfig, StoreConfig, Stores};

/// The built-in copy of `deploy/local/cluster/`, for running outside the repository.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "router.toml",
        include_str!("../../deploy/local/cluster/router.toml"),
    ),
    (
        "node-1.toml",
        include_str!("../../deploy/local/cluster/node-1.toml"),
    ),
    (
        "node-2.toml",
        include_str!("../../deploy/local/cluster/node-2.toml"),
    ),
    (
        "node-3.toml",
        include_str!("../../deploy/local/cluster/node-3.toml"),
    ),
];

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Run the router and one node inside this process (ports 8080, 9080, 7001, 9101), without
    /// QUIC or certificates, instead of a cluster of processes.
    #[arg(long)]
    single: bool,
    /// The cluster's configuration files: `router.toml` and one `node-*.toml` per node.
    /// Without this folder (outside the repository), a built-in copy of the default is used.
    #[arg(long, default_value = "deploy/local/cluster")]
    configs: PathBuf,
    /// Where the running cluster keeps its state: the configurations in use and each
    /// process's log (`cluster/`); with `--single`, also the SQLite file.
    #[arg(long, default_value = ".local")]
    data_dir: PathBuf,
    /// Start from an empty SQLite database.
    #[arg(long)]
    fresh: bool,
    /// Use PostgreSQL (a fresh database on the server at QUIZ_TEST_PG_URL, default
    /// postgres://postgres@127.0.0.1:5432/postgres) and a local Redis Cluster (3 masters, 3
    /// replicas, started now) instead of SQLite. Both are thrown away when this stops.
    #[arg(long)]
    real: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// With `--single`: bind every port to a free one instead, and once up print one line
    /// `ready {JSON}` with the URLs (`router_url`, `ws_url`, `router_admin_url`,
    /// `node_admin_url`) and the demo quiz's code (`demo_quiz`): for test suites that start a
    /// system of their own.
    #[arg(long, requires = "single")]
    free_ports: bool,
}

/// PostgreSQL and Redis made for this run, dropped when it stops.
struct Backends {
    pg: PgDatabase,
    _redis: RedisCluster,
    store: StoreConfig,
}

impl Backends {
    async fn start() -> anyhow::Result<Backends> {
        let pg = PgDatabase::create("local")
            .await
            .context("creating a PostgreSQL database")?;
        let redis = RedisCluster::start(3, 1)
            .await
            .context("starting a Redis Cluster")?;
        let store = StoreConfig {
            redis: Some(RedisConfig {
                nodes: redis.seed_urls(),
                connect_timeout_ms: 1000,
                response_timeout_ms: 1000,
                retries: 3,
                weekly_league_weeks_kept: 8,
            }),
            ..StoreConfig::sql(pg.url())
        };
        Ok(Backends {
            pg,
            _redis: redis,
            store,
        })
    }

    fn describe(&self) -> String {
        let redis = self.store.redis.as_ref().map(|r| r.nodes.join(" "));
        format!(
            "PostgreSQL {} and Redis Cluster {}",
            self.pg.url(),
            redis.unwrap_or_default()
        )
    }

    async fn stop(self) -> anyhow::Result<()> {
        drop(self._redis);
        self.pg.drop_database().await?;
        Ok(())
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    quiz_node::telemetry::init(args.log_json);
    let backends = match args.real {
        true => Some(Backends::start().await?),
        false => None,
    };
    let result = match args.single {
        true => single(&args, backends.as_ref()).await,
        false => cluster(&args, backends.as_ref()).await,
    };
    if let Some(backends) = backends {
        backends.stop().await?;
    }
    result
}

/// The router and one node in this process.
async fn single(args: &Args, backends: Option<&Backends>) -> anyhow::Result<()> {
    let (store, described) = match backends {
        Some(b) => (b.store.clone(), b.describe()),
        None => {
            let db = args.data_dir.join("quiz.db");
            if args.fresh {
                remove_sqlite(&db);
            }
            let store = StoreConfig::sql(format!("sqlite://{}", db.display()));
            (store, format!("embedded SQLite at {}", db.display()))
        }
    };
    let options = match args.free_ports {
        true => LocalOptions {
            store: Some(store),
            ..LocalOptions::for_test()
        },
        false => LocalOptions::fixed(store),
    };
    let system = LocalSystem::start(options)
        .await
        .context("starting the local system (are ports 8080, 9080, 7001 and 9101 free?)")?;
    let quiz = system
        .create_quiz(DEMO_HOST, "demo", QuizSettings::default())
        .await?;
    let node = system.node(0);
    if args.free_ports {
        let ready = serde_json::json!({
            "router_url": system.router_url(),
            "router_admin_url": format!("http://{}", system.router().admin_addr()),
            "ws_url": node.ws_url(),
            "node_admin_url": format!("http://{}", node.admin_addr()),
            "demo_quiz": quiz.to_string(),
        });
        println!("ready {ready}");
    }
    println!("Quiz system is up, in one process ({described}).");
    println!(
        "  router   {}   metrics http://{}/metrics",
        system.router_url(),
        system.router().admin_addr()
    );
    println!(
        "  node-1   {}   metrics http://{}/metrics",
        node.ws_url(),
        node.admin_addr()
    );
    print_demo(&quiz.to_string());
    quiz_node::telemetry::shutdown_signal().await;
    println!("stopping...");
    system.shutdown().await;
    Ok(())
}

/// The router and the nodes of `args.configs`, each its own process of this executable.
async fn cluster(args: &Args, backends: Option<&Backends>) -> anyhow::Result<()> {
    let mut plan = load_plan(&args.configs)?;
    let described = match backends {
        Some(b) => {
            plan.router.store = b.store.clone();
            for node in &mut plan.nodes {
                node.store = b.store.clone();
            }
            b.describe()
        }
        None => {
            let url = &plan.router.store.database_url;
            if args.fresh
                && let Some(path) = url.strip_prefix("sqlite://")
            {
                remove_sqlite(Path::new(path));
            }
            format!("embedded {url}")
        }
    };
    prepare_certs(&plan)?;
    if let Some(dir) = sqlite_dir(&plan.router.store.database_url) {
        std::fs::create_dir_all(dir)?;
    }
    let stores = Stores::open(&plan.router.store)
        .await
        .context("opening the store")?;
    quiz_local::seed(&stores).await?;
    drop(stores);

    let exe = std::env::current_exe().context("finding this executable")?;
    let run_dir = args.data_dir.join("cluster");
    let cluster = ProcessCluster::launch(&exe, &run_dir, plan)
        .await
        .context("starting the cluster (are its ports free? see deploy/local/cluster/)")?;
    let quiz = demo_quiz(&cluster.router_url()).await?;
    println!(
        "Quiz cluster is up: a router and {} nodes, each its own process ({described}).",
        cluster.nodes.len()
    );
    println!(
        "  router   {}   metrics http://{}/metrics   ring http://{}/v1/cluster/ring",
        cluster.router_url(),
        cluster.plan.router.admin_addr,
        cluster.plan.router.admin_addr
    );
    for (i, node) in cluster.plan.nodes.iter().enumerate() {
        println!(
            "  {}   {}   metrics {}/metrics",
            node.node_id,
            cluster.ws_url(i),
            cluster.admin_url(i)
        );
    }
    println!("  logs     {}/*.log", run_dir.display());
    print_demo(&quiz);
    quiz_node::telemetry::shutdown_signal().await;
    println!("stopping...");
    cluster.shutdown().await;
    Ok(())
}

/// Reads `router.toml` and every `node-*.toml` of `dir` (in name order), or the built-in copy
/// of the defaults when `dir` does not exist.
fn load_plan(dir: &Path) -> anyhow::Result<Plan> {
    let files: Vec<(String, String)> = if dir.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == "router.toml" || (n.starts_with("node-") && n.ends_with(".toml")))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(&n))
                    .with_context(|| format!("reading {}", dir.join(&n).display()))?;
                Ok((n, text))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        tracing::info!(dir = %dir.display(), "no such folder; using the built-in local cluster");
        BUILT_IN
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    let mut router = None;
    let mut nodes = Vec::new();
    for (name, text) in files {
        if name == "router.toml" {
            router =
                Some(quiz_router::Config::from_toml(&text).with_context(|| format!("in {name}"))?);
        } else {
            let node: quiz_node::Config =
                toml::from_str(&text).with_context(|| format!("parsing {name}"))?;
            node.validate().with_context(|| format!("in {name}"))?;
            anyhow::ensure!(node.cluster.is_some(), "{name} has no [cluster] section");
            nodes.push(node);
        }
    }
    let router = router.with_context(|| format!("no router.toml in {}", dir.display()))?;
    anyhow::ensure!(
        router.cluster.is_some(),
        "router.toml has no [cluster] section"
    );
    anyhow::ensure!(!nodes.is_empty(), "no node-*.toml in {}", dir.display());
    Ok(Plan {
        router,
        nodes,
        node_env: Vec::new(),
        node_open_files: None,
    })
}

/// Creates the CA and the certificates the configurations name, where they name them, when
/// missing.
fn prepare_certs(plan: &Plan) -> anyhow::Result<()> {
    let Some(cluster) = &plan.router.cluster else {
        return Ok(());
    };
    let dir = cluster.ca_cert.parent().unwrap_or(Path::new("."));
    let mut names = vec![cluster.router_id.as_str()];
    names.extend(plan.nodes.iter().map(|n| n.node_id.as_str()));
    ensure_certs(dir, &cluster.name, &names)
        .with_context(|| format!("preparing certificates in {}", dir.display()))
}

/// The folder of an SQLite database URL.
fn sqlite_dir(url: &str) -> Option<&Path> {
    Path::new(url.strip_prefix("sqlite://")?).parent()
}

/// Removes an embedded database and its membership sibling (the nodes' leases).
fn remove_sqlite(db: &Path) {
    let url = format!("sqlite://{}", db.display());
    let membership = StoreConfig::sql(url.clone()).membership_database();
    for url in [url, membership] {
        let path = url.trim_start_matches("sqlite://");
        let path = path.split('?').next().unwrap_or(path);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}

/// Creates the demo quiz through the router, as the demo host.
async fn demo_quiz(router: &str) -> anyhow::Result<String> {
    let client = quiz_client::RouterClient::dev(router, DEMO_HOST, Role::Host).await?;
    let created = client
        .create_quiz(&quiz_client::CreateQuiz {
            question_set: "demo".into(),
            settings: Some(QuizSettings::default()),
            ..Default::default()
        })
        .await?;
    Ok(created.quiz_id.to_string())
}

fn print_demo(quiz: &str) {
    println!();
    println!("Demo quiz: {quiz}  (6 questions; another: quizctl host --set english-a1-b2)");
    println!("  host it: cargo run -p quizctl -- host --quiz {quiz}");
    println!("  play it: cargo run -p quizctl -- play --quiz {quiz} --name Ana");
    println!();
    println!("Ctrl-C stops it.");
}
