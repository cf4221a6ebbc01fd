//! Connections to the other members, one per node, and on each the one stream that carries
//! every request this node sends that node.
//!
//! Connecting never holds a lock that other peers' requests wait on: the table of peers is a
//! map of slots, each slot connects once (its waiters share the attempt), and a slot that
//! failed is dropped so the next request tries afresh. Requests to one peer share a single
//! long-lived QUIC stream ([`RequestChannel`]): each request is one frame tagged with an id,
//! replies come back in any order, matched by id. So 2,000 answers a second from a remote
//! edge are 2,000 frames on one stream, not 2,000 streams opened and closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_cluster::{Endpoint, Peer};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::{ClusterMessage, OwnerReply, Rejection, RingMember};
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::shard::{lock, unavailable};

/// Requests queued for a channel's writer.
const CHANNEL_QUEUE: usize = 1024;

/// The connections of this node to the others.
pub(super) struct Peers {
    endpoint: Endpoint,
    slots: Mutex<HashMap<NodeId, Arc<Slot>>>,
    /// Connecting to a peer and opening a stream on it.
    timeout: Duration,
    /// A request, from sending it to its reply: the node's request timeout, the same as a
    /// local request's. A peer slower than that keeps its connection.
    request_timeout: Duration,
    metrics: Metrics,
    tracker: TaskTracker,
}

/// One peer: its connection, made once, and its request channel, opened when first needed
/// (again after it broke).
#[derive(Default)]
struct Slot {
    peer: OnceCell<Peer>,
    channel: tokio::sync::Mutex<Option<Arc<RequestChannel>>>,
}

impl Peers {
    pub(super) fn new(
        endpoint: Endpoint,
        timeout: Duration,
        request_timeout: Duration,
        metrics: Metrics,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            endpoint,
            slots: Mutex::new(HashMap::new()),
            timeout,
            request_timeout,
            metrics,
            tracker,
        }
    }

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn slot(&self, node: &NodeId) -> Arc<Slot> {
        lock(&self.slots).entry(node.clone()).or_default().clone()
    }

    /// Drops a peer's slot if it is still `slot` (a newer one may have replaced it).
    fn forget_slot(&self, node: &NodeId, slot: &Arc<Slot>) {
        let mut slots = lock(&self.slots);
        if slots.get(node).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(node);
        }
    }

    /// Forgets a peer (its connection failed).
    pub(super) fn forget(&self, node: &NodeId) {
        lock(&self.slots).remove(node);
    }

    /// Forgets every peer that is not in `members` (it left the ring: if it comes back it is
    /// another process, and the old connection would only time out).
    pub(super) fn retain(&self, members: &[NodeId]) {
        lock(&self.slots).retain(|node, _| members.contains(node));
    }

    /// The connection to a member, made if needed (requests to it wait for one attempt).
    pub(super) async fn peer(&self, member: &RingMember) -> Result<Peer, Rejection> {
        let slot = self.slot(&member.node);
        let connected = slot.peer.get_or_try_init(|| self.connect(member)).await;
        match connected {
            Ok(peer) => Ok(peer.clone()),
            Err(r) => {
                self.forget_slot(&member.node, &slot);
                Err(r)
            }
        }
    }

    async fn connect(&self, member: &RingMember) -> Result<Peer, Rejection> {
        let addr = tokio::net::lookup_host(member.cluster_addr.as_str())
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| unavailable("the quiz's owner has no usable address"))?;
        let connect = self.endpoint.connect(addr, Some(&member.node));
        tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| unavailable("the quiz's owner did not answer in time"))?
            .map_err(|e| {
                tracing::debug!(owner = %member.node, error = %e, "connecting to a peer failed");
                unavailable("the quiz's owner is unreachable; retry")
            })
    }

    /// Sends a request (a [`ClusterMessage::Request`] with id `id`) to `member` on its request
    /// channel and waits for the reply.
    pub(super) async fn request(
        &self,
        member: &RingMember,
        id: u64,
        message: ClusterMessage,
    ) -> OwnerReply {
        let channel = match self.channel(member).await {
            Ok(c) => c,
            Err(r) => return OwnerReply::Error(r),
        };
        match channel.ask(id, message, self.request_timeout).await {
            Ok(reply) => reply,
            Err(Lost::Timeout) => {
                OwnerReply::Error(unavailable("the quiz's owner did not answer in time"))
            }
            Err(Lost::Closed) => {
                self.forget(&member.node);
                tracing::debug!(owner = %member.node, "the request channel to the owner broke");
                OwnerReply::Error(unavailable("the quiz's owner is unreachable; retry"))
            }
        }
    }

    /// The open request channel to `member`, opened if it has none (or its last one broke).
    async fn channel(&self, member: &RingMember) -> Result<Arc<RequestChannel>, Rejection> {
        let peer = self.peer(member).await?;
        let slot = self.slot(&member.node);
        let mut held = slot.channel.lock().await;
        if let Some(c) = held.as_ref().filter(|c| !c.closed.is_cancelled()) {
            return Ok(c.clone());
        }
        let opened = tokio::time::timeout(
            self.timeout,
            RequestChannel::open(&peer, &self.tracker, &self.metrics),
        )
        .await;
        match opened {
            Ok(Ok(c)) => {
                *held = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                drop(held);
                self.forget_slot(&member.node, &slot);
                tracing::debug!(owner = %member.node, error = %e, "opening a request channel failed");
                Err(unavailable("the quiz's owner is unreachable; retry"))
            }
            Err(_) => Err(unavailable("the quiz's owner did not answer in time")),
        }
    }
}

