//! Fault scenarios against a cluster of real processes on PostgreSQL and a Redis Cluster; see
//! `chaos/README.md`.
//!
//! - [`failover`]: kills the owner of a quiz while phones answer, again and again, and
//!   measures the time from the kill to the first answer the new owner accepts, checking that
//!   every acknowledged answer is counted exactly once.
//! - [`scenario`]: the named fault scenarios (`run`, `all`, `smoke`): phones write a
//!   [`history`] of every answer and its outcome, and [`check`] compares it with the stores.
//!
//! The tool runs its own cluster as child processes of this executable (the hidden `node` and
//! `router` subcommands), on 127.0.0.1 only, and every run is bounded: a fixed number of
//! kills, each with bounded waits.

pub mod check;
pub mod failover;
pub mod history;
mod phone;
pub mod report;
pub mod scenario;

use std::path::PathBuf;

/// `quiz-chaos`'s command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "quiz-chaos",
    about = "Fault scenarios against a multi-process quiz cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Kill quiz owners while phones answer; measure kill → first accepted answer.
    Failover(failover::Args),
    /// Run named fault scenarios (see `list`), check each against the stores, and report.
    Run(RunArgs),
    /// Run every fault scenario (what `chaos/results/all.md` was made with).
    All(RunArgs),
    /// A short subset for the test suite: owner-kill, redis-lost, postgres-stall, one round.
    Smoke(RunArgs),
    /// List the fault scenarios.
    List,
    /// Check a history file against the stores and router it names (they must still run).
    Check(CheckArgs),
    /// Run a shard node (a child process of a scenario).
    #[command(hide = true)]
    Node(ServeArgs),
    /// Run a router (a child process of a scenario).
    #[command(hide = true)]
    Router(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Scenario names (`run` only).
    pub scenarios: Vec<String>,
    /// Rounds per scenario, each on a fresh cluster and Redis Cluster.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Phones per quiz, spread evenly over the edges.
    #[arg(long, default_value_t = 24)]
    pub phones: usize,
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long the checker waits for derived boards to be repaired, seconds.
    #[arg(long, default_value_t = 30)]
    pub settle_s: u64,
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where histories, configurations and logs go (kept after the run).
    #[arg(long, default_value = "target/chaos/scenarios")]
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The history file (JSON lines) a run wrote.
    #[arg(long)]
    pub history: PathBuf,
    /// How long to wait for derived boards to be repaired, seconds.
    #[arg(long, default_value_t = 30)]
    pub settle_s: u64,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    config: PathBuf,
}

/// Runs what `cli` asks for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Failover(args) => {
            quiz_bench::init_tracing();
            let report = failover::run(args, &quiz_bench::command_line()).await?;
            println!("{report}");
            Ok(())
        }
        Command::Run(args) => scenarios(&args, &args.scenarios).await,
        Command::All(args) => {
            let names: Vec<String> = scenario::Fault::ALL
                .iter()
                .map(|f| f.name().to_owned())
                .collect();
            scenarios(&args, &names).await
        }
        Command::Smoke(mut args) => {
            args.rounds = 1;
            let names: Vec<String> = scenario::Fault::SMOKE
                .iter()
                .map(|f| f.name().to_owned())
                .collect();
            scenarios(&args, &names).await
        }
        Command::List => {
            for f in scenario::Fault::ALL {
                println!("{:<18} {}", f.name(), f.describe());
            }
            Ok(())
        }
        Command::Check(args) => {
            quiz_bench::init_tracing();
            let verdict = check_history(&args).await?;
            println!("{}", verdict.summary());
            anyhow::ensure!(verdict.clean(), "the history does not check out");
            Ok(())
        }
        Command::Node(args) => quiz_local::processes::serve_node(&args.config, false).await,
        Command::Router(args) => quiz_local::processes::serve_router(&args.config, false).await,
    }
}

/// Runs the named scenarios one after another and reports; fails if any promise broke.
async fn scenarios(args: &RunArgs, names: &[String]) -> anyhow::Result<()> {
    quiz_bench::init_tracing();
    anyhow::ensure!(
        !names.is_empty(),
        "name at least one scenario (see `quiz-chaos list`)"
    );
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        (1..=1_000).contains(&args.phones),
        "--phones must be 1-1000"
    );
    let mut faults = Vec::new();
    for name in names {
        let fault = scenario::Fault::parse(name)
            .ok_or_else(|| anyhow::anyhow!("no scenario {name:?}; `quiz-chaos list` shows them"))?;
        faults.push(fault);
    }
    let machine = quiz_bench::machine::MachineFacts::collect();
    let seed = args.seed.unwrap_or_else(rand::random);
    let options = scenario::RunOptions {
        rounds: args.rounds,
        phones: args.phones,
        seed,
        dir: args.dir.clone(),
        settle: std::time::Duration::from_secs(args.settle_s),
    };
    let mut results = Vec::new();
    for fault in faults {
        results.push(scenario::run(fault, &options).await?);
    }
    let report = report::markdown(
        &quiz_bench::command_line(),
        seed,
        &machine,
        &options,
        &results,
    );
    println!("{report}");
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &report)?;
    }
    let broken: Vec<&str> = results
        .iter()
        .filter(|r| !r.verdict.clean())
        .map(|r| r.fault.name())
        .collect();
    anyhow::ensure!(
        broken.is_empty(),
        "promises broken in: {}",
        broken.join(", ")
    );
    Ok(())
}

/// Checks a history file against the stores and router its first line names.
async fn check_history(args: &CheckArgs) -> anyhow::Result<check::Verdict> {
    let records = history::read(&args.history)?;
    let Some(history::Record::Run {
        database_url,
        redis_nodes,
        router_url,
        ..
    }) = records.first()
    else {
        anyhow::bail!(
            "{}: the first line is not a run record",
            args.history.display()
        );
    };
    let store = quiz_store::StoreConfig {
        redis: (!redis_nodes.is_empty()).then(|| scenario::redis_config(redis_nodes.clone())),
        ..quiz_store::StoreConfig::sql(database_url.clone())
    };
    let stores = quiz_store::Stores::open(&store).await?;
    let router = quiz_client::RouterClient::dev(
        router_url,
        "chaos-checker",
        quiz_protocol::client::Role::Player,
    )
    .await?;
    check::check(
        &records,
        &stores,
        &router,
        std::time::Duration::from_secs(args.settle_s),
    )
    .await
}
