//! Test support: a fake edge that speaks the client protocol minimally and does what a test
//! tells it (drop sockets, refuse upgrades, close with a code, answer with errors), plus
//! helpers to wait for conditions with a deadline instead of sleeping.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fastwebsockets::upgrade::IncomingUpgrade;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
use quiz_client::{Event, EventStream, JoinTicket};
use quiz_protocol::client::{
    Ack, ClientMessage, Closed, ErrorFrame, HostOk, LeaderboardFrame, QuestionFrame, QuizInfo,
    Resumed, Role, ServerMessage, Welcome, You, decode_client, encode_server,
};
use quiz_protocol::{AnswerId, ErrorCode, Level, Mode, Phase, QuestionKind, QuizId, Scoring};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Every test body runs under this.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a condition may take to become true.
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(5);

/// Runs a test body under [`TEST_TIMEOUT`].
pub(crate) async fn within_timeout<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// Polls `check` until it holds, failing the test after [`EVENTUALLY`].
pub(crate) async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next event, failing the test if none comes in time.
pub(crate) async fn next_event(events: &mut EventStream) -> Event {
    tokio::time::timeout(EVENTUALLY, events.recv())
        .await
        .expect("no event in time")
        .expect("event stream ended")
}

/// The next frame event, skipping reconnect notices.
pub(crate) async fn next_frame(events: &mut EventStream) -> ServerMessage {
    loop {
        match next_event(events).await {
            Event::Frame(msg) => return *msg,
            Event::Reconnecting { .. } | Event::Reconnected => continue,
            closed => panic!("expected a frame, got {closed:?}"),
        }
    }
}

/// Skips events until one matches, failing the test if the stream ends first.
pub(crate) async fn wait_for(events: &mut EventStream, want: impl Fn(&Event) -> bool) -> Event {
    loop {
        let e = next_event(events).await;
        if want(&e) {
            return e;
        }
        if matches!(e, Event::Closed { .. }) {
            panic!("stream closed while waiting: {e:?}");
        }
    }
}

pub(crate) fn quiz_id() -> QuizId {
    QuizId::parse("K7M3QX").unwrap()
}

pub(crate) fn aid(s: &str) -> AnswerId {
    AnswerId::parse(s).unwrap()
}

/// What the fake edge does with the next answer frame it receives.
#[derive(Clone, Debug)]
pub(crate) enum AnswerAction {
    /// Acknowledge it (the same ack for the same id, as the real server does).
    Ack,
    /// Drop the socket without replying.
    Drop,
    /// Reply with this error (retryable as the code says).
    Error(ErrorCode),
}

/// What the fake edge does with the next host frame.
#[derive(Clone, Debug)]
pub(crate) enum HostAction {
    Ok,
    Error(ErrorCode),
    /// Drop the socket without replying.
    Drop,
}

enum Command {
    Text(Vec<u8>),
    Close(u16),
    Ping,
}

struct Conn {
    id: u64,
    joined: bool,
    tx: mpsc::Sender<Command>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    /// Sequenced events sent so far, for replay.
    log: Vec<ServerMessage>,
    conns: Vec<Conn>,
    next_conn: u64,
    upgrades: u32,
    refused: u32,
    tokens: Vec<String>,
    joins: Vec<Option<u64>>,
    answers: Vec<quiz_protocol::client::AnswerFrame>,
    hosts: Vec<quiz_protocol::client::HostFrame>,
    others: Vec<ClientMessage>,
    pongs: u32,
    /// Refuse upgrades with 503 `unavailable` while set.
    refusing: bool,
    /// Tokens accepted; any other gets 401 token_expired. Empty: accept all.
    valid_tokens: Vec<String>,
    /// Tokens refused as unauthorized.
    unauthorized: Vec<String>,
    answer_script: VecDeque<AnswerAction>,
    host_script: VecDeque<HostAction>,
    acks: HashMap<AnswerId, Ack>,
    total: u32,
    next_question: u32,
    /// How long the reply to a join waits; answers before it get `not_joined`.
    join_delay: Duration,
    /// Joins to refuse: the error, and the close code that follows it (if any).
    join_refusals: VecDeque<(ErrorCode, Option<u16>)>,
}

