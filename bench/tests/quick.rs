//! `quiz-bench ack-latency --quick` end to end on the embedded backend: a real system, real
//! phones, a report. Asserts what the report must hold, never how fast anything was.

use std::time::Duration;

use quiz_bench::ack_latency::{self, Args};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_run_measures_every_answer_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results").join("ack-latency.md");
    let args = Args {
        out: out.clone(),
        ..Args::quick()
    };
    let run = ack_latency::run(args, "quiz-bench ack-latency --quick");
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the quick run finishes within a minute")
        .expect("the quick run succeeds");

    assert_eq!(outcome.runs.len(), 1);
    let figures = outcome.runs[0].result.as_ref().expect("the run succeeded");
    // One quiz, 5 phones, 4 questions of which 1 is warmup: 15 measured answers.
    assert_eq!(figures.acked, 15, "{figures:?}");
    assert_eq!(figures.failed, 0, "{figures:?}");
    assert!(
        figures.answers_per_s.is_some_and(|r| r > 0.0),
        "{figures:?}"
    );
    let (p50, p99, max) = (
        figures.client_p50_ms.unwrap(),
        figures.client_p99_ms.unwrap(),
        figures.client_max_ms.unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{figures:?}");
    // The node saw the measured answers too (give or take the warmup boundary).
    assert!((10..=20).contains(&figures.server_n), "{figures:?}");
    assert!(
        figures.server_p99_ms.is_some() && figures.batch_mean.is_some(),
        "{figures:?}"
    );

    let written = std::fs::read_to_string(&out).expect("the report is written");
    assert_eq!(written, outcome.report);
    assert!(written.contains("## embedded: SQLite"), "{written}");
    assert!(written.contains("| **median** | 15 |"), "{written}");
    assert!(
        written.contains("`quiz-bench ack-latency --quick`"),
        "{written}"
    );
}
