//! The writer task: the only owner of a socket's write half, fed by a bounded channel.
//!
//! It outlives sockets: the session task hands it each new write half (`Attach`) and it
//! writes that socket's `join`; once the server has answered the join (`Joined`) it writes
//! every answer still awaiting an ack, so no answer reaches an edge before the join it
//! depends on. Frames are tagged with the socket generation they were meant for, so a host
//! command meant for a socket that died is never written to its successor. Answers are
//! looked up in the shared state at write time, which keeps them from being written twice
//! to one socket.

use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use quiz_protocol::client::close;
use tokio::io::WriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// The write half of a client socket.
pub(crate) type WsWrite = WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>;

/// What the writer is told to do. Kept small: the channel holds blocks of these.
pub(crate) enum Outbound {
    /// A new socket: write `join` on it.
    Attach {
        generation: u64,
        ws: Box<WsWrite>,
        join: Bytes,
        /// Cancelled by the writer when a write fails, so the session drops the socket
        /// instead of reading from a socket it can no longer write to.
        dead: CancellationToken,
    },
    /// The socket of this generation got its `welcome` or `resumed`: answers may go.
    Joined { generation: u64 },
    /// The socket of this generation is gone.
    Detach { generation: u64 },
    /// Write pending answer `local` on the live, joined socket, unless already written there.
    Answer { local: u64 },
    /// A request frame for one socket only (not idempotent: never re-sent elsewhere).
    Request { generation: u64, frame: Bytes },
    /// A pong or a close reply for one socket.
    Control {
        generation: u64,
        opcode: OpCode,
        payload: Vec<u8>,
    },
    /// Stop; say goodbye with a 1000 close frame first if `close`.
    Shutdown { close: bool },
}

/// The socket being written to.
struct Live {
    generation: u64,
    ws: Box<WsWrite>,
    dead: CancellationToken,
    joined: bool,
}

/// Runs until `Shutdown` or until every sender is gone.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outbound>) {
    let mut live: Option<Live> = None;
    let is_live =
        |live: &Option<Live>, generation| live.as_ref().is_some_and(|l| l.generation == generation);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Outbound::Attach {
                generation,
                ws,
                join,
                dead,
            } => {
                live = Some(Live {
                    generation,
                    ws,
                    dead,
                    joined: false,
                });
                write_text(&shared, &mut live, &join).await;
            }
            Outbound::Joined { generation } => {
                let Some(l) = live.as_mut().filter(|l| l.generation == generation) else {
                    continue;
                };
                l.joined = true;
                // An answer queued behind this command finds itself already written and is
                // skipped; one registered later is written by its own command.
                let resend = shared.state().answers_to_resend(generation);
                if !resend.is_empty() {
                    tracing::debug!(count = resend.len(), "sending pending answers");
                }
                for frame in resend {
                    write_text(&shared, &mut live, &frame).await;
                }
            }
            Outbound::Detach { generation } => {
                if is_live(&live, generation) {
                    live = None;
                }
            }
            Outbound::Answer { local } => {
                let Some(l) = live.as_ref().filter(|l| l.joined) else {
                    continue; // written when a socket has joined
                };
                let frame = shared.state().answer_to_send(local, l.generation);
                if let Some(frame) = frame {
                    write_text(&shared, &mut live, &frame).await;
                }
            }
            Outbound::Request { generation, frame } => {
                if is_live(&live, generation) {
                    write_text(&shared, &mut live, &frame).await;
                }
            }
            Outbound::Control {
                generation,
                opcode,
                payload,
            } => {
                if is_live(&live, generation) {
                    let frame = Frame::new(true, opcode, None, Payload::Owned(payload));
                    write(&shared, &mut live, frame).await;
                }
            }
            Outbound::Shutdown { close } => {
                if close {
                    let bye = Frame::close(close::NORMAL, b"");
                    write(&shared, &mut live, bye).await;
                }
                return;
            }
        }
    }
}

/// Writes a text frame. The bytes are copied: the client masks its frames in place.
async fn write_text(shared: &Shared, live: &mut Option<Live>, text: &[u8]) {
    write(shared, live, Frame::text(Payload::Owned(text.to_vec()))).await;
}

/// Writes one frame to the live socket, bounded by the idle timeout. A failed or stuck
/// write gives the socket up and tells the session to drop it.
async fn write(shared: &Shared, live: &mut Option<Live>, frame: Frame<'_>) {
    let Some(l) = live else { return };
    if l.ws.is_closed() {
        return; // a close frame went out; nothing may follow it
    }
    let limit = shared.options.idle_timeout;
    let failure = match tokio::time::timeout(limit, l.ws.write_frame(frame)).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "write stuck".to_owned(),
    };
    tracing::debug!(generation = l.generation, %failure, "giving the socket up");
    l.dead.cancel();
    *live = None;
}
