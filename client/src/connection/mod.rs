//! One phone's live connection to a quiz: [`QuizConnection`] to act, [`EventStream`] to
//! hear what happens.
//!
//! Each connection runs two tasks. The session task (`session.rs`) owns the read half of the
//! socket and everything about its life: the handshake after the first, `join` with the
//! highest `seq` seen, the idle timeout, reconnecting with jittered backoff, and routing
//! every frame (acks to the `answer` call waiting for them, `host_ok` to `host`, ...). The
//! writer task (`writer.rs`) owns the write half and is fed by a bounded channel. The
//! bookkeeping they share (`state.rs`) is I/O-free and sits behind a briefly held mutex.
//!
//! Guarantees: an answer is sent with one `answer_id` for its whole life and re-sent on
//! every new socket until it is acked or definitely refused, so it counts at most once and
//! is not lost to a reconnect. Host commands and `next` are not idempotent: one in flight
//! when the socket drops fails with [`RequestError::Disconnected`] rather than run twice.
//! Replayed events are delivered once, in `seq` order.

mod session;
mod state;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use quiz_protocol::client::{
    Ack, ClientMessage, ErrorFrame, HostFrame, HostOk, QuestionFrame, ServerMessage, close,
};
use quiz_protocol::{Answer, AnswerId, ErrorCode, HostCommand};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::handshake::HandshakeError;
use crate::options::Options;
use crate::router::{ClientError, JoinTicket};
use state::{AnswerReply, State, Waiter};
use writer::Outbound;

pub use crate::options::Refresh;

/// Something that happened on the connection, in order.
#[derive(Clone, PartialEq, Debug)]
pub enum Event {
    /// A frame from the server: `welcome`, `resumed` and the replayed events after it,
    /// questions, reveals, leaderboards, acks, `host_ok`, errors... Boxed to keep the event
    /// queue small.
    Frame(Box<ServerMessage>),
    /// The socket dropped; attempt `attempt` (1-based) to get a new one is starting.
    Reconnecting { attempt: u32 },
    /// A new socket joined; its `welcome` or `resumed` frame comes next.
    Reconnected,
    /// The session is over; the stream ends after this. `code` is the WebSocket close code,
    /// when the server sent one.
    Closed {
        code: Option<u16>,
        reason: CloseReason,
    },
}

/// Why a session ended for good.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CloseReason {
    /// The server closed normally (1000): the quiz is over.
    Normal,
    /// After [`QuizConnection::leave`].
    Left,
    /// The host removed this player (4003).
    Kicked,
    /// The quiz no longer exists on this cluster (4004).
    QuizGone,
    /// The server judged a frame from this client broken (1003, 1007, 1008, 1009), or
    /// closed with a code this SDK does not retry.
    Protocol { code: u16 },
    /// The edge refused the session in a way retrying will not fix: the upgrade failed with
    /// `unauthorized`, an expired token without a refresh hook, or a refresh hook error
    /// (`status` is the HTTP status), or `join` was answered with a definite error such as
    /// `quiz_full` or `quiz_ended` (`status` is 0).
    Refused {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    /// Every reconnect attempt failed.
    GaveUp { attempts: u32 },
    /// [`QuizConnection::close`] was called, or every handle was dropped.
    ClientClosed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Normal => f.write_str("the server closed the session (quiz over)"),
            CloseReason::Left => f.write_str("left the quiz"),
            CloseReason::Kicked => f.write_str("removed by the host"),
            CloseReason::QuizGone => f.write_str("the quiz no longer exists"),
            CloseReason::Protocol { code } => write!(f, "closed by the server with {code}"),
            CloseReason::Refused {
                status, message, ..
            } => write!(f, "refused with {status}: {message}"),
            CloseReason::GaveUp { attempts } => {
                write!(f, "gave up after {attempts} reconnect attempts")
            }
            CloseReason::ClientClosed => f.write_str("closed by the client"),
        }
    }
}

impl CloseReason {
    /// What a close code from the server means: `None` when the client should reconnect
    /// (1001 going away, 1011 internal, 4008 too slow, 4009 timeout, no code at all).
    pub fn from_close_code(code: Option<u16>) -> Option<CloseReason> {
        match code {
            None
            | Some(
                close::GOING_AWAY | close::INTERNAL | close::TOO_SLOW | close::TIMEOUT
                // Service restart, try again later, bad gateway (RFC 6455 registry).
                | 1012..=1014,
            ) => None,
            Some(close::NORMAL) => Some(CloseReason::Normal),
            Some(close::KICKED) => Some(CloseReason::Kicked),
            Some(close::QUIZ_GONE) => Some(CloseReason::QuizGone),
            Some(code) => Some(CloseReason::Protocol { code }),
        }
    }
}

