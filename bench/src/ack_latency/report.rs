//! The figures of one run, and the Markdown report of a whole invocation: a table per
//! backend with a row per run, the median of each column over the runs, and the ratio of the
//! real backend's medians to the embedded one's.

use std::fmt::Write as _;
use std::time::Duration;

use super::Args;
use super::load::Measured;
use crate::backend::Backend;
use crate::machine::MachineFacts;

/// What one run is summed up as. Latencies are in milliseconds; `None` where nothing was
/// measured (no answers, no `/proc`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFigures {
    /// Acks of measured questions.
    pub acked: u64,
    /// Answers (any question) that got no ack, and why the first of them failed.
    pub failed: u64,
    pub first_failure: Option<String>,
    pub answers_per_s: Option<f64>,
    pub client_p50_ms: Option<f64>,
    pub client_p90_ms: Option<f64>,
    pub client_p99_ms: Option<f64>,
    pub client_max_ms: Option<f64>,
    /// Upper bounds of the node's histogram buckets (infinite past the last one).
    pub server_p50_ms: Option<f64>,
    pub server_p99_ms: Option<f64>,
    /// Acks the node's histogram counted over the measured window.
    pub server_n: u64,
    /// Mean answers per durable write batch.
    pub batch_mean: Option<f64>,
    /// Upper bound of the bucket of the durable write batches' p99 duration.
    pub write_p99_ms: Option<f64>,
    /// Durable write batches that failed (and were retried).
    pub write_errors: u64,
    /// CPU use over the measured window, percent of all CPUs.
    pub process_cpu_pct: Option<f64>,
    pub machine_cpu_pct: Option<f64>,
}

impl RunFigures {
    pub(super) fn from_measured(m: &Measured) -> RunFigures {
        let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
        let client = |q| m.client.quantile(q).map(ms);
        let window = m.window.as_secs_f64();
        let bound = |h: &Option<crate::scrape::PromHistogram>, q| {
            h.as_ref()?.quantile_upper_bound(q).map(|s| s * 1_000.0)
        };
        RunFigures {
            acked: m.client.len(),
            failed: m.failed,
            first_failure: m.first_failure.clone(),
            answers_per_s: (window > 0.0).then(|| m.client.len() as f64 / window),
            client_p50_ms: client(0.5),
            client_p90_ms: client(0.9),
            client_p99_ms: client(0.99),
            client_max_ms: (!m.client.is_empty()).then(|| ms(m.client.max())),
            server_p50_ms: bound(&m.server_ack, 0.5),
            server_p99_ms: bound(&m.server_ack, 0.99),
            server_n: m.server_ack.as_ref().map_or(0, |h| h.count),
            batch_mean: m.write_batch.as_ref().and_then(|h| h.mean()),
            write_p99_ms: bound(&m.store_write, 0.99),
            write_errors: m.store_write_errors.as_ref().map_or(0, |h| h.count),
            process_cpu_pct: m.cpu.process_pct,
            machine_cpu_pct: m.cpu.machine_pct,
        }
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        format!(
            "{} acks, {} answers/s, client p50 {} ms p99 {} ms max {} ms, server p99 <= {} ms, \
             {} failed, machine CPU {} %",
            self.acked,
            Format::Rate.cell(self.answers_per_s),
            Format::Ms.cell(self.client_p50_ms),
            Format::Ms.cell(self.client_p99_ms),
            Format::Ms.cell(self.client_max_ms),
            Format::Bound.cell(self.server_p99_ms),
            self.failed,
            Format::Percent.cell(self.machine_cpu_pct),
        )
    }
}

/// One run of one backend: its figures, or why it failed.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub backend: Backend,
    /// 1-based.
    pub run: usize,
    pub result: Result<RunFigures, String>,
}

/// Everything the report is made of.
pub(super) struct Report<'a> {
    pub(super) command: &'a str,
    /// `git describe --always --dirty` of the source, when known.
    pub(super) revision: Option<&'a str>,
    pub(super) args: &'a Args,
    pub(super) machine: &'a MachineFacts,
    pub(super) runs: &'a [RunRecord],
    pub(super) elapsed: Duration,
}

/// How a column's numbers are written.
#[derive(Clone, Copy)]
enum Format {
    Count,
    Rate,
    Ms,
    /// A histogram bucket's upper bound in ms; infinite is "past the last bucket".
    Bound,
    Mean,
    Percent,
}

struct Column {
    header: &'static str,
    value: fn(&RunFigures) -> Option<f64>,
    format: Format,
    /// Whether the real/embedded ratio of this column means anything.
    ratio: bool,
}

