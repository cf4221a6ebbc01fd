//! `quizctl`: run a local quiz system, host a quiz, play one, import questions.
//!
//! ```text
//! quizctl up                                  # router + 3 nodes on this machine, demo quiz ready
//! quizctl host --quiz K7M3QX                  # drive a quiz from the terminal
//! quizctl play --quiz K7M3QX --name Ana       # play it
//! quizctl import content/english-a1-b2.json   # add or replace a question set
//! ```

mod ca;
mod host;
mod import;
mod play;
mod serve;
mod show;
mod up;

use clap::{Parser, Subcommand};
use quiz_client::RouterClient;
use quiz_protocol::client::Role;

#[derive(Parser)]
#[command(
    version,
    about = "Run, host and play English quizzes on the quiz cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the router is and who you are (local systems issue dev tokens for any user).
#[derive(clap::Args, Clone)]
struct Target {
    /// The router's base URL.
    #[arg(long, env = "QUIZ_ROUTER", default_value = "http://127.0.0.1:8080")]
    router: String,
    /// An identity-provider token; without one, a dev token is requested for `--user`.
    #[arg(long, env = "QUIZ_TOKEN")]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster (router + 3 node processes, embedded SQLite) with a demo quiz.
    Up(up::Args),
    /// Create the local cluster CA (once) and issue node and router certificates.
    Ca(ca::Args),
    /// Create and drive a quiz as its host.
    Host(host::Args),
    /// Play a quiz in the terminal.
    Play(play::Args),
    /// Validate a question set file and upload it (add or replace).
    Import(import::Args),
    /// Rebuild a quiz's leaderboard from its answer log (admin).
    Rebuild(serve::RebuildArgs),
    /// Run a shard node (what the quiz-node binary does).
    Node(serve::Args),
    /// Run a router (what the quiz-router binary does).
    Router(serve::Args),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Ca(args) => ca::run(args),
        Command::Host(args) => host::run(args).await,
        Command::Play(args) => play::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Rebuild(args) => serve::rebuild(args).await,
        Command::Node(args) => serve::node(args).await,
        Command::Router(args) => serve::router(args).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl Target {
    /// A router client acting as `user` with `role`.
    async fn client(&self, user: &str, role: Role) -> anyhow::Result<RouterClient> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => RouterClient::dev_token(&self.router, user, role)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot get a dev token from {} ({e}); is `quizctl up` running?",
                        self.router
                    )
                })?,
        };
        Ok(RouterClient::new(self.router.clone(), token))
    }
}