/// A fake edge on 127.0.0.1:0. Dropping it stops the server.
pub(crate) struct FakeEdge {
    pub(crate) addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
}

impl Drop for FakeEdge {
    fn drop(&mut self) {
        self.stop.cancel();
        for c in &self.inner.lock().unwrap().conns {
            c.cancel.cancel();
        }
    }
}

impl FakeEdge {
    pub(crate) async fn start() -> FakeEdge {
        let inner = Arc::new(Mutex::new(Inner {
            seq: 1,
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/ws", get(ws_handler))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .ok();
        });
        FakeEdge { addr, inner, stop }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A ticket for this edge (and any extra URLs after it).
    pub(crate) fn ticket(&self, token: &str) -> JoinTicket {
        ticket(vec![self.url()], token)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// Appends a sequenced event (its `seq` is set here) and sends it to joined sockets.
    pub(crate) fn broadcast(&self, make: impl FnOnce(u64) -> ServerMessage) -> u64 {
        self.with(|i| {
            i.seq += 1;
            let msg = make(i.seq);
            let bytes = encode_server(&msg);
            i.log.push(msg);
            for c in i.conns.iter().filter(|c| c.joined) {
                let _ = c.tx.try_send(Command::Text(bytes.clone()));
            }
            i.seq
        })
    }

    /// Sends a frame without `seq` (leaderboard, ...) to joined sockets; not replayed.
    pub(crate) fn send_unsequenced(&self, msg: &ServerMessage) {
        let bytes = encode_server(msg);
        self.with(|i| {
            for c in i.conns.iter().filter(|c| c.joined) {
                let _ = c.tx.try_send(Command::Text(bytes.clone()));
            }
        });
    }

    /// Drops every socket abruptly (no close frame).
    pub(crate) fn drop_all(&self) {
        self.with(|i| {
            for c in i.conns.drain(..) {
                c.cancel.cancel();
            }
        });
    }

    /// Closes every socket with `code`.
    pub(crate) fn close_all(&self, code: u16) {
        self.with(|i| {
            for c in i.conns.drain(..) {
                let _ = c.tx.try_send(Command::Close(code));
            }
        });
    }

    pub(crate) fn ping_all(&self) {
        self.with(|i| {
            for c in &i.conns {
                let _ = c.tx.try_send(Command::Ping);
            }
        });
    }

    /// While true, upgrades are refused with 503 `unavailable`.
    pub(crate) fn set_refusing(&self, refusing: bool) {
        self.with(|i| i.refusing = refusing);
    }

    /// Only these tokens are accepted; others get 401 `token_expired`.
    pub(crate) fn set_valid_tokens(&self, tokens: &[&str]) {
        self.with(|i| i.valid_tokens = tokens.iter().map(|t| t.to_string()).collect());
    }

    /// These tokens get 401 `unauthorized`.
    pub(crate) fn set_unauthorized(&self, tokens: &[&str]) {
        self.with(|i| i.unauthorized = tokens.iter().map(|t| t.to_string()).collect());
    }

    /// Refuses the next joins with an error frame, each followed by a close if given.
    pub(crate) fn refuse_joins(
        &self,
        refusals: impl IntoIterator<Item = (ErrorCode, Option<u16>)>,
    ) {
        self.with(|i| i.join_refusals.extend(refusals));
    }

    /// Delays every join reply; until it is sent, the socket is not joined.
    pub(crate) fn set_join_delay(&self, delay: Duration) {
        self.with(|i| i.join_delay = delay);
    }

    pub(crate) fn script_answers(&self, actions: impl IntoIterator<Item = AnswerAction>) {
        self.with(|i| i.answer_script.extend(actions));
    }

    pub(crate) fn script_hosts(&self, actions: impl IntoIterator<Item = HostAction>) {
        self.with(|i| i.host_script.extend(actions));
    }

    /// `last_seq` of every join received, in order.
    pub(crate) fn joins(&self) -> Vec<Option<u64>> {
        self.with(|i| i.joins.clone())
    }

    /// Every answer frame received, in order.
    pub(crate) fn answers(&self) -> Vec<quiz_protocol::client::AnswerFrame> {
        self.with(|i| i.answers.clone())
    }

    pub(crate) fn hosts(&self) -> Vec<quiz_protocol::client::HostFrame> {
        self.with(|i| i.hosts.clone())
    }

    /// Other client frames (next, leave...).
    pub(crate) fn others(&self) -> Vec<ClientMessage> {
        self.with(|i| i.others.clone())
    }

    /// Successful upgrades so far.
    pub(crate) fn upgrades(&self) -> u32 {
        self.with(|i| i.upgrades)
    }

    /// Refused upgrades so far.
    pub(crate) fn refused(&self) -> u32 {
        self.with(|i| i.refused)
    }

    /// The token of every upgrade attempt, in order.
    pub(crate) fn tokens(&self) -> Vec<String> {
        self.with(|i| i.tokens.clone())
    }

    pub(crate) fn pongs(&self) -> u32 {
        self.with(|i| i.pongs)
    }

    /// Live sockets that have joined.
    pub(crate) fn joined(&self) -> usize {
        self.with(|i| i.conns.iter().filter(|c| c.joined).count())
    }

    pub(crate) fn seq(&self) -> u64 {
        self.with(|i| i.seq)
    }
}

pub(crate) fn ticket(ws_urls: Vec<String>, token: &str) -> JoinTicket {
    JoinTicket {
        quiz_id: quiz_id(),
        role: Role::Player,
        nickname: "Ana".into(),
        session_token: token.into(),
        ws_urls,
        expires_in_s: 600,
    }
}

pub(crate) fn question(seq: Option<u64>, index: u32) -> QuestionFrame {
    QuestionFrame {
        seq,
        index,
        count: 5,
        kind: QuestionKind::SingleChoice,
        level: Level::A2,
        topic: "vocabulary".into(),
        prompt: format!("Question {index}?"),
        options: Some(vec!["go".into(), "went".into(), "gone".into()]),
        tiles: None,
        left: None,
        right: None,
        time_limit_ms: 20_000,
        ends_in_ms: 20_000,
        points: 1000,
        multiplier: 1,
    }
}

pub(crate) fn closed(seq: u64, index: u32) -> ServerMessage {
    ServerMessage::Closed(Closed { seq, index })
}

fn you() -> You {
    You {
        role: Role::Player,
        nickname: "Ana".into(),
        score: 0,
        rank: 0,
    }
}

fn welcome(seq: u64) -> ServerMessage {
    ServerMessage::Welcome(Box::new(Welcome {
        protocol: quiz_protocol::client::PROTOCOL_VERSION,
        seq,
        quiz: QuizInfo {
            id: quiz_id().to_string(),
            title: "Irregular verbs".into(),
            mode: Mode::Live,
            scoring: Scoring::Speed,
            question_count: 5,
            auto_advance: None,
        },
        you: you(),
        phase: Phase::Lobby,
        ends_in_ms: None,
        question: None,
        answered: None,
        reveal: None,
        leaderboard: LeaderboardFrame {
            v: 1,
            players: 1,
            top: Some(vec![]),
            you: None,
            answered: None,
        },
    }))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn ws_handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<TokenQuery>,
    ws: IncomingUpgrade,
) -> Response {
    let token = q.token.unwrap_or_default();
    let refusal = {
        let mut i = inner.lock().unwrap();
        i.tokens.push(token.clone());
        let refusal = if i.refusing {
            Some((StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable))
        } else if i.unauthorized.contains(&token) {
            Some((StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized))
        } else if !i.valid_tokens.is_empty() && !i.valid_tokens.contains(&token) {
            Some((StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired))
        } else {
            None
        };
        if refusal.is_some() {
            i.refused += 1;
        }
        refusal
    };
    if let Some((status, code)) = refusal {
        let body = serde_json::json!({
            "code": code,
            "message": format!("refused: {code}"),
            "retryable": code.retryable(),
        });
        return (status, Json(body)).into_response();
    }
    let (response, upgrade) = ws.upgrade().unwrap();
    tokio::spawn(async move {
        if let Ok(ws) = upgrade.await {
            serve(inner, ws).await;
        }
    });
    response.into_response()
}

async fn serve(
    inner: Arc<Mutex<Inner>>,
    ws: fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
) {
    let (read, mut write) = ws.split(tokio::io::split);
    let mut read = FragmentCollectorRead::new(read);
    let (tx, mut rx) = mpsc::channel::<Command>(64);
    let cancel = CancellationToken::new();
    let id = {
        let mut i = inner.lock().unwrap();
        i.upgrades += 1;
        i.next_conn += 1;
        let id = i.next_conn;
        i.conns.push(Conn {
            id,
            joined: false,
            tx: tx.clone(),
            cancel: cancel.clone(),
        });
        id
    };
    let writer_cancel = cancel.clone();
    let writer = tokio::spawn(async move {
        loop {
            let cmd = tokio::select! {
                _ = writer_cancel.cancelled() => break,
                cmd = rx.recv() => match cmd { Some(c) => c, None => break },
            };
            let result = match cmd {
                Command::Text(bytes) => write.write_frame(Frame::text(Payload::Owned(bytes))).await,
                Command::Ping => {
                    write
                        .write_frame(Frame::new(
                            true,
                            OpCode::Ping,
                            None,
                            Payload::Owned(b"hi".to_vec()),
                        ))
                        .await
                }
                Command::Close(code) => {
                    let _ = write.write_frame(Frame::close(code, b"bye")).await;
                    writer_cancel.cancel();
                    break;
                }
            };
            if result.is_err() {
                break;
            }
        }
    });
    let ctl = tx.clone();
    let mut send_fn = move |frame: Frame<'_>| {
        // Close replies are not needed by the tests; the socket is dropped right after.
        let _ = frame;
        async { Ok::<(), std::io::Error>(()) }
    };
    // Whether the writer is sending a close frame and must be let finish.
    let mut closing = false;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = read.read_frame(&mut send_fn) => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(WebSocketError::InvalidUTF8) => {
                let _ = ctl.send(Command::Close(1007)).await;
                closing = true;
                break;
            }
            Err(_) => break,
        };
        match frame.opcode {
            OpCode::Text => {
                let replies = on_text(&inner, id, &frame.payload);
                let delay = inner.lock().unwrap().join_delay;
                if replies.iter().any(|r| matches!(r, Reply::MarkJoined)) && !delay.is_zero() {
                    let (inner, ctl, cancel) = (inner.clone(), ctl.clone(), cancel.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        perform(&inner, id, &ctl, &cancel, replies).await;
                    });
                } else {
                    perform(&inner, id, &ctl, &cancel, replies).await;
                }
            }
            OpCode::Binary => {
                let _ = ctl.send(Command::Close(1003)).await;
            }
            OpCode::Pong => inner.lock().unwrap().pongs += 1,
            OpCode::Close => break,
            _ => {}
        }
    }
    if !closing {
        cancel.cancel();
    }
    let _ = writer.await;
    inner.lock().unwrap().conns.retain(|c| c.id != id);
}

