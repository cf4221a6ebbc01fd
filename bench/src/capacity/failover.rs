//! `quiz-bench failover-at-scale`: the owner of a big quiz is SIGKILLed mid-question, then
//! every phone answers; how long until the first ack, and until every phone is acked.
//!
//! Per run (a fresh cluster each): N phones join one quiz, spread over every edge; the host
//! opens the question; the owner's process is killed with SIGKILL; at that moment every
//! phone is told to answer, each within `--within-ms`. Phones on the dead edge reconnect to
//! another; phones elsewhere stay where they are. Every answer is resent with its
//! `answer_id` until it is acked. Then: kill → first ack, kill → the last phone's ack,
//! answers never acked, reconnects and closes, and every ack checked against the answer log
//! (each exactly once, with the points acked).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use quiz_protocol::HostCommand;
use serde::Serialize;

use super::cluster::{Cluster, ClusterArgs};
use super::figures::{Merged, Percentiles, median};
use super::report::{self, Report, ms};
use super::setup::{self, Load, QuizShape};
use super::wire::{AnswerPlan, Command, now_us};

/// `quiz-bench failover-at-scale`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, default_value_t = 10_000)]
    pub phones: u64,
    /// Every phone answers within this long after the kill, ms.
    #[arg(long, default_value_t = 2_000)]
    pub within_ms: u64,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Load processes at least.
    #[arg(long, default_value_t = 2)]
    pub load_processes: usize,
    #[arg(long, default_value = "bench/results/failover-at-scale.md")]
    pub out: PathBuf,
    /// 200 phones, one run.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct KillFigures {
    pub phones: u64,
    pub joined: u64,
    pub owner: String,
    pub sent: usize,
    pub acked: usize,
    pub first_ack_s: Option<f64>,
    pub all_acked_s: Option<f64>,
    pub ack_after_kill: Percentiles,
    pub reconnects: u64,
    pub closes: std::collections::BTreeMap<String, u64>,
    pub refused: std::collections::BTreeMap<String, u64>,
    pub errors_without_answer_id: u64,
    pub log_rows: Option<u64>,
    pub log_matches_acks: Option<bool>,
}

