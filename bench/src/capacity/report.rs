//! The Markdown report of a capacity run, with its plots beside it: `--out X.md` writes the
//! plots into the folder `X/` and links them from the report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::figures::Percentiles;
use super::plot::{self, Series};
use crate::histogram::LatencyHistogram;
use crate::machine::MachineFacts;

/// A report being written.
pub struct Report {
    md: String,
    out: PathBuf,
    plots: PathBuf,
}

impl Report {
    /// A report titled `title` for `command`, to be written to `out`.
    pub fn new(title: &str, command: &str, out: &Path) -> anyhow::Result<Report> {
        let plots = out.with_extension("");
        std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
        let mut md = String::new();
        let m = MachineFacts::collect();
        let _ = writeln!(md, "# {title}\n");
        let _ = writeln!(md, "Made by `quiz-bench` (see `bench/README.md`).\n");
        let _ = writeln!(md, "- **Command:** `{command}`");
        let _ = writeln!(
            md,
            "- **Build:** {}; source {}.",
            if cfg!(debug_assertions) {
                "debug (unoptimised: not representative, use `--release`)"
            } else {
                "release"
            },
            crate::machine::source_revision()
                .as_deref()
                .unwrap_or("of unknown revision"),
        );
        let _ = writeln!(
            md,
            "- **Machine:** {} CPUs{}, {} memory, Linux {}; load average at start {}; started {}.",
            m.cpus,
            m.cpu_model
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            m.memory_gib.map_or("?".into(), |g| format!("{g:.1} GiB")),
            m.kernel.as_deref().unwrap_or("?"),
            m.load_average.as_deref().unwrap_or("?"),
            m.started_utc,
        );
        Ok(Report {
            md,
            out: out.to_owned(),
            plots,
        })
    }

    pub fn line(&mut self, text: &str) {
        self.md.push_str(text);
        self.md.push('\n');
    }

    pub fn section(&mut self, heading: &str) {
        let _ = writeln!(self.md, "\n## {heading}\n");
    }

    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.md, "| {} |", headers.join(" | "));
        let _ = writeln!(
            self.md,
            "|{}",
            headers.iter().map(|_| "---|").collect::<String>()
        );
        for row in rows {
            let _ = writeln!(self.md, "| {} |", row.join(" | "));
        }
        self.md.push('\n');
    }

    /// A line chart, written beside the report and linked from it.
    pub fn lines(
        &mut self,
        file: &str,
        title: &str,
        x_label: &str,
        y_label: &str,
        series: &[Series<'_>],
    ) -> anyhow::Result<()> {
        let path = self.plots.join(file);
        plot::lines(&path, title, x_label, y_label, series)?;
        self.link(file, title);
        Ok(())
    }

    /// Latency CDFs, written beside the report and linked from it.
    pub fn cdfs(
        &mut self,
        file: &str,
        title: &str,
        series: &[(&str, &LatencyHistogram)],
    ) -> anyhow::Result<()> {
        let path = self.plots.join(file);
        plot::cdfs(&path, title, series)?;
        self.link(file, title);
        Ok(())
    }

    fn link(&mut self, file: &str, title: &str) {
        let folder = self
            .plots
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(self.md, "![{title}]({folder}/{file})\n");
    }

    /// Writes the report; returns its text.
    pub fn write(self) -> anyhow::Result<String> {
        std::fs::write(&self.out, &self.md)
            .with_context(|| format!("writing {}", self.out.display()))?;
        eprintln!("report written to {}", self.out.display());
        Ok(self.md)
    }
}

/// A table row for a latency: n, p50, p99, p99.9, max (ms), and the ratio of its p99 to
/// `floor_p99` when there is one.
pub fn latency_row(name: &str, p: &Percentiles, floor_p99: Option<f64>) -> Vec<String> {
    vec![
        name.to_owned(),
        p.n.to_string(),
        ms(p.p50),
        ms(p.p99),
        ms(p.p999),
        ms(p.max),
        floor_p99
            .filter(|f| *f > 0.0)
            .map_or("—".into(), |f| format!("{:.1}×", p.p99 / f)),
    ]
}

/// The header of [`latency_row`] tables.
pub const LATENCY_HEADERS: [&str; 7] = [
    "",
    "n",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "p99 / floor p99",
];

pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `a: 3, b: 1`, or `none`.
pub fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
