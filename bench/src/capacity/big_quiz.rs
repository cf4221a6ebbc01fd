//! `quiz-bench big-quiz`: N phones in one quiz over every edge, answering at R per second.
//!
//! Per run: a fresh cluster (or the one at `--router`); the floors (a minimal broadcast to
//! the same N sockets, plain inserts and a Redis script at the same rate); then the quiz:
//! every phone joins, the host starts, each question stays open until every phone has
//! answered (each after a delay uniform over N / R seconds, so the cluster sees R answers
//! per second), and the quiz moves on by itself. Then every answer's fate, the leaderboard
//! and fan-out latencies, bytes, errors and closes, lease lapses in the nodes' logs, node
//! CPU, and a check that every acknowledged answer is in the log exactly once.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quiz_protocol::{AutoAdvance, HostCommand};
use serde::Serialize;

use super::cluster::{Cluster, ClusterArgs, NodeSample};
use super::figures::{Merged, Percentiles, median};
use super::floor::{self, BroadcastFloor, StoreFloor};
use super::plot::Series;
use super::report::{self, LATENCY_HEADERS, Report, latency_row, ms};
use super::setup::{self, Load, QuizShape};
use super::wire::{AnswerPlan, Command, now_us};

/// `quiz-bench big-quiz`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Phones in the quiz.
    #[arg(long, default_value_t = 10_000)]
    pub phones: u64,
    /// Answers per second the phones send together.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Questions in the quiz.
    #[arg(long, default_value_t = 3)]
    pub questions: u32,
    /// Runs; the report gives each and the median.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Load processes at least (more when the phones need them).
    #[arg(long, default_value_t = 1)]
    pub load_processes: usize,
    /// Share of right answers, percent.
    #[arg(long, default_value_t = 60)]
    pub correct_pct: u8,
    /// Skip the floors (faster; the report then has no ratios).
    #[arg(long)]
    pub no_floor: bool,
    #[arg(long, default_value = "bench/results/big-quiz.md")]
    pub out: PathBuf,
    /// A small run that takes seconds, to check the tool works: 200 phones, 200 answers/s,
    /// 2 questions, small floors.
    #[arg(long)]
    pub quick: bool,
}

impl Args {
    fn resolved(mut self) -> Args {
        if self.quick {
            self.phones = 200;
            self.rate = 200;
            self.questions = 2;
            self.runs = 1;
        }
        self
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=quiz_protocol::quiz::MAX_PLAYERS_LIMIT as u64).contains(&self.phones),
            "--phones must be 1-{}",
            quiz_protocol::quiz::MAX_PLAYERS_LIMIT
        );
        anyhow::ensure!(self.rate >= 1, "--rate must be at least 1");
        anyhow::ensure!(
            (1..=50).contains(&self.questions),
            "--questions must be 1-50"
        );
        anyhow::ensure!(self.runs >= 1, "--runs must be at least 1");
        anyhow::ensure!(self.correct_pct <= 100, "--correct-pct must be 0-100");
        anyhow::ensure!(
            self.window_ms() <= 200_000,
            "--phones / --rate must be at most 200 s of answering per question"
        );
        Ok(())
    }

    /// The answering window of one question: phones / rate.
    fn window_ms(&self) -> u64 {
        self.phones * 1000 / self.rate.max(1)
    }

    fn time_limit_s(&self) -> u32 {
        // Room for the window and stragglers; every phone answers, so the question closes
        // as soon as the last one has.
        ((self.window_ms() / 1000) as u32 * 2 + 20).clamp(30, 300)
    }
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunFigures {
    pub phones: u64,
    pub joined: u64,
    pub join_s: f64,
    pub sent: usize,
    pub acked: usize,
    pub unsettled: usize,
    pub refused: std::collections::BTreeMap<String, u64>,
    pub resends: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub errors_without_answer_id: u64,
    pub closes: std::collections::BTreeMap<String, u64>,
    pub reconnects: u64,
    pub ack: Percentiles,
    pub board_own: Percentiles,
    pub board_every: Percentiles,
    pub scored: (usize, usize),
    pub question_fanout_ms: Vec<(f64, u64)>,
    pub top_fanout: Percentiles,
    pub bytes_per_phone_per_question: f64,
    pub answers_per_s: f64,
    pub lease_lapses: usize,
    /// Node-side figures: edge in → ack queued, p99 bucket bound (ms), summed over edges; the
    /// owner's durable write batches: p99 bucket bound (ms) and mean answers per batch.
    pub server_ack_p99_le: Option<f64>,
    pub write_p99_le: Option<f64>,
    pub batch_mean: Option<f64>,
    pub log_rows: Option<u64>,
    pub log_matches_acks: Option<bool>,
    pub node_cpu_pct: Vec<f64>,
    pub node_rss_mib: Vec<f64>,
    pub connections_per_node: Vec<u64>,
    pub broadcast: Option<BroadcastFloor>,
    pub store: Option<StoreFloor>,
    #[serde(skip)]
    pub merged_hists: Option<Hists>,
}

