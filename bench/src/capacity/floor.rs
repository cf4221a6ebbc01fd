//! The floor of a run: the same work done the simplest way on the same machine, in the same
//! invocation, so that every figure can be read as a ratio to what this machine allows.
//!
//! - [`broadcast`]: a minimal fastwebsockets broadcaster ([`super::floor_server`]) pushing one
//!   small frame to the same number of sockets, held by the same kind of load processes:
//!   first → last socket per frame, frames per second in a burst, memory per idle socket.
//! - [`store`]: the answer log's work without the system: single-row inserts into the same
//!   backend at the run's answer rate (PostgreSQL, 16 connections; or SQLite with
//!   `synchronous = FULL`, one writer), and on the real backend a Redis Cluster script on a
//!   hash-tagged key at the same rate. Open loop: each operation is scheduled at its time and
//!   its latency counts from then, so a backend that falls behind shows it.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command as Process};

use super::fleet::{self, Fleet};
use super::floor_server::{FloorCommand, FloorReport};
use super::wire::{Command, FloorPlan, Mode, Plan};
use crate::histogram::LatencyHistogram;

/// Sockets one floor server holds (under the 20,000 files a process may open).
const SOCKETS_PER_SERVER: u64 = 15_000;
/// Spaced broadcasts for the fan-out latency, and their spacing.
const SPACED: u64 = 12;
const SPACING_MS: u64 = 250;
/// Back-to-back broadcasts for the throughput.
const BURST: u64 = 20;
/// About the size of a leaderboard frame with the top 5.
const FRAME_BYTES: usize = 160;

/// What the broadcast floor measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BroadcastFloor {
    pub sockets: u64,
    pub connected: u64,
    /// From asking the load processes to connect to every socket connected, seconds.
    pub connect_s: f64,
    /// First → last socket, over the spaced frames.
    pub fanout: LatencyHistogram,
    /// Frames delivered per second in the burst.
    pub frames_per_s: f64,
    /// Resident memory per idle socket of the floor servers, bytes.
    pub rss_per_socket: f64,
}

/// A floor server process.
struct Server {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    url: String,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        let mut child = Process::new(super::cluster::this_exe()?)
            .args(["floor-server", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a floor server")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut lines =
            tokio::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the floor server did not start")??
            .context("the floor server exited")?;
        let FloorReport::Listening(addr) = serde_json::from_str(&first)? else {
            anyhow::bail!("the floor server said {first}");
        };
        Ok(Server {
            child,
            stdin,
            lines,
            url: format!("ws://{addr}/ws"),
        })
    }

    async fn send(&mut self, c: &FloorCommand) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(c)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        Ok(self.stdin.flush().await?)
    }

    /// The next report of the given kind (`rss`, or the last broadcast of a series).
    async fn rss(&mut self) -> anyhow::Result<(u64, u64)> {
        self.send(&FloorCommand::Rss).await?;
        loop {
            let line = self
                .lines
                .next_line()
                .await?
                .context("the floor server exited")?;
            if let FloorReport::Rss { rss_bytes, sockets } = serde_json::from_str(&line)? {
                return Ok((rss_bytes, sockets));
            }
        }
    }

