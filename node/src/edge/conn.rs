//! One phone's connection: a reader task and a writer task.
//!
//! The writer owns the socket's write half and a queue bounded in frames and bytes
//! ([`super::outbox`]); everything sent to the phone goes through that queue, and a phone whose
//! queue is full is too slow and is closed (4008) rather than buffered. The reader owns the read
//! half ([`super::frames`], which holds no buffer while the phone is quiet; a read is not
//! cancel-safe, so it is never raced in a `select!`): it decodes frames and forwards requests
//! to the quiz's owner. When either task ends, the other is stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketWrite};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use quiz_protocol::client::{
    ClientMessage, ErrorFrame, HostFrame, Role, ServerMessage, close, decode_client, encode_server,
};
use quiz_protocol::cluster::{EdgeRequest, OwnerReply, Rejection};
use quiz_protocol::{AnswerId, DecodeError, ErrorCode, PlayerNo};
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use super::Edge;
use super::frames::FrameReader;
use super::outbox::{Out, Outbox, Refused};
use super::room::RoomHandle;
use crate::auth::Session;
use crate::now_ms;

type Stream = TokioIo<Upgraded>;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// How long a closed connection waits for the phone's closing handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The part of a connection that others (the reader, the room, request tasks) hold.
pub(crate) struct Conn {
    pub(crate) id: u64,
    out: Outbox,
    kill: CancellationToken,
    close_code: AtomicU16,
    last_seen: AtomicI64,
    metrics: crate::metrics::Metrics,
}

