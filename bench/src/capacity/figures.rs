//! Turning what the load processes measured into the figures a report gives.
//!
//! Definitions (the report repeats them):
//! - **ack**: an answer's first send → its `ack`, as the phone saw it (resends included).
//! - **board, own**: an ack that scored → the first `leaderboard` frame on that phone whose
//!   `you.score` shows the new total; 0 when such a frame came before the ack (acks and
//!   boards travel apart).
//! - **board, every phone**: an ack that scored → the last phone to receive the leaderboard
//!   version that first showed it (the version of the "own" frame). A phone gets a version
//!   only when something it shows changed, so the phones that did not get it held a board
//!   that already showed it; this is the time until every phone's board reflects the answer.
//! - **fan-out**: a sequenced frame (a question) or a leaderboard version that carried the
//!   top N: first → last phone to receive it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::wire::{AnswerRecord, Arrivals, Measured};
use crate::histogram::LatencyHistogram;

/// Everything the load processes measured, merged.
#[derive(Default)]
pub struct Merged {
    pub phones: u64,
    pub joined: u64,
    pub welcomed_at: Vec<i64>,
    pub join_latency: LatencyHistogram,
    pub join_failures: BTreeMap<String, u64>,
    pub failure_samples: Vec<String>,
    pub answers: Vec<AnswerRecord>,
    pub versions: BTreeMap<u64, Arrivals>,
    pub sequenced: BTreeMap<u64, (String, Arrivals)>,
    pub errors: BTreeMap<String, u64>,
    pub errors_without_answer_id: u64,
    pub closes: BTreeMap<String, u64>,
    pub reconnects: u64,
    pub bytes_received: u64,
    pub frames_received: u64,
}

impl Merged {
    pub fn from(measured: Vec<Measured>) -> Merged {
        let mut m = Merged::default();
        for w in measured {
            m.phones += w.phones;
            m.joined += w.joined;
            m.welcomed_at.extend(w.welcomed_at);
            m.join_latency.merge(&w.join_latency);
            for (k, v) in w.join_failures {
                *m.join_failures.entry(k).or_default() += v;
            }
            for s in w.failure_samples {
                if m.failure_samples.len() < 5 {
                    m.failure_samples.push(s);
                }
            }
            m.answers.extend(w.answers);
            for (v, a) in w.versions {
                m.versions.entry(v).or_default().merge(&a);
            }
            for (seq, s) in w.sequenced {
                m.sequenced
                    .entry(seq)
                    .or_insert_with(|| (s.kind.clone(), Arrivals::default()))
                    .1
                    .merge(&s.arrivals);
            }
            for (k, v) in w.errors {
                *m.errors.entry(k).or_default() += v;
            }
            m.errors_without_answer_id += w.errors_without_answer_id;
            for (k, v) in w.closes {
                *m.closes.entry(k).or_default() += v;
            }
            m.reconnects += w.reconnects;
            m.bytes_received += w.bytes_received;
            m.frames_received += w.frames_received;
        }
        m.welcomed_at.sort_unstable();
        m
    }

    /// Answers sent (at least once).
    pub fn sent(&self) -> usize {
        self.answers.iter().filter(|a| a.sent_us > 0).count()
    }

    pub fn acked(&self) -> usize {
        self.answers.iter().filter(|a| a.acked_us.is_some()).count()
    }

    /// Answers refused for good, by code.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for a in &self.answers {
            if let Some(code) = &a.refused {
                *out.entry(code.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Sent answers that got neither an ack nor a final refusal.
    pub fn unsettled(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| a.sent_us > 0 && a.acked_us.is_none() && a.refused.is_none())
            .count()
    }

    /// Sends of an answer beyond its first.
    pub fn resends(&self) -> u64 {
        self.answers.iter().map(|a| u64::from(a.resent)).sum()
    }

    pub fn ack_latency(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for a in &self.answers {
            if let Some(at) = a.acked_us.filter(|_| a.sent_us > 0) {
                h.record(micros(at - a.sent_us));
            }
        }
        h
    }

    /// Ack latencies of answers first sent within `[from_us, to_us)`.
    pub fn ack_latency_sent_between(&self, from_us: i64, to_us: i64) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for a in &self.answers {
            if let Some(at) = a.acked_us.filter(|_| (from_us..to_us).contains(&a.sent_us)) {
                h.record(micros(at - a.sent_us));
            }
        }
        h
    }

