//! `quiz-chaos smoke`, end to end as an operator runs it: the binary starts its own stores and
//! cluster processes per round, injects an owner SIGKILL, a Redis Cluster loss and a
//! PostgreSQL stall while phones answer, checks every phone's history against the stores, and
//! writes a report. Asserts what the checker counted, never how fast anything was.
//!
//! The full suite (every scenario, three rounds each) runs outside the test suite:
//! `scripts/chaos.sh`.

use std::process::Command;

#[test]
fn the_smoke_scenarios_lose_nothing_and_every_board_equals_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smoke.md");
    let run = Command::new(env!("CARGO_BIN_EXE_quiz-chaos"))
        .args(["smoke", "--phones", "6", "--seed", "7", "--dir"])
        .arg(dir.path().join("runs"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("quiz-chaos starts");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "quiz-chaos smoke failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).expect("the report is written");
    for scenario in ["owner-kill", "redis-lost", "postgres-stall"] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{report}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | scenario | fault | sent | acked | refused | lost | duplicated | unexpected | stuck |
        // unfinished | boards wrong | ...
        let sent: u32 = cells[3].parse().unwrap();
        assert!(sent >= 6, "{scenario}: answers were sent: {row}");
        for (name, cell) in [
            ("lost", 6),
            ("duplicated", 7),
            ("unexpected", 8),
            ("stuck", 9),
            ("unfinished", 10),
            ("boards wrong", 11),
        ] {
            assert_eq!(cells[cell], "0", "{scenario}: {name}: {row}");
        }
    }
    assert!(
        report.contains("Every scenario held every promise."),
        "{report}"
    );
    // The checker also runs on its own on a history a run left (its stores are gone now, so
    // it must say it cannot reach them rather than pass).
    let history = dir.path().join("runs/owner-kill/round-1/history.jsonl");
    assert!(history.exists(), "the history file is kept");
    let check = Command::new(env!("CARGO_BIN_EXE_quiz-chaos"))
        .args(["check", "--settle-s", "1", "--history"])
        .arg(&history)
        .output()
        .expect("quiz-chaos starts");
    assert!(
        !check.status.success(),
        "a check without its stores cannot pass"
    );
}
