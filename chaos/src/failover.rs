//! `failover`: the owner of a live quiz is SIGKILLed while its phones wait to answer; right
//! after the kill every phone answers. The figure is the time from the kill to the first
//! acknowledged answer, which only the new owner can give: it has to notice the dead lease,
//! claim the quiz at the next epoch, load it from PostgreSQL and serve the phones that
//! reconnected or retried. The killed node is started again before the next round, so every
//! round starts from a full cluster, with a new quiz placed by the ring wherever it lands.
//!
//! Each round also checks the promise: every acknowledged answer is in the log exactly once
//! with the points it was acknowledged for, and the Redis leaderboard equals the log's.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use quiz_bench::backend::Backend;
use quiz_bench::machine::{MachineFacts, source_revision};
use quiz_client::{AnswerError, RouterClient};
use quiz_local::processes::{Plan, ProcessCluster};
use quiz_protocol::client::Role;
use quiz_protocol::{Answer, AnswerId, HostCommand, QuizId, QuizSettings};
use quiz_store::{StandingRow, StoreConfig, Stores};
use rand::{Rng, SeedableRng};

use crate::phone::{self, Phone, question_index};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many times an owner is killed (one quiz per kill).
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// Phones per quiz, spread evenly over the edges.
    #[arg(long, default_value_t = 30)]
    pub phones: usize,
    /// Shard nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// How long a lease lasts without renewal, ms (the node's `lease_ttl_ms`).
    #[arg(long, default_value_t = 1500)]
    pub lease_ttl_ms: u64,
    /// How often a node renews its lease, ms (`lease_renew_ms`).
    #[arg(long, default_value_t = 300)]
    pub lease_renew_ms: u64,
    /// How often a node reads the published ring, ms (`ring_poll_ms`).
    #[arg(long, default_value_t = 500)]
    pub ring_poll_ms: u64,
    /// How often the router reads the leases, ms (its `poll_interval_ms`).
    #[arg(long, default_value_t = 250)]
    pub router_poll_ms: u64,
    /// Seed for the random waits between the quiz opening and the kill.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the processes' configurations, certificates and logs go (kept after the run).
    #[arg(long, default_value = "target/chaos/failover")]
    pub dir: PathBuf,
}

/// What one kill showed.
struct Round {
    quiz: QuizId,
    killed: String,
    new_owner: String,
    epoch: u64,
    /// Kill → the router's ring without the killed node.
    detected: Option<Duration>,
    /// Kill → each acknowledged answer, in order.
    acks: Vec<Duration>,
    /// The same, of the phones that were on the killed node's edge and on the others.
    dead_edge_acks: Vec<Duration>,
    live_edge_acks: Vec<Duration>,
    /// Answers that got a definite refusal or none.
    refused: usize,
    logged: usize,
}

impl Round {
    fn first(&self) -> Option<Duration> {
        self.acks.first().copied()
    }
}

/// Runs the scenario and returns its Markdown report (also written to `args.out`).
pub async fn run(args: Args, command: &str) -> anyhow::Result<String> {
    ensure!(args.kills >= 1, "--kills must be at least 1");
    ensure!(
        args.nodes >= 2,
        "--nodes must be at least 2: someone must take over"
    );
    ensure!(
        (1..=5_000).contains(&args.phones),
        "--phones must be 1-5000 (one process holds at most a few thousand sockets)"
    );
    let machine = MachineFacts::collect();
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let backend = Backend::Real.start().await?;
    let store = backend.store().context("the real backend has a store")?;
    let outcome = rounds(&args, &store, &mut rng).await;
    if let Err(e) = backend.stop().await {
        eprintln!("cleaning up the backends: {e:#}");
    }
    let rounds = outcome?;
    let report = report(&args, command, seed, &machine, &rounds);
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    let lost: usize = rounds
        .iter()
        .map(|r| r.acks.len() - r.logged.min(r.acks.len()))
        .sum();
    ensure!(
        lost == 0,
        "{lost} acknowledged answers are missing from the log"
    );
    Ok(report)
}

