//! Exponential backoff with full jitter, as a pure function of the attempt number and a
//! random source, so it is tested without sleeping.
//!
//! "Full jitter" (AWS architecture blog, 2015) draws each delay uniformly from zero up to the
//! exponential ceiling. When an edge dies, thousands of phones lose their socket at the same
//! instant; full jitter spreads their reconnects over the whole window instead of sending
//! them back in synchronised waves.

use std::time::Duration;

use rand::Rng;

/// How long to wait between attempts, and how many attempts to make.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backoff {
    /// Ceiling of the first delay; each further attempt doubles it.
    pub base: Duration,
    /// Largest ceiling, whatever the attempt number.
    pub cap: Duration,
    /// Attempts before giving up (counted since the last success).
    pub max_attempts: u32,
}

impl Backoff {
    /// The largest delay attempt `attempt` (1-based) may draw: `min(cap, base × 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before attempt `attempt` (1-based): uniform in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        // Nanoseconds of any sane cap fit in u64 (584 years).
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const B: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(2),
        max_attempts: 10,
    };

    #[test]
    fn ceiling_doubles_then_stops_at_the_cap() {
        let ceilings: Vec<u128> = (1..=8).map(|a| B.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(
            B.ceiling(u32::MAX),
            B.cap,
            "no overflow on huge attempt numbers"
        );
        assert_eq!(B.ceiling(0), B.base, "attempt 0 is treated as the first");
    }

    #[test]
    fn delays_stay_within_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=40 {
            for _ in 0..50 {
                assert!(B.delay(attempt, &mut rng) <= B.ceiling(attempt));
            }
        }
    }

    #[test]
    fn delays_are_jittered_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(42);
        let delays: Vec<Duration> = (0..1000).map(|_| B.delay(12, &mut rng)).collect();
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        // Full jitter: draws reach both ends of [0, cap], not a narrow band around it.
        assert!(min < Duration::from_millis(100), "min {min:?}");
        assert!(max > Duration::from_millis(1900), "max {max:?}");
        assert!(max <= B.cap);
        let mut distinct = delays.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 900,
            "only {} distinct delays",
            distinct.len()
        );
    }

    #[test]
    fn huge_cap_does_not_overflow() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::MAX,
            max_attempts: 1,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let _ = b.delay(200, &mut rng);
    }
}