/// Why `answer` did not return an ack.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
pub enum AnswerError {
    /// A definite rejection (`too_late`, `already_answered`, `bad_answer`, ...).
    #[error("answer rejected: {} ({})", .0.code, .0.message)]
    Rejected(ErrorFrame),
    /// Neither an ack nor a definite rejection before the answer timeout; the answer may
    /// or may not count. `last_error` is the last retryable error seen, if any.
    #[error("no ack within the answer timeout")]
    Timeout { last_error: Option<ErrorFrame> },
    /// The session ended before the answer was settled.
    #[error("session closed: {0}")]
    Closed(CloseReason),
}

/// Why `host` or `next` did not get its reply.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
pub enum RequestError {
    #[error("rejected: {} ({})", .0.code, .0.message)]
    Rejected(ErrorFrame),
    /// Not sent: the connection is between sockets. Try again after `Reconnected`.
    #[error("not connected (reconnecting)")]
    NotConnected,
    /// Sent, but the socket dropped before the reply: it may or may not have run.
    #[error("the connection dropped before the reply; the command may or may not have run")]
    Disconnected,
    #[error("no reply within the request timeout")]
    Timeout,
    #[error("session closed: {0}")]
    Closed(CloseReason),
}

/// Why [`QuizConnection::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the ticket has no ws_urls")]
    NoUrls,
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("refreshing the expired ticket failed: {0}")]
    Refresh(#[source] ClientError),
    /// The session ended before its first welcome.
    #[error("closed before the welcome: {reason}")]
    Closed {
        code: Option<u16>,
        reason: CloseReason,
    },
    #[error("no welcome within the connect timeout")]
    Timeout,
}

/// The receiving side of a connection: every [`Event`], in order, ending with
/// [`Event::Closed`]. Bounded: read it (or drop it) or the connection stops reading.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
}

impl EventStream {
    /// The next event; `None` after [`Event::Closed`].
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// What the handles and both tasks of one connection share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) options: Options,
    pub(crate) outbound: mpsc::Sender<Outbound>,
    /// Cancelled to stop the session (close, leave, last handle dropped).
    pub(crate) shutdown: CancellationToken,
    /// Cancelled by the session task when both tasks are done.
    pub(crate) finished: CancellationToken,
    pub(crate) bytes_received: AtomicU64,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way worse
        // than losing the connection, so keep going with what is there.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_reason(&self) -> CloseReason {
        self.state()
            .closed
            .clone()
            .unwrap_or(CloseReason::ClientClosed)
    }
}

/// A handle to one phone's connection. Cheap to clone; the session ends when
/// [`close`](Self::close) is called or the last clone is dropped.
#[derive(Clone)]
pub struct QuizConnection {
    shared: Arc<Shared>,
    _stop_on_drop: Arc<DropGuard>,
}

