//! `quiz-bench connections`: idle joined phones over every edge, and what they cost the
//! nodes in memory and CPU.
//!
//! For each size in `--phones` (a fresh cluster each): every phone joins one of `--quizzes`
//! quizzes in the lobby and stays, answering pings; after a settling pause each node's
//! resident memory and CPU time are read, and compared with the same node before the phones
//! came. The floor is a minimal fastwebsockets server holding the same number of idle
//! sockets (spread over as many processes as it needs).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::cluster::{Cluster, ClusterArgs, NodeSample, connections_for};
use super::figures::Merged;
use super::floor;
use super::plot::Series;
use super::report::{self, Report};
use super::setup::{self, Load, QuizShape};
use super::wire::{AnswerPlan, Command};

/// `quiz-bench connections`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Phones to join, one run per size (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub phones: Vec<u64>,
    /// Quizzes the phones are spread over (phone n joins quiz n mod quizzes).
    #[arg(long, default_value_t = 1)]
    pub quizzes: usize,
    /// Load processes at least.
    #[arg(long, default_value_t = 1)]
    pub load_processes: usize,
    /// Seconds the phones sit idle, joined, before memory is read; CPU is measured over it.
    #[arg(long, default_value_t = 10)]
    pub idle_s: u64,
    /// Skip the floor.
    #[arg(long)]
    pub no_floor: bool,
    #[arg(long, default_value = "bench/results/connections.md")]
    pub out: PathBuf,
    /// A run of 300 phones that takes seconds.
    #[arg(long)]
    pub quick: bool,
}

/// One size's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SizeFigures {
    pub phones: u64,
    pub joined: u64,
    pub failed: u64,
    pub join_s: f64,
    pub nodes: Vec<NodeFigures>,
    pub floor_rss_per_socket: Option<f64>,
    pub closes: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeFigures {
    pub connections: u64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    /// Resident bytes per joined phone on this node.
    pub rss_per_phone: f64,
    /// CPU while idle, µs per second per phone.
    pub idle_cpu_us_per_phone_s: f64,
}

pub async fn run(mut args: Args, command: &str) -> anyhow::Result<String> {
    if args.quick {
        args.phones = vec![300];
        args.idle_s = 2;
    }
    anyhow::ensure!(!args.phones.is_empty(), "--phones names no size");
    anyhow::ensure!(args.quizzes >= 1, "--quizzes must be at least 1");
    let mut sizes = Vec::new();
    for &n in &args.phones {
        eprintln!("connections: {n} phones");
        let result = run_size(&args, n).await;
        if let Err(e) = &result {
            eprintln!("{n} phones failed: {e:#}");
        }
        sizes.push((n, result.map_err(|e| format!("{e:#}"))));
    }
    let text = render(&args, command, &sizes)?;
    anyhow::ensure!(
        sizes.iter().all(|(_, r)| r.is_ok()),
        "a run failed; the report says why"
    );
    Ok(text)
}

async fn run_size(args: &Args, phones: u64) -> anyhow::Result<SizeFigures> {
    let max = connections_for(phones, args.cluster.nodes);
    Cluster::run(&args.cluster, Some(max), async |cluster| {
        measure(args, cluster, phones).await
    })
    .await
}

async fn measure(args: &Args, cluster: &mut Cluster, phones: u64) -> anyhow::Result<SizeFigures> {
    let floor_rss = if args.no_floor {
        None
    } else {
        Some(
            floor::broadcast(phones, args.load_processes)
                .await?
                .rss_per_socket,
        )
    };
    let shape = QuizShape {
        quizzes: args.quizzes,
        questions: 1,
        time_limit_s: 30,
        max_players: (phones.div_ceil(args.quizzes as u64) as u32).max(50),
        auto_advance: None,
        close_when_all_answered: false,
    };
    let quizzes = setup::quizzes(cluster, &shape).await?;
    let load = Load {
        phones,
        answers: AnswerPlan::Never,
        reconnect: false,
        processes: args.load_processes,
        deadline: Duration::from_secs(900 + args.idle_s),
    };
    let mut fleet = setup::fleet(cluster, &quizzes.ids, &load).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cluster.sample().await;
    let started = std::time::Instant::now();
    fleet.command(&Command::Join).await?;
    let settled = fleet
        .wait_settled(phones, Duration::from_secs(600), |_| {})
        .await?;
    let join_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{} joined, {} failed in {join_s:.1} s",
        settled.joined, settled.failed
    );
    // Let allocations from the join storm settle, then measure an idle window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_from = cluster.sample().await;
    tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
    let after = cluster.sample().await;
    let measured = Merged::from(fleet.stop().await?);
    quizzes.close().await;
    Ok(SizeFigures {
        phones,
        joined: settled.joined,
        failed: settled.failed,
        join_s,
        nodes: node_figures(&before, &idle_from, &after, args.idle_s),
        floor_rss_per_socket: floor_rss,
        closes: measured.closes,
    })
}