/// Why a request on a channel got no reply.
enum Lost {
    Timeout,
    Closed,
}

/// Requests waiting for their replies, by id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<OwnerReply>>>>;

/// One stream to a peer carrying this node's requests and the peer's replies.
struct RequestChannel {
    outgoing: mpsc::Sender<ClusterMessage>,
    pending: Pending,
    /// Cancelled when either direction of the stream ends.
    closed: CancellationToken,
}

impl RequestChannel {
    async fn open(
        peer: &Peer,
        tracker: &TaskTracker,
        metrics: &Metrics,
    ) -> Result<Arc<RequestChannel>, quiz_cluster::ClusterError> {
        let (mut writer, mut reader) = peer.open(&ClusterMessage::Requests).await?;
        let (outgoing, mut queue) = mpsc::channel::<ClusterMessage>(CHANNEL_QUEUE);
        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        let channel = Arc::new(RequestChannel {
            outgoing,
            pending: pending.clone(),
            closed: closed.clone(),
        });
        let stop = closed.clone();
        let sent = metrics.clone();
        tracker.spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = queue.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                };
                sent.cluster_messages.with_label_values(&["request"]).inc();
                if writer.send(&message).await.is_err() {
                    break;
                }
            }
            stop.cancel();
            let _ = writer.finish();
        });
        tracker.spawn(async move {
            while let Ok(Some(message)) = reader.next().await {
                if let ClusterMessage::Reply { id, reply } = message
                    && let Some(waiter) = lock(&pending).remove(&id)
                {
                    let _ = waiter.send(reply);
                }
            }
            closed.cancel();
            // Whoever still waits learns the channel is gone (their senders drop).
            lock(&pending).clear();
        });
        Ok(channel)
    }

    async fn ask(
        &self,
        id: u64,
        message: ClusterMessage,
        timeout: Duration,
    ) -> Result<OwnerReply, Lost> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let exchange = async {
            self.outgoing
                .send(message)
                .await
                .map_err(|_| Lost::Closed)?;
            rx.await.map_err(|_| Lost::Closed)
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        match result {
            Ok(r) => r,
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(Lost::Timeout)
            }
        }
    }
}