    /// Ack → the phone's own board showing it.
    pub fn board_own(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for a in &self.answers {
            if let (Some(acked), Some((_, at))) = (a.acked_us, a.board) {
                h.record(micros(at - acked));
            }
        }
        h
    }

    /// Ack → the last phone that got the version showing it.
    pub fn board_every_phone(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for a in &self.answers {
            if let (Some(acked), Some((v, _))) = (a.acked_us, a.board)
                && let Some(arrivals) = self.versions.get(&v)
            {
                h.record(micros(arrivals.last_us - acked));
            }
        }
        h
    }

    /// Acks that scored, and how many of them were seen on their phone's board.
    pub fn scored(&self) -> (usize, usize) {
        let scored = self
            .answers
            .iter()
            .filter(|a| a.acked_us.is_some() && a.points > 0)
            .count();
        let seen = self.answers.iter().filter(|a| a.board.is_some()).count();
        (scored, seen)
    }

    /// First → last phone for each sequenced frame of `kind`, with how many phones got it.
    pub fn fanout(&self, kind: &str) -> Vec<(u64, Duration, u64)> {
        self.sequenced
            .iter()
            .filter(|(_, (k, _))| k == kind)
            .map(|(seq, (_, a))| (*seq, micros(a.last_us - a.first_us), a.count))
            .collect()
    }

    /// First → last phone for each leaderboard version whose frames carried the top N to
    /// every phone that got it.
    pub fn top_fanout(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for a in self.versions.values() {
            if a.with_top == a.count && a.count > 1 {
                h.record(micros(a.last_us - a.first_us));
            }
        }
        h
    }

    /// Bytes each phone received per question, on average.
    pub fn bytes_per_phone_per_question(&self, questions: u32) -> f64 {
        self.bytes_received as f64 / self.joined.max(1) as f64 / f64::from(questions.max(1))
    }

    /// Acks per second over time: (second since `t0_us`, acks, p50, p99 of those acks).
    pub fn acks_over_time(&self, t0_us: i64) -> Vec<(f64, u64, Duration, Duration)> {
        let mut buckets: BTreeMap<i64, LatencyHistogram> = BTreeMap::new();
        for a in &self.answers {
            if let Some(at) = a.acked_us.filter(|_| a.sent_us > 0) {
                let second = (at - t0_us).div_euclid(1_000_000);
                buckets
                    .entry(second)
                    .or_default()
                    .record(micros(at - a.sent_us));
            }
        }
        buckets
            .into_iter()
            .map(|(s, h)| {
                (
                    s as f64,
                    h.len(),
                    h.quantile(0.5).unwrap_or_default(),
                    h.quantile(0.99).unwrap_or_default(),
                )
            })
            .collect()
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

/// A latency histogram's summary, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub n: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &LatencyHistogram) -> Percentiles {
        let ms = |q: f64| h.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Percentiles {
            n: h.len(),
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max().as_secs_f64() * 1e3,
        }
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        sent: i64,
        acked: Option<i64>,
        points: u32,
        board: Option<(u64, i64)>,
    ) -> AnswerRecord {
        AnswerRecord {
            phone: 0,
            question: 0,
            sent_us: sent,
            acked_us: acked,
            points,
            total: points,
            resent: 0,
            refused: None,
            board,
        }
    }

    #[test]
    fn board_latency_waits_for_the_last_phone_of_the_version() {
        let mut w = Measured {
            phones: 3,
            joined: 3,
            ..Measured::default()
        };
        w.answers = vec![
            answer(1_000, Some(3_000), 900, Some((7, 5_000))),
            answer(1_000, Some(2_000), 0, None),
            answer(1_000, None, 0, None),
        ];
        let mut v7 = Arrivals::default();
        v7.add(5_000);
        v7.add(9_000);
        w.versions.insert(7, v7);
        let m = Merged::from(vec![w]);
        assert_eq!((m.sent(), m.acked(), m.unsettled()), (3, 2, 1));
        assert_eq!(m.ack_latency().len(), 2);
        assert_eq!(m.board_own().max(), Duration::from_micros(2_000));
        assert_eq!(m.board_every_phone().max(), Duration::from_micros(6_000));
        assert_eq!(m.scored(), (1, 1));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
