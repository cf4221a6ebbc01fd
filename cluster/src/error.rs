//! The errors of this crate, one enum per boundary: [`TlsError`] for loading and issuing
//! certificates, [`ClusterError`] for everything on the wire. Both are `Clone` so a failed
//! stream can hand the same error out again.

use quiz_protocol::DecodeError;

/// Loading, parsing or issuing the cluster's certificates and keys.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("bad PEM ({what}): {message}")]
    Pem { what: &'static str, message: String },
    #[error("no certificate in the {0} PEM")]
    NoCertificate(&'static str),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// A transport failure: binding, connecting, the Hello exchange, or a frame on a stream.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid endpoint configuration: {0}")]
    Config(String),
    #[error("cannot bind: {0}")]
    Bind(String),
    /// The QUIC or TLS handshake failed (unreachable peer, certificate refused either way).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The Hello exchange failed: wrong cluster, unexpected node, identity not in the
    /// certificate, not a Hello, or the peer refused ours.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// A frame in a cluster protocol version this build does not speak.
    #[error("unsupported cluster protocol version {0}")]
    Version(u8),
    /// A frame header announced more than the limit; the body was never read.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The stream ended cleanly before the frame we needed (a reply, a first message).
    #[error("stream ended before the expected frame")]
    EndOfStream,
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The connection or the stream is gone; the text says why.
    #[error("closed: {0}")]
    Closed(String),
    #[error("timed out")]
    Timeout,
}

impl ClusterError {
    /// Whether this is a fault of the bytes the peer sent (as opposed to the link).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            ClusterError::Version(_)
                | ClusterError::Oversized { .. }
                | ClusterError::Truncated
                | ClusterError::Malformed(_)
        )
    }
}

impl From<DecodeError> for ClusterError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge { len, max } => ClusterError::Oversized { len, max },
            DecodeError::Version(v) => ClusterError::Version(v),
            other => ClusterError::Malformed(other.to_string()),
        }
    }
}

impl From<quinn::ConnectionError> for ClusterError {
    fn from(e: quinn::ConnectionError) -> Self {
        ClusterError::Closed(e.to_string())
    }
}

impl From<quinn::ReadError> for ClusterError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(e) => e.into(),
            other => ClusterError::Closed(other.to_string()),
        }
    }
}

impl From<quinn::WriteError> for ClusterError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(e) => e.into(),
            other => ClusterError::Closed(other.to_string()),
        }
    }
}

impl From<quinn::ClosedStream> for ClusterError {
    fn from(e: quinn::ClosedStream) -> Self {
        ClusterError::Closed(e.to_string())
    }
}
