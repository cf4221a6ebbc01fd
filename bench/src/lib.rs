//! The capacity planner's bench suite for the quiz cluster; `bench/README.md` says what each
//! tool measures and how to read its report.
//!
//! - [`ack_latency`]: answer acknowledgement latency and throughput, embedded backend against
//!   the real one (PostgreSQL + Redis Cluster), run by run in one invocation.
//! - [`capacity`]: what a multi-process cluster holds — idle connections, one big quiz,
//!   a join storm, the failover of a big quiz — driven by load processes from outside, each
//!   figure beside the floor this machine allows.
//! - [`backend`]: starting fresh stores for a run and removing them after it.
//! - [`histogram`]: the client-side latency histogram; [`scrape`]: the node's Prometheus
//!   histograms; [`machine`]: machine facts and CPU use for the reports.
//!
//! The bench drives the system the way phones do, through the client SDK, against a system
//! started in this process by `quiz-local`; it only uses addresses of 127.0.0.0/8. Every
//! tool stops by itself: its load is a bounded number of answers, and every wait is bounded.

pub mod ack_latency;
pub mod backend;
pub mod capacity;
pub mod content;
pub mod histogram;
pub mod machine;
pub mod scrape;

use anyhow::ensure;

/// `quiz-bench`'s command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "quiz-bench",
    about = "Load and latency benchmarks of the quiz cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// One bench per subcommand.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Answer acknowledgement latency and answers/s, per backend, over several runs.
    AckLatency(ack_latency::Args),
    /// Idle joined phones over every edge: node memory and CPU per phone.
    Connections(capacity::connections::Args),
    /// One quiz, many phones answering at a rate: ack, leaderboard and fan-out latencies.
    BigQuiz(capacity::big_quiz::Args),
    /// Phones into one quiz as fast as they can.
    JoinStorm(capacity::join_storm::Args),
    /// The owner of a big quiz SIGKILLed mid-question: first ack, every phone acked again.
    FailoverAtScale(capacity::failover::Args),
    /// A load process (started by a capacity bench).
    #[command(hide = true)]
    Phones,
    /// A minimal broadcast server, the fan-out floor (started by a capacity bench).
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// A shard node (a child process of a capacity bench's cluster).
    #[command(hide = true)]
    Node {
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// A router (a child process of a capacity bench's cluster).
    #[command(hide = true)]
    Router {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

/// Runs the bench `cli` names and prints its report on stdout (progress goes to stderr).
/// Fails if any run failed, after writing the report.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = command_line();
    let report = match cli.command {
        Command::AckLatency(args) => {
            let outcome = ack_latency::run(args, &command).await?;
            println!("{}", outcome.report);
            let failed = outcome.failed_runs();
            ensure!(failed == 0, "{failed} run(s) failed; the report says why");
            return Ok(());
        }
        Command::Connections(args) => capacity::connections::run(args, &command).await?,
        Command::BigQuiz(args) => capacity::big_quiz::run(args, &command).await?,
        Command::JoinStorm(args) => capacity::join_storm::run(args, &command).await?,
        Command::FailoverAtScale(args) => capacity::failover::run(args, &command).await?,
        Command::Phones => return capacity::phones::run().await,
        Command::FloorServer { listen } => return capacity::floor_server::run(listen).await,
        Command::Node { config } => {
            return quiz_local::processes::serve_node(&config, false).await;
        }
        Command::Router { config } => {
            return quiz_local::processes::serve_router(&config, false).await;
        }
    };
    println!("{report}");
    Ok(())
}

/// Logs at `warn` unless `RUST_LOG` says otherwise: the node's per-answer info logs would
/// cost more than the work measured.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// This process's command line, quoted for a POSIX shell where needed.
pub fn command_line() -> String {
    let mut args = std::env::args();
    // The program as a name, not the path cargo happened to build it at.
    let program = args
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "quiz-bench".into());
    std::iter::once(program)
        .chain(args.map(|a| shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(
            shell_quote("--backends=embedded,real"),
            "--backends=embedded,real"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_command_line_parses_with_its_defaults() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["quiz-bench", "ack-latency"]).unwrap();
        let Command::AckLatency(args) = cli.command else {
            panic!("ack-latency parses as itself");
        };
        assert_eq!(
            args.backends,
            vec![backend::Backend::Embedded, backend::Backend::Real]
        );
        assert_eq!((args.quizzes, args.phones, args.think_ms), (4, 50, 1_000));
        assert_eq!(
            (args.questions, args.runs, args.warmup_questions),
            (20, 3, 2)
        );
        let quick = ["quiz-bench", "ack-latency", "--quick", "--phones", "9"];
        assert!(
            Cli::try_parse_from(quick).is_err(),
            "--quick sets the load itself"
        );
    }
}
