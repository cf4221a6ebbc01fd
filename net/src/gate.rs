//! The admission table: every connection of a listener is counted here from the moment it is
//! accepted until its socket closes (also after a WebSocket upgrade), by address and in all,
//! and connections that have not yet sent a whole request ("handshaking") are counted apart.
//!
//! Handshakes are the cheap thing an attacker can hold open, so they are capped tighter, and
//! at the cap the oldest handshake (of that address, or of all) is closed to make room: a real
//! client finishes its request in milliseconds, an idle socket is always the oldest. Only a
//! handshake older than [`EVICTABLE_AFTER`] is closed, so that in a storm of real clients
//! (a whole stadium joining at once, a CPU-starved server) the newcomer is refused with a
//! retryable error rather than a client that is about to be served. A client that has sent a
//! request is never evicted; past the total or per-address cap new connections are refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{Limits, Metrics};

/// How old a handshake must be before a newcomer may take its place.
pub(crate) const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener holds `max_connections`.
    Full,
    /// This address holds `max_connections_per_ip`, or its share of handshakes, all younger
    /// than [`EVICTABLE_AFTER`].
    PerIp,
    /// The listener holds `max_handshaking` handshakes, all young.
    Busy,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::PerIp => "per_ip",
            Refusal::Busy => "busy",
        }
    }
}

/// The counts of one listener.
pub(crate) struct Gate {
    limits: Limits,
    metrics: Metrics,
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    open: usize,
    per_ip: HashMap<IpAddr, PerIp>,
    /// Connections that have not sent a whole request yet, oldest first.
    handshaking: BTreeMap<u64, Handshake>,
    next_id: u64,
}

#[derive(Default)]
struct PerIp {
    open: usize,
    handshaking: usize,
}

struct Handshake {
    ip: IpAddr,
    accepted: Instant,
    evict: CancellationToken,
}

/// What a connection is doing, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Accepted; no whole request yet. Deadline: accept + `header_timeout`.
    Handshaking = 0,
    /// A request is being handled (its handler has its own timeout). No deadline here.
    Busy = 1,
    /// Between requests on a kept-alive connection. Deadline: last response + `idle_timeout`.
    Idle = 2,
    /// Switched protocols (WebSocket): its owner's own pings and timeouts apply.
    Upgraded = 3,
}

/// One admitted connection. Its counts are given back when the last clone is dropped: the
/// socket wrapper holds one, so an upgraded connection stays counted until it closes.
pub(crate) struct Slot {
    gate: Arc<Gate>,
    id: u64,
    ip: IpAddr,
    phase: AtomicU8,
    /// Milliseconds since the gate's epoch when the phase began.
    since_ms: AtomicU64,
    evict: CancellationToken,
}

impl Gate {
    pub(crate) fn new(limits: Limits, metrics: Metrics) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            metrics,
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table's counts stay consistent under every early return, so a panic elsewhere
        // while it was held leaves nothing half-done.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a connection just accepted from `ip`, making room among handshakes if needed,
    /// or says why it is refused.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Slot>, Refusal> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Arc<Slot>, Refusal> {
        let limits = &self.limits;
        let mut table = self.lock();
        // Each cap makes room by closing an old handshake: of this address for its own caps,
        // of anyone for the listener's. Each is looked at after the one before made room.
        for cap in 0..4 {
            let (reached, of, refusal) = match cap {
                0 => (
                    table.ip_counts(ip).0 >= limits.max_connections_per_ip,
                    Some(ip),
                    Refusal::PerIp,
                ),
                1 => (table.open >= limits.max_connections, None, Refusal::Full),
                2 => (
                    table.ip_counts(ip).1 >= limits.max_handshaking_per_ip,
                    Some(ip),
                    Refusal::PerIp,
                ),
                _ => (
                    table.handshaking.len() >= limits.max_handshaking,
                    None,
                    Refusal::Busy,
                ),
            };
            if !reached {
                continue;
            }
            if !table.evict_oldest(of, now) {
                return Err(self.refused(refusal));
            }
            self.metrics.closed.with_label_values(&["evicted"]).inc();
        }
        let id = table.next_id;
        table.next_id += 1;
        table.open += 1;
        let entry = table.per_ip.entry(ip).or_default();
        entry.open += 1;
        entry.handshaking += 1;
        let evict = CancellationToken::new();
        table.handshaking.insert(
            id,
            Handshake {
                ip,
                accepted: now,
                evict: evict.clone(),
            },
        );
        self.metrics.open.set(table.open as i64);
        self.metrics.handshaking.set(table.handshaking.len() as i64);
        drop(table);
        Ok(Arc::new(Slot {
            gate: self.clone(),
            id,
            ip,
            phase: AtomicU8::new(Phase::Handshaking as u8),
            since_ms: AtomicU64::new(self.now_ms()),
            evict,
        }))
    }

    fn refused(&self, why: Refusal) -> Refusal {
        self.metrics.refused.with_label_values(&[why.label()]).inc();
        why
    }
}

impl Table {
    /// Open connections and handshakes of one address.
    fn ip_counts(&self, ip: IpAddr) -> (usize, usize) {
        self.per_ip
            .get(&ip)
            .map_or((0, 0), |e| (e.open, e.handshaking))
    }

