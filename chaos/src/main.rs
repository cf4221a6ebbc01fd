use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quiz_chaos::run(quiz_chaos::Cli::parse()).await
}
