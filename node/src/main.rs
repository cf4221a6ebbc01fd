//! `quiz-node`: a shard node and WebSocket edge.
//!
//! ```text
//! quiz-node [--config node.toml] [--log-json]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quiz_node::{Config, telemetry};

#[derive(Parser)]
#[command(version, about = "Quiz cluster shard node and WebSocket edge")]
struct Args {
    /// TOML configuration file; every field is optional.
    #[arg(long, env = "QUIZ_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Log JSON lines instead of human-readable text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.log_json |= args.log_json;
    telemetry::init(config.log_json);
    match quiz_node::serve(config, telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