/// Serves a request channel a peer opened: each request is handled on its own task (at most
/// `max_in_flight` at once; past that the peer's frames wait in QUIC's flow control), and
/// each reply goes back on the stream as it is ready.
pub(super) async fn serve_channel<F, Fut>(
    mut writer: quiz_cluster::FrameWriter,
    mut reader: quiz_cluster::FrameReader,
    max_in_flight: usize,
    tracker: TaskTracker,
    handle: F,
) where
    F: Fn(quiz_protocol::QuizId, quiz_protocol::cluster::EdgeRequest) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: Future<Output = OwnerReply> + Send + 'static,
{
    let (replies, mut queue) = mpsc::channel::<ClusterMessage>(CHANNEL_QUEUE);
    let done = CancellationToken::new();
    let writing = {
        let done = done.clone();
        tracker.spawn(async move {
            while let Some(reply) = queue.recv().await {
                if writer.send(&reply).await.is_err() {
                    break;
                }
            }
            done.cancel();
            let _ = writer.finish();
        })
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    loop {
        let next = tokio::select! {
            _ = done.cancelled() => break,
            next = reader.next() => next,
        };
        let Ok(Some(message)) = next else { break };
        let ClusterMessage::Request { id, quiz, request } = message else {
            tracing::info!("a peer sent a non-request on a request channel");
            break;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (handle, replies) = (handle.clone(), replies.clone());
        tracker.spawn(async move {
            let reply = handle(quiz, request).await;
            let _ = replies.send(ClusterMessage::Reply { id, reply }).await;
            drop(permit);
        });
    }
    drop(replies);
    let _ = writing.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiz_cluster::{ClusterCa, EndpointConfig};
    use quiz_protocol::QuizId;
    use quiz_protocol::cluster::EdgeRequest;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn endpoint(ca: &ClusterCa, name: &str) -> Endpoint {
        let tls = ca.tls_for(name).unwrap();
        let me = NodeId(name.into());
        Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            me,
            &tls,
            EndpointConfig::new("quiz"),
        )
        .unwrap()
    }

    /// An owner that takes longer than the peer timeout to answer (a busy quiz, a slow
    /// store) is still answered from: the request waits for the request timeout, and the
    /// connection to that owner is kept.
    #[tokio::test]
    async fn a_slow_owner_is_waited_for_and_keeps_its_connection() {
        let ca = ClusterCa::generate("quiz").unwrap();
        let owner = endpoint(&ca, "owner");
        let owner_addr = owner.local_addr();
        let tracker = TaskTracker::new();
        let connections = Arc::new(AtomicUsize::new(0));
        let (serving, counted) = (tracker.clone(), connections.clone());
        tracker.spawn(async move {
            while let Some(peer) = owner.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let serving = serving.clone();
                serving.clone().spawn(async move {
                    while let Some(Ok((_, writer, reader))) = peer.accept_stream().await {
                        let slow = |_quiz, _request| async {
                            tokio::time::sleep(Duration::from_millis(600)).await;
                            OwnerReply::Done
                        };
                        serving.spawn(serve_channel(writer, reader, 8, serving.clone(), slow));
                    }
                });
            }
        });

        let edge = endpoint(&ca, "edge");
        let peer_timeout = Duration::from_millis(100);
        let request_timeout = Duration::from_secs(30);
        let peers = Peers::new(
            edge,
            peer_timeout,
            request_timeout,
            Metrics::new(),
            tracker.clone(),
        );
        let member = RingMember {
            node: NodeId("owner".into()),
            weight: 1,
            ws_url: "ws://127.0.0.1:1/v1/ws".into(),
            cluster_addr: owner_addr.to_string(),
        };
        for id in 1..=2 {
            let message = ClusterMessage::Request {
                id,
                quiz: QuizId::parse("9777R6").unwrap(),
                request: EdgeRequest::Disconnect { player: None },
            };
            let reply = peers.request(&member, id, message).await;
            assert_eq!(reply, OwnerReply::Done, "request {id} is answered");
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "both requests went over the first connection"
        );
    }
}
