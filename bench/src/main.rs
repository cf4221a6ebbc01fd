//! `quiz-bench`: parses the command line, installs logging and runs the bench asked for; the
//! work is in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = quiz_bench::Cli::parse();
    // Nodes and routers run by a capacity bench install their own logging.
    if !matches!(
        cli.command,
        quiz_bench::Command::Node { .. } | quiz_bench::Command::Router { .. }
    ) {
        quiz_bench::init_tracing();
    }
    quiz_bench::run(cli).await
}
