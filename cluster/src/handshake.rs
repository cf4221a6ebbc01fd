//! The Hello exchange that follows TLS on every connection, before it is handed out as a
//! [`Peer`](crate::Peer). The initiator opens the first bidirectional stream, sends its Hello
//! and finishes; the acceptor checks it and answers with its own Hello, or closes the
//! connection with [`CLOSE_REFUSED`] and the reason. Each side checks the other's Hello:
//!
//! - the frame's version (by the codec: another version is refused),
//! - the cluster name,
//! - that the peer's certificate (already verified against the CA) is valid for the node id
//!   it claims, so a node cannot pose as another,
//! - on the initiator, that the peer is the node it meant to reach, when it said which.
//!
//! Timeouts are the caller's (the endpoint bounds the whole handshake).

use quinn::{Connection, ConnectionError, VarInt};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::ClusterMessage;
use rustls::pki_types::CertificateDer;

use crate::config::EndpointConfig;
use crate::error::ClusterError;
use crate::frame::{FrameReader, FrameWriter};
use crate::tls::check_identity;

/// Connection close code: a normal close.
pub const CLOSE_OK: VarInt = VarInt::from_u32(0);
/// Connection close code: the Hello was refused; the reason is the close's text.
pub const CLOSE_REFUSED: VarInt = VarInt::from_u32(1);

/// The initiator's half: sends our Hello, reads and checks the peer's. Returns its node id.
pub(crate) async fn initiate(
    conn: &Connection,
    me: &NodeId,
    config: &EndpointConfig,
    expected: Option<&NodeId>,
) -> Result<NodeId, ClusterError> {
    let exchange = async {
        let (send, recv) = conn.open_bi().await?;
        let mut writer = FrameWriter::new(send, config.max_frame_bytes);
        writer.send(&hello(me, config)).await?;
        writer.finish()?;
        FrameReader::new(recv, config.max_frame_bytes)
            .next()
            .await?
            .ok_or(ClusterError::EndOfStream)
    };
    let reply = match exchange.await {
        Ok(reply) => reply,
        // A refusal closes the connection: report the peer's reason, not "closed".
        Err(e) => return Err(refusal(conn).unwrap_or(e)),
    };
    let node = check_hello(reply, conn, me, config)?;
    if let Some(expected) = expected
        && node != *expected
    {
        return Err(ClusterError::Handshake(format!(
            "expected node {expected}, reached {node}"
        )));
    }
    Ok(node)
}

/// The acceptor's half: reads and checks the initiator's Hello, answers with ours.
pub(crate) async fn answer(
    conn: &Connection,
    me: &NodeId,
    config: &EndpointConfig,
) -> Result<NodeId, ClusterError> {
    let (send, recv) = conn.accept_bi().await?;
    let first = FrameReader::new(recv, config.max_frame_bytes)
        .next()
        .await?
        .ok_or(ClusterError::EndOfStream)?;
    let node = check_hello(first, conn, me, config)?;
    let mut writer = FrameWriter::new(send, config.max_frame_bytes);
    writer.send(&hello(me, config)).await?;
    writer.finish()?;
    Ok(node)
}

fn hello(me: &NodeId, config: &EndpointConfig) -> ClusterMessage {
    ClusterMessage::Hello {
        node: me.clone(),
        cluster: config.cluster.clone(),
    }
}

fn check_hello(
    msg: ClusterMessage,
    conn: &Connection,
    me: &NodeId,
    config: &EndpointConfig,
) -> Result<NodeId, ClusterError> {
    let ClusterMessage::Hello { node, cluster } = msg else {
        return Err(ClusterError::Handshake(
            "the first frame is not a Hello".into(),
        ));
    };
    if cluster != config.cluster {
        return Err(ClusterError::Handshake(format!(
            "the peer is in cluster {cluster:?}, we are in {:?}",
            config.cluster
        )));
    }
    if node == *me {
        return Err(ClusterError::Handshake(format!(
            "the peer claims our own node id {me}"
        )));
    }
    check_identity(&peer_chain(conn), &node).map_err(ClusterError::Handshake)?;
    Ok(node)
}

/// The certificate chain the peer presented (verified against the CA by TLS).
fn peer_chain(conn: &Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
        .unwrap_or_default()
}

/// Why the peer closed the connection during the handshake, if it did.
fn refusal(conn: &Connection) -> Option<ClusterError> {
    match conn.close_reason()? {
        ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_REFUSED => Some(
            ClusterError::Handshake(String::from_utf8_lossy(&close.reason).into_owned()),
        ),
        // A TLS alert after the client's side of the handshake (our certificate refused).
        ConnectionError::ConnectionClosed(close) => Some(ClusterError::Connect(close.to_string())),
        _ => None,
    }
}