fn node_figures(
    before: &[NodeSample],
    idle_from: &[NodeSample],
    after: &[NodeSample],
    idle_s: u64,
) -> Vec<NodeFigures> {
    before
        .iter()
        .zip(idle_from)
        .zip(after)
        .map(|((b, i), a)| {
            let n = a.connections.max(1) as f64;
            NodeFigures {
                connections: a.connections,
                rss_before_mib: b.rss_bytes as f64 / 1048576.0,
                rss_after_mib: a.rss_bytes as f64 / 1048576.0,
                rss_per_phone: a.rss_bytes.saturating_sub(b.rss_bytes) as f64 / n,
                idle_cpu_us_per_phone_s: (a.cpu_s - i.cpu_s) * 1e6 / idle_s.max(1) as f64 / n,
            }
        })
        .collect()
}

fn render(
    args: &Args,
    command: &str,
    sizes: &[(u64, Result<SizeFigures, String>)],
) -> anyhow::Result<String> {
    let mut r = Report::new(
        "Connections: idle phones and what they cost",
        command,
        &args.out,
    )?;
    r.line(&format!(
        "- **Load:** for each size, that many phones join ({} quiz(zes), lobby), spread over \
         every edge, from load processes with their own source addresses; they stay joined \
         and answer pings; after 2 s of settling, memory is read and CPU measured over {} s of \
         idling.",
        args.quizzes, args.idle_s
    ));
    r.line(&format!(
        "- **Cluster:** {}.",
        match &args.cluster.router {
            Some(url) => format!("already running at {url}"),
            None => format!(
                "{} node processes and a router, started fresh for each size, {} backend",
                args.cluster.nodes, args.cluster.backend
            ),
        }
    ));
    r.line(
        "- **RSS per phone** is a node's resident memory with the phones joined, less the same \
         node's before they came, divided by the connections it holds (edge and owner work \
         together: the owner also holds the players). **Floor**: a minimal fastwebsockets \
         server's resident memory per idle socket, measured in the same run.\n",
    );
    let mut rows = Vec::new();
    let mut curve = Vec::new();
    for (n, result) in sizes {
        match result {
            Ok(f) => {
                for (i, node) in f.nodes.iter().enumerate() {
                    rows.push(vec![
                        n.to_string(),
                        format!("{}/{}", f.joined, f.phones),
                        format!("{:.1}", f.join_s),
                        format!("node-{}", i + 1),
                        node.connections.to_string(),
                        format!("{:.0} → {:.0}", node.rss_before_mib, node.rss_after_mib),
                        format!(
                            "{:.0} B ({:.2} KiB)",
                            node.rss_per_phone,
                            node.rss_per_phone / 1024.0
                        ),
                        f.floor_rss_per_socket
                            .map_or("—".into(), |b| format!("{:.0} B", b)),
                        format!("{:.2}", node.idle_cpu_us_per_phone_s),
                        report::counts(&f.closes),
                    ]);
                    curve.push((node.connections as f64, node.rss_per_phone / 1024.0));
                }
            }
            Err(e) => rows.push(vec![n.to_string(), format!("failed: {e}")]),
        }
    }
    r.table(
        &[
            "phones",
            "joined",
            "join s",
            "node",
            "connections",
            "RSS MiB before → after",
            "RSS per phone",
            "floor per socket",
            "idle CPU µs/s per phone",
            "closes",
        ],
        &rows,
    );
    if curve.len() > 1 {
        curve.sort_by(|a, b| a.0.total_cmp(&b.0));
        r.lines(
            "rss-per-phone.svg",
            "Node RSS per joined phone",
            "phones on the node",
            "KiB per phone",
            &[Series {
                name: "RSS per phone",
                points: curve,
            }],
        )?;
    }
    r.write()
}
