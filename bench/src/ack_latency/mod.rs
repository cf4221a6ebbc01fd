//! `quiz-bench ack-latency`: how long a phone waits for its answer's acknowledgement (which
//! means the answer is in the durable answer log) on each backend, under the same load, in
//! the same invocation, so that backends are compared under the same machine conditions.
//!
//! Each run starts a fresh system (router and one node, in this process) on fresh stores,
//! plays the load of [`load`] against it, shuts everything down and removes the stores.
//! Backends are interleaved run by run (embedded, real, embedded, real…) so that a change in
//! the machine's background load spreads over both. The report ([`report`]) gives every
//! run, the median of each figure and the ratio of the medians.

mod load;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use quiz_local::{LocalOptions, LocalSystem};
use quiz_protocol::question::MAX_QUESTIONS_PER_SET;
use quiz_protocol::quiz::MAX_PLAYERS_LIMIT;

use crate::backend::Backend;
use crate::machine::{self, MachineFacts};
pub use report::{RunFigures, RunRecord};

/// Longest think time: answers must land well inside the 30 s question limit.
const MAX_THINK_MS: u64 = 20_000;
/// Open files the process needs besides its sockets (stores, Redis links, logs).
const SPARE_FILES: u64 = 256;

/// `quiz-bench ack-latency`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Backends to compare, in the order each round runs them.
    #[arg(long, value_delimiter = ',', default_value = "embedded,real")]
    pub backends: Vec<Backend>,
    /// Concurrent quizzes per run.
    #[arg(long, default_value_t = 4, conflicts_with = "quick")]
    pub quizzes: usize,
    /// Phones per quiz (each a WebSocket of its own).
    #[arg(long, default_value_t = 50, conflicts_with = "quick")]
    pub phones: usize,
    /// A phone answers each question after a think time uniform in [0, think-ms] ms.
    #[arg(long, default_value_t = 1_000, conflicts_with = "quick")]
    pub think_ms: u64,
    /// Questions per quiz, warmup included.
    #[arg(long, default_value_t = 20, conflicts_with = "quick")]
    pub questions: u32,
    /// Runs per backend; the report gives each run and the median.
    #[arg(long, default_value_t = 3, conflicts_with = "quick")]
    pub runs: usize,
    /// First questions of each quiz left out of the figures.
    #[arg(long, default_value_t = 2, conflicts_with = "quick")]
    pub warmup_questions: u32,
    /// Where the Markdown report is written (folders are created).
    #[arg(long, default_value = "bench/results/ack-latency.md")]
    pub out: PathBuf,
    /// A tiny load that finishes in seconds, to check the tool works: one run of one quiz
    /// with 5 phones and 4 questions (1 warmup), 50 ms think time.
    #[arg(long)]
    pub quick: bool,
}

impl Args {
    /// The `--quick` load, on the embedded backend, writing to the default path.
    pub fn quick() -> Args {
        Args {
            backends: vec![Backend::Embedded],
            quizzes: 1,
            phones: 5,
            think_ms: 50,
            questions: 4,
            runs: 1,
            warmup_questions: 1,
            out: PathBuf::from("bench/results/ack-latency.md"),
            quick: true,
        }
    }

    /// These arguments with `--quick` applied (backends and output kept).
    fn resolved(self) -> Args {
        if !self.quick {
            return self;
        }
        Args {
            backends: self.backends,
            out: self.out,
            ..Args::quick()
        }
    }

    /// Refuses a load this tool cannot run as asked, before anything starts.
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.backends.is_empty(), "--backends names no backend");
        for (i, b) in self.backends.iter().enumerate() {
            ensure!(
                !self.backends[..i].contains(b),
                "--backends lists {b} twice"
            );
        }
        ensure!(self.runs >= 1, "--runs must be at least 1");
        ensure!(self.quizzes >= 1, "--quizzes must be at least 1");
        ensure!(
            (1..=MAX_PLAYERS_LIMIT as usize).contains(&self.phones),
            "--phones must be 1-{MAX_PLAYERS_LIMIT}"
        );
        ensure!(
            (1..=MAX_QUESTIONS_PER_SET as u32).contains(&self.questions),
            "--questions must be 1-{MAX_QUESTIONS_PER_SET}"
        );
        ensure!(
            self.warmup_questions < self.questions,
            "--warmup-questions must leave at least one question to measure"
        );
        ensure!(
            self.think_ms <= MAX_THINK_MS,
            "--think-ms must be at most {MAX_THINK_MS} (questions close after {} s)",
            load::TIME_LIMIT_S
        );
        // Each phone is two sockets in this process: its own and the node's end of it.
        let sockets = 2 * self.quizzes as u64 * (self.phones as u64 + 1);
        if let Some(limit) = machine::open_files_limit()
            && sockets + SPARE_FILES > limit
        {
            bail!(
                "{} phones need about {} open files in this process, over its limit of \
                 {limit}; raise it (`ulimit -n`) or use fewer phones",
                self.quizzes * self.phones,
                sockets + SPARE_FILES
            );
        }
        Ok(())
    }

    fn load(&self) -> load::Load {
        load::Load {
            quizzes: self.quizzes,
            phones: self.phones,
            think: Duration::from_millis(self.think_ms),
            questions: self.questions,
            warmup: self.warmup_questions,
        }
    }
}

