//! This node as a member of the cluster: where each quiz's owner is, and how to reach it.
//!
//! [`Owners`] is what the edge talks to: a request or a subscription for a quiz goes to the
//! local shard when this node owns the quiz, and over QUIC to the owner otherwise (every
//! request to one peer on one shared stream, [`peers`]; one long-lived stream per subscribed
//! quiz per edge, so the owner sends each event once per edge). The same type serves the
//! other side: it accepts QUIC peers (other nodes' edges, routers pushing rings) and answers
//! them from the local shard.
//!
//! Membership: the node renews its lease in the store; routers turn leases into rings and push
//! them here; the store's ring is polled too, in case a push is missed. When the ring changes
//! the shard hands off what it no longer owns and takes up what it now owns. A node that cannot
//! renew its lease within the lease's life stops serving its quizzes by itself; whatever it
//! still tries to write is fenced by the new owner's epoch anyway.

mod peers;

use crate::event::{Event, SharedEvent};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use peers::Peers;
use quiz_cluster::{ClusterTls, Endpoint, EndpointConfig, FrameReader, FrameWriter, Peer};
use quiz_protocol::cluster::{ClusterMessage, EdgeRequest, OwnerReply, Rejection, RingMember};
use quiz_protocol::{NodeId, QuizId};
use quiz_store::Stores;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClusterConfig, Config};
use crate::lease::{LeaseKeeper, LeaseSpec, LeaseState};
use crate::metrics::Metrics;
use crate::placement::{Owner, Placement};
use crate::shard::{EdgeId, Shard, next_edge_id, unavailable};

/// How many times one request or subscription follows its quiz to a new owner before the
/// phone is told to retry.
const MAX_REQUEST_MOVES: u32 = 3;

/// Routes requests and subscriptions to quizzes' owners, and serves peers.
pub(crate) struct Owners {
    placement: Placement,
    shard: Shard,
    config: Arc<Config>,
    metrics: Metrics,
    /// The QUIC endpoint and the connections to other members; `None` for a single node.
    peers: Option<Arc<Peers>>,
    next_request: AtomicU64,
    /// This node's lease, as its renewal thread last renewed it.
    lease: Arc<LeaseState>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Set when the node stops as if it crashed (tests): its lease is left to expire.
    pub(crate) crashed: Arc<AtomicBool>,
}

