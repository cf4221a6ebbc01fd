//! One QUIC endpoint: it accepts peers (as a server) and connects to peers (as a client),
//! both mutually authenticated under the cluster CA, and hands out a [`Peer`] only once the
//! Hello exchange has succeeded.
//!
//! Accepting runs in the background: one task takes incoming connections, and each
//! handshake runs in its own task under a span naming the remote address, so a slow or bad
//! peer never delays the others. At most `max_pending_handshakes` connections are in their
//! handshake or wait for [`Endpoint::accept`]; past that, quinn queues them. A refused peer
//! is logged and its connection closed with the reason; it is never returned.

use std::net::SocketAddr;
use std::sync::Arc;

use quiz_protocol::NodeId;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::EndpointConfig;
use crate::error::ClusterError;
use crate::handshake::{self, CLOSE_OK, CLOSE_REFUSED};
use crate::peer::Peer;
use crate::tls::ClusterTls;

/// A QUIC endpoint of the cluster, bound to one UDP socket.
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    me: NodeId,
    config: Arc<EndpointConfig>,
    local_addr: SocketAddr,
    /// Authenticated peers, each with the handshake permit it still holds until taken.
    accepted: Mutex<mpsc::Receiver<(Peer, OwnedSemaphorePermit)>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// What the accept loop and the handshake tasks share.
struct Acceptor {
    endpoint: quinn::Endpoint,
    me: NodeId,
    config: Arc<EndpointConfig>,
    peers: mpsc::Sender<(Peer, OwnedSemaphorePermit)>,
    permits: Arc<Semaphore>,
    /// One line per interval for refused handshakes.
    refusal_log: quiz_net::quiet::Shared,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Endpoint {
    /// Binds `addr` (port 0 picks one; see [`local_addr`](Self::local_addr)) as `me` (a
    /// node id, or `router`), which `tls`'s certificate must be valid for. Must be called
    /// inside a tokio runtime. The configuration is validated first.
    pub fn bind(
        addr: SocketAddr,
        me: NodeId,
        tls: &ClusterTls,
        config: EndpointConfig,
    ) -> Result<Endpoint, ClusterError> {
        config.validate()?;
        if !tls.is_valid_for(&me) {
            return Err(ClusterError::Config(format!(
                "our certificate is not valid for our own id {me}"
            )));
        }
        let transport = config.transport()?;
        let mut server = quinn::ServerConfig::with_crypto(tls.server_crypto());
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(tls.client_crypto());
        client.transport_config(transport);

        let mut endpoint =
            quinn::Endpoint::server(server, addr).map_err(|e| ClusterError::Bind(e.to_string()))?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| ClusterError::Bind(e.to_string()))?;

        let config = Arc::new(config);
        let (peers, accepted) = mpsc::channel(config.max_pending_handshakes);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let acceptor = Arc::new(Acceptor {
            endpoint: endpoint.clone(),
            me: me.clone(),
            config: config.clone(),
            peers,
            permits: Arc::new(Semaphore::new(config.max_pending_handshakes)),
            refusal_log: quiz_net::quiet::Shared::new(config.refusal_log_interval),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        let span = tracing::info_span!("cluster_endpoint", node = %me, addr = %local_addr);
        tasks.spawn(acceptor.run().instrument(span));

        Ok(Endpoint {
            endpoint,
            me,
            config,
            local_addr,
            accepted: Mutex::new(accepted),
            shutdown,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Who this endpoint is.
    pub fn node(&self) -> &NodeId {
        &self.me
    }

    /// The next authenticated peer that connected to us: TLS done (its certificate from our
    /// CA, valid for the node it names), Hello exchanged (same protocol version and
    /// cluster). Bad peers are logged and skipped. `None` once the endpoint is closed.
    /// Cancel-safe.
    pub async fn accept(&self) -> Option<Peer> {
        let mut accepted = self.accepted.lock().await;
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            next = accepted.recv() => next.map(|(peer, _permit)| peer),
        }
    }

    /// Connects to `addr` and runs the handshake as initiator, within `handshake_timeout`.
    /// With `expected`, TLS checks the peer's certificate for that name and its Hello must
    /// name it; without, any node of the cluster will do (its Hello says which).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<Peer, ClusterError> {
        if self.shutdown.is_cancelled() {
            return Err(ClusterError::Closed("endpoint closed".into()));
        }
        // Every certificate is valid for `localhost`; the Hello check binds the identity then.
        let server_name = expected.map_or("localhost", |node| node.0.as_str());
        let deadline = Instant::now() + self.config.handshake_timeout;
        let connecting = self
            .endpoint
            .connect(addr, server_name)
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let conn = timeout_at(deadline, connecting)
            .await
            .map_err(|_| ClusterError::Timeout)?
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let hello = handshake::initiate(&conn, &self.me, &self.config, expected);
        match timeout_at(deadline, hello).await {
            Ok(Ok(node)) => Ok(Peer::new(conn, node, self.config.clone())),
            Ok(Err(e)) => {
                conn.close(CLOSE_REFUSED, refusal_text(&e).as_bytes());
                Err(e)
            }
            Err(_) => {
                conn.close(CLOSE_REFUSED, b"no Hello in time");
                Err(ClusterError::Timeout)
            }
        }
    }

    /// Stops accepting, closes every connection, and waits (at most `close_timeout`) for
    /// the background tasks to end and the peers to acknowledge the close.
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.endpoint.close(CLOSE_OK, b"endpoint closed");
        self.tasks.close();
        let drained = async {
            self.tasks.wait().await;
            self.endpoint.wait_idle().await;
        };
        if timeout(self.config.close_timeout, drained).await.is_err() {
            tracing::debug!(node = %self.me, "close timed out; connections dropped");
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.me)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Without `close`, the background tasks would keep the socket open.
        self.shutdown.cancel();
    }
}

impl Acceptor {
    /// Takes incoming connections until shutdown, one handshake task each.
    async fn run(self: Arc<Self>) {
        loop {
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let incoming = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => incoming,
                    None => return,
                },
            };
            let span = tracing::info_span!("cluster_accept", remote = %incoming.remote_address());
            let this = self.clone();
            self.tasks
                .spawn(async move { this.handshake(incoming, permit).await }.instrument(span));
        }
    }