const COLUMNS: &[Column] = &[
    col("acked", |f| Some(f.acked as f64), Format::Count, false),
    col("answers/s", |f| f.answers_per_s, Format::Rate, true),
    col("p50 ms", |f| f.client_p50_ms, Format::Ms, true),
    col("p90 ms", |f| f.client_p90_ms, Format::Ms, true),
    col("p99 ms", |f| f.client_p99_ms, Format::Ms, true),
    col("max ms", |f| f.client_max_ms, Format::Ms, true),
    col("server p50 ≤ ms", |f| f.server_p50_ms, Format::Bound, true),
    col("server p99 ≤ ms", |f| f.server_p99_ms, Format::Bound, true),
    col(
        "server n",
        |f| Some(f.server_n as f64),
        Format::Count,
        false,
    ),
    col("batch", |f| f.batch_mean, Format::Mean, true),
    col("write p99 ≤ ms", |f| f.write_p99_ms, Format::Bound, true),
    col(
        "write errors",
        |f| Some(f.write_errors as f64),
        Format::Count,
        false,
    ),
    col("failed", |f| Some(f.failed as f64), Format::Count, false),
    col("bench CPU %", |f| f.process_cpu_pct, Format::Percent, true),
    col(
        "machine CPU %",
        |f| f.machine_cpu_pct,
        Format::Percent,
        true,
    ),
];

const fn col(
    header: &'static str,
    value: fn(&RunFigures) -> Option<f64>,
    format: Format,
    ratio: bool,
) -> Column {
    Column {
        header,
        value,
        format,
        ratio,
    }
}

impl Format {
    fn cell(self, v: Option<f64>) -> String {
        let Some(v) = v else {
            return "—".into();
        };
        match self {
            Format::Count => format!("{v:.0}"),
            Format::Rate | Format::Mean | Format::Percent => format!("{v:.1}"),
            Format::Ms if v < 10.0 => format!("{v:.2}"),
            Format::Ms if v < 100.0 => format!("{v:.1}"),
            Format::Ms => format!("{v:.0}"),
            Format::Bound if v.is_infinite() => "> last bucket".into(),
            // Bucket bounds such as 0.5, 7.5 or 15 ms, without float noise.
            Format::Bound => format!("{}", (v * 1_000.0).round() / 1_000.0),
        }
    }
}

