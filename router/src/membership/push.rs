//! Pushing the ring to the nodes over QUIC.
//!
//! One link task per node the ring goes to ([`Targets`]: every node with a live lease,
//! draining ones included). A link keeps one connection to its node, opened lazily with the
//! node's id as the expected identity (TLS and the Hello both check it), and pushes the ring
//! when a new epoch is adopted and again every push interval, so a node that missed a push or
//! restarted catches up. A node that cannot be reached costs only its own link (each push is
//! bounded by the push timeout); it is logged at most every [`LOG_EVERY`] (each failed push
//! is counted in `ring_pushes_total{result="failed"}`) and retried at the next push. The
//! links task spawns a link when a node appears, stops it when the node's lease goes, and
//! restarts it when the node's address changes.
//!
//! # The push and its acknowledgement
//!
//! A push is one request on a new stream: `ClusterMessage::Ring { epoch, members }`. The node
//! acknowledges by answering on that stream with one frame and finishing it: by convention it
//! echoes the same `Ring` message. The router counts any reply frame, and also a clean end of
//! the stream without one, as delivered; a timeout, a reset stream or a lost connection is a
//! failed push. A node ignores a ring whose epoch is not above the one it holds, so pushing
//! the same epoch again, or two routers pushing it, is harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quiz_cluster::{ClusterError, Endpoint, Peer};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::ClusterMessage;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::state::Targets;
use super::{LOG_EVERY, LogEvery, Placement};
use crate::metrics::RingMetrics;

/// What every link shares.
#[derive(Clone)]
pub(super) struct Pushes {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) ring: watch::Receiver<Arc<Placement>>,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) metrics: RingMetrics,
}

impl Pushes {
    /// Keeps one link per target until `stop` is cancelled, then closes the endpoint.
    /// Connections other processes open to the router are refused: it serves nothing over
    /// QUIC.
    pub(super) async fn run(
        self,
        mut targets: watch::Receiver<Arc<Targets>>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) {
        let mut links: HashMap<NodeId, (String, CancellationToken)> = HashMap::new();
        loop {
            let wanted = targets.borrow_and_update().clone();
            links.retain(|node, (addr, link)| {
                let keep = wanted.get(node) == Some(addr);
                if !keep {
                    link.cancel();
                }
                keep
            });
            for (node, addr) in wanted.iter() {
                if links.contains_key(node) {
                    continue;
                }
                let link_stop = stop.child_token();
                links.insert(node.clone(), (addr.clone(), link_stop.clone()));
                let link = Link::new(node.clone(), addr.clone(), self.clone());
                let span = tracing::info_span!("ring_push", node = %node, addr = %addr);
                tasks.spawn(link.run(link_stop).instrument(span));
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = targets.changed() => if changed.is_err() { break },
                Some(peer) = self.endpoint.accept() => {
                    tracing::debug!(peer = %peer.node(), "refused a cluster connection");
                    peer.close("the router accepts no cluster connections");
                }
            }
        }
        for (_, (_, link)) in links.drain() {
            link.cancel();
        }
        self.endpoint.close().await;
    }
}

/// The pushes to one node.
struct Link {
    node: NodeId,
    /// `host:port`, resolved at every connect (a node's name may move).
    addr: String,
    pushes: Pushes,
    /// The connection, once open; dropped when a push on it fails.
    peer: Option<Peer>,
    unreachable: LogEvery,
}

impl Link {
    fn new(node: NodeId, addr: String, pushes: Pushes) -> Link {
        Link {
            node,
            addr,
            pushes,
            peer: None,
            unreachable: LogEvery::new(LOG_EVERY),
        }
    }

    /// Pushes at once, on every new epoch, and every push interval since the last push.
    async fn run(mut self, stop: CancellationToken) {
        let mut ring = self.pushes.ring.clone();
        let mut ticks = tokio::time::interval(self.pushes.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = ring.changed() => if changed.is_err() { break },
                _ = ticks.tick() => {}
            }
            let placement = ring.borrow_and_update().clone();
            // Epoch 0: nothing published yet, nothing to tell.
            if placement.epoch() == 0 {
                continue;
            }
            let msg = ClusterMessage::Ring {
                epoch: placement.epoch(),
                members: placement.members().to_vec(),
            };
            let pushed = tokio::select! {
                _ = stop.cancelled() => break,
                pushed = self.push(&msg) => pushed,
            };
            ticks.reset();
            self.record(placement.epoch(), pushed);
        }
        if let Some(peer) = self.peer.take() {
            peer.close("router stopping");
        }
    }

    fn record(&mut self, epoch: u64, pushed: Result<(), ClusterError>) {
        let pushes = &self.pushes.metrics.pushes;
        match pushed {
            Ok(()) => {
                pushes.with_label_values(&["ok"]).inc();
                if self.unreachable.recover() {
                    tracing::info!(epoch, "ring push: the node is reachable again");
                } else {
                    tracing::trace!(epoch, "ring pushed");
                }
            }
            Err(e) => {
                pushes.with_label_values(&["failed"]).inc();
                if let Some(suppressed) = self.unreachable.ready(Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        epoch,
                        suppressed,
                        "ring push failed; retrying at the next push"
                    );
                }
            }
        }
    }

    /// One push, within the push timeout, connecting first if need be.
    async fn push(&mut self, msg: &ClusterMessage) -> Result<(), ClusterError> {
        let timeout = self.pushes.timeout;
        match tokio::time::timeout(timeout, self.deliver(msg)).await {
            Ok(delivered) => delivered,
            Err(_) => {
                self.drop_peer("push timed out");
                Err(ClusterError::Timeout)
            }
        }
    }

    async fn deliver(&mut self, msg: &ClusterMessage) -> Result<(), ClusterError> {
        let timeout = self.pushes.timeout;
        if let Some(peer) = self.peer.clone() {
            match acknowledged(peer.request(msg, timeout).await) {
                Ok(()) => return Ok(()),
                // The connection may be a dead node's (it restarted): try once on a new one.
                Err(e) => {
                    tracing::debug!(error = %e, "push on the open connection failed; reconnecting");
                    self.drop_peer("push failed");
                }
            }
        }
        let peer = self.connect().await?;
        self.peer = Some(peer.clone());
        let delivered = acknowledged(peer.request(msg, timeout).await);
        if delivered.is_err() {
            self.drop_peer("push failed");
        }
        delivered
    }

    async fn connect(&self) -> Result<Peer, ClusterError> {
        let addr = tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(|e| ClusterError::Connect(format!("cannot resolve {}: {e}", self.addr)))?
            .next()
            .ok_or_else(|| ClusterError::Connect(format!("{} has no address", self.addr)))?;
        self.pushes.endpoint.connect(addr, Some(&self.node)).await
    }

    fn drop_peer(&mut self, reason: &str) {
        if let Some(peer) = self.peer.take() {
            peer.close(reason);
        }
    }
}

/// The acknowledgement rule (see the module docs): any reply, or a clean end of the stream.
fn acknowledged(reply: Result<ClusterMessage, ClusterError>) -> Result<(), ClusterError> {
    match reply {
        Ok(_) | Err(ClusterError::EndOfStream) => Ok(()),
        Err(e) => Err(e),
    }
}
