//! Reading a node's Prometheus histograms from its `/metrics` text, and the difference
//! between two scrapes (so that a measured window leaves the warmup out).
//!
//! A Prometheus histogram only has cumulative bucket counts, so a quantile read from it is a
//! bucket's upper bound (`le`): "p99 ≤ 15 ms". The parser knows the text format as the
//! `prometheus` crate writes it (`name_bucket{label="v",le="0.001"} 3`, label values without
//! commas or quotes), which is all the node exports.

use std::time::Duration;

use anyhow::Context;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One Prometheus histogram series: cumulative counts by upper bound, then sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromHistogram {
    /// `(le, cumulative count)`, ascending, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl PromHistogram {
    /// The series `name` with every label of `labels` (other labels, such as `le`, may be
    /// present too) in a `/metrics` text; `None` if it has no buckets there.
    pub fn parse(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<PromHistogram> {
        let mut out = PromHistogram::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let found: Vec<(&str, &str)> = label_text
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            if !labels.iter().all(|want| found.contains(want)) {
                continue;
            }
            let Some(suffix) = metric.strip_prefix(name) else {
                continue;
            };
            match suffix {
                "_bucket" => {
                    let Some(&(_, le)) = found.iter().find(|(k, _)| *k == "le") else {
                        continue;
                    };
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    out.buckets.push((le, value.parse().ok()?));
                }
                "_sum" => out.sum = value.parse().ok()?,
                "_count" => out.count = value.parse().ok()?,
                _ => {}
            }
        }
        out.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (!out.buckets.is_empty()).then_some(out)
    }

    /// What was observed after `earlier` (a previous scrape of the same series).
    pub fn since(&self, earlier: &PromHistogram) -> PromHistogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0, |(_, c)| *c)
        };
        PromHistogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, c.saturating_sub(before(le))))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (nearest rank); infinite when
    /// it falls past the last finite bucket, `None` when nothing was observed.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map_or(0, |b| b.1);
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        self.buckets.iter().find(|(_, c)| *c >= rank).map(|b| b.0)
    }

    /// The mean observation, `None` when nothing was observed.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// The `/metrics` text of the admin server at `addr`.
pub async fn metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let url = format!("http://{addr}/metrics");
    let fetch = async { reqwest::get(&url).await?.error_for_status()?.text().await };
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .with_context(|| format!("scraping {url} timed out"))?
        .with_context(|| format!("scraping {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP quiz_node_answer_ack_seconds Answer frame received at the edge to ack queued
# TYPE quiz_node_answer_ack_seconds histogram
quiz_node_answer_ack_seconds_bucket{le="0.001"} 2
quiz_node_answer_ack_seconds_bucket{le="0.005"} 90
quiz_node_answer_ack_seconds_bucket{le="0.01"} 99
quiz_node_answer_ack_seconds_bucket{le="+Inf"} 100
quiz_node_answer_ack_seconds_sum 0.4
quiz_node_answer_ack_seconds_count 100
quiz_node_store_write_seconds_bucket{result="err",le="0.001"} 7
quiz_node_store_write_seconds_bucket{result="err",le="+Inf"} 7
quiz_node_store_write_seconds_bucket{result="ok",le="0.001"} 1
quiz_node_store_write_seconds_bucket{result="ok",le="+Inf"} 4
quiz_node_store_write_seconds_sum{result="ok"} 0.01
quiz_node_store_write_seconds_count{result="ok"} 4
"#;

    #[test]
    fn reads_a_histogram_and_its_quantiles() {
        let h = PromHistogram::parse(TEXT, "quiz_node_answer_ack_seconds", &[]).unwrap();
        assert_eq!(h.count, 100);
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.005));
        assert_eq!(h.quantile_upper_bound(0.99), Some(0.01));
        assert_eq!(h.quantile_upper_bound(1.0), Some(f64::INFINITY));
        assert!((h.mean().unwrap() - 0.004).abs() < 1e-12);
        assert!(PromHistogram::parse(TEXT, "quiz_node_nothing", &[]).is_none());
    }

    #[test]
    fn picks_the_series_with_the_labels_asked_for() {
        let ok = PromHistogram::parse(TEXT, "quiz_node_store_write_seconds", &[("result", "ok")])
            .unwrap();
        assert_eq!(ok.buckets, vec![(0.001, 1), (f64::INFINITY, 4)]);
        assert_eq!(ok.count, 4);
    }

    #[test]
    fn a_difference_leaves_the_earlier_observations_out() {
        let later = PromHistogram::parse(TEXT, "quiz_node_answer_ack_seconds", &[]).unwrap();
        let earlier = PromHistogram {
            buckets: vec![(0.001, 2), (0.005, 10), (0.01, 10), (f64::INFINITY, 10)],
            sum: 0.03,
            count: 10,
        };
        let window = later.since(&earlier);
        assert_eq!(window.count, 90);
        assert_eq!(window.buckets[0], (0.001, 0));
        assert_eq!(window.quantile_upper_bound(0.5), Some(0.005));
        assert_eq!(PromHistogram::default().quantile_upper_bound(0.5), None);
    }
}