impl Conn {
    /// Queues a frame for the phone. A full queue means the phone is not reading: it is
    /// closed with 4008 and `false` is returned.
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        let len = frame.len() as u64;
        match self.out.push(Out::Text(frame)) {
            Ok(()) => {
                self.metrics.frames_sent.inc();
                self.metrics.bytes_sent.inc_by(len);
                true
            }
            Err(Refused::Full) => {
                if self.close(close::TOO_SLOW) {
                    self.metrics.slow_consumers.inc();
                    tracing::info!("phone too slow to read; dropping it");
                }
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Closes the connection with `code` (the first code set wins). Returns whether this call
    /// was the one that closed it.
    pub(crate) fn close(&self, code: u16) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.kill.cancel();
        first
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.kill.is_cancelled()
    }

    fn error(
        &self,
        code: ErrorCode,
        message: &str,
        answer_id: Option<AnswerId>,
        reference: Option<String>,
    ) {
        let mut frame = ErrorFrame::new(code, message);
        frame.answer_id = answer_id;
        frame.reference = reference;
        self.push(encode_server(&ServerMessage::Error(frame)).into());
    }
}

/// Serves one upgraded WebSocket until it closes.
pub(super) async fn serve(edge: Arc<Edge>, ws: WebSocket<Stream>, session: Session) {
    // The upgrade's own read buffer goes with it; the frame reader makes one when needed.
    let (read, write) = tokio::io::split(ws.into_inner());
    let (_, write) = fastwebsockets::after_handshake_split(
        tokio::io::empty(),
        write,
        fastwebsockets::Role::Server,
    );
    // Frames up to 4x the limit are read whole and refused with 1009 by the decoder, so the
    // phone sees the close cleanly; fastwebsockets cuts bigger ones off at the header, which
    // leaves unread bytes and makes the close a reset.
    let read = FrameReader::new(read, edge.config.limits.max_frame_bytes * 4 + 1);
    let limits = &edge.config.limits;
    let conn = Arc::new(Conn {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        out: Outbox::new(limits.send_queue_frames, limits.send_queue_bytes),
        kill: CancellationToken::new(),
        close_code: AtomicU16::new(0),
        last_seen: AtomicI64::new(now_ms()),
        metrics: edge.metrics.clone(),
    });
    edge.metrics.connections.inc();
    let reader = Reader {
        edge: edge.clone(),
        conn: conn.clone(),
        session,
        joined: None,
        join_deadline: Instant::now() + Duration::from_secs(edge.config.limits.join_timeout_s),
        bad_frames: RateWindow::new(Duration::from_secs(60)),
        requests: TokenBucket::new(
            edge.config.limits.answers_per_sec,
            edge.config.limits.answer_burst,
        ),
        fragments: None,
    };
    let reader = edge.tracker.spawn(reader.run(read));
    let writer = write_loop(edge.clone(), write, conn.clone());
    writer.await;
    // The writer is done (closed, failed or shutting down). Give the phone a moment to answer
    // our close frame (the reader takes it), then stop reading. The reader's drop handler
    // tells the room and the owner.
    let mut reader = reader;
    if tokio::time::timeout(CLOSE_LINGER, &mut reader)
        .await
        .is_err()
    {
        reader.abort();
        let _ = reader.await;
    }
    edge.metrics.connections.dec();
}

async fn write_loop(edge: Arc<Edge>, mut ws: WebSocketWrite<WriteHalf<Stream>>, conn: Arc<Conn>) {
    let limits = &edge.config.limits;
    let mut ping = tokio::time::interval(Duration::from_secs(limits.ping_interval_s));
    ping.tick().await;
    let idle_ms = (limits.idle_timeout_s * 1000) as i64;
    loop {
        let result = tokio::select! {
            biased;
            _ = conn.kill.cancelled() => break,
            _ = edge.shutdown.cancelled() => {
                conn.close(close::GOING_AWAY);
                break;
            }
            out = conn.out.pop() => send(&mut ws, out).await,
            _ = ping.tick() => {
                if now_ms() - conn.last_seen.load(Ordering::Relaxed) > idle_ms {
                    conn.close(close::TIMEOUT);
                    break;
                }
                ws.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")))
                    .await
            }
        };
        if result.is_err() {
            conn.kill.cancel();
            conn.out.close();
            return;
        }
    }
    conn.out.close();
    let code = conn.close_code.load(Ordering::Acquire);
    if code != close::TOO_SLOW {
        // Frames queued before the close (an error explaining it) still go out.
        while let Some(out) = conn.out.try_pop() {
            if send(&mut ws, out).await.is_err() {
                return;
            }
        }
    }
    let code = if code == 0 { close::NORMAL } else { code };
    edge.metrics
        .closes
        .with_label_values(&[&code.to_string()])
        .inc();
    let _ = ws
        .write_frame(Frame::close(code, reason(code).as_bytes()))
        .await;
    let _ = ws.flush().await;
    // The socket stays open (the reader holds the other half) until the phone answers.
}

async fn send(ws: &mut WebSocketWrite<WriteHalf<Stream>>, out: Out) -> Result<(), WebSocketError> {
    match out {
        Out::Text(bytes) => ws.write_frame(Frame::text(Payload::Borrowed(&bytes))).await,
        Out::Control(opcode, payload) => {
            ws.write_frame(Frame::new(true, opcode, None, Payload::Owned(payload)))
                .await
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "node shutting down; reconnect",
        close::UNSUPPORTED_DATA => "text frames only",
        close::INVALID_PAYLOAD => "invalid UTF-8",
        close::POLICY => "too many bad frames, or no join in time",
        close::TOO_BIG => "frame too large",
        close::KICKED => "removed by the host",
        close::QUIZ_GONE => "no such quiz",
        close::TOO_SLOW => "too slow to read; reconnect and resume",
        close::TIMEOUT => "idle too long",
        close::INTERNAL => "internal error; reconnect and resume",
        _ => "",
    }
}

/// Where a joined connection stands.
struct Joined {
    room: RoomHandle,
    player: Option<PlayerNo>,
}

struct Reader {
    edge: Arc<Edge>,
    conn: Arc<Conn>,
    session: Session,
    joined: Option<Joined>,
    /// Until joined, when the socket is closed for want of a `join`: the join timeout after
    /// the connect, and again after each refused join (a phone that keeps trying is not idle).
    join_deadline: Instant,
    bad_frames: RateWindow,
    /// Answers, host commands and `next`, one budget per socket.
    requests: TokenBucket,
    /// A fragmented text message being reassembled.
    fragments: Option<Vec<u8>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.conn.kill.cancel();
        let Some(joined) = self.joined.take() else {
            return;
        };
        joined.room.unregister(self.conn.id);
        let request = EdgeRequest::Disconnect {
            player: joined.player,
        };
        let owners = self.edge.owners.clone();
        let quiz = self.session.quiz.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                owners.request(&quiz, request).await;
            });
        }
    }
}

