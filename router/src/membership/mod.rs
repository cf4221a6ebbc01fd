//! Cluster membership, the router's side: which shard nodes form the ring, under which
//! epoch, and telling the nodes.
//!
//! Two modes. With `nodes` in the config, the ring is fixed: those nodes at epoch 1, nothing
//! runs ([`fixed`]). With `[cluster]` instead, membership is dynamic ([`Dynamic`]): nodes
//! hold leases in the store; a poll task (`poll`) turns the live leases into a ring under an
//! epoch, agrees on it with the other routers through the store (a compare-and-set on the
//! epoch), and a push task (`push`) sends it to every node over QUIC. The deterministic rule
//! (which leases are members, when a new epoch is due) is `state`'s; `placement` is one
//! epoch's ring as the join handler reads it.
//!
//! The ring in use is a [`CurrentRing`]: a watch of the current [`Placement`], replaced whole
//! on each new epoch, so readers never wait on the tasks and always see one epoch.

use std::sync::Arc;
use std::time::Duration;

use quiz_cluster::{ClusterError, Endpoint, EndpointConfig};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::RingMember;
use quiz_store::MembershipStore;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{ClusterConfig, Config};
use crate::metrics::RingMetrics;

mod placement;
mod poll;
mod push;
mod state;

pub(crate) use placement::Placement;

use poll::Poller;
use push::Pushes;
use state::{Membership, Targets};

/// A node that cannot be reached, or a store that cannot be read, is logged at most this
/// often; the metrics count every failure.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(30);

/// The ring in use, as handlers read it: `Arc::clone(&ring.borrow())`, never held.
pub(crate) type CurrentRing = watch::Receiver<Arc<Placement>>;

/// The fixed ring of the configured `nodes`, at epoch 1. They have no cluster address: the
/// router does not talk to them.
pub(crate) fn fixed(config: &Config, metrics: &RingMetrics) -> CurrentRing {
    let members: Vec<RingMember> = config
        .nodes
        .iter()
        .map(|n| RingMember {
            node: NodeId(n.id.clone()),
            weight: n.weight,
            ws_url: n.ws_url.clone(),
            cluster_addr: String::new(),
        })
        .collect();
    metrics.epoch.set(1);
    metrics
        .members
        .set(i64::try_from(members.len()).unwrap_or(i64::MAX));
    let placement = Placement::new(1, members, None, config.vnodes_per_weight);
    // The sender goes: a fixed ring never changes, and receivers keep the last value.
    watch::channel(Arc::new(placement)).1
}

/// Dynamic membership, ready to run: the QUIC endpoint bound and the stored ring adopted.
pub(crate) struct Dynamic {
    poller: Poller,
    pushes: Pushes,
    targets: watch::Receiver<Arc<Targets>>,
    poll_interval: Duration,
}

impl Dynamic {
    /// Loads the cluster certificates, binds the router's QUIC endpoint, and adopts the ring
    /// in the store (if the store cannot be read now, the first polls will). Returns the ring
    /// in use, which the tasks keep current once [`spawn`](Self::spawn)ed.
    pub(crate) async fn prepare(
        cluster: &ClusterConfig,
        vnodes_per_weight: u32,
        store: Arc<dyn MembershipStore>,
        metrics: RingMetrics,
    ) -> Result<(Dynamic, CurrentRing), ClusterError> {
        let tls = cluster.tls()?;
        let endpoint = Endpoint::bind(
            cluster.bind_addr,
            NodeId(cluster.router_id.clone()),
            &tls,
            EndpointConfig::new(cluster.name.clone()),
        )?;
        let (ring_tx, ring) = watch::channel(Arc::new(Placement::empty()));
        let (targets_tx, targets) = watch::channel(Arc::new(Targets::new()));
        metrics.epoch.set(0);
        metrics.members.set(0);
        let mut poller = Poller {
            store,
            membership: Membership::new(),
            ring: ring_tx,
            targets: targets_tx,
            vnodes_per_weight,
            metrics: metrics.clone(),
            store_errors: LogEvery::new(LOG_EVERY),
        };
        if let Err(e) = poller.adopt_stored().await {
            tracing::warn!(error = %e, "membership: cannot read the stored ring yet");
        }
        let pushes = Pushes {
            endpoint: Arc::new(endpoint),
            ring: ring.clone(),
            interval: Duration::from_millis(cluster.push_interval_ms),
            timeout: Duration::from_millis(cluster.push_timeout_ms),
            metrics,
        };
        let dynamic = Dynamic {
            poller,
            pushes,
            targets,
            poll_interval: Duration::from_millis(cluster.poll_interval_ms),
        };
        Ok((dynamic, ring))
    }

    /// Starts the poll task and the push task on `tasks`; both stop when `stop` is
    /// cancelled (the push task closes the endpoint last).
    pub(crate) fn spawn(self, tasks: &TaskTracker, stop: CancellationToken) {
        let span = tracing::info_span!("membership");
        tasks.spawn(
            self.poller
                .run(self.poll_interval, stop.clone())
                .instrument(span.clone()),
        );
        tasks.spawn(
            self.pushes
                .run(self.targets, tasks.clone(), stop)
                .instrument(span),
        );
    }
}

/// Lets a repeated warning through at most once per period, counting the ones held back.
#[derive(Debug)]
pub(crate) struct LogEvery {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogEvery {
    pub(crate) fn new(period: Duration) -> LogEvery {
        LogEvery {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// A failure at `now`: `Some(held back since the last one logged)` when it is to be
    /// logged, `None` when it is held back.
    pub(crate) fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// A success: whether it ends a run of failures. The next failure is logged at once.
    pub(crate) fn recover(&mut self) -> bool {
        self.suppressed = 0;
        self.last.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_every_lets_one_through_per_period_and_resets_on_recovery() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut log = LogEvery::new(Duration::from_secs(30));
        assert!(!log.recover(), "no failure to recover from");
        assert_eq!(log.ready(at(0)), Some(0));
        assert_eq!(log.ready(at(1_000)), None);
        assert_eq!(log.ready(at(29_999)), None);
        assert_eq!(log.ready(at(30_000)), Some(2));
        assert_eq!(log.ready(at(30_001)), None);
        assert!(log.recover());
        assert!(!log.recover());
        assert_eq!(log.ready(at(30_002)), Some(0), "a new run logs at once");
    }
}