/// The histograms and series the plots need, from one run.
#[derive(Clone, Debug)]
pub struct Hists {
    pub ack: crate::histogram::LatencyHistogram,
    pub board_own: crate::histogram::LatencyHistogram,
    pub board_every: crate::histogram::LatencyHistogram,
    pub over_time: Vec<(f64, u64, Duration, Duration)>,
}

/// Runs every run and writes the report.
pub async fn run(args: Args, command: &str) -> anyhow::Result<String> {
    let args = args.resolved();
    args.validate()?;
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        eprintln!(
            "big-quiz run {i}/{}: {} phones at {}/s",
            args.runs, args.phones, args.rate
        );
        let figures = run_once(&args).await;
        match &figures {
            Ok(f) => eprintln!(
                "run {i}: {}/{} acked, ack p99 {} ms, board p99 {} ms",
                f.acked,
                f.sent,
                ms(f.ack.p99),
                ms(f.board_every.p99)
            ),
            Err(e) => eprintln!("run {i} failed: {e:#}"),
        }
        runs.push(figures.map_err(|e| format!("{e:#}")));
    }
    let text = render(&args, command, &runs)?;
    if runs.iter().any(Result::is_err) {
        bail!("a run failed; the report says why");
    }
    Ok(text)
}

async fn run_once(args: &Args) -> anyhow::Result<RunFigures> {
    Cluster::run(&args.cluster, None, async |cluster| {
        play(args, cluster).await
    })
    .await
}