impl Reader {
    async fn run(mut self, mut read: FrameReader<ReadHalf<Stream>>) {
        let conn = self.conn.clone();
        let mut obligated = move |frame: Frame<'_>| {
            let _ = conn
                .out
                .push(Out::Control(frame.opcode, frame.payload.to_vec()));
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        };
        loop {
            let frame = if self.joined.is_none() {
                // Dropping a read here is fine: the connection is abandoned on timeout.
                match tokio::time::timeout_at(
                    self.join_deadline.into(),
                    read.next_frame(&mut obligated),
                )
                .await
                {
                    Ok(f) => f,
                    Err(_) => {
                        self.conn.close(close::POLICY);
                        return;
                    }
                }
            } else {
                read.next_frame(&mut obligated).await
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    self.on_read_error(&e);
                    return;
                }
            };
            self.conn.last_seen.store(now_ms(), Ordering::Relaxed);
            let keep_going = match frame.opcode {
                // Boxed: a quiet phone's task holds only what waiting for a frame needs.
                // A new message while a fragmented one is unfinished: RFC 6455 §5.4.
                OpCode::Text if self.fragments.is_some() => {
                    self.protocol_close(close::PROTOCOL_ERROR)
                }
                OpCode::Text if frame.fin => Box::pin(self.on_text(&frame.payload)).await,
                OpCode::Text => self.start_fragments(&frame.payload),
                OpCode::Continuation => match self.continue_fragments(&frame.payload, frame.fin) {
                    Some(Some(text)) => Box::pin(self.on_text(&text)).await,
                    Some(None) => true,
                    None => false,
                },
                OpCode::Binary => self.protocol_close(close::UNSUPPORTED_DATA),
                OpCode::Close => false,
                OpCode::Ping => {
                    let _ = self
                        .conn
                        .out
                        .push(Out::Control(OpCode::Pong, frame.payload.to_vec()));
                    true
                }
                OpCode::Pong => true,
            };
            if !keep_going || self.conn.is_closed() {
                return;
            }
        }
    }

    fn on_read_error(&self, e: &WebSocketError) {
        let code = match e {
            WebSocketError::FrameTooLarge => close::TOO_BIG,
            WebSocketError::InvalidUTF8 => close::INVALID_PAYLOAD,
            WebSocketError::UnexpectedEOF
            | WebSocketError::IoError(_)
            | WebSocketError::ConnectionClosed => {
                self.conn.kill.cancel();
                return;
            }
            _ => close::PROTOCOL_ERROR,
        };
        self.protocol_close(code);
    }

    /// Closes for a protocol violation; returns false (stop reading).
    fn protocol_close(&self, code: u16) -> bool {
        tracing::info!(code, quiz = %self.session.quiz, user = %self.session.user, "closing for a protocol violation");
        self.conn.close(code);
        false
    }

    fn start_fragments(&mut self, payload: &[u8]) -> bool {
        if self.fragments.is_some() {
            return self.protocol_close(close::PROTOCOL_ERROR);
        }
        self.fragments = Some(payload.to_vec());
        true
    }

    /// Adds a continuation; `Some(Some(text))` when the message is complete, `Some(None)` when
    /// more is expected, `None` after closing the connection.
    fn continue_fragments(&mut self, payload: &[u8], fin: bool) -> Option<Option<Vec<u8>>> {
        let Some(buf) = self.fragments.as_mut() else {
            self.protocol_close(close::PROTOCOL_ERROR);
            return None;
        };
        if buf.len() + payload.len() > self.edge.config.limits.max_frame_bytes {
            // fastwebsockets caps single frames, not reassembled messages: we cap those.
            self.protocol_close(close::TOO_BIG);
            return None;
        }
        buf.extend_from_slice(payload);
        if !fin {
            return Some(None);
        }
        let text = self.fragments.take().unwrap_or_default();
        if std::str::from_utf8(&text).is_err() {
            self.protocol_close(close::INVALID_PAYLOAD);
            return None;
        }
        Some(Some(text))
    }

    /// Handles one complete text message; returns false to stop reading.
    async fn on_text(&mut self, text: &[u8]) -> bool {
        let message = match decode_client(text, self.edge.config.limits.max_frame_bytes) {
            Ok(m) => m,
            Err(DecodeError::InvalidUtf8) => return self.protocol_close(close::INVALID_PAYLOAD),
            Err(DecodeError::TooLarge { .. }) => return self.protocol_close(close::TOO_BIG),
            Err(e) => return self.bad_frame(ErrorCode::from(&e), &e.to_string(), None),
        };
        match message {
            ClientMessage::Join { last_seq } => self.join(last_seq).await,
            ClientMessage::Ping { .. } if self.joined.is_none() => {
                self.bad_frame(ErrorCode::NotJoined, "send `join` first", None)
            }
            _ if self.joined.is_none() => {
                self.bad_frame(ErrorCode::NotJoined, "send `join` first", None)
            }
            ClientMessage::Answer(frame) => self.answer(frame),
            ClientMessage::Host(frame) => self.host(frame),
            ClientMessage::Next { reference } => self.next(reference),
            ClientMessage::Leave => self.leave().await,
            ClientMessage::Ping { reference } => {
                let pong = ServerMessage::Pong(quiz_protocol::client::Pong { reference });
                self.conn.push(encode_server(&pong).into());
                true
            }
        }
    }

    /// Replies with an error and counts a bad frame; closes (1008) past the budget.
    fn bad_frame(&mut self, code: ErrorCode, message: &str, reference: Option<String>) -> bool {
        self.conn.error(code, message, None, reference);
        if self.bad_frames.hit() > self.edge.config.limits.bad_frames_per_min {
            return self.protocol_close(close::POLICY);
        }
        true
    }

    async fn join(&mut self, last_seq: Option<u64>) -> bool {
        if self.joined.is_some() {
            return self.bad_frame(
                ErrorCode::BadMessage,
                "already joined on this connection",
                None,
            );
        }
        let quiz = self.session.quiz.clone();
        let room = match self.edge.room(&quiz).await {
            Ok(room) => room,
            Err(r) => return self.refused_join(&r),
        };
        if !room.register(self.conn.clone(), &self.session).await {
            return self.refused_join(&crate::shard::unavailable("the quiz's room closed; retry"));
        }
        let request = EdgeRequest::Join {
            user: self.session.user.clone(),
            role: self.session.role,
            nickname: self.session.nickname.clone(),
            last_seq,
        };
        match self.edge.owners.request(&quiz, request).await {
            OwnerReply::Joined {
                player,
                seq,
                leaderboard_v,
                frames,
            } => {
                for frame in frames {
                    self.conn.push(frame.into());
                }
                room.go_live(self.conn.id, player, seq, leaderboard_v).await;
                self.joined = Some(Joined { room, player });
                true
            }
            OwnerReply::Error(r) => {
                room.unregister(self.conn.id);
                self.refused_join(&r)
            }
            other => {
                room.unregister(self.conn.id);
                tracing::error!(?other, "unexpected reply to a join");
                self.conn.close(close::INTERNAL);
                false
            }
        }
    }

    /// Tells the phone why it could not join; closes when joining can never work.
    fn refused_join(&mut self, r: &Rejection) -> bool {
        self.conn.error(r.code, &r.message, None, None);
        self.join_deadline =
            Instant::now() + Duration::from_secs(self.edge.config.limits.join_timeout_s);
        let code = match r.code {
            ErrorCode::UnknownQuiz => close::QUIZ_GONE,
            ErrorCode::Kicked => close::KICKED,
            ErrorCode::QuizEnded | ErrorCode::QuizFull => close::NORMAL,
            _ => return true,
        };
        self.conn.close(code);
        false
    }

    fn answer(&mut self, frame: quiz_protocol::client::AnswerFrame) -> bool {
        let player = self.joined.as_ref().and_then(|j| j.player);
        let Some(player) = player else {
            self.conn.error(
                ErrorCode::BadMessage,
                "hosts do not answer",
                Some(frame.answer_id),
                None,
            );
            return self.bad_frame_counted();
        };
        if !self.requests.take() {
            self.edge
                .metrics
                .answers
                .with_label_values(&["rate_limited"])
                .inc();
            self.conn.error(
                ErrorCode::RateLimited,
                "too many answers; slow down",
                Some(frame.answer_id),
                None,
            );
            return true;
        }
        let answer = match frame.answer() {
            Ok(a) => a,
            Err(e) => {
                self.conn.error(
                    ErrorCode::BadAnswer,
                    &e.to_string(),
                    Some(frame.answer_id),
                    None,
                );
                return self.bad_frame_counted();
            }
        };
        // Every refusal of an answer names it, whichever layer refused (the owner, the way
        // to it, a timeout): a phone with several answers pending must know which to resend.
        let refused = Refusal {
            answer_id: Some(frame.answer_id.clone()),
            reference: None,
        };
        let request = EdgeRequest::Answer {
            player,
            question: frame.question,
            answer_id: frame.answer_id,
            answer,
        };
        let received = Instant::now();
        let metrics = self.edge.metrics.clone();
        self.spawn_request(request, refused, move || {
            metrics
                .answer_ack_seconds
                .observe(received.elapsed().as_secs_f64());
        });
        true
    }

    fn bad_frame_counted(&mut self) -> bool {
        if self.bad_frames.hit() > self.edge.config.limits.bad_frames_per_min {
            return self.protocol_close(close::POLICY);
        }
        true
    }

    fn host(&mut self, frame: HostFrame) -> bool {
        if self.session.role != Role::Host {
            return self.bad_frame(
                ErrorCode::NotHost,
                "only the host can do that",
                frame.reference,
            );
        }
        if !self.requests.take() {
            self.conn.error(
                ErrorCode::RateLimited,
                "too many commands; slow down",
                None,
                frame.reference,
            );
            return true;
        }
        let request = EdgeRequest::Host {
            user: self.session.user.clone(),
            command: frame.command,
            target: frame.player,
            reference: frame.reference.clone(),
        };
        self.spawn_request(request, Refusal::of_command(frame.reference), || {});
        true
    }

    fn next(&mut self, reference: Option<String>) -> bool {
        let Some(player) = self.joined.as_ref().and_then(|j| j.player) else {
            return self.bad_frame(
                ErrorCode::BadMessage,
                "hosts do not take questions",
                reference,
            );
        };
        if !self.requests.take() {
            self.conn.error(
                ErrorCode::RateLimited,
                "too many requests; slow down",
                None,
                reference,
            );
            return true;
        }
        self.spawn_request(
            EdgeRequest::Next { player },
            Refusal::of_command(reference),
            || {},
        );
        true
    }

    async fn leave(&mut self) -> bool {
        if let Some(Joined {
            room,
            player: Some(player),
        }) = self.joined.take()
        {
            room.unregister(self.conn.id);
            self.edge
                .owners
                .request(&self.session.quiz, EdgeRequest::Leave { player })
                .await;
        } else if let Some(joined) = &self.joined {
            // A host leaving is a disconnect; the drop handler reports it.
            joined.room.unregister(self.conn.id);
        }
        self.conn.close(close::NORMAL);
        false
    }

    /// Sends a request to the owner without blocking the reader, and queues the reply. An
    /// error frame names the request as `refused` says.
    fn spawn_request(
        &self,
        request: EdgeRequest,
        refused: Refusal,
        done: impl FnOnce() + Send + 'static,
    ) {
        let owners = self.edge.owners.clone();
        let quiz = self.session.quiz.clone();
        let conn = self.conn.clone();
        self.edge.tracker.spawn(async move {
            let reply = owners.request(&quiz, request).await;
            match reply {
                OwnerReply::Frame(json) => {
                    conn.push(json.into());
                }
                OwnerReply::Error(r) => conn.error(
                    r.code,
                    &r.message,
                    r.answer_id.or(refused.answer_id),
                    refused.reference,
                ),
                OwnerReply::Done => {}
                OwnerReply::Joined { .. } => tracing::error!("unexpected join reply"),
            }
            done();
        });
    }
}

