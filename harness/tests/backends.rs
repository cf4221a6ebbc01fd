//! The harness against real servers: a cluster starts and fails over, its data can be wiped,
//! no server outlives the test process (even one that is SIGKILLed), and a throwaway
//! PostgreSQL database comes and goes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use quiz_harness::{PgDatabase, RedisCluster};
use sqlx::{Connection, PgConnection, Row};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

/// Set in the child process of `servers_die_with_the_test_process`.
const ORPHAN_ENV: &str = "QUIZ_HARNESS_ORPHAN";

async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
    // `WAIT` may block for its own 5 s (a replica still syncing on a busy machine): longer
    // than the client's default response timeout.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)));
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Whether anything accepts connections on the port.
async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_takes_over_a_killed_master_and_data_can_be_wiped() {
    timeout(Duration::from_secs(180), async {
        let mut cluster = RedisCluster::start(3, 1).await.unwrap();
        let ports = cluster.ports();
        assert_eq!(ports.len(), 6);
        assert_eq!(
            cluster.seed_urls(),
            ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
        );
        let dir = cluster.dir().to_path_buf();
        assert!(dir.exists());

        // A key on its master, copied to the replica before the master dies.
        let key = "{harness}:answer";
        let master = cluster.master_of_key(key).await.unwrap();
        let mut con = connect(master).await;
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(42)
            .query_async(&mut con)
            .await
            .unwrap();
        let copies: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5_000)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(copies, 1, "the replica has the key");
        drop(con);

        cluster.kill(master).await.unwrap();
        assert!(!listening(master).await, "the killed master is gone");
        let new_master = cluster.wait_for_new_master(master).await.unwrap();
        assert_ne!(new_master, master);
        assert!(ports.contains(&new_master));
        assert_eq!(cluster.master_of_key(key).await.unwrap(), new_master);
        let mut con = connect(new_master).await;
        let value: Option<i64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(value, Some(42), "the promoted replica serves the key");

        cluster.flush_all().await.unwrap();
        let value: Option<i64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(value, None, "FLUSHALL lost it");
        drop(con);

        let live = cluster.live_ports();
        assert_eq!(live.len(), 5);
        drop(cluster);
        for port in live {
            assert!(!listening(port).await, "{port} still listens after drop");
        }
        assert!(!dir.exists(), "the folder is removed");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_three_masters_are_refused() {
    let err = RedisCluster::start(2, 0).await.err().unwrap();
    assert!(err.to_string().contains("at least 3 masters"), "{err}");
}

/// A test process that dies without running destructors (SIGKILL) leaves no server behind:
/// this test runs itself as a child process that starts a cluster and waits, kills it, and
/// watches the servers go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_die_with_the_test_process() {
    if std::env::var_os(ORPHAN_ENV).is_some() {
        // The child: start a cluster, say where it is, and wait to be killed.
        let cluster = RedisCluster::start(3, 0).await.unwrap();
        let ports: Vec<String> = cluster.ports().iter().map(u16::to_string).collect();
        println!(
            "CLUSTER {} {}",
            ports.join(","),
            cluster.dir().to_string_lossy()
        );
        tokio::time::sleep(Duration::from_secs(300)).await;
        return;
    }
    timeout(Duration::from_secs(180), async {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "servers_die_with_the_test_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(ORPHAN_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (ports, dir) = loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the child ended before starting its cluster");
            // libtest may print the test's name on the same line first.
            if let Some((_, rest)) = line.split_once("CLUSTER ") {
                let (ports, dir) = rest.split_once(' ').unwrap();
                let ports: Vec<u16> = ports.split(',').map(|p| p.parse().unwrap()).collect();
                break (ports, PathBuf::from(dir));
            }
        };
        assert_eq!(ports.len(), 3);
        for &port in &ports {
            assert!(listening(port).await, "{port} is up while the child lives");
        }
        child.kill().await.unwrap();
        for &port in &ports {
            assert!(
                eventually(Duration::from_secs(20), async || !listening(port).await).await,
                "redis-server on {port} outlived its test process"
            );
        }
        assert!(
            eventually(Duration::from_secs(20), async || !dir.exists()).await,
            "{} was left behind",
            dir.display()
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_throwaway_postgres_database_comes_and_goes() {
    if std::env::var("QUIZ_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("QUIZ_SKIP_PG=1: PostgreSQL case skipped");
        return;
    }
    let db = PgDatabase::create("harness").await.unwrap();
    let name = db.name().to_owned();
    assert!(name.starts_with("quiz_harness_"), "{name}");
    assert!(db.url().ends_with(&name), "{}", db.url());
    let mut con = PgConnection::connect(db.url()).await.unwrap();
    let here: String = sqlx::query("SELECT current_database()")
        .fetch_one(&mut con)
        .await
        .unwrap()
        .get(0);
    assert_eq!(here, name);
    // Dropped WITH (FORCE): the connection still open does not stop it.
    db.drop_database().await.unwrap();
    let admin_url = std::env::var("QUIZ_TEST_PG_URL")
        .unwrap_or_else(|_| quiz_harness::DEFAULT_PG_ADMIN_URL.to_owned());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    let left: i64 = sqlx::query("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
