//! `quiz-bench join-storm`: N phones into one quiz as fast as they can.
//!
//! The phones have their identity tokens already (an app signs its user in long before a
//! quiz code is typed); at one moment every load process starts joining, 64 at a time each:
//! the router's join, the WebSocket to an edge, `join`, the `welcome`. The storm lasts from
//! that moment to the last welcome. The floor is the same number of plain WebSocket connects
//! to a minimal server, from the same load processes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::cluster::{Cluster, ClusterArgs, connections_for};
use super::figures::{Merged, Percentiles, median};
use super::floor;
use super::plot::Series;
use super::report::{self, LATENCY_HEADERS, Report, latency_row};
use super::setup::{self, Load, QuizShape};
use super::wire::{AnswerPlan, Command, now_us};

/// `quiz-bench join-storm`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, default_value_t = 10_000)]
    pub phones: u64,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Load processes at least.
    #[arg(long, default_value_t = 2)]
    pub load_processes: usize,
    #[arg(long)]
    pub no_floor: bool,
    #[arg(long, default_value = "bench/results/join-storm.md")]
    pub out: PathBuf,
    /// 300 phones, one run.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct StormFigures {
    pub phones: u64,
    pub joined: u64,
    pub storm_s: f64,
    pub join: Percentiles,
    pub refusals: std::collections::BTreeMap<String, u64>,
    pub samples: Vec<String>,
    pub floor_connect_s: Option<f64>,
    /// Phones welcomed by each tenth of a second since the storm began.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

pub async fn run(mut args: Args, command: &str) -> anyhow::Result<String> {
    if args.quick {
        args.phones = 300;
        args.runs = 1;
        args.load_processes = 1;
    }
    anyhow::ensure!(
        args.phones >= 1 && args.runs >= 1,
        "--phones and --runs must be at least 1"
    );
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        eprintln!("join-storm run {i}/{}: {} phones", args.runs, args.phones);
        let result = run_once(&args).await;
        match &result {
            Ok(f) => eprintln!("run {i}: {}/{} in {:.2} s", f.joined, f.phones, f.storm_s),
            Err(e) => eprintln!("run {i} failed: {e:#}"),
        }
        runs.push(result.map_err(|e| format!("{e:#}")));
    }
    let text = render(&args, command, &runs)?;
    anyhow::ensure!(
        runs.iter().all(Result::is_ok),
        "a run failed; the report says why"
    );
    Ok(text)
}

async fn run_once(args: &Args) -> anyhow::Result<StormFigures> {
    let max = connections_for(args.phones, args.cluster.nodes);
    Cluster::run(&args.cluster, Some(max), async |cluster| {
        storm(args, cluster).await
    })
    .await
}

async fn storm(args: &Args, cluster: &Cluster) -> anyhow::Result<StormFigures> {
    let floor_connect_s = if args.no_floor {
        None
    } else {
        Some(
            floor::broadcast(args.phones, args.load_processes)
                .await?
                .connect_s,
        )
    };
    let shape = QuizShape {
        quizzes: 1,
        questions: 1,
        time_limit_s: 30,
        max_players: args.phones.max(50) as u32,
        auto_advance: None,
        close_when_all_answered: false,
    };
    let quizzes = setup::quizzes(cluster, &shape).await?;
    let load = Load {
        phones: args.phones,
        answers: AnswerPlan::Never,
        reconnect: false,
        processes: args.load_processes,
        deadline: Duration::from_secs(900),
    };
    let mut fleet = setup::fleet(cluster, &quizzes.ids, &load).await?;
    let started = now_us();
    fleet.command(&Command::Join).await?;
    fleet
        .wait_settled(args.phones, Duration::from_secs(300), |_| {})
        .await?;
    let m = Merged::from(fleet.stop().await?);
    quizzes.close().await;
    let last = m.welcomed_at.last().copied().unwrap_or(started);
    let total = m.welcomed_at.len();
    let curve = (0..=((last - started) / 100_000 + 1))
        .map(|tenth| {
            let at = started + tenth * 100_000;
            let n = m.welcomed_at.partition_point(|w| *w <= at);
            (tenth as f64 / 10.0, n as f64)
        })
        .collect();
    Ok(StormFigures {
        phones: args.phones,
        joined: total as u64,
        storm_s: (last - started) as f64 / 1e6,
        join: Percentiles::of(&m.join_latency),
        refusals: m.join_failures,
        samples: m.failure_samples,
        floor_connect_s,
        curve,
    })
}

fn render(
    args: &Args,
    command: &str,
    runs: &[Result<StormFigures, String>],
) -> anyhow::Result<String> {
    let mut r = Report::new(
        "Join storm: phones into one quiz at once",
        command,
        &args.out,
    )?;
    r.line(&format!(
        "- **Load:** {} phones with their identity tokens already, from at least {} load \
         process(es) (64 joins in flight each), all starting at once: the router's join, the \
         WebSocket to an edge (spread over every edge), `join`, the `welcome`. The storm \
         lasts from the start to the last welcome.",
        args.phones, args.load_processes
    ));
    r.line(&format!(
        "- **Cluster:** {}.",
        match &args.cluster.router {
            Some(url) => format!("already running at {url}"),
            None => format!(
                "{} node processes and a router, started fresh for each run, {} backend",
                args.cluster.nodes, args.cluster.backend
            ),
        }
    ));
    r.line(
        "- **Floor:** the same number of plain WebSocket connects (no router, no join) to a \
         minimal fastwebsockets server, from the same load processes, in the same run.\n",
    );
    let ok: Vec<&StormFigures> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        rows.push(match run {
            Ok(f) => vec![
                (i + 1).to_string(),
                format!("{}/{}", f.joined, f.phones),
                format!("{:.2}", f.storm_s),
                f.floor_connect_s.map_or("—".into(), |s| format!("{s:.2}")),
                f.floor_connect_s
                    .filter(|s| *s > 0.0)
                    .map_or("—".into(), |s| format!("{:.1}×", f.storm_s / s)),
                report::counts(&f.refusals),
            ],
            Err(e) => vec![(i + 1).to_string(), format!("failed: {e}")],
        });
    }
    r.table(
        &[
            "run",
            "welcomed",
            "storm s",
            "floor connects s",
            "storm / floor",
            "refused",
        ],
        &rows,
    );
    let storms: Vec<f64> = ok.iter().map(|f| f.storm_s).collect();
    r.line(&format!("Median storm: {:.2} s.\n", median(&storms)));
    let latency: Vec<Vec<String>> = ok
        .iter()
        .enumerate()
        .map(|(i, f)| latency_row(&format!("run {}: join → welcome", i + 1), &f.join, None))
        .collect();
    r.table(&LATENCY_HEADERS, &latency);
    for f in &ok {
        for s in &f.samples {
            r.line(&format!("- a refusal: `{s}`"));
        }
    }
    if let Some(f) = ok.last() {
        r.lines(
            "welcomed-over-time.svg",
            "Phones welcomed since the storm began (last run)",
            "seconds",
            "phones",
            &[Series {
                name: "welcomed",
                points: f.curve.clone(),
            }],
        )?;
    }
    r.write()
}
