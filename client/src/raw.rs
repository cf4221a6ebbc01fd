//! [`RawSocket`]: a bare WebSocket to an edge, for protocol tests that must send what a
//! well-behaved client never would (invalid UTF-8, binary frames, oversized or fragmented
//! frames, garbage JSON) and see exactly what comes back, close code included.
//!
//! No reconnects, no background task, no bookkeeping: one socket, used from one task.
//! Pings are answered inside [`RawSocket::recv`], and a close frame from the server is
//! echoed there too.
//!
//! `recv` is not cancel-safe (fastwebsockets' `read_frame` is not): if a timeout around it
//! fires, a frame may have been half read, so drop the socket rather than read again.

use fastwebsockets::{Frame, Payload, WebSocketError};
use quiz_protocol::DecodeError;
use quiz_protocol::client::{ClientMessage, ServerMessage};

use crate::handshake::{self, HandshakeError, Ws};

pub use fastwebsockets::OpCode;

/// A frame as received.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The code of a close frame (`None` for other frames and for a close without code).
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (OpCode::Close, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// The payload as text, for text frames and the reason of a close frame.
    pub fn text(&self) -> Option<&str> {
        match self.opcode {
            OpCode::Text => std::str::from_utf8(&self.payload).ok(),
            OpCode::Close => std::str::from_utf8(self.payload.get(2..)?).ok(),
            _ => None,
        }
    }
}

/// What went wrong on a raw socket.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error(transparent)]
    WebSocket(#[from] WebSocketError),
    /// `recv_message` got a frame that is not a server message.
    #[error("expected a server message, got {opcode:?} {text:?}")]
    NotAMessage {
        opcode: OpCode,
        /// The close code, for a close frame.
        close_code: Option<u16>,
        text: String,
    },
    #[error("undecodable server frame: {0}")]
    Decode(#[from] DecodeError),
}

/// A WebSocket after the upgrade, as fastwebsockets gives it: for callers that drive the
/// frames themselves (a load generator splits it into a reader and a writer).
pub type WebSocketStream =
    fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Opens a WebSocket to `url` (`?token=` appended when given) from source address `local`
/// when given, and hands it over as is: nothing is sent, pings are not answered for you.
pub async fn open_websocket(
    url: &str,
    token: Option<&str>,
    local: Option<std::net::IpAddr>,
) -> Result<WebSocketStream, HandshakeError> {
    handshake::open(url, token, local).await
}

/// A bare WebSocket; see the module docs.
pub struct RawSocket {
    ws: Ws,
}

impl std::fmt::Debug for RawSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSocket").finish_non_exhaustive()
    }
}

impl RawSocket {
    /// Opens a socket to `url`, with `?token=` appended when given. Nothing is sent: the
    /// test decides whether and when to `join`.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<RawSocket, HandshakeError> {
        let mut ws = handshake::open(url, token, None).await?;
        // Let the test see oversized server frames rather than fail on them.
        ws.set_max_message_size(usize::MAX);
        Ok(RawSocket { ws })
    }

    /// Sends a text frame with any bytes, valid UTF-8 or not.
    pub async fn send_text(&mut self, payload: impl Into<Vec<u8>>) -> Result<(), RawError> {
        self.send_frame(true, OpCode::Text, payload).await
    }

    pub async fn send_binary(&mut self, payload: impl Into<Vec<u8>>) -> Result<(), RawError> {
        self.send_frame(true, OpCode::Binary, payload).await
    }

    /// Sends a client message as JSON.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), RawError> {
        let json = serde_json::to_vec(msg).unwrap_or_default();
        self.send_text(json).await
    }

    /// Sends any single frame: a fragment (`fin: false`, then `Continuation`s), a ping...
    pub async fn send_frame(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), RawError> {
        let frame = Frame::new(fin, opcode, None, Payload::Owned(payload.into()));
        Ok(self.ws.write_frame(frame).await?)
    }

    /// Sends a frame without the mask every client frame must carry (RFC 6455 §5.1), to see
    /// the server refuse it.
    pub async fn send_unmasked(
        &mut self,
        opcode: OpCode,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), RawError> {
        self.ws.set_auto_apply_mask(false);
        let sent = self.send_frame(true, opcode, payload).await;
        self.ws.set_auto_apply_mask(true);
        sent
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), RawError> {
        Ok(self
            .ws
            .write_frame(Frame::close(code, reason.as_bytes()))
            .await?)
    }

    /// Reads the next frame (pings are answered and skipped).
    pub async fn recv(&mut self) -> Result<RawFrame, RawError> {
        let frame = self.ws.read_frame().await?;
        Ok(RawFrame {
            fin: frame.fin,
            opcode: frame.opcode,
            payload: frame.payload.to_vec(),
        })
    }

    /// Reads the next frame and decodes it as a server message; anything else (a close
    /// frame, say) is a [`RawError::NotAMessage`] that carries it.
    pub async fn recv_message(&mut self) -> Result<ServerMessage, RawError> {
        let frame = self.recv().await?;
        if frame.opcode == OpCode::Text {
            return Ok(quiz_protocol::client::decode_server(&frame.payload)?);
        }
        Err(RawError::NotAMessage {
            opcode: frame.opcode,
            close_code: frame.close_code(),
            text: frame.text().unwrap_or_default().to_owned(),
        })
    }

    /// Reads until the server closes; returns the close code (`None` if the socket ended
    /// without a close frame or the close had no code).
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Ok(f) if f.opcode == OpCode::Close => return f.close_code(),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}
