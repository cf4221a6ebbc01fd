//! `quizctl up`: the whole system on this machine, on the embedded store.

use std::path::PathBuf;

use anyhow::Context;
use quiz_local::{DEMO_HOST, LocalOptions, LocalSystem};
use quiz_protocol::QuizSettings;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Where the SQLite database lives.
    #[arg(long, default_value = ".local")]
    data_dir: PathBuf,
    /// Start from an empty database.
    #[arg(long)]
    fresh: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    quiz_node::telemetry::init(args.log_json);
    let db = args.data_dir.join("quiz.db");
    if args.fresh {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    let url = format!("sqlite://{}", db.display());
    let system = LocalSystem::start(LocalOptions::fixed(url))
        .await
        .context("starting the local system (are ports 8080, 9080, 7001 and 9101 free?)")?;
    let quiz = system
        .create_quiz(DEMO_HOST, "demo", QuizSettings::default())
        .await?;
    let node = &system.nodes[0];
    println!("Quiz system is up (embedded SQLite at {}).", db.display());
    println!(
        "  router   {}   metrics http://{}/metrics",
        system.router_url(),
        system.router.admin_addr()
    );
    println!(
        "  node-1   {}   metrics http://{}/metrics",
        node.ws_url(),
        node.admin_addr()
    );
    println!();
    println!("Demo quiz: {quiz}  (6 questions; another: quizctl host --set english-a1-b2)");
    println!("  host it: cargo run -p quizctl -- host --quiz {quiz}");
    println!("  play it: cargo run -p quizctl -- play --quiz {quiz} --name Ana");
    println!();
    println!("Ctrl-C stops it.");
    quiz_node::telemetry::shutdown_signal().await;
    println!("stopping...");
    system.shutdown().await;
    Ok(())
}
