//! The knobs of one endpoint, each with its default and what it costs, and their translation
//! into quinn's `TransportConfig`. quinn's own defaults are wrong for a cluster in two ways
//! that matter: 100 concurrent bidirectional streams (an edge multiplexes thousands of phones
//! over one connection), and a 30 s idle timeout with keep-alive off (a quiet link drops, and
//! a dead peer is noticed late). Both are set here on purpose.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};
use quiz_protocol::cluster::DEFAULT_MAX_CLUSTER_FRAME;

use crate::error::ClusterError;

/// Bytes of the frame header (the `u32` length) in front of every frame.
pub(crate) const FRAME_HEADER: usize = 4;

/// Settings of one [`Endpoint`](crate::Endpoint). Both sides of a connection should use the
/// same values; where QUIC negotiates (the idle timeout), the smaller one wins.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The cluster's name. A peer whose Hello names another cluster is refused. Default
    /// `"quiz"`.
    pub cluster: String,
    /// Largest frame accepted or sent (version byte and body). A reader allocates at most
    /// this plus 4 bytes per stream it is reading. Default
    /// [`DEFAULT_MAX_CLUSTER_FRAME`] (1 MiB).
    pub max_frame_bytes: usize,
    /// Bidirectional streams a peer may have open towards us at once (quinn's default is
    /// 100). Past it, the peer's `open` waits for one to close: this is what bounds a stream
    /// flood. quinn keeps a map entry per allowed stream and a few hundred bytes per open
    /// one, plus its unread data (see `connection_receive_window`). quinn re-announces freed
    /// streams in steps of an eighth of this, so a peer may briefly see up to that many
    /// fewer. Default 1024.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams a peer may have open towards us at once. Unused by the protocol
    /// today; such streams are never read, and their bytes count against
    /// `connection_receive_window`. Default 64.
    pub max_concurrent_uni_streams: u32,
    /// Bytes a peer may send on one stream ahead of our reading. Above `max_frame_bytes` so a
    /// full frame is not throttled by round trips. Default 1.25 MiB.
    pub stream_receive_window: u64,
    /// Bytes a peer may send on all streams of one connection ahead of our reading: the
    /// bound on what quinn buffers for a peer that floods us. Default 16 MiB.
    pub connection_receive_window: u64,
    /// How often a quiet connection sends a keep-alive, so it outlives `idle_timeout` and NAT
    /// mappings. Must be below `idle_timeout`. `None` turns keep-alives off: a quiet
    /// connection then dies after `idle_timeout` (quinn's default; not for a cluster).
    /// Default 1 s.
    pub keep_alive_interval: Option<Duration>,
    /// A connection with no packet from the peer for this long is dead: how fast a lost node
    /// is noticed on this link. Default 5 s.
    pub idle_timeout: Duration,
    /// QUIC and TLS handshake plus the Hello exchange, as a whole. A peer that does not
    /// finish in time is dropped. Default 5 s.
    pub handshake_timeout: Duration,
    /// How long a stream the peer opened may take to deliver its first frame before
    /// `accept_stream` gives up on it (`Timeout`). Default 5 s.
    pub stream_open_timeout: Duration,
    /// Peer-opened streams whose first frame is being read, or is read and waits for
    /// `accept_stream`, per connection. Past it, further streams wait inside quinn (still
    /// counted against `max_concurrent_bidi_streams`). Each may hold up to `max_frame_bytes`.
    /// Default 32.
    pub max_pending_streams: usize,
    /// Incoming connections in their handshake at once, plus authenticated peers waiting
    /// for `accept`. Past it, new connections wait in quinn's queue. Default 64.
    pub max_pending_handshakes: usize,
    /// How long `close` waits for tasks to stop and peers to acknowledge the close. Default
    /// 1 s.
    pub close_timeout: Duration,
    /// Counts incoming connections refused in their handshake (no certificate, another CA,
    /// another cluster, no Hello in time). Anyone can send UDP, so a refusal is logged at most
    /// once per `refusal_log_interval` (with how many were left out); this is the count. The
    /// embedder exports it. Default: a fresh counter.
    pub refused_handshakes: Arc<AtomicU64>,
    /// At most one log line per this for refused handshakes. Default 10 s.
    pub refusal_log_interval: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            cluster: "quiz".to_string(),
            max_frame_bytes: DEFAULT_MAX_CLUSTER_FRAME,
            max_concurrent_bidi_streams: 1024,
            max_concurrent_uni_streams: 64,
            stream_receive_window: 1_250_000,
            connection_receive_window: 16 << 20,
            keep_alive_interval: Some(Duration::from_secs(1)),
            idle_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            stream_open_timeout: Duration::from_secs(5),
            max_pending_streams: 32,
            max_pending_handshakes: 64,
            close_timeout: Duration::from_secs(1),
            refused_handshakes: Arc::new(AtomicU64::new(0)),
            refusal_log_interval: Duration::from_secs(10),
        }
    }
}

