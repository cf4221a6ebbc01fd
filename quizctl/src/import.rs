//! `quizctl import FILE`: validate a question set locally, then upload it.

use std::path::PathBuf;

use anyhow::Context;
use quiz_local::DEMO_HOST;
use quiz_protocol::client::Role;

use crate::Target;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A question set in the JSON import format (see content/README.md).
    file: PathBuf,
    /// Only check the file; do not upload it.
    #[arg(long)]
    check: bool,
    /// The host user to upload as (with dev tokens).
    #[arg(long, default_value = DEMO_HOST)]
    user: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let set = quiz_local::parse_set(&text).with_context(|| format!("{}", args.file.display()))?;
    println!("{}: {} questions, valid", set.id, set.questions.len());
    if args.check {
        return Ok(());
    }
    let client = args.target.client(&args.user, Role::Host).await?;
    let stored = client.put_question_set(&set).await?;
    println!(
        "imported {} ({} questions) into {}",
        stored.id, stored.questions, args.target.router
    );
    Ok(())
}