pub async fn run(mut args: Args, command: &str) -> anyhow::Result<String> {
    if args.quick {
        args.phones = 200;
        args.runs = 1;
        args.load_processes = 1;
    }
    anyhow::ensure!(
        args.cluster.router.is_none(),
        "failover-at-scale kills a node process, so it starts its own cluster (no --router)"
    );
    anyhow::ensure!(
        args.cluster.nodes >= 2,
        "--nodes must be at least 2 to fail over"
    );
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        eprintln!(
            "failover-at-scale run {i}/{}: {} phones",
            args.runs, args.phones
        );
        let result = run_once(&args).await;
        match &result {
            Ok(f) => eprintln!(
                "run {i}: first ack {:?} s, every phone {:?} s, {}/{} acked",
                f.first_ack_s, f.all_acked_s, f.acked, f.sent
            ),
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

async fn run_once(args: &Args) -> anyhow::Result<KillFigures> {
    Cluster::run(&args.cluster, None, async |cluster| {
        kill_and_answer(args, cluster).await
    })
    .await
}

async fn kill_and_answer(args: &Args, cluster: &mut Cluster) -> anyhow::Result<KillFigures> {
    let shape = QuizShape {
        quizzes: 1,
        questions: 1,
        time_limit_s: 300,
        max_players: args.phones.max(50) as u32,
        auto_advance: Some(quiz_protocol::AutoAdvance {
            reveal_after_ms: 1_000,
            next_after_ms: 1_000,
        }),
        close_when_all_answered: true,
    };
    let mut quizzes = setup::quizzes(cluster, &shape).await?;
    let load = Load {
        phones: args.phones,
        answers: AnswerPlan::OnCommand { correct_pct: 60 },
        reconnect: true,
        processes: args.load_processes,
        deadline: Duration::from_secs(900),
    };
    let mut fleet = setup::fleet(cluster, &quizzes.ids, &load).await?;
    fleet.command(&Command::Join).await?;
    let settled = fleet
        .wait_settled(args.phones, Duration::from_secs(300), |_| {})
        .await?;
    eprintln!("{} joined, {} failed", settled.joined, settled.failed);
    quizzes.hosts[0]
        .conn
        .host(HostCommand::Start, None)
        .await
        .context("the host's start")?;
    // The question reaches every phone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiz = quizzes.ids[0].clone();
    let owner = cluster.owner_of(&quiz).await?;
    let owner_name = format!("node-{}", owner + 1);
    let processes = cluster.processes().context("a cluster started here")?;
    let killed_at = now_us();
    processes.nodes[owner].kill().await;
    fleet
        .command(&Command::Answer {
            question: 0,
            within_ms: args.within_ms,
        })
        .await?;
    let ended = tokio::time::timeout(Duration::from_secs(180), &mut quizzes.hosts[0].ended).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = Merged::from(fleet.stop().await?);
    quizzes.close().await;
    match ended {
        Ok(Ok(Some(_))) => {}
        Ok(_) => bail!("the host's session closed before the quiz ended"),
        Err(_) => bail!("the quiz did not end within 180 s of the kill"),
    }
    let acks: Vec<i64> = m.answers.iter().filter_map(|a| a.acked_us).collect();
    let first = acks.iter().min().map(|t| (t - killed_at) as f64 / 1e6);
    let all = (acks.len() == m.sent())
        .then(|| acks.iter().max().map(|t| (t - killed_at) as f64 / 1e6))
        .flatten();
    let check = setup::check_log(cluster, &quiz, &m.answers).await?;
    Ok(KillFigures {
        phones: args.phones,
        joined: m.joined,
        owner: owner_name,
        sent: m.sent(),
        acked: m.acked(),
        first_ack_s: first,
        all_acked_s: all,
        ack_after_kill: Percentiles::of(&m.ack_latency()),
        reconnects: m.reconnects,
        closes: m.closes.clone(),
        refused: m.refused(),
        errors_without_answer_id: m.errors_without_answer_id,
        log_rows: check.map(|c| c.0),
        log_matches_acks: check.map(|c| c.1),
    })
}

fn render(
    args: &Args,
    command: &str,
    runs: &[Result<KillFigures, String>],
) -> anyhow::Result<String> {
    let mut r = Report::new(
        "Failover at scale: the owner of a big quiz killed",
        command,
        &args.out,
    )?;
    r.line(&format!(
        "- **Load:** {} phones in one quiz over every edge; the host opens the question; the \
         owner's process gets SIGKILL; at once every phone is told to answer, each within {} \
         ms, and resends with the same `answer_id` until acked; phones on the dead edge \
         reconnect to another.",
        args.phones, args.within_ms
    ));
    r.line(&format!(
        "- **Cluster:** {} node processes and a router, fresh for each run, {} backend, \
         production lease settings (1500 ms, renewed every 300 ms).",
        args.cluster.nodes, args.cluster.backend
    ));
    r.line(
        "- **first ack**: the kill → the first ack any phone got; **every phone acked**: the \
         kill → the last phone's ack (only when every answer was acked). **Log**: every ack is \
         in the answer log exactly once with the points acked.\n",
    );
    let rows: Vec<Vec<String>> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| match run {
            Ok(f) => vec![
                (i + 1).to_string(),
                f.owner.clone(),
                format!("{}/{}", f.joined, f.phones),
                format!("{}/{}", f.acked, f.sent),
                f.first_ack_s.map_or("—".into(), |s| format!("{s:.2}")),
                f.all_acked_s
                    .map_or("not all".into(), |s| format!("{s:.2}")),
                ms(f.ack_after_kill.p99),
                f.reconnects.to_string(),
                report::counts(&f.closes),
                report::counts(&f.refused),
                f.errors_without_answer_id.to_string(),
                match (f.log_rows, f.log_matches_acks) {
                    (Some(n), Some(true)) => format!("{n} rows; every ack once"),
                    (Some(n), Some(false)) => format!("{n} rows; **acks missing or doubled**"),
                    _ => "not checked".into(),
                },
            ],
            Err(e) => vec![(i + 1).to_string(), format!("failed: {e}")],
        })
        .collect();
    r.table(
        &[
            "run",
            "killed",
            "joined",
            "acked",
            "first ack s",
            "every phone acked s",
            "answer → ack p99 ms",
            "reconnects",
            "closes",
            "refused",
            "errors without answer_id",
            "answer log",
        ],
        &rows,
    );
    let ok: Vec<&KillFigures> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let firsts: Vec<f64> = ok.iter().filter_map(|f| f.first_ack_s).collect();
    let alls: Vec<f64> = ok.iter().filter_map(|f| f.all_acked_s).collect();
    r.line(&format!(
        "Median over runs: first ack {:.2} s, every phone acked {:.2} s.",
        median(&firsts),
        median(&alls)
    ));
    r.write()
}