enum Reply {
    Send(Vec<u8>),
    Close(u16),
    Drop,
    /// From now on the socket gets broadcasts and may answer.
    MarkJoined,
}

async fn perform(
    inner: &Mutex<Inner>,
    conn: u64,
    ctl: &mpsc::Sender<Command>,
    cancel: &CancellationToken,
    replies: Vec<Reply>,
) {
    for r in replies {
        match r {
            Reply::Send(bytes) => {
                let _ = ctl.send(Command::Text(bytes)).await;
            }
            Reply::Close(code) => {
                let _ = ctl.send(Command::Close(code)).await;
            }
            Reply::Drop => cancel.cancel(),
            Reply::MarkJoined => {
                let mut i = inner.lock().unwrap();
                if let Some(c) = i.conns.iter_mut().find(|c| c.id == conn) {
                    c.joined = true;
                }
            }
        }
    }
}

fn on_text(inner: &Mutex<Inner>, conn: u64, payload: &[u8]) -> Vec<Reply> {
    let mut i = inner.lock().unwrap();
    let msg = match decode_client(payload, 64 * 1024) {
        Ok(m) => m,
        Err(e) => {
            let err = ErrorFrame::new(ErrorCode::from(&e), e.to_string());
            return vec![Reply::Send(encode_server(&ServerMessage::Error(err)))];
        }
    };
    let send = |m: &ServerMessage| Reply::Send(encode_server(m));
    match msg {
        ClientMessage::Ping { reference } => {
            vec![send(&ServerMessage::Pong(quiz_protocol::client::Pong {
                reference,
            }))]
        }
        ClientMessage::Join { last_seq } => {
            i.joins.push(last_seq);
            if let Some((code, close)) = i.join_refusals.pop_front() {
                let mut out = vec![send(&ServerMessage::Error(ErrorFrame::new(code, "no")))];
                out.extend(close.map(Reply::Close));
                return out;
            }
            let seq = i.seq;
            let mut out = Vec::new();
            match last_seq {
                Some(n) if n <= seq => {
                    out.push(send(&ServerMessage::Resumed(Resumed {
                        from_seq: n + 1,
                        to_seq: seq,
                        you: you(),
                    })));
                    for m in i.log.iter().filter(|m| m.seq().is_some_and(|s| s > n)) {
                        out.push(send(m));
                    }
                }
                _ => out.push(send(&welcome(seq))),
            }
            out.push(Reply::MarkJoined);
            out
        }
        ClientMessage::Answer(a) => {
            i.answers.push(a.clone());
            if !i.conns.iter().any(|c| c.id == conn && c.joined) {
                let mut e = ErrorFrame::new(ErrorCode::NotJoined, "join first");
                e.answer_id = Some(a.answer_id.clone());
                return vec![send(&ServerMessage::Error(e))];
            }
            match i.answer_script.pop_front().unwrap_or(AnswerAction::Ack) {
                AnswerAction::Drop => vec![Reply::Drop],
                AnswerAction::Error(code) => {
                    let mut e = ErrorFrame::new(code, format!("{code}"));
                    e.answer_id = Some(a.answer_id.clone());
                    vec![send(&ServerMessage::Error(e))]
                }
                AnswerAction::Ack => {
                    let ack = match i.acks.get(&a.answer_id) {
                        Some(ack) => ack.clone(),
                        None => {
                            i.total += 100;
                            let ack = Ack {
                                answer_id: a.answer_id.clone(),
                                question: a.question,
                                points: 100,
                                total: i.total,
                                rank: 1,
                                streak: 1,
                            };
                            i.acks.insert(a.answer_id.clone(), ack.clone());
                            ack
                        }
                    };
                    vec![send(&ServerMessage::Ack(ack))]
                }
            }
        }
        ClientMessage::Host(h) => {
            i.hosts.push(h.clone());
            match i.host_script.pop_front().unwrap_or(HostAction::Ok) {
                HostAction::Ok => vec![send(&ServerMessage::HostOk(HostOk {
                    command: h.command,
                    phase: Phase::Open,
                    reference: h.reference,
                }))],
                HostAction::Drop => vec![Reply::Drop],
                HostAction::Error(code) => {
                    let mut e = ErrorFrame::new(code, "refused");
                    e.reference = h.reference;
                    vec![send(&ServerMessage::Error(e))]
                }
            }
        }
        ClientMessage::Next { .. } => {
            i.others.push(msg.clone());
            let index = i.next_question;
            i.next_question += 1;
            vec![send(&ServerMessage::Question(question(None, index)))]
        }
        ClientMessage::Leave => {
            i.others.push(msg);
            vec![Reply::Close(1000)]
        }
    }
}