    /// Closes the oldest handshake (of `ip`, or of anyone) if it is older than
    /// [`EVICTABLE_AFTER`]. Its counts stay until its socket is dropped, moments later; only
    /// its place among the handshakes is freed at once.
    fn evict_oldest(&mut self, ip: Option<IpAddr>, now: Instant) -> bool {
        let oldest = self
            .handshaking
            .iter()
            .find(|(_, h)| ip.is_none_or(|ip| h.ip == ip))
            .filter(|(_, h)| now.duration_since(h.accepted) >= EVICTABLE_AFTER)
            .map(|(id, _)| *id);
        let Some(id) = oldest else { return false };
        if let Some(h) = self.handshaking.remove(&id) {
            h.evict.cancel();
            if let Some(entry) = self.per_ip.get_mut(&h.ip) {
                entry.handshaking -= 1;
            }
        }
        true
    }

    /// Takes a connection off the handshakes (it sent a request, or it closed).
    fn handshake_done(&mut self, id: u64) {
        if let Some(h) = self.handshaking.remove(&id)
            && let Some(entry) = self.per_ip.get_mut(&h.ip)
        {
            entry.handshaking -= 1;
        }
    }
}

impl Slot {
    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Handshaking,
            1 => Phase::Busy,
            2 => Phase::Idle,
            _ => Phase::Upgraded,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.since_ms.store(self.gate.now_ms(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// A whole request arrived: the connection is no longer a handshake.
    pub(crate) fn request_started(&self) {
        if self.phase() == Phase::Handshaking {
            let mut table = self.gate.lock();
            table.handshake_done(self.id);
            self.gate
                .metrics
                .handshaking
                .set(table.handshaking.len() as i64);
        }
        self.set_phase(Phase::Busy);
    }

    /// Its response is ready; `upgraded` when it switches protocols.
    pub(crate) fn request_done(&self, upgraded: bool) {
        self.set_phase(if upgraded {
            Phase::Upgraded
        } else {
            Phase::Idle
        });
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.gate.metrics
    }

    /// Resolves when the gate closed this handshake to make room.
    pub(crate) fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }

    /// When the current phase runs out, if it has a deadline, and which one it is.
    pub(crate) fn deadline(&self) -> Option<(Instant, &'static str)> {
        let limits = &self.gate.limits;
        let (limit, why) = match self.phase() {
            Phase::Handshaking => (limits.header_timeout, "header_timeout"),
            Phase::Idle => (limits.idle_timeout, "idle_timeout"),
            Phase::Busy | Phase::Upgraded => return None,
        };
        let since = Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        Some((self.gate.epoch + since + limit, why))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.gate.lock();
        table.handshake_done(self.id);
        table.open -= 1;
        if let Some(entry) = table.per_ip.get_mut(&self.ip) {
            entry.open -= 1;
            if entry.open == 0 {
                table.per_ip.remove(&self.ip);
            }
        }
        self.gate.metrics.open.set(table.open as i64);
        self.gate
            .metrics
            .handshaking
            .set(table.handshaking.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 4,
            max_connections_per_ip: 3,
            max_handshaking: 3,
            max_handshaking_per_ip: 2,
            ..Limits::default()
        }
    }

    fn gate() -> Arc<Gate> {
        let registry = prometheus::Registry::new();
        Gate::new(limits(), Metrics::register(&registry).unwrap())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_old_handshake_makes_room_and_a_young_one_does_not() {
        let gate = gate();
        let t0 = Instant::now();
        let first = gate.admit_at(ip(1), t0).unwrap();
        let second = gate.admit_at(ip(1), t0).unwrap();
        // Both handshakes of the address are young: the newcomer is refused, retryably.
        assert_eq!(gate.admit_at(ip(1), t0).err(), Some(Refusal::PerIp));
        let later = t0 + EVICTABLE_AFTER;
        let third = gate.admit_at(ip(1), later).unwrap();
        assert!(first.evict.is_cancelled(), "the oldest handshake is closed");
        assert!(!second.evict.is_cancelled() && !third.evict.is_cancelled());
        drop(first);
        // The listener's handshake cap (3) takes from any address.
        let _other = gate.admit_at(ip(2), later).unwrap();
        let _another = gate.admit_at(ip(3), later).unwrap();
        assert!(second.evict.is_cancelled());
        drop(second);
        assert_eq!(gate.admit_at(ip(4), later).err(), Some(Refusal::Busy));
    }

    #[test]
    fn a_connection_that_sent_a_request_is_never_evicted_and_caps_refuse_instead() {
        let gate = gate();
        let late = Instant::now() + EVICTABLE_AFTER;
        let slots: Vec<_> = (0..3)
            .map(|_| {
                let slot = gate.admit_at(ip(1), late).unwrap();
                slot.request_started();
                slot
            })
            .collect();
        assert_eq!(gate.admit_at(ip(1), late).err(), Some(Refusal::PerIp));
        // Another address gets the last place; then the listener is full.
        let other = gate.admit_at(ip(2), late).unwrap();
        other.request_started();
        assert_eq!(gate.admit_at(ip(3), late).err(), Some(Refusal::Full));
        assert!(slots.iter().all(|s| !s.evict.is_cancelled()));
    }

    #[test]
    fn counts_are_given_back_when_the_socket_goes() {
        let gate = gate();
        let slots: Vec<_> = (0..2).map(|_| gate.admit(ip(1)).unwrap()).collect();
        slots[0].request_started();
        drop(slots);
        let table = gate.lock();
        assert_eq!(
            (table.open, table.per_ip.len(), table.handshaking.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn phases_have_the_deadlines_of_their_limits() {
        let gate = gate();
        let slot = gate.admit(ip(1)).unwrap();
        assert_eq!(slot.deadline().map(|d| d.1), Some("header_timeout"));
        slot.request_started();
        assert_eq!(slot.deadline(), None);
        slot.request_done(false);
        assert_eq!(slot.deadline().map(|d| d.1), Some("idle_timeout"));
        slot.request_started();
        slot.request_done(true);
        assert_eq!(slot.deadline(), None);
    }
}