impl fmt::Debug for QuizConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuizConnection")
            .field("last_seq", &self.last_seq())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl QuizConnection {
    /// Opens the socket (trying each of the ticket's `ws_urls` once, refreshing the ticket
    /// once if it has expired), sends `join`, and returns when the `welcome` has arrived; it
    /// is the first event of the stream. From then on, drops are handled by reconnecting.
    pub async fn connect(
        ticket: JoinTicket,
        options: Options,
    ) -> Result<(QuizConnection, EventStream), ConnectError> {
        if ticket.ws_urls.is_empty() {
            return Err(ConnectError::NoUrls);
        }
        let (ws, ticket, url) = session::first_socket(ticket, &options).await?;
        let (out_tx, out_rx) = mpsc::channel(options.send_capacity.max(1));
        let (ev_tx, ev_rx) = mpsc::channel(options.event_capacity.max(1));
        let connect_timeout = options.connect_timeout;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            options,
            outbound: out_tx,
            shutdown: CancellationToken::new(),
            finished: CancellationToken::new(),
            bytes_received: AtomicU64::new(0),
        });
        let span = tracing::info_span!(
            "quiz_connection",
            quiz = %ticket.quiz_id,
            nickname = %ticket.nickname,
        );
        let writer = tokio::spawn(writer::run(shared.clone(), out_rx).instrument(span.clone()));
        let (ready_tx, ready_rx) = oneshot::channel();
        let session = session::Session::new(shared.clone(), ev_tx, ticket, url, writer, ready_tx);
        tokio::spawn(session.run(ws).instrument(span));
        let conn = QuizConnection {
            _stop_on_drop: Arc::new(shared.shutdown.clone().drop_guard()),
            shared,
        };
        match tokio::time::timeout(connect_timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok((conn, EventStream { rx: ev_rx })),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ConnectError::Closed {
                code: None,
                reason: conn.shared.closed_reason(),
            }),
            Err(_) => {
                conn.close().await;
                Err(ConnectError::Timeout)
            }
        }
    }

    /// Answers question `question` with a fresh random `answer_id`; see
    /// [`answer_with_id`](Self::answer_with_id).
    pub async fn answer(&self, question: u32, answer: Answer) -> Result<Ack, AnswerError> {
        self.answer_with_id(question, new_answer_id(), answer).await
    }

    /// Answers with a caller-chosen `answer_id` (sending the same id again gets the same
    /// ack, never a second score). Resolves on the ack or a definite rejection. Retryable
    /// errors are retried with jittered backoff, and the answer is re-sent on every new
    /// socket, always with this id, until the answer timeout.
    pub async fn answer_with_id(
        &self,
        question: u32,
        answer_id: AnswerId,
        answer: Answer,
    ) -> Result<Ack, AnswerError> {
        let options = &self.shared.options;
        let deadline = Instant::now() + options.answer_timeout;
        let registered = self
            .shared
            .state()
            .register_answer(question, answer_id, &answer)
            .map_err(AnswerError::Closed)?;
        let local = registered.local;
        let mut reply = registered.reply;
        let _guard = AnswerGuard {
            shared: &self.shared,
            local,
        };
        self.send(Outbound::Answer { local }).await;
        let mut retry_at: Option<Instant> = None;
        let mut attempts = 0u32;
        let mut last_error = None;
        loop {
            let wake_at = retry_at.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                r = &mut reply => match r {
                    Err(_) => return Err(AnswerError::Closed(self.shared.closed_reason())),
                    Ok(AnswerReply::Ack(ack)) => return Ok(ack),
                    Ok(AnswerReply::Error(e)) if !e.retryable => {
                        return Err(AnswerError::Rejected(e));
                    }
                    Ok(AnswerReply::Error(e)) => {
                        attempts += 1;
                        if attempts >= options.answer_retry.max_attempts {
                            return Err(AnswerError::Timeout { last_error: Some(e) });
                        }
                        tracing::debug!(code = %e.code, attempts, "retryable answer error");
                        last_error = Some(e);
                        // Re-armed at once, so an ack for an earlier copy is not lost.
                        let Some(rx) = self.shared.state().rearm_answer(local, true) else {
                            return Err(AnswerError::Closed(self.shared.closed_reason()));
                        };
                        reply = rx;
                        let delay = options.answer_retry.delay(attempts, &mut rand::rng());
                        retry_at = Some(Instant::now() + delay);
                    }
                },
                _ = tokio::time::sleep_until(wake_at) => {
                    if retry_at.is_none() || Instant::now() >= deadline {
                        return Err(AnswerError::Timeout { last_error });
                    }
                    retry_at = None;
                    self.shared.state().release_answer(local);
                    self.send(Outbound::Answer { local }).await;
                }
            }
        }
    }

    /// Sends a host command (`player` is for `kick`) and waits for its `host_ok`.
    pub async fn host(
        &self,
        command: HostCommand,
        player: Option<&str>,
    ) -> Result<HostOk, RequestError> {
        let (tx, rx) = oneshot::channel();
        let build = |reference| {
            ClientMessage::Host(HostFrame {
                command,
                player: player.map(str::to_owned),
                reference: Some(reference),
            })
        };
        self.request(Waiter::Host(tx), build, rx).await
    }

    /// Self-paced mode: opens this player's next question.
    pub async fn next(&self) -> Result<QuestionFrame, RequestError> {
        let (tx, rx) = oneshot::channel();
        let build = |reference| ClientMessage::Next {
            reference: Some(reference),
        };
        self.request(Waiter::Next(tx), build, rx).await
    }

    /// Leaves the quiz for good: sends `leave`, waits (up to the request timeout) for the
    /// server to close, then closes. The stream ends with [`CloseReason::Left`].
    pub async fn leave(&self) {
        let generation = {
            let mut state = self.shared.state();
            state.leaving = true;
            (state.joined && state.closed.is_none()).then_some(state.generation)
        };
        if let Some(generation) = generation {
            let frame = state::encode(&ClientMessage::Leave);
            self.send(Outbound::Request { generation, frame }).await;
            let wait = self.shared.finished.cancelled();
            let _ = tokio::time::timeout(self.shared.options.request_timeout, wait).await;
        }
        self.close().await;
    }

    /// Ends the session (a 1000 close frame if a socket is up) and waits for both tasks to
    /// finish. Pending answers fail with [`AnswerError::Closed`].
    pub async fn close(&self) {
        self.shared.shutdown.cancel();
        self.shared.finished.cancelled().await;
    }

    /// Highest `seq` seen (what a rejoin resumes from).
    pub fn last_seq(&self) -> Option<u64> {
        self.shared.state().last_seq
    }

    /// Whether a socket is up and joined.
    pub fn is_connected(&self) -> bool {
        self.shared.state().joined
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.state().closed.clone()
    }

    /// Bytes received in text frames (payloads only), over every socket of this session.
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_received.load(Ordering::Relaxed)
    }

    async fn request<T>(
        &self,
        waiter: Waiter,
        build: impl FnOnce(String) -> ClientMessage,
        rx: oneshot::Receiver<Result<T, RequestError>>,
    ) -> Result<T, RequestError> {
        let (generation, local, frame) = self.shared.state().register_request(waiter, build)?;
        let _guard = RequestGuard {
            shared: &self.shared,
            local,
        };
        self.send(Outbound::Request { generation, frame }).await;
        match tokio::time::timeout(self.shared.options.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Closed(self.shared.closed_reason())),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    async fn send(&self, cmd: Outbound) {
        // Fails only once the writer has stopped, i.e. the session is closing: the caller's
        // waiter is then woken by the close.
        let _ = self.shared.outbound.send(cmd).await;
    }
}