impl Owners {
    /// A node alone: everything is local.
    pub(crate) fn single(
        placement: Placement,
        shard: Shard,
        config: Arc<Config>,
        metrics: Metrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            placement,
            shard,
            config,
            metrics,
            peers: None,
            next_request: AtomicU64::new(1),
            lease: Arc::new(LeaseState::default()),
            tracker,
            shutdown,
            crashed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A cluster member: binds the QUIC endpoint; [`Owners::run_membership`] does the rest.
    #[allow(clippy::too_many_arguments)] // one call site, in `start`
    pub(crate) fn clustered(
        cluster: &ClusterConfig,
        placement: Placement,
        shard: Shard,
        config: Arc<Config>,
        metrics: Metrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let tls = load_tls(cluster)?;
        let mut endpoint_config = EndpointConfig::new(cluster.name.clone());
        endpoint_config.idle_timeout = Duration::from_millis(cluster.peer_idle_timeout_ms);
        endpoint_config.keep_alive_interval = Some(endpoint_config.idle_timeout / 4);
        endpoint_config.refused_handshakes = metrics.cluster_refused_source.clone();
        let me = NodeId(config.node_id.clone());
        let endpoint = Endpoint::bind(cluster.listen, me, &tls, endpoint_config)
            .map_err(|e| format!("cluster endpoint on {}: {e}", cluster.listen))?;
        let timeout = Duration::from_millis(cluster.peer_timeout_ms);
        let peers = Peers::new(
            endpoint,
            timeout,
            config.request_timeout(),
            metrics.clone(),
            tracker.clone(),
        );
        Ok(Arc::new(Self {
            placement,
            shard,
            config,
            metrics,
            peers: Some(Arc::new(peers)),
            next_request: AtomicU64::new(1),
            lease: Arc::new(LeaseState::default()),
            tracker,
            shutdown,
            crashed: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Where peers reach this node over QUIC, if it is clustered.
    pub(crate) fn cluster_addr(&self) -> Option<SocketAddr> {
        self.peers.as_ref().map(|p| p.endpoint().local_addr())
    }

    fn peer_timeout(&self) -> Duration {
        self.config
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(2), |c| {
                Duration::from_millis(c.peer_timeout_ms)
            })
    }

    /// Sends a request to the quiz's owner and waits for the reply. An owner that dies does
    /// not hold the request for the whole peer timeout: when the ring moves the quiz away from
    /// it, a request that is safe to send twice (join, answer, leave: the owner dedupes them)
    /// goes to the new owner, and any other fails at once as retryable.
    pub(crate) async fn request(&self, quiz: &QuizId, request: EdgeRequest) -> OwnerReply {
        let resendable = matches!(
            request,
            EdgeRequest::Join { .. } | EdgeRequest::Answer { .. } | EdgeRequest::Leave { .. }
        );
        // Built once, whichever owner it goes to (the id only pairs a reply with its stream).
        let message = ClusterMessage::Request {
            id: self.next_request.fetch_add(1, Ordering::Relaxed),
            quiz: quiz.clone(),
            request,
        };
        let mut moves = 0;
        loop {
            let member = match self.placement.owner(quiz) {
                Owner::Me => {
                    let ClusterMessage::Request { request, .. } = message else {
                        unreachable!("built as a request above");
                    };
                    return self.shard.request(quiz, request).await;
                }
                Owner::Nobody => {
                    return OwnerReply::Error(unavailable(
                        "no node serves this quiz right now; retry",
                    ));
                }
                Owner::Peer(member) => member,
            };
            tokio::select! {
                reply = self.ask(&member, &message) => return reply,
                () = self.placement.moved_from(quiz, &member.node) => {}
            }
            moves += 1;
            tracing::debug!(%quiz, from = %member.node, "the quiz moved while a request waited");
            if !resendable || moves > MAX_REQUEST_MOVES {
                return OwnerReply::Error(unavailable("the quiz moved to another node; retry"));
            }
        }
    }

    /// Sends `message` (a request) to a peer that owns its quiz and waits for the reply.
    async fn ask(&self, member: &RingMember, message: &ClusterMessage) -> OwnerReply {
        let (Some(peers), ClusterMessage::Request { id, .. }) = (&self.peers, message) else {
            return OwnerReply::Error(unavailable("this node is not in a cluster"));
        };
        peers.request(member, *id, message.clone()).await
    }

    /// Subscribes an edge room to a quiz's events, at the owner. The first event (the full
    /// leaderboard) has arrived when this returns, so a join sent afterwards misses nothing.
    /// If the ring moves the quiz while the owner is being asked, the new owner is asked.
    pub(crate) async fn subscribe(
        &self,
        quiz: &QuizId,
        edge: EdgeId,
        events: mpsc::Sender<Event>,
    ) -> Result<Subscription, Rejection> {
        let mut moves = 0;
        loop {
            let member = match self.placement.owner(quiz) {
                Owner::Me => {
                    self.shard.subscribe(quiz, edge, events).await?;
                    return Ok(Subscription::Local {
                        shard: self.shard.clone(),
                        quiz: quiz.clone(),
                        edge,
                    });
                }
                Owner::Nobody => {
                    return Err(unavailable("no node serves this quiz right now; retry"));
                }
                Owner::Peer(member) => member,
            };
            tokio::select! {
                subscribed = self.subscribe_at(&member, quiz, &events) => return subscribed,
                () = self.placement.moved_from(quiz, &member.node) => {}
            }
            moves += 1;
            if moves > MAX_REQUEST_MOVES {
                return Err(unavailable("the quiz moved to another node; retry"));
            }
        }
    }

    /// Subscribes at a peer that owns the quiz.
    async fn subscribe_at(
        &self,
        member: &RingMember,
        quiz: &QuizId,
        events: &mpsc::Sender<Event>,
    ) -> Result<Subscription, Rejection> {
        let Some(peers) = &self.peers else {
            return Err(unavailable("this node is not in a cluster"));
        };
        let peer = peers.peer(member).await?;
        let first = ClusterMessage::Subscribe { quiz: quiz.clone() };
        let opened = tokio::time::timeout(self.peer_timeout(), async {
            let (writer, mut reader) = peer.open(&first).await?;
            let head = reader.next().await?;
            Ok::<_, quiz_cluster::ClusterError>((writer, reader, head))
        })
        .await;
        let (writer, reader, head) = match opened {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                peers.forget(&member.node);
                tracing::debug!(owner = %member.node, error = %e, "subscribing failed");
                return Err(unavailable("the quiz's owner is unreachable; retry"));
            }
            Err(_) => return Err(unavailable("the quiz's owner did not answer in time")),
        };
        match head {
            Some(ClusterMessage::Event { event, .. }) => {
                self.metrics
                    .cluster_messages
                    .with_label_values(&["event_in"])
                    .inc();
                events
                    .send(SharedEvent::new(event))
                    .await
                    .map_err(|_| unavailable("room closed"))?;
            }
            Some(ClusterMessage::Reply {
                reply: OwnerReply::Error(r),
                ..
            }) => return Err(r),
            _ => return Err(unavailable("the quiz's owner ended the subscription")),
        }
        let pump = self
            .tracker
            .spawn(pump_events(reader, events.clone(), self.metrics.clone()));
        Ok(Subscription::Remote {
            _writer: writer,
            pump,
        })
    }

    /// Accepts peers until shutdown and serves each on its own task.
    pub(crate) async fn serve_peers(self: Arc<Self>) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let endpoint = peers.endpoint();
        loop {
            let peer = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                peer = endpoint.accept() => match peer {
                    Some(p) => p,
                    None => break,
                },
            };
            let owners = self.clone();
            self.tracker
                .spawn(async move { owners.serve_peer(peer).await });
        }
        endpoint.close().await;
    }

    async fn serve_peer(self: Arc<Self>, peer: Peer) {
        while let Some(stream) = peer.accept_stream().await {
            match stream {
                Ok((first, writer, reader)) => {
                    let owners = self.clone();
                    self.tracker
                        .spawn(async move { owners.serve_stream(first, writer, reader).await });
                }
                Err(e) => {
                    tracing::info!(peer = %peer.node(), error = %e, "a bad stream from a peer")
                }
            }
        }
    }

    async fn serve_stream(
        self: Arc<Self>,
        first: ClusterMessage,
        mut writer: FrameWriter,
        reader: FrameReader,
    ) {
        match first {
            ClusterMessage::Request { id, quiz, request } => {
                let reply = self.serve_request(&quiz, request).await;
                let _ = writer.send(&ClusterMessage::Reply { id, reply }).await;
                let _ = writer.finish();
            }
            ClusterMessage::Requests => {
                let owners = self.clone();
                let handle = move |quiz: QuizId, request: EdgeRequest| {
                    let owners = owners.clone();
                    async move { owners.serve_request(&quiz, request).await }
                };
                let limit = self.config.limits.quiz_queue_requests;
                peers::serve_channel(writer, reader, limit, self.tracker.clone(), handle).await
            }
            ClusterMessage::Subscribe { quiz } => {
                self.serve_subscription(quiz, writer, reader).await
            }
            ClusterMessage::Ring { epoch, members } => {
                self.on_ring(epoch, &members);
                // The ring itself, as the acknowledgement a router waits for.
                let _ = writer.send(&ClusterMessage::Ring { epoch, members }).await;
                let _ = writer.finish();
            }
            other => tracing::info!(?other, "a peer opened a stream with an unexpected message"),
        }
    }

    /// A request from another node's edge, answered by the local shard if this node owns the
    /// quiz.
    async fn serve_request(&self, quiz: &QuizId, request: EdgeRequest) -> OwnerReply {
        if self.placement.is_mine(quiz) {
            self.shard.request(quiz, request).await
        } else {
            OwnerReply::Error(not_mine(&self.placement))
        }
    }

    /// An edge's subscription: the quiz's events, on the stream, until either side ends it.
    async fn serve_subscription(
        &self,
        quiz: QuizId,
        mut writer: FrameWriter,
        mut reader: FrameReader,
    ) {
        if !self.placement.is_mine(&quiz) {
            let reply = OwnerReply::Error(not_mine(&self.placement));
            let _ = writer.send(&ClusterMessage::Reply { id: 0, reply }).await;
            let _ = writer.finish();
            return;
        }
        let (tx, mut rx) = mpsc::channel(self.config.limits.edge_queue_events);
        let edge = next_edge_id();
        if let Err(r) = self.shard.subscribe(&quiz, edge, tx).await {
            let _ = writer
                .send(&ClusterMessage::Reply {
                    id: 0,
                    reply: OwnerReply::Error(r),
                })
                .await;
            let _ = writer.finish();
            return;
        }
        // The edge sends nothing more: its side ending means it let go.
        let gone = CancellationToken::new();
        let watcher = gone.clone();
        let watch = self.tracker.spawn(async move {
            while let Ok(Some(_)) = reader.next().await {}
            watcher.cancel();
        });
        loop {
            let event = tokio::select! {
                _ = gone.cancelled() => break,
                event = rx.recv() => match event {
                    Some(e) => e,
                    None => break,
                },
            };
            self.metrics
                .cluster_messages
                .with_label_values(&["event"])
                .inc();
            // Encoded once, by the first edge to need it, for every edge.
            if writer.send_frame(event.frame(&quiz)).await.is_err() {
                break;
            }
        }
        watch.abort();
        let _ = writer.finish();
        self.shard.unsubscribe(&quiz, edge).await;
    }

    /// A ring arrived (pushed or polled): adopt it if newer, then move quizzes.
    pub(crate) fn on_ring(&self, epoch: u64, members: &[RingMember]) {
        if self.placement.update(epoch, members) {
            tracing::info!(epoch, members = members.len(), "new ring");
            self.metrics.ring_epoch.set(epoch as i64);
            if let Some(peers) = &self.peers {
                let current: Vec<NodeId> = members.iter().map(|m| m.node.clone()).collect();
                peers.retain(&current);
            }
            let shard = self.shard.clone();
            let lease_ok = self.lease_valid();
            self.tracker
                .spawn(async move { shard.rebalance(lease_ok).await });
        }
    }

    fn lease_valid(&self) -> bool {
        self.peers.is_none() || self.lease.valid()
    }

    /// Keeps this node's lease (on a thread of its own: see [`crate::lease`]), polls the ring,
    /// and lets every quiz go when the lease lapses.
    pub(crate) async fn run_membership(self: Arc<Self>, stores: Stores, ws_url: String) {
        let (Some(cluster), Some(addr)) = (self.config.cluster.clone(), self.cluster_addr()) else {
            return;
        };
        let shard = self.shard.clone();
        let crashed = self.crashed.clone();
        let spec = LeaseSpec {
            node: NodeId(self.config.node_id.clone()),
            ws_url,
            cluster_addr: cluster
                .advertise_addr
                .clone()
                .unwrap_or_else(|| addr.to_string()),
            weight: cluster.weight,
            ttl: Duration::from_millis(cluster.lease_ttl_ms),
            every: Duration::from_millis(cluster.lease_renew_ms),
            draining: Arc::new(move || shard.draining()),
        };
        let store_config = self.config.store.clone();
        let shared = stores.membership.clone();
        let open = move || async move {
            match quiz_store::Stores::open_membership(&store_config).await {
                Ok(Some(own)) => Some(own),
                // In-memory SQLite (tests): the one database there is.
                Ok(None) => Some(shared),
                Err(e) => {
                    tracing::error!(error = %e, "opening the lease's store failed");
                    None
                }
            }
        };
        let keeper = LeaseKeeper::spawn(
            spec,
            self.lease.clone(),
            open,
            self.shutdown.clone(),
            Arc::new(move || crashed.load(Ordering::Acquire)),
        );
        let mut keeper = match keeper {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the lease thread");
                return;
            }
        };
        let mut poll_tick = tokio::time::interval(Duration::from_millis(cluster.ring_poll_ms));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(()) = keeper.lapses.recv() => self.shard.rebalance(false).await,
                _ = poll_tick.tick() => {
                    if let Ok(Some(ring)) = stores.membership.ring().await {
                        self.on_ring(ring.epoch, &ring.members);
                    }
                }
            }
        }
        // The lease is released (or, for a crash, left to expire) by its thread.
        let _ = keeper.stopped.await;
    }
}

