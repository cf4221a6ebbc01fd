//! The Markdown report of `quiz-chaos run`/`all`: one row per scenario with what the checker
//! counted, and how long phones waited.

use std::fmt::Write as _;

use quiz_bench::machine::{MachineFacts, source_revision};

use crate::failover::percentile;
use crate::scenario::{QUESTIONS, RunOptions, ScenarioResult};

pub fn markdown(
    command: &str,
    seed: u64,
    machine: &MachineFacts,
    options: &RunOptions,
    results: &[ScenarioResult],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Chaos scenarios\n");
    let _ = writeln!(
        out,
        "`{command}` (revision {}, seed {seed}), {}, on {} CPUs{}.\n",
        source_revision().unwrap_or_else(|| "unknown".into()),
        machine.started_utc,
        machine.cpus,
        machine
            .load_average
            .as_ref()
            .map(|l| format!(", load {l} at the start"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        out,
        "Each round: a fresh Redis Cluster (3 masters × 1 replica), a router and 3 shard nodes as \
         processes (a 4th for rebalance) with the production lease and ring timers, a TCP proxy \
         between every process and PostgreSQL, one in front of every edge, and a UDP proxy in front \
         of every node's QUIC endpoint (which it advertises to its peers). A live quiz of \
         {QUESTIONS} questions; {} phones spread over the edges (the client SDK, default timers, \
         retrying for up to 60 s) answer every question once; the fault starts at a seeded \
         moment of the second question and is healed before the quiz ends. Then the checker \
         compares every phone's history with the answer log, the Redis standings, the router's \
         standings, the leagues and what the phones were shown at the end, waiting up to {} s \
         for derived boards to be repaired. {} rounds per scenario.\n",
        options.phones,
        options.settle.as_secs(),
        options.rounds
    );
    let _ = writeln!(
        out,
        "- **lost**: acknowledged but not in the log with its points; **duplicated**: logged \
         twice; **unexpected**: logged but never sent or definitely refused; **stuck**: never \
         settled; **unfinished**: phones that never saw the end; **boards wrong**: a \
         leaderboard (a phone's final score or top N, Redis, the router's standings, a league) \
         that still differs from the log.\n- **longest wait**: per phone, the longest any of its \
         answers took from sent to settled (ack or refusal), p50 and p99 over the phones.\n- \
         **fault → first ack**: from the fault's start to the first ack of an answer sent after \
         it, median and worst over the rounds.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | fault | sent | acked | refused | lost | duplicated | unexpected | stuck | \
         unfinished | boards wrong | longest wait p50 | p99 | fault → first ack p50 | max |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        let v = &r.verdict;
        let mut waits = v.outages_ms.clone();
        waits.sort_unstable();
        let mut firsts = r.first_ack_ms.clone();
        firsts.sort_unstable();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.fault.name(),
            r.fault.describe(),
            v.sent,
            v.acked,
            v.refused,
            v.lost,
            v.duplicated,
            v.unexpected,
            v.stuck,
            v.unfinished,
            v.boards.len(),
            ms(percentile(&waits, 0.5)),
            ms(percentile(&waits, 0.99)),
            ms(percentile(&firsts, 0.5)),
            ms(firsts.last().copied()),
        );
    }
    let problems: Vec<&ScenarioResult> = results.iter().filter(|r| !r.verdict.clean()).collect();
    if problems.is_empty() {
        let _ = writeln!(out, "\nEvery scenario held every promise.");
    } else {
        let _ = writeln!(out, "\n## What broke\n");
        for r in problems {
            let _ = writeln!(out, "### {}\n", r.fault.name());
            for d in r.verdict.details.iter().chain(&r.verdict.boards).take(20) {
                let _ = writeln!(out, "- {d}");
            }
            let _ = writeln!(out);
        }
    }
    out
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v} ms"))
}