async fn play(args: &Args, cluster: &mut Cluster) -> anyhow::Result<RunFigures> {
    let (store_floor, broadcast_floor) = if args.no_floor {
        (None, None)
    } else {
        eprintln!(
            "floors: store at {}/s, broadcast to {} sockets",
            args.rate, args.phones
        );
        let store = match cluster.store() {
            Some(s) => Some(floor::store(&s, args.rate, if args.quick { 2 } else { 5 }).await?),
            None => None,
        };
        let broadcast = floor::broadcast(args.phones, args.load_processes).await?;
        (store, Some(broadcast))
    };
    let shape = QuizShape {
        quizzes: 1,
        questions: args.questions,
        time_limit_s: args.time_limit_s(),
        max_players: args.phones.max(50) as u32,
        auto_advance: Some(AutoAdvance {
            reveal_after_ms: 1_000,
            next_after_ms: 1_500,
        }),
        close_when_all_answered: true,
    };
    let quizzes = setup::quizzes(cluster, &shape).await?;
    let load = Load {
        phones: args.phones,
        answers: AnswerPlan::Spread {
            window_ms: args.window_ms(),
            correct_pct: args.correct_pct,
        },
        reconnect: true,
        processes: args.load_processes,
        deadline: Duration::from_secs(
            600 + u64::from(args.questions) * (u64::from(shape.time_limit_s) + 10),
        ),
    };
    let mut fleet = setup::fleet(cluster, &quizzes.ids, &load).await?;
    let join_started = now_us();
    fleet.command(&Command::Join).await?;
    let settled = fleet
        .wait_settled(args.phones, Duration::from_secs(300), |_| {})
        .await?;
    let join_s = (now_us() - join_started) as f64 / 1e6;
    eprintln!(
        "{} joined, {} failed in {join_s:.1} s",
        settled.joined, settled.failed
    );
    let before: Vec<NodeSample> = cluster.sample().await;
    let started = Instant::now();
    let t0 = now_us();
    quizzes.hosts[0]
        .conn
        .host(HostCommand::Start, None)
        .await
        .context("the host's start")?;
    let limit =
        Duration::from_secs(u64::from(args.questions) * (u64::from(shape.time_limit_s) + 10) + 60);
    let mut quizzes = quizzes;
    let ended = tokio::time::timeout(limit, &mut quizzes.hosts[0].ended).await;
    let elapsed = started.elapsed();
    let after: Vec<NodeSample> = cluster.sample().await;
    // Stragglers' last frames (the final leaderboard) land before the phones stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let measured = fleet.stop().await?;
    let quiz = quizzes.ids[0].clone();
    quizzes.close().await;
    match ended {
        Ok(Ok(Some(_))) => {}
        Ok(_) => bail!("the host's session closed before the quiz ended"),
        Err(_) => bail!("the quiz did not end within {limit:?}"),
    }
    let merged = Merged::from(measured);
    let mut figures = figures(args, &merged, join_s, t0, elapsed, &before, &after);
    figures.lease_lapses = cluster.lease_lapses();
    let p99 = |h: Option<crate::scrape::PromHistogram>| {
        h.and_then(|h| h.quantile_upper_bound(0.99))
            .map(|s| s * 1e3)
    };
    figures.server_ack_p99_le = p99(cluster
        .histogram_sum("quiz_node_answer_ack_seconds", &[])
        .await);
    figures.write_p99_le = p99(cluster
        .histogram_sum("quiz_node_store_write_seconds", &[("result", "ok")])
        .await);
    figures.batch_mean = cluster
        .histogram_sum("quiz_node_write_batch_answers", &[])
        .await
        .and_then(|h| h.mean());
    if let Some((rows, once)) = setup::check_log(cluster, &quiz, &merged.answers).await? {
        figures.log_rows = Some(rows);
        figures.log_matches_acks = Some(once);
    }
    figures.broadcast = broadcast_floor;
    figures.store = store_floor;
    figures.merged_hists = Some(Hists {
        ack: merged.ack_latency(),
        board_own: merged.board_own(),
        board_every: merged.board_every_phone(),
        over_time: merged.acks_over_time(t0),
    });
    Ok(figures)
}

fn figures(
    args: &Args,
    m: &Merged,
    join_s: f64,
    t0: i64,
    elapsed: Duration,
    before: &[NodeSample],
    after: &[NodeSample],
) -> RunFigures {
    let wall = elapsed.as_secs_f64().max(0.001);
    let _ = t0;
    RunFigures {
        phones: args.phones,
        joined: m.joined,
        join_s,
        sent: m.sent(),
        acked: m.acked(),
        unsettled: m.unsettled(),
        refused: m.refused(),
        resends: m.resends(),
        errors: m.errors.clone(),
        errors_without_answer_id: m.errors_without_answer_id,
        closes: m.closes.clone(),
        reconnects: m.reconnects,
        ack: Percentiles::of(&m.ack_latency()),
        board_own: Percentiles::of(&m.board_own()),
        board_every: Percentiles::of(&m.board_every_phone()),
        scored: m.scored(),
        question_fanout_ms: m
            .fanout("question")
            .iter()
            .map(|(_, d, n)| (d.as_secs_f64() * 1e3, *n))
            .collect(),
        top_fanout: Percentiles::of(&m.top_fanout()),
        bytes_per_phone_per_question: m.bytes_per_phone_per_question(args.questions),
        answers_per_s: m.acked() as f64 / wall,
        lease_lapses: 0,
        server_ack_p99_le: None,
        write_p99_le: None,
        batch_mean: None,
        log_rows: None,
        log_matches_acks: None,
        node_cpu_pct: before
            .iter()
            .zip(after)
            .map(|(b, a)| 100.0 * (a.cpu_s - b.cpu_s) / wall)
            .collect(),
        node_rss_mib: after
            .iter()
            .map(|a| a.rss_bytes as f64 / 1048576.0)
            .collect(),
        connections_per_node: before.iter().map(|b| b.connections).collect(),
        broadcast: None,
        store: None,
        merged_hists: None,
    }
}