    /// Waits for the broadcast numbered `n` to be queued.
    async fn queued(&mut self, n: u64) -> anyhow::Result<()> {
        loop {
            let line = self
                .lines
                .next_line()
                .await?
                .context("the floor server exited")?;
            if let FloorReport::Broadcast { n: got, .. } = serde_json::from_str(&line)?
                && got + 1 >= n
            {
                return Ok(());
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.send(&FloorCommand::Stop).await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Load processes of the floor use source addresses from 127.0.200.2 on.
const FLOOR_SOURCES: usize = 200 << 8;

/// Pushes frames from minimal servers to `sockets` sockets held by load processes.
pub async fn broadcast(sockets: u64, min_processes: usize) -> anyhow::Result<BroadcastFloor> {
    let servers_needed = sockets.div_ceil(SOCKETS_PER_SERVER).max(1);
    let mut servers = Vec::new();
    for _ in 0..servers_needed {
        servers.push(Server::start().await?);
    }
    let mut idle_rss = 0;
    for s in &mut servers {
        idle_rss += s.rss().await?.0;
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let plans = fleet::split(sockets, min_processes)
        .into_iter()
        .enumerate()
        .map(|(worker, (_, count, _))| Plan {
            worker,
            // Addresses of their own: the floor's closed sockets linger in TIME_WAIT, and
            // phones connecting from the same addresses afterwards would wait behind them.
            source: fleet::source_address(FLOOR_SOURCES + worker),
            deadline_s: 600,
            mode: Mode::Floor(FloorPlan {
                urls: urls.clone(),
                count,
                connect_concurrency: 128,
            }),
        })
        .collect();
    let mut fleet = Fleet::spawn(&super::cluster::this_exe()?, plans).await?;
    let connecting = super::wire::now_us();
    fleet.command(&Command::Join).await?;
    let progress = fleet
        .wait_settled(sockets, Duration::from_secs(180), |_| {})
        .await?;

    // Let the last handshakes settle before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut loaded_rss = 0;
    let mut held = 0;
    for s in &mut servers {
        let (rss, n) = s.rss().await?;
        loaded_rss += rss;
        held += n;
    }
    let spaced = FloorCommand::Broadcast {
        first: 0,
        count: SPACED,
        interval_ms: SPACING_MS,
        bytes: FRAME_BYTES,
    };
    for s in &mut servers {
        s.send(&spaced).await?;
    }
    for s in &mut servers {
        s.queued(SPACED).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let burst = FloorCommand::Broadcast {
        first: SPACED,
        count: BURST,
        interval_ms: 0,
        bytes: FRAME_BYTES,
    };
    for s in &mut servers {
        s.send(&burst).await?;
    }
    for s in &mut servers {
        s.queued(SPACED + BURST).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let measured = fleet.stop().await?;
    for s in servers {
        s.stop().await;
    }
    let mut floor = BroadcastFloor {
        sockets,
        connected: progress.joined,
        connect_s: measured
            .iter()
            .flat_map(|m| m.welcomed_at.iter())
            .max()
            .map_or(0.0, |last| (last - connecting) as f64 / 1e6),
        rss_per_socket: loaded_rss.saturating_sub(idle_rss) as f64 / held.max(1) as f64,
        ..BroadcastFloor::default()
    };
    let (spaced, burst) = split_series(&measured);
    for a in spaced.values() {
        floor
            .fanout
            .record(Duration::from_micros((a.last_us - a.first_us).max(0) as u64));
    }
    let first = burst.values().map(|a| a.first_us).min().unwrap_or(0);
    let last = burst.values().map(|a| a.last_us).max().unwrap_or(0);
    let frames: u64 = burst.values().map(|a| a.count).sum();
    if last > first {
        floor.frames_per_s = frames as f64 / ((last - first) as f64 / 1e6);
    }
    Ok(floor)
}

/// The spaced frames' arrivals and the burst's, each by frame number, over every load process.
fn split_series(
    measured: &[super::wire::Measured],
) -> (
    std::collections::BTreeMap<u64, super::wire::Arrivals>,
    std::collections::BTreeMap<u64, super::wire::Arrivals>,
) {
    let mut spaced = std::collections::BTreeMap::new();
    let mut burst = std::collections::BTreeMap::new();
    for m in measured {
        for (n, a) in &m.versions {
            let target = if *n < SPACED { &mut spaced } else { &mut burst };
            target
                .entry(*n)
                .or_insert_with(super::wire::Arrivals::default)
                .merge(a);
        }
    }
    (spaced, burst)
}

/// What the store floor measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreFloor {
    pub rate: u64,
    /// `sqlite` or `postgres`.
    pub sql: String,
    pub insert: LatencyHistogram,
    pub insert_errors: u64,
    /// Redis Cluster script, when the backend has Redis.
    pub script: Option<LatencyHistogram>,
}

/// Inserts (and scripts) at `rate` per second for `seconds` against fresh tables of the
/// kind `store` names.
pub async fn store(
    store: &quiz_store::StoreConfig,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<StoreFloor> {
    let ops = rate * seconds;
    let mut floor = StoreFloor {
        rate,
        ..StoreFloor::default()
    };
    let dir = tempfile::TempDir::new()?;
    let (url, connections, pg) = if store.database_url.starts_with("postgres") {
        let pg = quiz_harness::PgDatabase::create("floor").await?;
        (pg.url().to_owned(), 16, Some(pg))
    } else {
        let path = dir.path().join("floor.db");
        (format!("sqlite://{}?mode=rwc", path.display()), 1, None)
    };
    floor.sql = if pg.is_some() { "postgres" } else { "sqlite" }.into();
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor;
                if conn.backend_name() == "SQLite" {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .with_context(|| format!("connecting to the floor database {url}"))?;
    sqlx::query(
        "CREATE TABLE floor_answers (quiz TEXT NOT NULL, player BIGINT NOT NULL, \
         question BIGINT NOT NULL, points BIGINT NOT NULL, PRIMARY KEY (quiz, player, question))",
    )
    .execute(&pool)
    .await?;
    let lane_pool = pool.clone();
    let (insert, errors) = open_loop(rate, ops, connections as usize, move |i| {
        let pool = lane_pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO floor_answers (quiz, player, question, points) VALUES ($1, $2, $3, $4)",
            )
            .bind("FLOOR1")
            .bind(i as i64)
            .bind(0i64)
            .bind(1000i64)
            .execute(&pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    })
    .await;
    floor.insert = insert;
    floor.insert_errors = errors;
    pool.close().await;
    if let Some(pg) = pg {
        pg.drop_database().await?;
    }
    if let Some(redis) = &store.redis {
        floor.script = Some(script_floor(redis, rate, ops).await?);
    }
    Ok(floor)
}

/// A scoring-like script (`SADD` guard, `ZINCRBY`) on one hash-tagged quiz at `rate`.
async fn script_floor(
    redis: &quiz_store::RedisConfig,
    rate: u64,
    ops: u64,
) -> anyhow::Result<LatencyHistogram> {
    let client = redis::cluster::ClusterClientBuilder::new(redis.nodes.clone())
        .connection_timeout(Duration::from_millis(redis.connect_timeout_ms))
        .response_timeout(Duration::from_millis(redis.response_timeout_ms))
        .build()?;
    let conn = client.get_async_connection().await?;
    let script = Arc::new(redis::Script::new(
        "if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then \
             return redis.call('ZINCRBY', KEYS[2], ARGV[2], ARGV[3]) end return false",
    ));
    let lane_conn = conn.clone();
    let (hist, _) = open_loop(rate, ops, 16, move |i| {
        let (mut conn, script) = (lane_conn.clone(), script.clone());
        async move {
            script
                .key("{floor:FLOOR1}:seen")
                .key("{floor:FLOOR1}:lb")
                .arg(format!("a{i}"))
                .arg(1000)
                .arg(i % 10_000)
                .invoke_async::<Option<String>>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let mut conn = conn;
    let _: Result<(), _> = redis::cmd("DEL")
        .arg("{floor:FLOOR1}:seen")
        .arg("{floor:FLOOR1}:lb")
        .query_async(&mut conn)
        .await;
    Ok(hist)
}

/// Runs `ops` operations at `rate` per second, `lanes` at most in flight, each timed from
/// the moment it was due. Returns the latencies and the number of errors.
async fn open_loop<F, Fut>(rate: u64, ops: u64, lanes: usize, op: F) -> (LatencyHistogram, u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now() + Duration::from_millis(100);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..lanes.max(1) {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = LatencyHistogram::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ops {
                    return (hist, errors);
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
                if op(i).await.is_err() {
                    errors += 1;
                }
                hist.record(due.elapsed());
            }
        }));
    }
    let mut all = LatencyHistogram::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((h, e)) = t.await {
            all.merge(&h);
            errors += e;
        }
    }
    (all, errors)
}
