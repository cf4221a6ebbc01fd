//! `quizctl up`: the whole system on this machine. By default on the embedded store (SQLite,
//! nothing to install); with `--real`, on PostgreSQL and a Redis Cluster started for the run.

use std::path::PathBuf;

use anyhow::Context;
use quiz_harness::{PgDatabase, RedisCluster};
use quiz_local::{DEMO_HOST, LocalOptions, LocalSystem};
use quiz_protocol::QuizSettings;
use quiz_store::{RedisConfig, StoreConfig};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Where the SQLite database lives.
    #[arg(long, default_value = ".local")]
    data_dir: PathBuf,
    /// Start from an empty database.
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
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    quiz_node::telemetry::init(args.log_json);
    let mut backends = None;
    let (store, described) = if args.real {
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
        let described = format!(
            "PostgreSQL {} and Redis Cluster {}",
            pg.url(),
            redis.seed_urls().join(" ")
        );
        backends = Some((pg, redis));
        (store, described)
    } else {
        let db = args.data_dir.join("quiz.db");
        if args.fresh {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
        }
        let store = StoreConfig::sql(format!("sqlite://{}", db.display()));
        (store, format!("embedded SQLite at {}", db.display()))
    };
    let system = LocalSystem::start(LocalOptions::fixed(store))
        .await
        .context("starting the local system (are ports 8080, 9080, 7001 and 9101 free?)")?;
    let quiz = system
        .create_quiz(DEMO_HOST, "demo", QuizSettings::default())
        .await?;
    let node = system.node(0);
    println!("Quiz system is up ({described}).");
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
    println!();
    println!("Demo quiz: {quiz}  (6 questions; another: quizctl host --set english-a1-b2)");
    println!("  host it: cargo run -p quizctl -- host --quiz {quiz}");
    println!("  play it: cargo run -p quizctl -- play --quiz {quiz} --name Ana");
    println!();
    println!("Ctrl-C stops it.");
    quiz_node::telemetry::shutdown_signal().await;
    println!("stopping...");
    system.shutdown().await;
    if let Some((pg, redis)) = backends {
        drop(redis);
        pg.drop_database().await?;
    }
    Ok(())
}
