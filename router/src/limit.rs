//! Rate limits: token buckets per client key, in bounded memory. A table holds at most
//! `max_keys` buckets; a new key past that evicts the least recently seen one (which then
//! starts again from a full bucket, the same as a client never seen). Time comes in as an
//! argument, so the buckets are tested without sleeping.
//!
//! Which key to use for a request (peer address or `X-Forwarded-For`, IPv6 per /64) is decided
//! here too, by [`client_key`].

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// Token buckets for one limit, keyed by client.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size.
    burst: f64,
    max_keys: usize,
    table: Mutex<Table<K>>,
}

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    /// Keys by last use: the first entry is the stalest.
    by_use: BTreeMap<u64, K>,
    /// Increases on every use; orders `by_use`.
    clock: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    used: u64,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_minute` tokens a minute, up to `burst` at once, for at most `max_keys` clients.
    pub(crate) fn new(per_minute: u32, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            rate: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
            }),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn acquire(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |bucket, rate| {
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(wait(bucket.tokens, rate))
            }
        })
    }

    /// Whether a token is there, without taking it.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut table = self.lock();
        let Some(bucket) = table.buckets.get_mut(key) else {
            return Ok(());
        };
        refill(bucket, now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(wait(bucket.tokens, self.rate))
        }
    }

    /// Takes a token if there is one (counts a failure after the fact).
    pub(crate) fn charge(&self, key: &K, now: Instant) {
        let _ = self.with_bucket(key, now, |bucket, _| {
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
            Ok(())
        });
    }

    /// Clients currently tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().buckets.len()
    }

    fn with_bucket(
        &self,
        key: &K,
        now: Instant,
        f: impl FnOnce(&mut Bucket, f64) -> Result<(), Duration>,
    ) -> Result<(), Duration> {
        let mut table = self.lock();
        table.clock += 1;
        let used = table.clock;
        let bucket = match table.buckets.get(key).copied() {
            Some(mut b) => {
                table.by_use.remove(&b.used);
                refill(&mut b, now, self.rate, self.burst);
                b
            }
            None => {
                if table.buckets.len() >= self.max_keys
                    && let Some((_, stalest)) = table.by_use.pop_first()
                {
                    table.buckets.remove(&stalest);
                }
                Bucket {
                    tokens: self.burst,
                    updated: now,
                    used,
                }
            }
        };
        let mut bucket = Bucket { used, ..bucket };
        let outcome = f(&mut bucket, self.rate);
        table.by_use.insert(used, key.clone());
        table.buckets.insert(key.clone(), bucket);
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refill(bucket: &mut Bucket, now: Instant, rate: f64, burst: f64) {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.updated = bucket.updated.max(now);
}

fn wait(tokens: f64, rate: f64) -> Duration {
    Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.0))
}

/// The address a request is limited by: the peer, or the first `X-Forwarded-For` entry when
/// the router sits behind a proxy it trusts. IPv6 clients are keyed by their /64, since one
/// subscriber usually holds a whole /64.
pub(crate) fn client_key(peer: SocketAddr, headers: &HeaderMap, trust_forwarded: bool) -> IpAddr {
    let forwarded = trust_forwarded
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| {
            let first = first.trim();
            first
                .parse::<IpAddr>()
                .or_else(|_| first.parse::<SocketAddr>().map(|s| s.ip()))
                .ok()
        });
    match forwarded.unwrap_or(peer.ip()).to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Whole seconds to put in `Retry-After`, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let limiter = RateLimiter::new(60, 3, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.acquire(&"a", t0).unwrap();
        }
        let wait = limiter.acquire(&"a", t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        // Another client has its own bucket.
        limiter.acquire(&"b", t0).unwrap();
        // One token a second comes back.
        limiter.acquire(&"a", t0 + Duration::from_secs(1)).unwrap();
        assert!(limiter.acquire(&"a", t0 + Duration::from_secs(1)).is_err());
        // Never more than the burst, however long the wait.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            limiter.acquire(&"a", later).unwrap();
        }
        assert!(limiter.acquire(&"a", later).is_err());
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let limiter = RateLimiter::new(10, 1, 10);
        let t0 = Instant::now();
        limiter.acquire(&1, t0).unwrap();
        let wait = limiter.acquire(&1, t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 6);
    }

    #[test]
    fn check_does_not_take_and_charge_does() {
        let limiter = RateLimiter::new(1, 2, 10);
        let t0 = Instant::now();
        assert!(limiter.check(&"a", t0).is_ok());
        assert_eq!(
            limiter.len(),
            0,
            "checking an unknown client tracks nothing"
        );
        limiter.charge(&"a", t0);
        assert!(limiter.check(&"a", t0).is_ok());
        limiter.charge(&"a", t0);
        assert!(limiter.check(&"a", t0).is_err());
        limiter.charge(&"a", t0);
        assert!(limiter.check(&"a", t0).is_err());
    }

    #[test]
    fn memory_is_bounded_and_the_stalest_goes_first() {
        let limiter = RateLimiter::new(1, 1, 3);
        let t0 = Instant::now();
        for key in 0..3 {
            limiter.acquire(&key, t0).unwrap();
        }
        // Key 0 is used again (refused), so key 1 is now the stalest.
        assert!(limiter.acquire(&0, t0).is_err());
        limiter.acquire(&3, t0).unwrap();
        assert_eq!(limiter.len(), 3);
        assert!(limiter.acquire(&0, t0).is_err(), "key 0 is still tracked");
        assert!(limiter.acquire(&2, t0).is_err(), "key 2 is still tracked");
        // Key 1 was forgotten: a full bucket again.
        limiter.acquire(&1, t0).unwrap();
        for key in 100..1_000 {
            let _ = limiter.acquire(&key, t0);
        }
        assert_eq!(limiter.len(), 3);
    }

    #[test]
    fn client_keys() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 10.0.0.2"),
        );
        assert_eq!(client_key(peer, &headers, false), peer.ip());
        assert_eq!(
            client_key(peer, &headers, true),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_key(peer, &headers, true), peer.ip());

        let v6: SocketAddr = "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443".parse().unwrap();
        assert_eq!(
            client_key(v6, &HeaderMap::new(), false),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1".parse().unwrap();
        assert_eq!(
            client_key(mapped, &HeaderMap::new(), false),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