/// What an edge room holds for its subscription; dropping it ends a remote one.
pub(crate) enum Subscription {
    Local {
        shard: Shard,
        quiz: QuizId,
        edge: EdgeId,
    },
    Remote {
        _writer: FrameWriter,
        pump: tokio::task::JoinHandle<()>,
    },
}

impl Subscription {
    pub(crate) async fn end(self) {
        match self {
            Subscription::Local { shard, quiz, edge } => shard.unsubscribe(&quiz, edge).await,
            Subscription::Remote { pump, .. } => pump.abort(),
        }
    }
}

/// Forwards a remote owner's events into a room until the stream or the room ends.
async fn pump_events(mut reader: FrameReader, events: mpsc::Sender<Event>, metrics: Metrics) {
    while let Ok(Some(message)) = reader.next().await {
        if let ClusterMessage::Event { event, .. } = message {
            metrics
                .cluster_messages
                .with_label_values(&["event_in"])
                .inc();
            if events.send(SharedEvent::new(event)).await.is_err() {
                return;
            }
        }
    }
    // Dropping `events` tells the room the owner went away: its phones reconnect and resume.
}

fn not_mine(placement: &Placement) -> Rejection {
    unavailable(&format!(
        "this node does not own the quiz (ring epoch {}); retry",
        placement.epoch()
    ))
}

/// The cluster TLS material: each of `ca_cert`, `cert` and `key` is PEM text or a file path.
fn load_tls(c: &ClusterConfig) -> Result<ClusterTls, String> {
    let pem = |v: &str| -> Result<String, String> {
        if v.trim_start().starts_with("-----BEGIN") {
            Ok(v.to_owned())
        } else {
            std::fs::read_to_string(v).map_err(|e| format!("reading {v}: {e}"))
        }
    };
    ClusterTls::from_pem(&pem(&c.ca_cert)?, &pem(&c.cert)?, &pem(&c.key)?)
        .map_err(|e| e.to_string())
}