/// What an invocation produced.
#[derive(Debug)]
pub struct Outcome {
    /// The Markdown report, as written to `--out`.
    pub report: String,
    pub runs: Vec<RunRecord>,
}

impl Outcome {
    pub fn failed_runs(&self) -> usize {
        self.runs.iter().filter(|r| r.result.is_err()).count()
    }
}

/// Runs every run of every backend, then writes the report to `args.out`. `command` is the
/// command line to quote in the report. A failed run is reported, not fatal: the others go on.
pub async fn run(args: Args, command: &str) -> anyhow::Result<Outcome> {
    let args = args.resolved();
    args.validate()?;
    let machine = MachineFacts::collect();
    let started = Instant::now();
    let load = args.load();
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        for &backend in &args.backends {
            eprintln!("run {run}/{} on {backend}: starting", args.runs);
            let result = run_once(backend, &load).await;
            match &result {
                Ok(figures) => eprintln!(
                    "run {run}/{} on {backend}: {}",
                    args.runs,
                    figures.summary()
                ),
                Err(e) => eprintln!("run {run}/{} on {backend}: failed: {e:#}", args.runs),
            }
            runs.push(RunRecord {
                backend,
                run,
                result: result.map_err(|e| format!("{e:#}")),
            });
        }
    }
    let revision = machine::source_revision();
    let report = report::render(&report::Report {
        command,
        revision: revision.as_deref(),
        args: &args,
        machine: &machine,
        runs: &runs,
        elapsed: started.elapsed(),
    });
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("report written to {}", args.out.display());
    Ok(Outcome { report, runs })
}

/// One run on fresh stores; the system is shut down and the stores removed whatever happens.
async fn run_once(backend: Backend, load: &load::Load) -> anyhow::Result<RunFigures> {
    let stores = backend.start().await?;
    let measured = async {
        let options = LocalOptions {
            store: stores.store(),
            seed_content: false,
            ..LocalOptions::for_test()
        };
        let system = LocalSystem::start(options).await?;
        let measured = load::run(&system, load).await;
        system.shutdown().await;
        measured
    }
    .await;
    let stopped = stores.stop().await;
    let measured = measured?;
    stopped?;
    Ok(RunFigures::from_measured(&measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_loads_are_refused_with_the_flag_named() {
        let ok = Args {
            quick: false,
            ..Args::quick()
        };
        ok.validate().unwrap();
        let cases = [
            (
                Args {
                    warmup_questions: 4,
                    ..ok.clone()
                },
                "--warmup-questions",
            ),
            (
                Args {
                    think_ms: 60_000,
                    ..ok.clone()
                },
                "--think-ms",
            ),
            (
                Args {
                    backends: vec![Backend::Real, Backend::Real],
                    ..ok.clone()
                },
                "twice",
            ),
            (
                Args {
                    phones: 0,
                    ..ok.clone()
                },
                "--phones",
            ),
            (
                Args {
                    runs: 0,
                    ..ok.clone()
                },
                "--runs",
            ),
        ];
        for (args, flag) in cases {
            let e = args.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn quick_keeps_the_backends_and_output_asked_for() {
        let args = Args {
            backends: vec![Backend::Real],
            out: PathBuf::from("x.md"),
            phones: 500,
            ..Args::quick()
        }
        .resolved();
        assert_eq!(args.backends, vec![Backend::Real]);
        assert_eq!(args.out, PathBuf::from("x.md"));
        assert_eq!(args.phones, 5);
    }
}
