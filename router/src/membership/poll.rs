//! The poll task: the async shell around [`Membership`]. Every poll interval it reads the
//! stored ring (adopting a newer one: another router published it) and the leases, and when
//! the leases make other members than the ring held, publishes the next epoch; if another
//! router published that epoch first, it adopts theirs. Each ring adopted becomes a
//! [`Placement`] the join handler and the pushers see at once.
//!
//! Routers agree through the store's compare-and-set on the epoch
//! ([`MembershipStore::publish_ring`]): two routers never publish different rings under one
//! epoch, and a router holds nothing the store does not.

use std::sync::Arc;
use std::time::Duration;

use quiz_engine::Millis;
use quiz_store::{MembershipStore, RingRecord, StoreError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::state::{self, Membership, Targets};
use super::{LogEvery, Placement};
use crate::metrics::RingMetrics;

/// The poll task's state.
pub(super) struct Poller {
    pub(super) store: Arc<dyn MembershipStore>,
    pub(super) membership: Membership,
    pub(super) ring: watch::Sender<Arc<Placement>>,
    pub(super) targets: watch::Sender<Arc<Targets>>,
    pub(super) vnodes_per_weight: u32,
    pub(super) metrics: RingMetrics,
    pub(super) store_errors: LogEvery,
}

impl Poller {
    /// Polls every `interval` until `stop` is cancelled.
    pub(super) async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        // A slow store delays the next poll rather than bunching polls up behind it.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let polled = tokio::select! {
                _ = stop.cancelled() => return,
                polled = self.poll(crate::api::now_ms()) => polled,
            };
            match polled {
                Ok(()) => {
                    self.metrics.polls.with_label_values(&["ok"]).inc();
                    if self.store_errors.recover() {
                        tracing::info!("membership: the store answers again");
                    }
                }
                Err(e) => {
                    self.metrics.polls.with_label_values(&["failed"]).inc();
                    if let Some(suppressed) = self.store_errors.ready(Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            epoch = self.membership.epoch(),
                            "membership: cannot read the leases; keeping the current ring"
                        );
                    }
                }
            }
        }
    }

    /// Adopts the ring already stored, if any: a restarted router serves the ring it left.
    pub(super) async fn adopt_stored(&mut self) -> Result<(), StoreError> {
        if let Some(stored) = self.store.ring().await? {
            self.adopt(stored);
        }
        Ok(())
    }

    /// One poll at `now`.
    async fn poll(&mut self, now: Millis) -> Result<(), StoreError> {
        self.adopt_stored().await?;
        let leases = self.store.leases().await?;
        let targets = state::targets(&leases, now);
        self.targets.send_if_modified(|held| {
            let changed = **held != targets;
            if changed {
                *held = Arc::new(targets);
            }
            changed
        });
        let Some(proposal) = self.membership.proposal(&leases, now) else {
            return Ok(());
        };
        if self.store.publish_ring(&proposal).await? {
            tracing::info!(
                epoch = proposal.epoch,
                members = ?proposal.members.iter().map(|m| &m.node.0).collect::<Vec<_>>(),
                "membership: published a new ring"
            );
            self.adopt(proposal);
        } else {
            // Another router published this epoch first: theirs is the ring. If its members
            // differ from what we read, the next poll proposes the epoch after it.
            tracing::debug!(
                epoch = proposal.epoch,
                "membership: another router published first"
            );
            self.adopt_stored().await?;
        }
        Ok(())
    }

    /// Makes `ring` the one in use if it is newer than the one held.
    fn adopt(&mut self, ring: RingRecord) {
        if !self.membership.adopt(ring) {
            return;
        }
        let Some(ring) = self.membership.current() else {
            return;
        };
        let placement = Placement::new(
            ring.epoch,
            ring.members.clone(),
            Some(ring.updated_at),
            self.vnodes_per_weight,
        );
        self.metrics
            .epoch
            .set(i64::try_from(ring.epoch).unwrap_or(i64::MAX));
        self.metrics
            .members
            .set(i64::try_from(ring.members.len()).unwrap_or(i64::MAX));
        if ring.members.iter().all(|m| m.weight == 0) {
            tracing::warn!(
                epoch = ring.epoch,
                "membership: no node in the ring; joins fail"
            );
        } else {
            tracing::info!(
                epoch = ring.epoch,
                members = ring.members.len(),
                "membership: ring in use"
            );
        }
        self.ring.send_replace(Arc::new(placement));
    }
}
