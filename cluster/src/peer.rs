//! One authenticated connection to one peer, and the streams on it: requests (one message
//! each way), long-lived streams (a first message, then frames both ways) and the streams the
//! peer opens towards us. What the messages mean is the node's and the router's business.
//!
//! # Bounds on what a peer can make us hold
//!
//! - At most `max_concurrent_bidi_streams` streams opened by the peer are alive at once:
//!   QUIC's stream credit makes the peer's `open` wait past that, until one of ours closes.
//!   A stream handed out by [`Peer::accept_stream`] counts until both its reader and writer
//!   are done (finished or dropped), so a node that holds every stream it accepts throttles
//!   the peer, and one that never calls `accept_stream` stops it at the limit.
//! - At most `max_pending_streams` of them are having their first frame read, or wait in
//!   this peer to be taken by `accept_stream`; each holds at most one frame
//!   (`max_frame_bytes + 4`). The rest wait inside quinn.
//! - Bytes the peer sent that nobody has read yet stay in quinn, at most
//!   `connection_receive_window` for the whole connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::ClusterMessage;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::config::EndpointConfig;
use crate::error::ClusterError;
use crate::frame::{FrameReader, FrameWriter, encode_checked};
use crate::handshake::CLOSE_OK;

/// A stream the peer opened: its first message, and the two halves to answer and read on.
pub type IncomingStream = (ClusterMessage, FrameWriter, FrameReader);

/// An authenticated connection to one peer (TLS under the cluster CA, and a Hello naming
/// [`node`](Self::node)). Cheap to clone; the connection closes when the last clone is
/// dropped or [`close`](Self::close) is called.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

struct PeerInner {
    conn: Connection,
    node: NodeId,
    config: Arc<EndpointConfig>,
    incoming: Mutex<IncomingStreams>,
}

/// Streams the peer opened whose first frame is being read, or has been read and waits for
/// `accept_stream`. Reads run as tasks so one slow stream does not hold up the others;
/// dropping the set (with the last `Peer`) aborts them.
struct IncomingStreams {
    pending: JoinSet<Result<IncomingStream, ClusterError>>,
    /// False once the connection has ended: no further streams will come.
    open: bool,
}

impl Peer {
    pub(crate) fn new(conn: Connection, node: NodeId, config: Arc<EndpointConfig>) -> Peer {
        Peer {
            inner: Arc::new(PeerInner {
                conn,
                node,
                config,
                incoming: Mutex::new(IncomingStreams {
                    pending: JoinSet::new(),
                    open: true,
                }),
            }),
        }
    }

    /// The peer's node id, as its Hello and its certificate both say.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.conn.remote_address()
    }

    /// One request, one reply, on a new stream; the whole exchange (waiting for stream
    /// credit included) is bounded by `timeout`. The peer answers on the stream it got from
    /// [`accept_stream`](Self::accept_stream) and finishes it.
    pub async fn request(
        &self,
        msg: &ClusterMessage,
        timeout: Duration,
    ) -> Result<ClusterMessage, ClusterError> {
        let exchange = async {
            let (writer, mut reader) = self.open(msg).await?;
            writer.finish()?;
            reader.next().await?.ok_or(ClusterError::EndOfStream)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClusterError::Timeout)?
    }

    /// Opens a long-lived stream: sends `first` (a subscription, say), and returns the writer
    /// and the reader of what the peer sends back. Waits while the peer's stream limit is
    /// reached: put it under a timeout.
    pub async fn open(
        &self,
        first: &ClusterMessage,
    ) -> Result<(FrameWriter, FrameReader), ClusterError> {
        let max = self.inner.config.max_frame_bytes;
        // Refuse an oversized message before a stream exists, so the peer sees nothing.
        let frame = encode_checked(first, max)?;
        let (send, recv) = self.inner.conn.open_bi().await?;
        let mut writer = FrameWriter::new(send, max);
        writer.send_encoded(&frame).await?;
        Ok((writer, FrameReader::new(recv, max)))
    }

    /// The next stream the peer opened, once its first frame has arrived (within
    /// `stream_open_timeout`). `Some(Err(..))` is one bad stream (already reset; the
    /// connection stays up, and the caller may close it); `None` once the connection has
    /// ended. Cancel-safe. See the module docs for what this bounds.
    pub async fn accept_stream(&self) -> Option<Result<IncomingStream, ClusterError>> {
        let inner = &*self.inner;
        let mut incoming = inner.incoming.lock().await;
        loop {
            let room = incoming.pending.len() < inner.config.max_pending_streams;
            let may_accept = incoming.open && room;
            if !incoming.open && incoming.pending.is_empty() {
                return None;
            }
            tokio::select! {
                // Finished reads first: they are the oldest work.
                biased;
                Some(done) = incoming.pending.join_next() => match done {
                    Ok(stream) => return Some(stream),
                    // Only a panic in `read_first` (a bug) gets here; that stream is gone.
                    Err(e) => tracing::error!(peer = %inner.node, error = %e, "stream task failed"),
                },
                accepted = inner.conn.accept_bi(), if may_accept => match accepted {
                    Ok((send, recv)) => {
                        incoming.pending.spawn(read_first(send, recv, inner.config.clone()));
                    }
                    Err(_) => incoming.open = false,
                },
                // Not reached (with nothing pending there is room to accept), but a select
                // with every branch disabled would panic.
                else => return None,
            }
        }
    }

    /// Resolves when the connection ends, with why.
    pub async fn closed(&self) -> ClusterError {
        self.inner.conn.closed().await.into()
    }

    /// Closes the connection now; the peer sees `reason`. Streams still open fail.
    pub fn close(&self, reason: &str) {
        self.inner.conn.close(CLOSE_OK, reason.as_bytes());
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("node", &self.inner.node)
            .field("remote_addr", &self.inner.conn.remote_address())
            .finish()
    }
}

/// Reads the first frame of a stream the peer opened. On failure the stream is abandoned
/// both ways, so the peer's reader and writer see it at once.
async fn read_first(
    send: SendStream,
    recv: RecvStream,
    config: Arc<EndpointConfig>,
) -> Result<IncomingStream, ClusterError> {
    let writer = FrameWriter::new(send, config.max_frame_bytes);
    let mut reader = FrameReader::new(recv, config.max_frame_bytes);
    let first = match tokio::time::timeout(config.stream_open_timeout, reader.next()).await {
        Ok(Ok(Some(first))) => Ok(first),
        Ok(Ok(None)) => Err(ClusterError::EndOfStream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ClusterError::Timeout),
    };
    match first {
        Ok(first) => Ok((first, writer, reader)),
        Err(e) => {
            writer.reset();
            Err(e)
        }
    }
}
