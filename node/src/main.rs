//! `quiz-node`: a shard node and WebSocket edge.
//!
//! ```text
//! quiz-node [--config node.toml] [--log-json]
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use quiz_node::{Config, telemetry};
use tokio_util::sync::CancellationToken;

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
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config: Config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    config.log_json |= args.log_json;
    config.validate()?;
    telemetry::init(config.log_json);
    let stores = quiz_store::Stores::open(&config.store)
        .await
        .context("opening the store")?;
    let shutdown = CancellationToken::new();
    let node = quiz_node::start(config, stores, shutdown.clone()).await?;
    telemetry::shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
