//! The session task: reads one socket after another for the life of a connection.
//!
//! For each socket it hands the write half to the writer (which sends `join`, and the
//! pending answers once the join is answered), then reads frames until the socket ends: an
//! I/O error, a close frame, the idle timeout, a failed write, or shutdown. A close code
//! from the server, or a refused join, decides whether the session is over
//! ([`CloseReason::from_close_code`]); otherwise it reconnects with full-jitter backoff,
//! moving to the next of the ticket's `ws_urls` after each failure, and asks the refresh
//! hook for a new ticket when an edge says `token_expired`.
//!
//! `read_frame` is not cancel-safe (a partly read frame is lost), so the read is only ever
//! raced against the idle timer, a failed write and shutdown, and the socket is abandoned
//! whenever one of those wins: nothing reads from it after a cancelled read.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{FragmentCollectorRead, Frame, OpCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::writer::{Outbound, WsWrite as WsWriteHalf};
use super::{CloseReason, ConnectError, Event, Shared};
use crate::handshake::{self, HandshakeError, Verdict, Ws};
use crate::options::Options;
use crate::router::JoinTicket;
use quiz_protocol::client::{ErrorFrame, ServerMessage};

/// How a socket ended.
#[derive(Debug)]
enum End {
    /// I/O error, EOF, or a failed write: reconnect.
    Lost(String),
    /// No frame within the idle timeout: reconnect.
    Idle,
    /// The server sent a close frame.
    Closed { code: Option<u16>, text: String },
    /// The edge answered `join` with a definite error, then closed with `close` (or did not
    /// close within the grace period).
    JoinRefused {
        error: ErrorFrame,
        close: Option<u16>,
    },
    /// The application closed the connection.
    Shutdown,
}

/// How long to wait for the close that usually follows a refused join.
const JOIN_REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// What a text frame meant for the socket's life.
enum Heard {
    /// It answered the join.
    Joined,
    /// An error before the join was answered: the join was refused.
    JoinRefused(ErrorFrame),
    Other,
}

/// The session task's state.
pub(crate) struct Session {
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    ticket: JoinTicket,
    /// Index into `ticket.ws_urls` of the edge in use or to try next.
    url: usize,
    writer: JoinHandle<()>,
    /// Present until the first join is answered; `connect` waits on it.
    ready: Option<oneshot::Sender<Result<(), ConnectError>>>,
    /// Cancels `Shared::finished` when the session is dropped, even by a panic, so
    /// `close()` never waits forever.
    _finished: DropGuard,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The writer holds the shared state, which holds its channel's sender: it does not
        // see the channel close, so make sure it stops with the session.
        self.writer.abort();
    }
}

/// Opens the first socket: each URL once, refreshing an expired ticket once. Returns the
/// socket, the ticket in use, and the index of the URL that worked.
pub(crate) async fn first_socket(
    mut ticket: JoinTicket,
    options: &Options,
) -> Result<(Ws, JoinTicket, usize), ConnectError> {
    let mut refreshed = false;
    'tickets: loop {
        let mut last = None;
        for (i, url) in ticket.ws_urls.iter().enumerate() {
            let e = match open(url, &ticket, options).await {
                Ok(ws) => return Ok((ws, ticket, i)),
                Err(e) => e,
            };
            tracing::debug!(url, error = %e, "connect failed");
            match e.verdict() {
                Verdict::Retry => last = Some(e),
                Verdict::Refresh if !refreshed && options.refresh.is_some() => {
                    if let Some(refresh) = &options.refresh {
                        let limit = options.connect_timeout;
                        ticket = tokio::time::timeout(limit, refresh.call())
                            .await
                            .map_err(|_| ConnectError::Timeout)?
                            .map_err(ConnectError::Refresh)?;
                    }
                    refreshed = true;
                    if ticket.ws_urls.is_empty() {
                        return Err(ConnectError::NoUrls);
                    }
                    continue 'tickets;
                }
                Verdict::Refresh | Verdict::Final => return Err(e.into()),
            }
        }
        return Err(last.map_or(ConnectError::NoUrls, ConnectError::Handshake));
    }
}

