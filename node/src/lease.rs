//! This node's lease: renewed on a thread of its own, through a store connection of its own.
//!
//! A node that is busy is not a dead node. Renewals used to run on the node's runtime and
//! through its shared store pool, so under a big quiz they queued behind answer writes (and on
//! SQLite behind every other process's writes for the file's single write lock), the lease
//! lapsed, and every quiz moved in the middle of a question. Here the renewal loop owns an OS
//! thread with a single-threaded runtime and a membership store opened for it alone
//! ([`quiz_store::Stores::open_membership`]): neither the phones' traffic nor the answer log
//! can delay it; only the store itself can.
//!
//! The loop publishes the lease's end in [`LeaseState`]; the node reads it before trusting its
//! ownership. When a renewal comes too late (the store was out of reach, or the whole process
//! was paused past the lease), the loop tells the node, which lets every quiz go before the
//! renewed lease could revive the state it still holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use quiz_protocol::NodeId;
use quiz_store::{MembershipStore, NodeLease};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::now_ms;

/// The lease as last renewed, shared by the renewal thread and the node.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    /// The end of the lease (local wall clock, ms); 0 before the first renewal.
    until: AtomicI64,
}

impl LeaseState {
    /// Whether the lease holds now.
    pub(crate) fn valid(&self) -> bool {
        now_ms() < self.until.load(Ordering::Acquire)
    }

    /// Whether it was ever renewed and has run out since.
    pub(crate) fn lapsed(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until > 0 && now_ms() >= until
    }

    fn renewed_until(&self, until: i64) {
        self.until.store(until, Ordering::Release);
    }
}

/// What the renewal loop needs to say in each renewal.
pub(crate) struct LeaseSpec {
    pub(crate) node: NodeId,
    pub(crate) ws_url: String,
    pub(crate) cluster_addr: String,
    pub(crate) weight: u32,
    pub(crate) ttl: Duration,
    pub(crate) every: Duration,
    /// Read at each renewal: a draining node says so in its lease.
    pub(crate) draining: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// The renewal thread, running.
pub(crate) struct LeaseKeeper {
    /// A lapse, each time one is noticed: the node lets its quizzes go.
    pub(crate) lapses: mpsc::Receiver<()>,
    /// Resolves when the thread has stopped (lease released unless `crashed`).
    pub(crate) stopped: tokio::sync::oneshot::Receiver<()>,
}

impl LeaseKeeper {
    /// Starts the renewal thread. `open` makes its store, inside its own runtime. It stops
    /// when `shutdown` is cancelled, releasing the lease unless `crashed()` says the node is
    /// stopping as a crash would.
    pub(crate) fn spawn<F, Fut>(
        spec: LeaseSpec,
        state: Arc<LeaseState>,
        open: F,
        shutdown: CancellationToken,
        crashed: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> std::io::Result<LeaseKeeper>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Option<Arc<dyn MembershipStore>>>,
    {
        let (lapse_tx, lapses) = mpsc::channel(4);
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("quiz-lease".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the lease thread's runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let Some(store) = open().await else {
                        tracing::error!("no membership store for the lease; the node stays out");
                        return;
                    };
                    renew_until_stopped(&spec, &state, &*store, &lapse_tx, &shutdown).await;
                    if !crashed() {
                        // Leaving gracefully: routers drop this node at once instead of
                        // waiting out the lease.
                        if let Err(e) = store.release_lease(&spec.node).await {
                            tracing::warn!(error = %e, "releasing the lease failed");
                        }
                    }
                });
                let _ = stopped_tx.send(());
            })?;
        Ok(LeaseKeeper { lapses, stopped })
    }
}

async fn renew_until_stopped(
    spec: &LeaseSpec,
    state: &LeaseState,
    store: &dyn MembershipStore,
    lapses: &mpsc::Sender<()>,
    shutdown: &CancellationToken,
) {
    let mut tick = tokio::time::interval(spec.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Checked before renewing: a node that was paused or cut off past its lease may have
        // lost its quizzes to others, and a renewed lease must not revive what it holds.
        if state.lapsed() && !told {
            tracing::error!("this node's lease lapsed; handing off every quiz");
            told = true;
            let _ = lapses.try_send(());
        }
        let now = now_ms();
        let ttl = spec.ttl.as_millis() as i64;
        let lease = NodeLease {
            node: spec.node.clone(),
            ws_url: spec.ws_url.clone(),
            cluster_addr: spec.cluster_addr.clone(),
            weight: spec.weight,
            draining: (spec.draining)(),
            renewed_at: now,
            expires_at: now + ttl,
        };
        let started = std::time::Instant::now();
        match store.renew_lease(&lease).await {
            // Counted from before the write: the store's copy expires no earlier.
            Ok(()) => {
                state.renewed_until(now + ttl);
                told = false;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
        }
        let took = started.elapsed();
        if took > spec.every {
            tracing::warn!(ms = took.as_millis() as u64, "a lease renewal was slow");
        }
    }
}