async fn rounds(
    args: &Args,
    store: &StoreConfig,
    rng: &mut impl Rng,
) -> anyhow::Result<Vec<Round>> {
    let stores = Stores::open(store).await?;
    quiz_local::seed(&stores).await?;
    let _ = std::fs::remove_dir_all(&args.dir);
    let mut plan = Plan::on_free_ports(store, args.nodes, &args.dir.join("certs"))?;
    settings(args, &mut plan);
    let exe = std::env::current_exe()?;
    let mut cluster = ProcessCluster::launch(&exe, &args.dir, plan).await?;
    let router = cluster.router_url();
    let host = RouterClient::dev(&router, "chaos-host", Role::Host).await?;
    host.put_question_set(&quiz_local::parse_set(&question_set())?)
        .await?;
    let mut rounds = Vec::new();
    for k in 1..=args.kills {
        let round = match one_round(args, &mut cluster, &stores, &host, rng).await {
            Ok(round) => round,
            Err(e) => {
                cluster.shutdown().await;
                return Err(e.context(format!("round {k}; logs in {}", args.dir.display())));
            }
        };
        eprintln!(
            "kill {k}/{}: {} owned {}; {} took over at epoch {}; ring after {}, first ack after \
             {}, {}/{} acked",
            args.kills,
            round.killed,
            round.quiz,
            round.new_owner,
            round.epoch,
            ms_opt(round.detected),
            ms_opt(round.first()),
            round.acks.len(),
            args.phones
        );
        rounds.push(round);
    }
    cluster.shutdown().await;
    Ok(rounds)
}

/// The production defaults for leases and the ring (or what the arguments say), on the free
/// ports and certificates of `plan`.
fn settings(args: &Args, plan: &mut Plan) {
    for node in &mut plan.nodes {
        let defaults = quiz_node::config::ClusterConfig::default();
        if let Some(c) = node.cluster.as_mut() {
            c.lease_ttl_ms = args.lease_ttl_ms;
            c.lease_renew_ms = args.lease_renew_ms;
            c.ring_poll_ms = args.ring_poll_ms;
            c.handoff_wait_ms = defaults.handoff_wait_ms;
            c.peer_timeout_ms = defaults.peer_timeout_ms;
            c.peer_idle_timeout_ms = defaults.peer_idle_timeout_ms;
        }
    }
    if let Some(c) = plan.router.cluster.as_mut() {
        let defaults = quiz_router::ClusterConfig::default();
        c.poll_interval_ms = args.router_poll_ms;
        c.push_interval_ms = defaults.push_interval_ms;
        c.push_timeout_ms = defaults.push_timeout_ms;
    }
}