/// One handshake, bounded by the connect timeout. Boxed: the handshake future is large and
/// would otherwise be part of every idle session task's size.
async fn open(url: &str, ticket: &JoinTicket, options: &Options) -> Result<Ws, HandshakeError> {
    let handshake = Box::pin(handshake::open(
        url,
        Some(&ticket.session_token),
        options.local_addr,
    ));
    tokio::time::timeout(options.connect_timeout, handshake)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        events: mpsc::Sender<Event>,
        ticket: JoinTicket,
        url: usize,
        writer: JoinHandle<()>,
        ready: oneshot::Sender<Result<(), ConnectError>>,
    ) -> Self {
        Self {
            _finished: shared.finished.clone().drop_guard(),
            shared,
            events,
            ticket,
            url,
            writer,
            ready: Some(ready),
        }
    }

    /// Serves sockets until the session ends for good.
    pub(crate) async fn run(mut self, first: Ws) {
        let mut ws = first;
        // Failed attempts since the last socket that joined.
        let mut failures = 0u32;
        let (code, reason) = loop {
            let (end, joined) = self.serve(ws).await;
            if joined {
                failures = 0;
            }
            let generation = {
                let mut state = self.shared.state();
                state.on_disconnect();
                state.generation
            };
            self.shared
                .outbound
                .send(Outbound::Detach { generation })
                .await
                .ok();
            let code = match &end {
                End::Closed { code, text } => {
                    tracing::debug!(?code, text, "server closed the socket");
                    *code
                }
                End::JoinRefused { error, close } => {
                    tracing::debug!(code = %error.code, ?close, "join refused");
                    *close
                }
                End::Lost(error) => {
                    tracing::debug!(error, "socket lost");
                    None
                }
                End::Idle | End::Shutdown => {
                    tracing::debug!(?end, "socket ended");
                    None
                }
            };
            if let Some(reason) = self.verdict(&end) {
                break (code, reason);
            }
            self.next_url();
            match self.reconnect(&mut failures).await {
                Ok(next) => ws = next,
                Err(reason) => break (None, reason),
            }
        };
        // `leave()` ends with a close of its own when the server does not close first.
        let reason = match reason {
            CloseReason::ClientClosed if self.shared.state().leaving => CloseReason::Left,
            other => other,
        };
        self.finish(code, reason).await;
    }

    /// Whether the end of a socket ends the session.
    fn verdict(&self, end: &End) -> Option<CloseReason> {
        if self.shared.state().leaving {
            return Some(CloseReason::Left);
        }
        match end {
            End::Shutdown => Some(CloseReason::ClientClosed),
            End::Closed { code, .. } => CloseReason::from_close_code(*code),
            End::JoinRefused { error, close } => match CloseReason::from_close_code(*close) {
                Some(r @ (CloseReason::Kicked | CloseReason::QuizGone)) => Some(r),
                // The edge closed with a code that says "try again" (1001, 1011...).
                None if close.is_some() => None,
                _ => Some(CloseReason::Refused {
                    status: 0,
                    code: Some(error.code),
                    message: error.message.clone(),
                }),
            },
            End::Lost(_) | End::Idle => None,
        }
    }

    /// Reads one socket until it ends. Returns how, and whether its join was answered.
    async fn serve(&mut self, ws: Ws) -> (End, bool) {
        let (mut read, write) = ws.split(tokio::io::split);
        read.set_auto_pong(false); // pongs are sent here, so pings reset the idle timer
        read.set_max_message_size(self.shared.options.max_frame);
        let mut read = FragmentCollectorRead::new(read);
        let Some((generation, dead)) = self.attach(write).await else {
            return (End::Shutdown, false);
        };
        let outbound = self.shared.outbound.clone();
        // fastwebsockets' obligated sends (the reply to a close frame) go through the writer.
        let mut send_fn = move |frame: Frame<'_>| {
            let outbound = outbound.clone();
            let control = Outbound::Control {
                generation,
                opcode: frame.opcode,
                payload: frame.payload.to_vec(),
            };
            async move {
                outbound
                    .send(control)
                    .await
                    .map_err(|_| std::io::Error::other("writer stopped"))
            }
        };
        let idle = self.shared.options.idle_timeout;
        let mut joined = false;
        // Set when the join was refused for good; the close that follows says how.
        let mut refusal: Option<ErrorFrame> = None;
        loop {
            let limit = match refusal {
                Some(_) => idle.min(JOIN_REFUSAL_GRACE),
                None => idle,
            };
            let frame = tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return (End::Shutdown, joined),
                _ = dead.cancelled() => return (End::Lost("write failed".into()), joined),
                read = tokio::time::timeout(limit, read.read_frame(&mut send_fn)) => read,
            };
            let frame = match frame {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => return (End::Lost(e.to_string()), joined),
                Err(_) => {
                    let end =
                        refusal.map_or(End::Idle, |error| End::JoinRefused { error, close: None });
                    return (end, joined);
                }
            };
            match frame.opcode {
                OpCode::Text => match self.on_text(&frame.payload, generation).await {
                    Heard::Joined => joined = true,
                    // The owner is busy or failing over: try a new socket after a backoff.
                    Heard::JoinRefused(e) if e.retryable => {
                        return (End::Lost(format!("join refused: {}", e.code)), joined);
                    }
                    Heard::JoinRefused(e) => refusal = Some(e),
                    Heard::Other => {}
                },
                OpCode::Ping => {
                    let pong = Outbound::Control {
                        generation,
                        opcode: OpCode::Pong,
                        payload: frame.payload.to_vec(),
                    };
                    self.shared.outbound.send(pong).await.ok();
                }
                OpCode::Close => {
                    let (code, text) = parse_close(&frame.payload);
                    let end = match refusal {
                        Some(error) => End::JoinRefused { error, close: code },
                        None => End::Closed { code, text },
                    };
                    return (end, joined);
                }
                // Binary and unsolicited pongs are not part of the protocol; ignore them.
                _ => {}
            }
        }
    }

    /// Starts a socket generation and hands the write half to the writer, which sends the
    /// `join`. Returns the generation and the token the writer cancels if a write fails;
    /// `None` if the writer has stopped.
    async fn attach(&self, write: WsWriteHalf) -> Option<(u64, CancellationToken)> {
        let (generation, join) = {
            let mut state = self.shared.state();
            let generation = state.attach();
            (generation, state.join_frame())
        };
        let dead = CancellationToken::new();
        let attach = Outbound::Attach {
            generation,
            ws: Box::new(write),
            join,
            dead: dead.clone(),
        };
        self.shared.outbound.send(attach).await.ok()?;
        Some((generation, dead))
    }

    /// Handles a text frame: routes it, hands it to the application, and says what it
    /// meant for the socket.
    async fn on_text(&mut self, payload: &[u8], generation: u64) -> Heard {
        use std::sync::atomic::Ordering;
        self.shared
            .bytes_received
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let msg = match quiz_protocol::client::decode_server(payload) {
            Ok(msg) => msg,
            Err(e) => {
                // A newer server's frame type, most likely: skip it rather than drop the socket.
                tracing::debug!(error = %e, "undecodable frame from the server");
                return Heard::Other;
            }
        };
        let (verdict, joined) = {
            let mut state = self.shared.state();
            let verdict = state.on_frame(&msg);
            (verdict, state.joined)
        };
        // Nothing but `join` is sent before the join is answered (answers and requests wait
        // for it), so an error then is the join's.
        let heard = match &msg {
            _ if verdict.joined_now => Heard::Joined,
            ServerMessage::Error(e) if !joined && e.answer_id.is_none() => {
                Heard::JoinRefused(e.clone())
            }
            _ => Heard::Other,
        };
        if verdict.joined_now {
            // Pending answers may go now that the edge knows who this socket is.
            let joined = Outbound::Joined { generation };
            self.shared.outbound.send(joined).await.ok();
            match self.ready.take() {
                Some(ready) => {
                    let _ = ready.send(Ok(()));
                }
                None => self.emit(Event::Reconnected).await,
            }
        }
        if verdict.deliver {
            self.emit(Event::Frame(Box::new(msg))).await;
        }
        heard
    }

    /// Gets a new socket, or says why the session is over.
    async fn reconnect(&mut self, failures: &mut u32) -> Result<Ws, CloseReason> {
        let policy = self.shared.options.reconnect;
        let mut wait = true;
        loop {
            *failures += 1;
            if *failures > policy.max_attempts {
                return Err(CloseReason::GaveUp {
                    attempts: *failures - 1,
                });
            }
            self.emit(Event::Reconnecting { attempt: *failures }).await;
            if wait {
                let delay = policy.delay(*failures, &mut rand::rng());
                tokio::select! {
                    _ = self.shared.shutdown.cancelled() => return Err(CloseReason::ClientClosed),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            wait = true;
            let Some(url) = self.ticket.ws_urls.get(self.url) else {
                return Err(CloseReason::GaveUp {
                    attempts: *failures,
                });
            };
            let result = tokio::select! {
                _ = self.shared.shutdown.cancelled() => return Err(CloseReason::ClientClosed),
                r = open(url, &self.ticket, &self.shared.options) => r,
            };
            let e = match result {
                Ok(ws) => return Ok(ws),
                Err(e) => e,
            };
            tracing::debug!(url, attempt = *failures, error = %e, "reconnect failed");
            match e.verdict() {
                Verdict::Retry => self.next_url(),
                Verdict::Final => return Err(refused(&e)),
                // A fresh ticket is worth trying at once; a failed refresh backs off.
                Verdict::Refresh => wait = !self.refresh(&e).await?,
            }
        }
    }

    /// Replaces the ticket through the refresh hook after `token_expired`. `Ok(false)`: the
    /// hook failed in a way worth retrying later.
    async fn refresh(&mut self, expired: &HandshakeError) -> Result<bool, CloseReason> {
        let Some(hook) = self.shared.options.refresh.clone() else {
            return Err(refused(expired));
        };
        let limit = self.shared.options.connect_timeout;
        let result = tokio::select! {
            _ = self.shared.shutdown.cancelled() => return Err(CloseReason::ClientClosed),
            r = tokio::time::timeout(limit, hook.call()) => r,
        };
        match result {
            Ok(Ok(ticket)) if !ticket.ws_urls.is_empty() => {
                tracing::debug!("session ticket refreshed");
                self.ticket = ticket;
                self.url = 0;
                Ok(true)
            }
            Ok(Ok(_)) => Err(CloseReason::Refused {
                status: 0,
                code: None,
                message: "the refreshed ticket has no ws_urls".into(),
            }),
            Ok(Err(e)) if !e.retryable() => Err(CloseReason::Refused {
                status: e.status().unwrap_or(0),
                code: e.code(),
                message: e.to_string(),
            }),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "refresh failed; will retry");
                Ok(false)
            }
            Err(_) => Ok(false), // timed out: counts as a failed attempt, retried
        }
    }

    fn next_url(&mut self) {
        self.url = (self.url + 1) % self.ticket.ws_urls.len().max(1);
    }

    /// Ends the session: wakes every waiter, stops the writer, emits `Closed`.
    async fn finish(mut self, code: Option<u16>, reason: CloseReason) {
        tracing::debug!(%reason, ?code, "session over");
        self.shared.state().on_close(reason.clone());
        // Say goodbye only when the client ends it; otherwise the server already closed.
        let close = matches!(reason, CloseReason::ClientClosed | CloseReason::Left);
        let stop = self.shared.outbound.send(Outbound::Shutdown { close });
        let limit = std::time::Duration::from_secs(1);
        if tokio::time::timeout(limit, stop).await.is_err()
            || tokio::time::timeout(limit, &mut self.writer).await.is_err()
        {
            self.writer.abort();
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ConnectError::Closed {
                code,
                reason: reason.clone(),
            }));
        }
        self.emit(Event::Closed { code, reason }).await;
        // Dropping `self` cancels `finished`.
    }

    /// Gives an event to the application; waits while its queue is full, unless the
    /// application is closing the connection (then the event is dropped).
    async fn emit(&self, event: Event) {
        tokio::select! {
            biased;
            _ = self.events.send(event) => {}
            _ = self.shared.shutdown.cancelled() => {}
        }
    }
}

fn refused(e: &HandshakeError) -> CloseReason {
    match e {
        HandshakeError::Refused {
            status,
            code,
            message,
            ..
        } => CloseReason::Refused {
            status: *status,
            code: *code,
            message: message.clone(),
        },
        other => CloseReason::Refused {
            status: 0,
            code: None,
            message: other.to_string(),
        },
    }
}

/// The code and reason of a close frame's payload.
fn parse_close(payload: &[u8]) -> (Option<u16>, String) {
    match payload {
        [hi, lo, text @ ..] => (
            Some(u16::from_be_bytes([*hi, *lo])),
            String::from_utf8_lossy(text).into_owned(),
        ),
        _ => (None, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payloads() {
        assert_eq!(
            parse_close(&[0x0f, 0xa3, b'b', b'y']),
            (Some(4003), "by".into())
        );
        assert_eq!(parse_close(&[]), (None, String::new()));
        assert_eq!(parse_close(&[3]), (None, String::new()));
    }
}
