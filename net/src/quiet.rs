//! Logging that a flood cannot turn into a full disk: at most one line per interval for a
//! kind of event, carrying how many were left out since the last one. (Counts belong in
//! metrics; the log only needs to show that it happens, and one example.)

use std::time::{Duration, Instant};

/// Lets one event through per `interval`.
#[derive(Debug)]
pub struct Every {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Every {
    pub fn new(interval: Duration) -> Every {
        Every {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(how many were suppressed since the last)` when this event may be logged.
    pub fn tick(&mut self) -> Option<u64> {
        self.tick_at(Instant::now())
    }

    fn tick_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// [`Every`] shared between tasks.
#[derive(Debug)]
pub struct Shared(std::sync::Mutex<Every>);

impl Shared {
    pub fn new(interval: Duration) -> Shared {
        Shared(std::sync::Mutex::new(Every::new(interval)))
    }

    /// See [`Every::tick`].
    pub fn tick(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).tick()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let mut every = Every::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(every.tick_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(every.tick_at(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(every.tick_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(every.tick_at(t0 + Duration::from_secs(11)), None);
    }
}