    /// Authenticates one incoming connection and hands it to `accept`, or refuses it.
    async fn handshake(&self, incoming: quinn::Incoming, permit: OwnedSemaphorePermit) {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let authenticate = async {
            let connecting = incoming.accept()?;
            let conn = timeout_at(deadline, connecting)
                .await
                .map_err(|_| ClusterError::Timeout)?
                .map_err(|e| ClusterError::Connect(e.to_string()))?;
            match timeout_at(deadline, handshake::answer(&conn, &self.me, &self.config)).await {
                Ok(Ok(node)) => Ok(Peer::new(conn, node, self.config.clone())),
                Ok(Err(e)) => {
                    conn.close(CLOSE_REFUSED, refusal_text(&e).as_bytes());
                    Err(e)
                }
                Err(_) => {
                    conn.close(CLOSE_REFUSED, b"no Hello in time");
                    Err(ClusterError::Timeout)
                }
            }
        };
        let result = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            result = authenticate => result,
        };
        match result {
            Ok(peer) => {
                tracing::info!(peer = %peer.node(), "peer connected");
                tokio::select! {
                    _ = self.shutdown.cancelled() => {}
                    // A closed receiver means the endpoint is gone; the peer drops with it.
                    _ = self.peers.send((peer, permit)) => {}
                }
            }
            Err(e) => {
                // Unauthenticated UDP can make as many of these as it likes: count them all,
                // log a sample.
                let refused = &self.config.refused_handshakes;
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(suppressed) = self.refusal_log.tick() {
                    tracing::warn!(error = %e, suppressed, "refused a peer");
                }
            }
        }
    }
}

/// The reason a refused peer reads in our close: the bare reason for a refused Hello (the
/// peer reports it as its own `Handshake` error), the error itself otherwise.
fn refusal_text(e: &ClusterError) -> String {
    match e {
        ClusterError::Handshake(reason) => reason.clone(),
        other => other.to_string(),
    }
}