/// A fresh random answer id: 32 hex digits (128 bits), well within the 64-character limit.
pub fn new_answer_id() -> AnswerId {
    let hex = format!("{:032x}", rand::random::<u128>());
    // 32 lowercase hex digits always parse as an answer id.
    AnswerId::parse(&hex).unwrap_or_else(|_| unreachable!("hex is printable ASCII"))
}

/// Removes an answer from the pending list when its caller finishes or gives up.
struct AnswerGuard<'a> {
    shared: &'a Shared,
    local: u64,
}

impl Drop for AnswerGuard<'_> {
    fn drop(&mut self) {
        self.shared.state().remove_answer(self.local);
    }
}

struct RequestGuard<'a> {
    shared: &'a Shared,
    local: u64,
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.shared.state().remove_request(self.local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        use CloseReason as R;
        for code in [None, Some(1001), Some(1011), Some(4008), Some(4009)] {
            assert_eq!(R::from_close_code(code), None, "{code:?} reconnects");
        }
        assert_eq!(R::from_close_code(Some(1000)), Some(R::Normal));
        assert_eq!(R::from_close_code(Some(4003)), Some(R::Kicked));
        assert_eq!(R::from_close_code(Some(4004)), Some(R::QuizGone));
        for code in [1003, 1007, 1008, 1009, 1002, 4999] {
            assert_eq!(
                R::from_close_code(Some(code)),
                Some(R::Protocol { code }),
                "{code} is final"
            );
        }
    }

    #[test]
    fn answer_ids_are_unique_and_valid() {
        let a = new_answer_id();
        let b = new_answer_id();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn per_connection_queue_items_stay_small() {
        // Each bounded channel allocates its first block of 32 slots up front: these sizes
        // are per-phone memory (40 and 64 bytes today).
        assert!(
            std::mem::size_of::<Event>() <= 48,
            "{}",
            std::mem::size_of::<Event>()
        );
        assert!(
            std::mem::size_of::<Outbound>() <= 64,
            "{}",
            std::mem::size_of::<Outbound>()
        );
    }
}
