//! Fault scenarios against a cluster of real processes on PostgreSQL and a Redis Cluster; see
//! `chaos/README.md`.
//!
//! - [`failover`]: kills the owner of a quiz while phones answer, again and again, and
//!   measures the time from the kill to the first answer the new owner accepts, checking that
//!   every acknowledged answer is counted exactly once.
//!
//! The tool runs its own cluster as child processes of this executable (the hidden `node` and
//! `router` subcommands), on 127.0.0.1 only, and every run is bounded: a fixed number of
//! kills, each with bounded waits.

pub mod failover;
mod phone;

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
    /// Run a shard node (a child process of a scenario).
    #[command(hide = true)]
    Node(ServeArgs),
    /// Run a router (a child process of a scenario).
    #[command(hide = true)]
    Router(ServeArgs),
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
        Command::Node(args) => quiz_local::processes::serve_node(&args.config, false).await,
        Command::Router(args) => quiz_local::processes::serve_router(&args.config, false).await,
    }
}