/// What an error frame answering a request carries to name that request.
struct Refusal {
    answer_id: Option<AnswerId>,
    reference: Option<String>,
}

impl Refusal {
    fn of_command(reference: Option<String>) -> Self {
        Self {
            answer_id: None,
            reference,
        }
    }
}

/// Counts events in a sliding window (a fixed window restarted when it expires).
struct RateWindow {
    window: Duration,
    started: Instant,
    count: u32,
}

impl RateWindow {
    fn new(window: Duration) -> Self {
        Self {
            window,
            started: Instant::now(),
            count: 0,
        }
    }

    /// Records one event; returns the count in the current window.
    fn hit(&mut self) -> u32 {
        if self.started.elapsed() >= self.window {
            self.started = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(queue: usize) -> Conn {
        Conn {
            id: 1,
            out: Outbox::new(queue, 1 << 20),
            kill: CancellationToken::new(),
            close_code: AtomicU16::new(0),
            last_seen: AtomicI64::new(0),
            metrics: crate::metrics::Metrics::new(),
        }
    }

    #[test]
    fn a_phone_that_does_not_read_is_dropped_not_buffered() {
        let conn = conn(2);
        assert!(conn.push(Bytes::from_static(b"{}")));
        assert!(conn.push(Bytes::from_static(b"{}")));
        assert!(
            !conn.push(Bytes::from_static(b"{}")),
            "a full queue refuses the frame"
        );
        assert!(conn.is_closed());
        assert_eq!(conn.close_code.load(Ordering::Acquire), close::TOO_SLOW);
        assert_eq!(conn.metrics.slow_consumers.get(), 1);
        assert_eq!(conn.metrics.frames_sent.get(), 2);
        // The first reason to close wins; later ones do not count again.
        assert!(!conn.push(Bytes::from_static(b"{}")));
        conn.close(close::NORMAL);
        assert_eq!(conn.close_code.load(Ordering::Acquire), close::TOO_SLOW);
        assert_eq!(conn.metrics.slow_consumers.get(), 1);
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(1, 3);
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take());
    }
}