impl EndpointConfig {
    /// The defaults, for the cluster `cluster`.
    pub fn new(cluster: impl Into<String>) -> Self {
        EndpointConfig {
            cluster: cluster.into(),
            ..EndpointConfig::default()
        }
    }

    /// Short intervals for tests: 200 ms keep-alive, 1 s idle timeout, 2 s handshake.
    pub fn for_test() -> Self {
        EndpointConfig {
            cluster: "test".to_string(),
            keep_alive_interval: Some(Duration::from_millis(200)),
            idle_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            stream_open_timeout: Duration::from_secs(2),
            close_timeout: Duration::from_millis(500),
            ..EndpointConfig::default()
        }
    }

    /// Checks the values before any socket is bound.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let fail = |msg: &str| Err(ClusterError::Config(msg.to_string()));
        if self.cluster.is_empty() {
            return fail("cluster name is empty");
        }
        if self.max_frame_bytes < 2 || u32::try_from(self.max_frame_bytes).is_err() {
            return fail("max_frame_bytes must be between 2 and u32::MAX");
        }
        if self.max_concurrent_bidi_streams == 0 {
            return fail("max_concurrent_bidi_streams must be at least 1");
        }
        if self.stream_receive_window == 0 || self.connection_receive_window == 0 {
            return fail("receive windows must be positive");
        }
        if VarInt::from_u64(self.stream_receive_window).is_err()
            || VarInt::from_u64(self.connection_receive_window).is_err()
        {
            return fail("receive windows must be below 2^62");
        }
        if let Some(k) = self.keep_alive_interval
            && (k.is_zero() || k >= self.idle_timeout)
        {
            return fail("keep_alive_interval must be positive and below idle_timeout");
        }
        if IdleTimeout::try_from(self.idle_timeout).is_err() {
            return fail("idle_timeout is too large");
        }
        if self.handshake_timeout.is_zero() || self.stream_open_timeout.is_zero() {
            return fail("timeouts must be positive");
        }
        if self.max_pending_streams == 0 || self.max_pending_handshakes == 0 {
            return fail("max_pending_streams and max_pending_handshakes must be at least 1");
        }
        Ok(())
    }

    /// quinn's transport settings for these values; call after [`validate`](Self::validate).
    pub(crate) fn transport(&self) -> Result<Arc<TransportConfig>, ClusterError> {
        let invalid = |e: &dyn std::fmt::Display| ClusterError::Config(e.to_string());
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_concurrent_uni_streams.into())
            .stream_receive_window(
                VarInt::from_u64(self.stream_receive_window).map_err(|e| invalid(&e))?,
            )
            .receive_window(
                VarInt::from_u64(self.connection_receive_window).map_err(|e| invalid(&e))?,
            )
            .keep_alive_interval(self.keep_alive_interval)
            .max_idle_timeout(Some(
                IdleTimeout::try_from(self.idle_timeout).map_err(|e| invalid(&e))?,
            ));
        Ok(Arc::new(t))
    }
}