async fn one_round(
    args: &Args,
    cluster: &mut ProcessCluster,
    stores: &Stores,
    host: &RouterClient,
    rng: &mut impl Rng,
) -> anyhow::Result<Round> {
    let router = cluster.router_url();
    let created = host
        .create_quiz(&quiz_client::CreateQuiz {
            question_set: SET_ID.into(),
            settings: Some(QuizSettings::default()),
            ..Default::default()
        })
        .await?;
    let quiz = created.quiz_id;
    let owner = cluster.owner_of(&quiz).await?;
    let killed = cluster.plan.nodes[owner].node_id.clone();
    let edges = cluster.nodes.len();

    // The host sits on an edge that survives; the phones spread over every edge.
    let survivor = (owner + 1) % edges;
    let survivor_url = cluster.ws_url(survivor);
    let host_phone = Phone::join(host, &quiz, "", Role::Host, phone::first(&survivor_url)).await?;
    let mut phones = Vec::with_capacity(args.phones);
    for i in 0..args.phones {
        let edge = cluster.ws_url(i % edges);
        let user = format!("chaos-{i}");
        phones.push(Phone::pupil(&router, &user, &quiz, i, phone::first(&edge)).await?);
    }
    host_phone
        .conn
        .host(HostCommand::Start, None)
        .await
        .context("starting the quiz")?;
    for phone in &mut phones {
        ensure!(
            phone
                .until(Duration::from_secs(20), |v| question_index(v).is_some())
                .await,
            "a phone never saw the question open"
        );
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;

    // Kill; then every phone answers.
    let watcher = tokio::spawn(ring_without(
        cluster.plan.router.admin_addr.to_string(),
        killed.clone(),
    ));
    cluster.nodes[owner].kill().await;
    let killed_at = Instant::now();
    let answers = phones.iter().enumerate().map(|(i, phone)| {
        let conn = phone.conn.clone();
        async move {
            let answer_id = quiz_client::new_answer_id();
            let choice = (i % 4) as u32;
            let result = conn
                .answer_with_id(0, answer_id.clone(), Answer::Choice(choice))
                .await;
            (i % edges == owner, answer_id, result, killed_at.elapsed())
        }
    });
    let results = futures_util::future::join_all(answers).await;
    let detected = watcher.await.ok().flatten().map(|at| at - killed_at);

    let mut acks = Vec::new();
    let mut dead_edge_acks = Vec::new();
    let mut live_edge_acks = Vec::new();
    let mut acked: Vec<(AnswerId, u32)> = Vec::new();
    let mut refused = 0;
    for (on_dead_edge, answer_id, result, after) in results {
        match result {
            Ok(ack) => {
                acks.push(after);
                match on_dead_edge {
                    true => dead_edge_acks.push(after),
                    false => live_edge_acks.push(after),
                }
                acked.push((answer_id, ack.points));
            }
            Err(e @ (AnswerError::Rejected(_) | AnswerError::Timeout { .. })) => {
                eprintln!("an answer got no ack: {e}");
                refused += 1
            }
            Err(e) => bail!("an answer failed: {e}"),
        }
    }
    acks.sort();
    dead_edge_acks.sort();
    live_edge_acks.sort();

    // Exactly once: every acknowledged answer in the log, once, with its points.
    let log = stores.answers.answers(&quiz).await?;
    for (answer_id, points) in &acked {
        let rows: Vec<_> = log.iter().filter(|r| &r.answer_id == answer_id).collect();
        ensure!(
            rows.len() == 1 && rows[0].points == *points,
            "answer {answer_id} was acknowledged with {points} points; the log holds {:?}",
            rows.iter().map(|r| r.points).collect::<Vec<_>>()
        );
    }
    let record = stores.quizzes.quiz(&quiz).await?.context("the quiz")?;
    let new_owner = record.owner.map(|n| n.0).unwrap_or_default();
    ensure!(
        new_owner != killed && record.epoch.0 >= 2,
        "the quiz was not taken over (owner {new_owner}, epoch {})",
        record.epoch.0
    );

    // End the quiz; the leaderboard store converges on the log.
    end(&host_phone).await?;
    leaderboard_equals_log(stores, &quiz).await?;
    for phone in phones.iter().chain([&host_phone]) {
        phone.conn.close().await;
    }

    // The killed node comes back for the next round.
    cluster.nodes[owner].start().await?;
    cluster.wait_for_ring(edges).await?;
    Ok(Round {
        quiz,
        killed,
        new_owner,
        epoch: record.epoch.0,
        detected,
        acks,
        dead_edge_acks,
        live_edge_acks,
        refused,
        logged: log.len(),
    })
}

/// Polls the router's ring (up to 20 s) until `node` has left it; when that was seen.
async fn ring_without(admin: String, node: String) -> Option<Instant> {
    let http = reqwest::Client::new();
    let url = format!("http://{admin}/v1/cluster/ring");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(&url).timeout(Duration::from_secs(1)).send().await
            && let Ok(ring) = r.json::<serde_json::Value>().await
            && let Some(members) = ring["members"].as_array()
            && members.iter().all(|m| m["node"] != node.as_str())
        {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Ends the quiz, retrying while the host's connection moves.
async fn end(host: &Phone) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match host.conn.host(HostCommand::End, None).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("ending the quiz: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits (up to 20 s) until the Redis leaderboard equals the one the log implies.
async fn leaderboard_equals_log(stores: &Stores, quiz: &QuizId) -> anyhow::Result<()> {
    let want = StandingRow::from_log(&stores.answers.answers(quiz).await?);
    let mut got = Vec::new();
    for _ in 0..200 {
        got = stores.leaderboards.standings(quiz, 10_000).await?;
        if got == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the leaderboard of {quiz} does not equal its log: {got:?} != {want:?}")
}

const SET_ID: &str = "chaos-failover";

/// One single-choice question, open long enough for any failover.
fn question_set() -> String {
    serde_json::json!({
        "id": SET_ID,
        "title": "Failover drill",
        "questions": [{
            "id": "q0", "level": "A2", "topic": "vocabulary",
            "prompt": "Which one is a colour?", "kind": "single_choice",
            "options": ["red", "run", "rain", "road"], "answer": 0, "time_limit_s": 60
        }]
    })
    .to_string()
}

fn report(
    args: &Args,
    command: &str,
    seed: u64,
    machine: &MachineFacts,
    rounds: &[Round],
) -> String {
    let firsts: Vec<Duration> = sorted(rounds.iter().filter_map(Round::first));
    let detections: Vec<Duration> = sorted(rounds.iter().filter_map(|r| r.detected));
    let all: Vec<Duration> = sorted(rounds.iter().flat_map(|r| r.acks.iter().copied()));
    let dead_edge: Vec<Duration> =
        sorted(rounds.iter().flat_map(|r| r.dead_edge_acks.iter().copied()));
    let live_edges: Vec<Duration> =
        sorted(rounds.iter().flat_map(|r| r.live_edge_acks.iter().copied()));
    let acked: usize = rounds.iter().map(|r| r.acks.len()).sum();
    let refused: usize = rounds.iter().map(|r| r.refused).sum();
    let logged: usize = rounds.iter().map(|r| r.logged).sum();
    let mut out = String::new();
    let _ = writeln!(out, "# Failover: kill → first accepted answer\n");
    let _ = writeln!(
        out,
        "`{command}` (revision {}, seed {seed}), {}, on {} CPUs{}{}.\n",
        source_revision().unwrap_or_else(|| "unknown".into()),
        machine.started_utc,
        machine.cpus,
        machine
            .memory_gib
            .map(|g| format!(", {g:.0} GiB"))
            .unwrap_or_default(),
        machine
            .load_average
            .as_ref()
            .map(|l| format!(", load {l} at the start"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        out,
        "A router and {} nodes, each its own process, on PostgreSQL and a Redis Cluster (3 \
         masters × 1 replica), all on this machine. Per kill: a new live quiz of one 60-second \
         question, {} phones joined evenly over the {} edges (the SDK's default reconnect and \
         retry timers), the question opens, the quiz's owner is SIGKILLed at a random moment of \
         its first second, then every phone answers. The node is started again before the next \
         kill.\n",
        args.nodes, args.phones, args.nodes
    );
    let _ = writeln!(
        out,
        "Settings: node `lease_ttl_ms = {}`, `lease_renew_ms = {}`, `ring_poll_ms = {}`; \
         router `poll_interval_ms = {}` (the defaults unless the command line says otherwise).\n",
        args.lease_ttl_ms, args.lease_renew_ms, args.ring_poll_ms, args.router_poll_ms
    );
    let _ = writeln!(out, "## Summary over {} kills\n", rounds.len());
    let _ = writeln!(out, "| figure | p50 | p99 | max |\n|---|---|---|---|");
    for (name, values) in [
        ("kill → first accepted answer", &firsts),
        ("kill → the router's ring without the node", &detections),
        ("kill → each phone's answer accepted", &all),
        ("… phones on the surviving edges", &live_edges),
        (
            "… phones on the killed node's edge (they reconnect first)",
            &dead_edge,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            ms_opt(percentile(values, 0.5)),
            ms_opt(percentile(values, 0.99)),
            ms_opt(values.last().copied())
        );
    }
    let _ = writeln!(
        out,
        "\n{acked} answers acknowledged, {refused} refused or unanswered, {logged} in the log; \
         every acknowledged answer was in the log exactly once with its acknowledged points, \
         every quiz was taken over by another node at a higher epoch, and every Redis \
         leaderboard equalled its log.\n"
    );
    let _ = writeln!(out, "## Kills\n");
    let _ = writeln!(
        out,
        "| # | quiz | killed | new owner | epoch | ring without it | first ack | median ack | \
         last ack | acked |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for (i, r) in rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            i + 1,
            r.quiz,
            r.killed,
            r.new_owner,
            r.epoch,
            ms_opt(r.detected),
            ms_opt(r.first()),
            ms_opt(percentile(&r.acks, 0.5)),
            ms_opt(r.acks.last().copied()),
            r.acks.len(),
            args.phones
        );
    }
    out
}

fn sorted(values: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    v
}

/// The nearest-rank percentile of sorted `values`.
pub(crate) fn percentile<T: Copy>(values: &[T], q: f64) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn ms_opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{} ms", d.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(percentile::<Duration>(&[], 0.5), None);
    }

    #[test]
    fn the_drill_set_imports() {
        let set = quiz_local::parse_set(&question_set()).unwrap();
        assert_eq!(set.id, SET_ID);
    }
}