/// The median of the values present; the mean of the middle two for an even count.
pub(super) fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The median of the values present; the higher of the middle two for an even count.
fn upper_median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The median of every column over a backend's successful runs.
fn medians(runs: &[RunRecord], backend: Backend) -> Option<Vec<Option<f64>>> {
    let ok: Vec<&RunFigures> = runs
        .iter()
        .filter(|r| r.backend == backend)
        .filter_map(|r| r.result.as_ref().ok())
        .collect();
    if ok.is_empty() {
        return None;
    }
    Some(
        COLUMNS
            .iter()
            .map(|c| {
                let values = ok.iter().map(|f| (c.value)(f));
                match c.format {
                    // A bound must stay a bucket bound: the higher of the middle two.
                    Format::Bound => upper_median(values),
                    _ => median(values),
                }
            })
            .collect(),
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => format!("×{:.2}", a / b),
        _ => "—".into(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The whole report, in Markdown.
pub(super) fn render(r: &Report<'_>) -> String {
    let mut out = String::new();
    let a = r.args;
    let m = r.machine;
    let _ = writeln!(out, "# Answer ack latency by backend\n");
    let _ = writeln!(
        out,
        "Made by `quiz-bench ack-latency` (see `bench/README.md`).\n"
    );
    let _ = writeln!(out, "- **Command:** `{}`", r.command);
    let _ = writeln!(
        out,
        "- **Build:** {}; source {}.",
        if cfg!(debug_assertions) {
            "debug (unoptimised: not representative, use `--release`)"
        } else {
            "release"
        },
        r.revision.unwrap_or("of unknown revision"),
    );
    let _ = writeln!(
        out,
        "- **Machine:** {} CPUs{}, {} memory, Linux {}; load average at start {}; started {} \
         (whole invocation {:.0} s).",
        m.cpus,
        m.cpu_model
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default(),
        m.memory_gib.map_or("?".into(), |g| format!("{g:.1} GiB")),
        m.kernel.as_deref().unwrap_or("?"),
        m.load_average.as_deref().unwrap_or("?"),
        m.started_utc,
        r.elapsed.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "- **Load per run:** {} × {} phones (+1 host each) in one process with the \
         router and one node; {} single-choice questions ({} s limit), the first {} of them \
         warmup and left out of every figure; each phone answers each question after a think \
         time uniform in [0, {}] ms; a quiz moves on as soon as every phone has answered \
         (auto-advance 0 ms).",
        plural(a.quizzes, "quiz", "quizzes"),
        a.phones,
        a.questions,
        super::load::TIME_LIMIT_S,
        a.warmup_questions,
        a.think_ms,
    );
    let order: Vec<&str> = a.backends.iter().map(|b| b.name()).collect();
    let _ = writeln!(
        out,
        "- **Runs:** {} per backend, interleaved ({} each round), each on a fresh system and \
         fresh stores.",
        a.runs,
        order.join(", "),
    );
    if let (Some(real), Some(embedded)) = (
        medians(r.runs, Backend::Real),
        medians(r.runs, Backend::Embedded),
    ) {
        let pick = |header: &str| {
            let i = COLUMNS.iter().position(|c| c.header == header)?;
            Some(ratio(real[i], embedded[i]))
        };
        let _ = writeln!(
            out,
            "- **real / embedded (medians):** client p50 {}, p99 {}; server p99 {}; answers/s {}.",
            pick("p50 ms").unwrap_or_default(),
            pick("p99 ms").unwrap_or_default(),
            pick("server p99 ≤ ms").unwrap_or_default(),
            pick("answers/s").unwrap_or_default(),
        );
    }
    for &backend in &a.backends {
        backend_table(&mut out, r.runs, backend);
    }
    out.push_str(HOW_TO_READ);
    out
}

fn backend_table(out: &mut String, runs: &[RunRecord], backend: Backend) {
    let _ = writeln!(out, "\n## {backend}: {}\n", backend.describe());
    let headers: Vec<&str> = COLUMNS.iter().map(|c| c.header).collect();
    let _ = writeln!(out, "| run | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(COLUMNS.len()));
    let mut failures = Vec::new();
    for run in runs.iter().filter(|r| r.backend == backend) {
        match &run.result {
            Ok(f) => {
                let cells: Vec<String> = COLUMNS
                    .iter()
                    .map(|c| c.format.cell((c.value)(f)))
                    .collect();
                let _ = writeln!(out, "| {} | {} |", run.run, cells.join(" | "));
                if let Some(first) = f.first_failure.as_ref().filter(|_| f.failed > 0) {
                    failures.push(format!(
                        "run {}: {} answers got no ack; the first because: {}",
                        run.run,
                        f.failed,
                        first.replace('\n', " ")
                    ));
                }
            }
            Err(e) => {
                let cells = vec!["—"; COLUMNS.len()];
                let _ = writeln!(out, "| {} (failed) | {} |", run.run, cells.join(" | "));
                failures.push(format!("run {} failed: {}", run.run, e.replace('\n', " ")));
            }
        }
    }
    let Some(mine) = medians(runs, backend) else {
        let _ = writeln!(out);
        for f in failures {
            let _ = writeln!(out, "- {f}");
        }
        return;
    };
    let cells: Vec<String> = COLUMNS
        .iter()
        .zip(&mine)
        .map(|(c, v)| c.format.cell(*v))
        .collect();
    let _ = writeln!(out, "| **median** | {} |", cells.join(" | "));
    if backend == Backend::Real
        && let Some(base) = medians(runs, Backend::Embedded)
    {
        let cells: Vec<String> = COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if c.ratio {
                    ratio(mine[i], base[i])
                } else {
                    "—".into()
                }
            })
            .collect();
        let _ = writeln!(out, "| **real / embedded** | {} |", cells.join(" | "));
    }
    if !failures.is_empty() {
        let _ = writeln!(out);
        for f in failures {
            let _ = writeln!(out, "- {f}");
        }
    }
}

const HOW_TO_READ: &str = "
## How to read this

- **acked**: acknowledged answers to the measured questions (quizzes × phones × measured
  questions when nothing failed). **failed**: answers to any question that got no ack (a
  rejection or the SDK's 30 s answer timeout).
- **answers/s**: acked / the measured window (from the first measured question reaching a
  phone to the last measured ack). The load is closed-loop: a quiz moves on when its slowest
  phone has answered, so the rate is set mostly by the think time (about quizzes × phones /
  think time); a backend that slows acks lowers it.
- **p50 … max ms** (client side): from just before `answer()` to its ack, in the bench
  process, over every measured answer; a log-bucketed histogram, percentiles at most 1.6 %
  high, max exact. It includes the WebSocket round trip and the wait for a CPU: the phones,
  the router and the node share the machine.
- **server p50/p99 ≤ ms**: the upper bound of the bucket of the node's
  `quiz_node_answer_ack_seconds` histogram (answer frame in at the edge → ack queued) that
  holds the percentile; buckets are 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50 ms…
  **server n**: the acks it counted between the scrape taken once every phone had its
  warmup acks and the end of the run (quizzes are not in lockstep, so it can differ a
  little from acked).
- **batch**: mean answers per durable write batch (`quiz_node_write_batch_answers`, group
  commit); **write p99 ≤ ms**: bucket upper bound of the batches' p99 write time
  (`quiz_node_store_write_seconds{result=\"ok\"}`); **write errors**: batches whose write
  failed and was retried (`result=\"err\"`), each costing the answers in it a backoff.
- **bench CPU %**: this process's CPU time (router, node and phones) over the measured
  window, as a share of all CPUs; **machine CPU %**: the whole machine's busy share, which
  also counts PostgreSQL, the Redis servers and anything else running. Near 100 % means the
  run was CPU-bound and latencies include waiting for a CPU.
- **median**: of each column on its own over the runs (for an even number of runs, the
  mean of the middle two, or the higher of them for bucket bounds); **real / embedded**: the ratio of the
  two backends' medians, the figure to compare on a shared, noisy machine.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(p50: f64, rate: f64) -> RunFigures {
        RunFigures {
            acked: 100,
            answers_per_s: Some(rate),
            client_p50_ms: Some(p50),
            server_p99_ms: Some(f64::INFINITY),
            ..RunFigures::default()
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts_skip_missing_values() {
        assert_eq!(median([Some(3.0), None, Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median([Some(4.0), Some(1.0)]), Some(2.5));
        assert_eq!(median([None]), None);
        assert_eq!(upper_median([Some(5.0), Some(7.5)]), Some(7.5));
        assert_eq!(upper_median([Some(5.0), Some(7.5), Some(2.0)]), Some(5.0));
        assert_eq!(upper_median([None]), None);
    }

    #[test]
    fn cells_are_readable() {
        assert_eq!(Format::Ms.cell(Some(3.456)), "3.46");
        assert_eq!(Format::Ms.cell(Some(34.56)), "34.6");
        assert_eq!(Format::Bound.cell(Some(0.0005 * 1_000.0)), "0.5");
        assert_eq!(Format::Bound.cell(Some(0.0075 * 1_000.0)), "7.5");
        assert_eq!(Format::Bound.cell(Some(f64::INFINITY)), "> last bucket");
        assert_eq!(Format::Count.cell(None), "—");
    }

    #[test]
    fn the_report_has_a_table_per_backend_with_medians_and_the_ratio() {
        let runs = vec![
            RunRecord {
                backend: Backend::Embedded,
                run: 1,
                result: Ok(figures(2.0, 190.0)),
            },
            RunRecord {
                backend: Backend::Real,
                run: 1,
                result: Ok(figures(5.0, 180.0)),
            },
            RunRecord {
                backend: Backend::Embedded,
                run: 2,
                result: Ok(figures(4.0, 200.0)),
            },
            RunRecord {
                backend: Backend::Real,
                run: 2,
                result: Err("redis | down".into()),
            },
        ];
        let args = Args {
            backends: vec![Backend::Embedded, Backend::Real],
            ..Args::quick()
        };
        let machine = MachineFacts::collect();
        let text = render(&Report {
            command: "quiz-bench ack-latency --quick",
            revision: Some("abc1234-dirty"),
            args: &args,
            machine: &machine,
            runs: &runs,
            elapsed: Duration::from_secs(3),
        });
        assert!(text.contains("## embedded: SQLite"), "{text}");
        assert!(text.contains("## real: PostgreSQL"), "{text}");
        // Embedded median p50 is 3.00 ms; real has one good run at 5.00 ms.
        assert!(
            text.contains("| **median** | 100 | 195.0 | 3.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| **real / embedded** | — | ×0.92 | ×1.67 |"),
            "{text}"
        );
        assert!(text.contains("| 2 (failed) |"), "{text}");
        assert!(text.contains("- run 2 failed: redis | down"), "{text}");
        assert!(text.contains("client p50 ×1.67"), "{text}");
        assert!(text.contains("`quiz-bench ack-latency --quick`"), "{text}");
        assert!(text.contains("source abc1234-dirty"), "{text}");
    }
}
