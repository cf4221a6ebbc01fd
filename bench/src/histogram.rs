//! [`LatencyHistogram`]: a small log-bucketed histogram of durations, in the manner of
//! HdrHistogram, for client-side latencies.
//!
//! Values are whole microseconds. Below 128 µs every value has its own bucket; above, each
//! power of two is split into 64 equal buckets, so a bucket is never wider than 1/64 of its
//! lower bound (a reported percentile is at most 1.6 % above the true value). Memory grows
//! with the largest value seen, not with the number of samples: a 30 s latency needs about
//! 1,200 counters. The minimum and maximum are kept exactly.
//!
//! Percentiles use the nearest-rank rule and report the bucket's upper bound (capped at the
//! maximum seen), so they never understate a latency.

use std::time::Duration;

/// Values below this have a bucket of their own.
const LINEAR: u64 = 128;
/// Buckets per power of two above [`LINEAR`] (the top half of 128 sub-buckets).
const PER_OCTAVE: u64 = 64;

/// A histogram of durations with ~1.6 % resolution.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    min_us: u64,
    max_us: u64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration (rounded down to whole microseconds).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let index = bucket_of(us);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.min_us = if self.total == 0 {
            us
        } else {
            self.min_us.min(us)
        };
        self.max_us = self.max_us.max(us);
        self.total += 1;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.total == 0 {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min_us = if self.total == 0 {
            other.min_us
        } else {
            self.min_us.min(other.min_us)
        };
        self.max_us = self.max_us.max(other.max_us);
        self.total += other.total;
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The largest sample, exactly; zero when empty.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank: the upper bound of the bucket holding
    /// the ⌈q·n⌉-th smallest sample, capped at the maximum. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        // Rank 1..=total; a q of 0 means the smallest sample.
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let upper = upper_bound(index).min(self.max_us).max(self.min_us);
                return Some(Duration::from_micros(upper));
            }
        }
        Some(self.max())
    }
}

/// The bucket index of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    // us has `bits` significant bits, bits ≥ 8; its top 7 bits pick one of 64 sub-buckets.
    let bits = u64::BITS - us.leading_zeros();
    let shift = bits - 7;
    let sub = (us >> shift) - PER_OCTAVE;
    (LINEAR + u64::from(shift - 1) * PER_OCTAVE + sub) as usize
}

/// The largest value that falls in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let shift = (index - LINEAR) / PER_OCTAVE + 1;
    let sub = (index - LINEAR) % PER_OCTAVE + PER_OCTAVE;
    ((sub + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn buckets_cover_every_value_once_and_stay_narrow() {
        let mut previous_upper = None;
        for index in 0..2_000 {
            let upper = upper_bound(index);
            if let Some(p) = previous_upper {
                assert_eq!(
                    bucket_of(p + 1),
                    index,
                    "the value after bucket {} starts {index}",
                    index - 1
                );
                let width = upper - p;
                assert!(
                    index < LINEAR as usize || width * 64 <= p + 1,
                    "bucket {index} ({}..={upper}) is too wide",
                    p + 1
                );
            }
            assert_eq!(bucket_of(upper), index);
            previous_upper = Some(upper);
        }
        assert!(bucket_of(u64::MAX) < 4_000);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100 {
            h.record(us(v));
        }
        assert_eq!(h.len(), 100);
        assert_eq!(h.quantile(0.5), Some(us(50)));
        assert_eq!(h.quantile(0.99), Some(us(99)));
        assert_eq!(h.quantile(1.0), Some(us(100)));
        assert_eq!(h.quantile(0.0), Some(us(1)));
    }

    #[test]
    fn percentiles_are_within_resolution_and_never_below_the_truth() {
        let mut h = LatencyHistogram::new();
        // 1 ms .. 10 s, one sample per 997 µs step.
        let values: Vec<u64> = (0..10_000).map(|i| 1_000 + i * 997).collect();
        for &v in &values {
            h.record(us(v));
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let rank = (q * values.len() as f64).ceil() as usize;
            let truth = values[rank - 1];
            let got = h.quantile(q).unwrap().as_micros() as u64;
            assert!(
                got >= truth && got <= truth + truth / 64 + 1,
                "q{q}: {got} vs {truth}"
            );
        }
        assert_eq!(h.max(), us(*values.last().unwrap()));
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for v in [5, 700, 3_000, 45_000] {
            a.record(us(v));
            all.record(us(v));
        }
        for v in [2, 9_000_000] {
            b.record(us(v));
            all.record(us(v));
        }
        a.merge(&b);
        a.merge(&LatencyHistogram::new());
        assert_eq!(a.len(), 6);
        assert_eq!(a.quantile(0.5), all.quantile(0.5));
        assert_eq!(a.max(), us(9_000_000));
        assert_eq!(a.quantile(0.0), Some(us(2)));
        assert_eq!(LatencyHistogram::new().quantile(0.5), None);
    }
}