fn render(
    args: &Args,
    command: &str,
    runs: &[Result<RunFigures, String>],
) -> anyhow::Result<String> {
    let mut r = Report::new("Big quiz: one quiz, many phones", command, &args.out)?;
    r.line(&format!(
        "- **Load:** {} phones in one quiz, joined through the router and spread over every \
         edge; {} single-choice questions; each phone answers each question once, after a delay \
         uniform in [0, {} ms] from its arrival ({} answers/s offered); the question closes when \
         everyone has answered; {}% right answers.",
        args.phones,
        args.questions,
        args.window_ms(),
        args.rate,
        args.correct_pct
    ));
    r.line(&format!(
        "- **Cluster:** {}.",
        match &args.cluster.router {
            Some(url) => format!("already running at {url}"),
            None => format!(
                "{} node processes and a router started for each run on the {} backend, \
                 production defaults (lease 1500 ms, renewed every 300 ms){}",
                args.cluster.nodes,
                args.cluster.backend,
                args.cluster.overrides()
            ),
        }
    ));
    r.line(&format!(
        "- **Runs:** {}; {} failed.",
        runs.len(),
        runs.iter().filter(|r| r.is_err()).count()
    ));
    r.line(
        "- **Definitions:** *ack*: an answer's first send → its ack, on the phone (resends \
         included). *board, own*: a scoring ack → the first leaderboard frame on that phone \
         showing the new total (0 when one showed it before the ack arrived). *board, every phone*: a scoring ack → the last phone to receive \
         the leaderboard version that first showed it (phones that did not get that version \
         showed nothing it changed). *question fan-out*: a question frame's first → last phone. \
         *floor*: the same work done by a minimal fastwebsockets broadcaster to the same number \
         of sockets, or by plain inserts / a Redis script at the same rate, in the same run.",
    );
    let ok: Vec<&RunFigures> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    for (i, run) in runs.iter().enumerate() {
        if let Err(e) = run {
            r.line(&format!("\nRun {} failed: {e}", i + 1));
        }
    }
    if ok.is_empty() {
        return r.write();
    }
    r.section("Answers");
    let rows: Vec<Vec<String>> = ok
        .iter()
        .enumerate()
        .map(|(i, f)| {
            vec![
                (i + 1).to_string(),
                format!("{}/{}", f.joined, f.phones),
                format!("{:.1}", f.join_s),
                f.sent.to_string(),
                f.acked.to_string(),
                f.unsettled.to_string(),
                report::counts(&f.refused),
                f.resends.to_string(),
                f.errors_without_answer_id.to_string(),
                f.lease_lapses.to_string(),
                report::counts(&f.closes),
                f.reconnects.to_string(),
                match (f.log_rows, f.log_matches_acks) {
                    (Some(rows), Some(true)) => format!("{rows} rows; every ack once"),
                    (Some(rows), Some(false)) => {
                        format!("{rows} rows; **acks missing or doubled**")
                    }
                    _ => "not checked".into(),
                },
            ]
        })
        .collect();
    r.table(
        &[
            "run",
            "joined",
            "join s",
            "sent",
            "acked",
            "no ack",
            "refused",
            "resends",
            "errors without answer_id",
            "lease lapses",
            "closes",
            "reconnects",
            "answer log",
        ],
        &rows,
    );
    r.section("Latency");
    for (i, f) in ok.iter().enumerate() {
        let insert = f.store.as_ref().map(|s| Percentiles::of(&s.insert).p99);
        let fanout = f.broadcast.as_ref().map(|b| Percentiles::of(&b.fanout).p99);
        let mut rows = vec![
            latency_row("ack", &f.ack, insert),
            latency_row("board, own", &f.board_own, fanout),
            latency_row("board, every phone", &f.board_every, fanout),
            latency_row("top-N change, first → last phone", &f.top_fanout, fanout),
        ];
        if let Some(s) = &f.store {
            rows.push(latency_row(
                &format!("floor: {} insert at {}/s", s.sql, s.rate),
                &Percentiles::of(&s.insert),
                None,
            ));
            if let Some(script) = &s.script {
                rows.push(latency_row(
                    &format!("floor: Redis Cluster script at {}/s", s.rate),
                    &Percentiles::of(script),
                    None,
                ));
            }
        }
        if let Some(b) = &f.broadcast {
            rows.push(latency_row(
                &format!("floor: broadcast to {} sockets, first → last", b.connected),
                &Percentiles::of(&b.fanout),
                None,
            ));
        }
        let bound = |v: Option<f64>| v.map_or("—".into(), |v| format!("≤ {}", ms(v)));
        r.line(&format!(
            "Run {}: {:.0} acks/s over the quiz; {} of {} scoring acks seen on their phone's \
             board. Node side: edge in → ack queued p99 {} ms; durable write batches p99 {} \
             ms, {} answers each on average.\n",
            i + 1,
            f.answers_per_s,
            f.scored.1,
            f.scored.0,
            bound(f.server_ack_p99_le),
            bound(f.write_p99_le),
            f.batch_mean.map_or("—".into(), |m| format!("{m:.1}")),
        ));
        r.table(&LATENCY_HEADERS, &rows);
    }
    let acks: Vec<f64> = ok.iter().map(|f| f.ack.p99).collect();
    let boards: Vec<f64> = ok.iter().map(|f| f.board_every.p99).collect();
    r.line(&format!(
        "Median over runs: ack p99 {} ms, board (every phone) p99 {} ms.\n",
        ms(median(&acks)),
        ms(median(&boards))
    ));
    r.section("Fan-out, bytes, nodes");
    let rows: Vec<Vec<String>> = ok
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let q = f
                .question_fanout_ms
                .iter()
                .map(|(d, n)| format!("{} ({n})", ms(*d)))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                (i + 1).to_string(),
                q,
                f.broadcast
                    .as_ref()
                    .map_or("—".into(), |b| format!("{:.0}", b.frames_per_s)),
                format!("{:.0}", f.bytes_per_phone_per_question),
                f.connections_per_node
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                f.node_cpu_pct
                    .iter()
                    .map(|c| format!("{c:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                f.node_rss_mib
                    .iter()
                    .map(|c| format!("{c:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
            ]
        })
        .collect();
    r.table(
        &[
            "run",
            "question fan-out first → last ms (phones)",
            "floor broadcast frames/s",
            "bytes / phone / question",
            "phones per node",
            "node CPU % of one core",
            "node RSS MiB",
        ],
        &rows,
    );
    if let Some(h) = ok.last().and_then(|f| f.merged_hists.as_ref()) {
        let p50: Vec<(f64, f64)> = h
            .over_time
            .iter()
            .map(|(s, _, p, _)| (*s, p.as_secs_f64() * 1e3))
            .collect();
        let p99: Vec<(f64, f64)> = h
            .over_time
            .iter()
            .map(|(s, _, _, p)| (*s, p.as_secs_f64() * 1e3))
            .collect();
        let rate: Vec<(f64, f64)> = h
            .over_time
            .iter()
            .map(|(s, n, _, _)| (*s, *n as f64))
            .collect();
        r.section("Plots (last run)");
        r.lines(
            "ack-over-time.svg",
            "Ack latency by second of the quiz",
            "seconds since start",
            "ms",
            &[
                Series {
                    name: "p50",
                    points: p50,
                },
                Series {
                    name: "p99",
                    points: p99,
                },
            ],
        )?;
        r.lines(
            "acks-per-second.svg",
            "Acks per second",
            "seconds since start",
            "acks",
            &[Series {
                name: "acks/s",
                points: rate,
            }],
        )?;
        let floor = ok
            .last()
            .and_then(|f| f.broadcast.as_ref())
            .map(|b| b.fanout.clone());
        let mut series = vec![
            ("ack", &h.ack),
            ("board, own", &h.board_own),
            ("board, every phone", &h.board_every),
        ];
        if let Some(f) = &floor {
            series.push(("floor broadcast", f));
        }
        r.cdfs("latency-cdf.svg", "Latency distributions", &series)?;
    }
    r.write()
}
