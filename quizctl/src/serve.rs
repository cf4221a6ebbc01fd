//! `quizctl node` and `quizctl router`: the server binaries' work, in this binary too, so that
//! one executable can run a whole cluster as separate processes (`quizctl up`, the chaos and
//! multi-process tests).

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// TOML configuration file (see deploy/local/ for examples).
    #[arg(long)]
    config: PathBuf,
    /// Log JSON lines instead of human-readable text.
    #[arg(long)]
    log_json: bool,
}

pub(crate) async fn node(args: Args) -> anyhow::Result<()> {
    quiz_local::processes::serve_node(&args.config, args.log_json).await
}

pub(crate) async fn router(args: Args) -> anyhow::Result<()> {
    quiz_local::processes::serve_router(&args.config, args.log_json).await
}

#[derive(clap::Args)]
pub(crate) struct RebuildArgs {
    /// The quiz whose leaderboard to rebuild from its answer log.
    #[arg(long)]
    quiz: String,
    /// The admin address of the node that owns it.
    #[arg(long, default_value = "http://127.0.0.1:9101")]
    node_admin: String,
    /// The node's `admin_token` (default: the local cluster's).
    #[arg(long, env = "QUIZ_ADMIN_TOKEN", default_value = quiz_local::DEV_ADMIN_TOKEN, hide_default_value = true)]
    admin_token: String,
}

/// `quizctl rebuild`: asks the owning node to rebuild a quiz's leaderboard from the log.
pub(crate) async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let quiz = quiz_protocol::QuizId::parse(&args.quiz).context("that is not a quiz code")?;
    let url = format!(
        "{}/admin/quizzes/{quiz}/rebuild-leaderboard",
        args.node_admin
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&args.admin_token)
        .send()
        .await
        .with_context(|| url.clone())?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{status}: {body}");
    }
    println!("rebuilt the leaderboard of {quiz} from its answer log");
    Ok(())
}
