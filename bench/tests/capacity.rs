//! The capacity benches' `--quick` runs, end to end, as a capacity planner runs them: the
//! `quiz-bench` binary starts its own multi-process cluster and load processes, drives them,
//! stops them, and writes a report. Asserts what the reports must hold (everyone joined,
//! every answer acked and in the log once), never how fast anything was.
//!
//! The full runs (10,000 to 100,000 phones) take minutes each and run outside the test suite:
//! `scripts/capacity.sh`.

use std::path::Path;
use std::process::Command;

/// Runs `quiz-bench <bench> --quick` and returns its report.
fn quick(bench: &str, dir: &Path) -> String {
    let out = dir.join(format!("{bench}.md"));
    let run = Command::new(env!("CARGO_BIN_EXE_quiz-bench"))
        .args([bench, "--quick", "--out"])
        .arg(&out)
        .output()
        .expect("quiz-bench starts");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{bench} --quick failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).expect("the report is written");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        report.trim(),
        "the report is also printed"
    );
    assert!(
        report.contains(&format!("`quiz-bench {bench} --quick")),
        "the report names its command:\n{report}"
    );
    report
}

/// One test runs them one after another: each starts a cluster of three node processes.
#[test]
fn every_capacity_bench_runs_quick_and_reports_what_it_measured() {
    let dir = tempfile::tempdir().unwrap();

    let connections = quick("connections", dir.path());
    assert!(connections.contains("| 300 | 300/300 |"), "{connections}");
    assert!(connections.contains("node-3"), "{connections}");
    assert!(connections.contains("rss-per-phone.svg"), "{connections}");

    let big = quick("big-quiz", dir.path());
    assert!(
        big.contains("| 1 | 200/200 |") && big.contains("| 400 | 400 | 0 | none | 0 | 0 | 0 |"),
        "everyone joined; 400 answers, 400 acked, none refused, no error without an answer_id, no lease lapse:\n{big}"
    );
    assert!(big.contains("400 rows; every ack once"), "{big}");
    assert!(big.contains("| board, every phone |"), "{big}");

    let storm = quick("join-storm", dir.path());
    assert!(storm.contains("| 300/300 |"), "{storm}");
    assert!(storm.contains("| none |"), "no refusals:\n{storm}");

    let failover = quick("failover-at-scale", dir.path());
    assert!(
        failover.contains("| 200/200 | 200/200 |"),
        "every phone joined and was acked again after the kill:\n{failover}"
    );
    assert!(failover.contains("200 rows; every ack once"), "{failover}");
}
