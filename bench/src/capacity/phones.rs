//! A load process (`quiz-bench phones`, started by the bench): thousands of phones from one
//! source address, each a real WebSocket speaking the client protocol, with what each saw.
//!
//! A phone is lean on purpose, so that one process holds ten thousand of them: two tasks (a
//! reader that parses frames, and a driver that owns the write half, its timers and its
//! state), no SDK view, a handful of fields per frame. It does what a phone app does: joins
//! through the router (the identity token is fetched beforehand, as an app has it already),
//! opens the socket on an edge (spread over every edge, the others as fallbacks), answers
//! every open question once and resends with the same `answer_id` on a retryable refusal or
//! after a reconnect, answers pings, and resumes with `last_seq` when its socket drops.
//!
//! It records when each sequenced frame and each leaderboard version arrived, each answer's
//! send and ack times, the first leaderboard frame that showed it its new total, error frames
//! and close codes. [`super::wire::Measured`] carries it all back to the bench.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use fastwebsockets::{Frame, OpCode, Payload};
use quiz_client::{HandshakeError, WebSocketStream, open_websocket};
use rand::Rng;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::wire::{
    AnswerPlan, AnswerRecord, Arrivals, Command, FloorPlan, Measured, Mode, PhonePlan, Plan,
    Report, SequencedArrivals, now_us,
};

use crate::content::{OPTIONS, RIGHT as RIGHT_CHOICE};
/// Tries of the first join (router, socket, welcome) before a phone gives up.
const JOIN_TRIES: u32 = 8;
/// Frames parsed and waiting for the driver.
const INBOX: usize = 64;

/// The load process: reads its plan and commands from stdin, reports on stdout.
pub async fn run() -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let first = lines.next_line().await?.context("no plan on stdin")?;
    let plan: Plan = serde_json::from_str(&first).context("parsing the plan")?;
    let out = Out::default();
    let deadline = Duration::from_secs(plan.deadline_s);
    let run = async {
        match &plan.mode {
            Mode::Phones(p) => run_phones(&plan, p, &mut lines, &out).await,
            Mode::Floor(f) => run_floor(&plan, f, &mut lines, &out).await,
        }
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            out.send(&Report::Failed {
                error: format!("{e:#}"),
            })
            .await;
            Err(e)
        }
        Err(_) => {
            let error = format!("load process {} passed its deadline", plan.worker);
            out.send(&Report::Failed {
                error: error.clone(),
            })
            .await;
            anyhow::bail!(error)
        }
    }
}

/// Reports, one JSON line each, on stdout.
#[derive(Clone, Default)]
struct Out {
    lock: Arc<Mutex<()>>,
}

impl Out {
    async fn send(&self, report: &Report) {
        let _held = self.lock.lock().await;
        let mut line = serde_json::to_vec(report).unwrap_or_default();
        line.push(b'\n');
        let mut stdout = tokio::io::stdout();
        let _ = stdout.write_all(&line).await;
        let _ = stdout.flush().await;
    }
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>;

/// The next command; `Stop` when stdin closes (the bench is gone).
async fn next_command(lines: &mut Lines) -> anyhow::Result<Command> {
    match lines.next_line().await? {
        Some(line) => serde_json::from_str(&line).context("parsing a command"),
        None => Ok(Command::Stop),
    }
}

/// Everything the phones of this process share.
struct Shared {
    plan: PhonePlan,
    source: IpAddr,
    http: reqwest::Client,
    gate: Semaphore,
    joined: AtomicU64,
    failed: AtomicU64,
    /// The latest `Answer` command: (question, within_ms, generation).
    commands: watch::Receiver<Option<(u32, u64, u64)>>,
    stop: CancellationToken,
}

async fn run_phones(
    plan: &Plan,
    phones: &PhonePlan,
    lines: &mut Lines,
    out: &Out,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .local_address(plan.source)
        .pool_max_idle_per_host(phones.join_concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()?;
    let tokens = identity_tokens(&http, phones).await?;
    out.send(&Report::Ready {
        phones: phones.count,
    })
    .await;
    loop {
        match next_command(lines).await? {
            Command::Join => break,
            Command::Stop => return Ok(()),
            Command::Answer { .. } => {}
        }
    }
    let (command_tx, commands) = watch::channel(None);
    let shared = Arc::new(Shared {
        plan: phones.clone(),
        source: plan.source,
        http,
        gate: Semaphore::new(phones.join_concurrency.max(1)),
        joined: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        commands,
        stop: CancellationToken::new(),
    });
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        let n = phones.first + i as u64;
        tasks.push(tokio::spawn(phone(shared.clone(), n, token)));
    }
    let progress = {
        let (shared, out) = (shared.clone(), out.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let joined = shared.joined.load(Ordering::Relaxed);
                let failed = shared.failed.load(Ordering::Relaxed);
                out.send(&Report::Progress { joined, failed }).await;
            }
        })
    };
    let mut generation = 0;
    loop {
        match next_command(lines).await? {
            Command::Answer {
                question,
                within_ms,
            } => {
                generation += 1;
                let _ = command_tx.send(Some((question, within_ms, generation)));
            }
            Command::Join => {}
            Command::Stop => break,
        }
    }
    shared.stop.cancel();
    progress.abort();
    let mut measured = Measured {
        phones: phones.count,
        ..Measured::default()
    };
    for task in tasks {
        if let Ok(record) = task.await {
            record.fold_into(&mut measured);
        }
    }
    out.send(&Report::Done(Box::new(measured))).await;
    Ok(())
}

/// Identity-provider tokens for every phone, fetched before the storm (an app has its user's
/// token before anyone types a quiz code).
async fn identity_tokens(http: &reqwest::Client, plan: &PhonePlan) -> anyhow::Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Token {
        token: String,
    }
    let url = format!("{}/v1/dev/token", plan.router.trim_end_matches('/'));
    let gate = Arc::new(Semaphore::new(plan.join_concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..plan.count {
        let n = plan.first + i;
        let (http, url, gate) = (http.clone(), url.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let body = serde_json::json!({ "user": format!("bench-u{n}"), "role": "player" });
            let mut tries: u64 = 0;
            loop {
                let sent = http.post(&url).json(&body).send().await;
                match sent {
                    Ok(r) if r.status().is_success() => return Ok(r.json::<Token>().await?.token),
                    Ok(r) if tries < 10 && (r.status() == 429 || r.status().is_server_error()) => {}
                    Ok(r) => anyhow::bail!("dev token: {}", r.status()),
                    Err(_) if tries < 10 => {}
                    Err(e) => return Err(e.into()),
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
        }));
    }
    let mut tokens = Vec::with_capacity(tasks.len());
    for t in tasks {
        tokens.push(t.await.context("a token task")??);
    }
    Ok(tokens)
}

/// What one phone saw.
#[derive(Default)]
struct PhoneRecord {
    welcomed_at: Option<i64>,
    join_latency: Option<Duration>,
    failure: Option<(String, String)>,
    answers: Vec<AnswerRecord>,
    versions: Vec<(u64, i64, bool)>,
    sequenced: Vec<(u64, &'static str, i64)>,
    errors: BTreeMap<String, u64>,
    errors_without_answer_id: u64,
    closes: BTreeMap<String, u64>,
    reconnects: u64,
    bytes: u64,
    frames: u64,
}

impl PhoneRecord {
    fn fold_into(self, m: &mut Measured) {
        if let Some(at) = self.welcomed_at {
            m.joined += 1;
            m.welcomed_at.push(at);
        }
        if let Some(d) = self.join_latency {
            m.join_latency.record(d);
        }
        if let Some((code, message)) = self.failure {
            *m.join_failures.entry(code).or_default() += 1;
            if m.failure_samples.len() < 5 {
                m.failure_samples.push(message);
            }
        }
        m.answers.extend(self.answers);
        for (v, at, top) in self.versions {
            let a = m.versions.entry(v).or_default();
            a.add(at);
            a.with_top += u64::from(top);
        }
        for (seq, kind, at) in self.sequenced {
            let s = m.sequenced.entry(seq).or_insert_with(|| SequencedArrivals {
                kind: kind.to_owned(),
                arrivals: Arrivals::default(),
            });
            s.arrivals.add(at);
        }
        for (code, n) in self.errors {
            *m.errors.entry(code).or_default() += n;
        }
        m.errors_without_answer_id += self.errors_without_answer_id;
        for (code, n) in self.closes {
            *m.closes.entry(code).or_default() += n;
        }
        m.reconnects += self.reconnects;
        m.bytes_received += self.bytes;
        m.frames_received += self.frames;
    }
}

/// A server frame, as much of it as a phone here looks at.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    seq: Option<u64>,
    index: Option<u32>,
    v: Option<u64>,
    answer_id: Option<String>,
    points: Option<u32>,
    total: Option<u32>,
    code: Option<String>,
    retryable: Option<bool>,
    #[serde(rename = "ref")]
    reference: Option<IgnoredAny>,
    you: Option<You>,
    top: Option<IgnoredAny>,
    /// A question index (in an `ack`) or the current question (in a `welcome`).
    question: Option<serde_json::Value>,
    answered: Option<Answered>,
    leaderboard: Option<Board>,
    phase: Option<String>,
}

#[derive(Deserialize)]
struct You {
    score: Option<u32>,
}

#[derive(Deserialize)]
struct Answered {
    answer_id: String,
    points: u32,
    total: u32,
}

#[derive(Deserialize)]
struct Board {
    v: u64,
}

/// What the reader hands the driver.
enum In {
    Text {
        at: i64,
        len: usize,
        frame: Box<Incoming>,
    },
    /// A frame the protocol obliges us to send back (pong, close echo).
    Obligated(OpCode, Vec<u8>),
    Closed(String),
}

/// The answer a phone is working on.
struct Pending {
    /// Index into the record's answers.
    record: usize,
    question: u32,
    answer_id: String,
    choice: u32,
    /// When to (re)send it; `None` once sent and waiting.
    send_at: Option<tokio::time::Instant>,
    /// Retryable refusals so far: each doubles the pause before the next send.
    refusals: u32,
}

/// A phone's state across its connections.
struct State {
    n: u64,
    record: PhoneRecord,
    last_seq: Option<u64>,
    /// The live question open now: (index, seq).
    open: Option<u32>,
    /// Questions this phone has answered (or decided to): never twice.
    answered_up_to: Option<u32>,
    pending: Option<Pending>,
    /// An ack with points, waiting for a leaderboard frame that shows its total.
    board_wait: Option<(usize, u32)>,
    /// The highest score a leaderboard frame showed, with its version and arrival: a board
    /// can show a total before its ack arrives.
    shown: Option<(u32, u64, i64)>,
    last_command: u64,
    rng: rand::rngs::SmallRng,
}

async fn phone(shared: Arc<Shared>, n: u64, idp: String) -> PhoneRecord {
    let mut state = State {
        n,
        record: PhoneRecord::default(),
        last_seq: None,
        open: None,
        answered_up_to: None,
        pending: None,
        board_wait: None,
        shown: None,
        last_command: 0,
        rng: rand::SeedableRng::seed_from_u64(n),
    };
    let quiz = &shared.plan.quizzes[(n % shared.plan.quizzes.len() as u64) as usize];
    let mut ticket: Option<Ticket> = None;
    let mut tries = 0;
    let mut permit = Some(shared.gate.acquire().await);
    let started = Instant::now();
    while !shared.stop.is_cancelled() {
        if ticket.is_none() {
            match join_quiz(&shared, quiz, n, &idp).await {
                Ok(t) => ticket = Some(t),
                Err((code, message, retry)) => {
                    tries += 1;
                    if !retry || tries >= JOIN_TRIES {
                        state.record.failure = Some((code, message));
                        break;
                    }
                    backoff(tries).await;
                    continue;
                }
            }
        }
        let Some(t) = ticket.as_ref() else { break };
        let ws = match connect(&shared, t, n).await {
            Ok(ws) => ws,
            Err(e) => {
                tries += 1;
                if let HandshakeError::Refused { code: Some(c), .. } = &e
                    && c.as_str() == "token_expired"
                {
                    ticket = None;
                }
                if state.record.welcomed_at.is_none() && tries >= JOIN_TRIES {
                    state.record.failure = Some(("connect".into(), e.to_string()));
                    break;
                }
                backoff(tries.min(5)).await;
                continue;
            }
        };
        let end = session(&shared, &mut state, ws, &mut permit, started).await;
        match end {
            SessionEnd::Stopped => break,
            SessionEnd::Final(code) => {
                *state.record.closes.entry(code).or_default() += 1;
                break;
            }
            SessionEnd::Dropped(code) => {
                *state.record.closes.entry(code).or_default() += 1;
                if !shared.plan.reconnect {
                    break;
                }
                state.record.reconnects += 1;
                let pause = state.rng.random_range(50..500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
    if state.record.welcomed_at.is_none() {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        if state.record.failure.is_none() {
            state.record.failure = Some(("stopped".into(), "stopped before joining".into()));
        }
    }
    state.record
}

struct Ticket {
    session_token: String,
    ws_urls: Vec<String>,
}

/// The router's join: a ticket, or (code, message, worth retrying).
async fn join_quiz(
    shared: &Shared,
    quiz: &str,
    n: u64,
    idp: &str,
) -> Result<Ticket, (String, String, bool)> {
    #[derive(Deserialize)]
    struct Reply {
        session_token: String,
        ws_urls: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Refusal {
        code: String,
        message: String,
        retryable: bool,
    }
    let url = format!(
        "{}/v1/quizzes/{quiz}/join",
        shared.plan.router.trim_end_matches('/')
    );
    let body = serde_json::json!({ "nickname": format!("p{n}") });
    let response = shared
        .http
        .post(url)
        .bearer_auth(idp)
        .json(&body)
        .send()
        .await
        .map_err(|e| ("http".to_owned(), e.to_string(), true))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ("http".to_owned(), e.to_string(), true))?;
    if status.is_success() {
        let reply: Reply = serde_json::from_slice(&bytes)
            .map_err(|e| ("http".to_owned(), e.to_string(), false))?;
        return Ok(Ticket {
            session_token: reply.session_token,
            ws_urls: reply.ws_urls,
        });
    }
    Err(match serde_json::from_slice::<Refusal>(&bytes) {
        Ok(r) => (r.code, r.message, r.retryable),
        Err(_) => (
            format!("http_{}", status.as_u16()),
            String::from_utf8_lossy(&bytes).into_owned(),
            status.is_server_error(),
        ),
    })
}

/// Opens the socket on this phone's edge, or the next one that answers.
async fn connect(shared: &Shared, t: &Ticket, n: u64) -> Result<WebSocketStream, HandshakeError> {
    let len = t.ws_urls.len().max(1);
    let first = if shared.plan.spread_edges {
        (n as usize) % len
    } else {
        0
    };
    let mut last = HandshakeError::InvalidUrl("the ticket named no edge".into());
    for k in 0..t.ws_urls.len() {
        let url = &t.ws_urls[(first + k) % len];
        let open = open_websocket(url, Some(&t.session_token), Some(shared.source));
        match tokio::time::timeout(Duration::from_secs(10), open).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e @ HandshakeError::Refused { .. })) if is_final(&e) => return Err(e),
            Ok(Err(e)) => last = e,
            Err(_) => last = HandshakeError::Timeout,
        }
    }
    Err(last)
}

fn is_final(e: &HandshakeError) -> bool {
    matches!(e, HandshakeError::Refused { status: 401, .. })
}

async fn backoff(tries: u32) {
    let ms = 100u64 << tries.min(5);
    let jitter = rand::rng().random_range(0..=ms);
    tokio::time::sleep(Duration::from_millis(ms / 2 + jitter / 2)).await;
}

enum SessionEnd {
    /// The bench said stop.
    Stopped,
    /// Closed for good (quiz over, kicked…), with the close code.
    Final(String),
    /// Dropped: worth reconnecting.
    Dropped(String),
}

/// One socket's life: join, then frames until it closes or the bench says stop.
async fn session(
    shared: &Shared,
    state: &mut State,
    ws: WebSocketStream,
    permit: &mut Option<Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::AcquireError>>,
    started: Instant,
) -> SessionEnd {
    let (mut read, mut write) = ws.split(tokio::io::split);
    let (tx, mut inbox) = mpsc::channel::<In>(INBOX);
    let reader = tokio::spawn(async move {
        let obligations = tx.clone();
        let mut obligated = move |frame: Frame<'_>| {
            let _ = obligations.try_send(In::Obligated(frame.opcode, frame.payload.to_vec()));
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        };
        loop {
            let frame = match read.read_frame(&mut obligated).await {
                Ok(f) => f,
                Err(_) => {
                    let _ = tx.send(In::Closed("eof".into())).await;
                    return;
                }
            };
            let at = now_us();
            match frame.opcode {
                OpCode::Text => {
                    if let Ok(parsed) = serde_json::from_slice::<Incoming>(&frame.payload) {
                        let text = In::Text {
                            at,
                            len: frame.payload.len(),
                            frame: Box::new(parsed),
                        };
                        if tx.send(text).await.is_err() {
                            return;
                        }
                    }
                }
                OpCode::Close => {
                    let code = match frame.payload.get(..2) {
                        Some([a, b]) => u16::from_be_bytes([*a, *b]).to_string(),
                        _ => "none".into(),
                    };
                    let _ = tx.send(In::Closed(code)).await;
                    return;
                }
                _ => {}
            }
        }
    });
    let join = match state.last_seq {
        Some(seq) => format!(r#"{{"type":"join","last_seq":{seq}}}"#),
        None => r#"{"type":"join"}"#.to_owned(),
    };
    let mut joined = false;
    // A join refused as retryable: sent again on this socket after a backoff (PROTOCOL.md 3.1).
    let (mut join_refusals, mut rejoin_at) = (0u32, None);
    let end = 'session: {
        if send_text(&mut write, join.clone()).await.is_err() {
            break 'session SessionEnd::Dropped("write".into());
        }
        let mut commands = shared.commands.clone();
        loop {
            let send_at = state.pending.as_ref().and_then(|p| p.send_at);
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break 'session SessionEnd::Stopped,
                message = inbox.recv() => {
                    let Some(message) = message else {
                        break 'session SessionEnd::Dropped("eof".into());
                    };
                    match message {
                        In::Obligated(opcode, payload) => {
                            let frame = Frame::new(true, opcode, None, Payload::Owned(payload));
                            if write.write_frame(frame).await.is_err() {
                                break 'session SessionEnd::Dropped("write".into());
                            }
                        }
                        In::Closed(code) => {
                            let over = matches!(code.as_str(), "1000" | "4003" | "4004");
                            break 'session if over {
                                SessionEnd::Final(code)
                            } else {
                                SessionEnd::Dropped(code)
                            };
                        }
                        In::Text { at, len, frame } => {
                            state.record.bytes += len as u64;
                            state.record.frames += 1;
                            let first_welcome = !joined
                                && matches!(frame.kind.as_str(), "welcome" | "resumed");
                            if first_welcome {
                                joined = true;
                                if state.record.welcomed_at.is_none() {
                                    shared.joined.fetch_add(1, Ordering::Relaxed);
                                    state.record.welcomed_at = Some(at);
                                    state.record.join_latency = Some(started.elapsed());
                                    // The storm's gate is for joining; playing needs none.
                                    permit.take();
                                }
                                if let Some(p) = state.pending.as_mut() {
                                    // An answer in doubt across the drop: send it again.
                                    p.send_at = Some(tokio::time::Instant::now());
                                }
                            }
                            let join_refused = !joined
                                && frame.kind == "error"
                                && frame.answer_id.is_none()
                                && frame.retryable == Some(true);
                            if join_refused {
                                join_refusals += 1;
                                rejoin_at = Some(retry_at(&mut state.rng, join_refusals));
                            }
                            on_frame(shared, state, frame, at, joined);
                        }
                    }
                }
                () = sleep_until(rejoin_at), if rejoin_at.is_some() => {
                    rejoin_at = None;
                    if send_text(&mut write, join.clone()).await.is_err() {
                        break 'session SessionEnd::Dropped("write".into());
                    }
                }
                () = sleep_until(send_at), if send_at.is_some() => {
                    if let Some(p) = state.pending.as_mut() {
                        p.send_at = None;
                        let rec = &mut state.record.answers[p.record];
                        if rec.sent_us == 0 {
                            rec.sent_us = now_us();
                        } else {
                            rec.resent += 1;
                        }
                        let text = format!(
                            r#"{{"type":"answer","question":{},"answer_id":"{}","choice":{}}}"#,
                            p.question, p.answer_id, p.choice
                        );
                        if send_text(&mut write, text).await.is_err() {
                            break 'session SessionEnd::Dropped("write".into());
                        }
                    }
                }
                changed = commands.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let command = *commands.borrow_and_update();
                    if let Some((question, within_ms, generation)) = command
                        && generation > state.last_command
                    {
                        state.last_command = generation;
                        if state.open == Some(question) {
                            schedule_answer(shared, state, question, within_ms);
                        }
                    }
                }
            }
        }
    };
    reader.abort();
    let _ = write.write_frame(Frame::close(1000, b"")).await;
    end
}

async fn send_text(
    write: &mut fastwebsockets::WebSocketWrite<
        tokio::io::WriteHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
    >,
    text: String,
) -> Result<(), fastwebsockets::WebSocketError> {
    write
        .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
        .await
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records a frame and reacts to it.
fn on_frame(shared: &Shared, state: &mut State, frame: Box<Incoming>, at: i64, joined: bool) {
    let kind: &'static str = match frame.kind.as_str() {
        "question" => "question",
        "closed" => "closed",
        "reveal" => "reveal",
        "ended" => "ended",
        "paused" => "paused",
        "unpaused" => "unpaused",
        "started" => "started",
        _ => "other",
    };
    if let Some(seq) = frame.seq.filter(|_| kind != "other") {
        state.record.sequenced.push((seq, kind, at));
        state.last_seq = Some(state.last_seq.map_or(seq, |s| s.max(seq)));
    }
    match frame.kind.as_str() {
        "welcome" => {
            state.last_seq = frame.seq;
            if let Some(board) = &frame.leaderboard {
                state.record.versions.push((board.v, at, true));
            }
            let current = frame
                .question
                .as_ref()
                .and_then(|q| q.get("index"))
                .and_then(serde_json::Value::as_u64)
                .map(|i| i as u32);
            state.open = current.filter(|_| frame.phase.as_deref() == Some("open"));
            if let Some(a) = &frame.answered {
                settle_ack(state, &a.answer_id, a.points, a.total, at);
            }
            if let Some(q) = state.open {
                open_question(shared, state, q);
            }
        }
        "question" => {
            if let Some(index) = frame.index {
                state.open = Some(index);
                open_question(shared, state, index);
            }
        }
        "closed" | "reveal" | "ended" => state.open = None,
        "ack" => {
            if let (Some(id), Some(points), Some(total)) =
                (frame.answer_id.as_deref(), frame.points, frame.total)
            {
                settle_ack(state, id, points, total, at);
            }
        }
        "leaderboard" => {
            if let Some(v) = frame.v {
                state.record.versions.push((v, at, frame.top.is_some()));
                let score = frame.you.as_ref().and_then(|y| y.score);
                if let Some(score) = score
                    && state.shown.is_none_or(|(shown, _, _)| score > shown)
                {
                    state.shown = Some((score, v, at));
                }
                if let (Some((record, total)), Some(score)) = (state.board_wait, score)
                    && score >= total
                {
                    state.record.answers[record].board = Some((v, at));
                    state.board_wait = None;
                }
            }
        }
        "error" => {
            let code = frame.code.clone().unwrap_or_default();
            *state.record.errors.entry(code.clone()).or_default() += 1;
            match frame.answer_id.as_deref() {
                Some(id) => on_refusal(state, id, &code, frame.retryable.unwrap_or(false)),
                None if joined && frame.reference.is_none() => {
                    state.record.errors_without_answer_id += 1;
                }
                None => {}
            }
        }
        _ => {}
    }
}

/// A question is open: answer it (once) as the plan says.
fn open_question(shared: &Shared, state: &mut State, index: u32) {
    if let AnswerPlan::Spread { window_ms, .. } = shared.plan.answers {
        schedule_answer(shared, state, index, window_ms);
    }
}

fn schedule_answer(shared: &Shared, state: &mut State, question: u32, within_ms: u64) {
    if state.answered_up_to.is_some_and(|q| q >= question) {
        return;
    }
    let correct_pct = match shared.plan.answers {
        AnswerPlan::Never => return,
        AnswerPlan::Spread { correct_pct, .. } | AnswerPlan::OnCommand { correct_pct } => {
            correct_pct
        }
    };
    state.answered_up_to = Some(question);
    let right = state.rng.random_range(0..100) < correct_pct;
    let choice = if right {
        RIGHT_CHOICE
    } else {
        (RIGHT_CHOICE + state.rng.random_range(1..OPTIONS.len() as u32)) % OPTIONS.len() as u32
    };
    let delay = state.rng.random_range(0..=within_ms);
    state.record.answers.push(AnswerRecord {
        phone: state.n,
        question,
        sent_us: 0,
        acked_us: None,
        points: 0,
        total: 0,
        resent: 0,
        refused: None,
        board: None,
    });
    state.pending = Some(Pending {
        record: state.record.answers.len() - 1,
        question,
        answer_id: format!("b{}-{question}", state.n),
        choice,
        send_at: Some(tokio::time::Instant::now() + Duration::from_millis(delay)),
        refusals: 0,
    });
}

fn settle_ack(state: &mut State, answer_id: &str, points: u32, total: u32, at: i64) {
    let Some(p) = state.pending.as_ref().filter(|p| p.answer_id == answer_id) else {
        return;
    };
    let record = p.record;
    let rec = &mut state.record.answers[record];
    rec.acked_us = Some(at);
    rec.points = points;
    rec.total = total;
    state.pending = None;
    if points > 0 {
        match state.shown {
            // The board showed the total before the ack came: it waited for nothing.
            Some((shown, v, _)) if shown >= total => {
                state.record.answers[record].board = Some((v, at));
            }
            _ => state.board_wait = Some((record, total)),
        }
    }
}

/// When to send a refused frame again, after its `refusals`-th retryable refusal: as
/// PROTOCOL.md asks of clients, 100 ms doubling up to 2 s, with jitter.
fn retry_at(rng: &mut impl rand::Rng, refusals: u32) -> tokio::time::Instant {
    let ceiling = (100u64 << refusals.min(5)).min(2_000);
    let pause = rng.random_range(ceiling / 4..=ceiling);
    tokio::time::Instant::now() + Duration::from_millis(pause)
}

fn on_refusal(state: &mut State, answer_id: &str, code: &str, retryable: bool) {
    let Some(p) = state.pending.as_mut().filter(|p| p.answer_id == answer_id) else {
        return;
    };
    if retryable {
        p.refusals += 1;
        p.send_at = Some(retry_at(&mut state.rng, p.refusals));
    } else {
        state.record.answers[p.record].refused = Some(code.to_owned());
        state.pending = None;
    }
}

/// Bare sockets to floor servers: each records when every broadcast frame arrived.
async fn run_floor(
    plan: &Plan,
    floor: &FloorPlan,
    lines: &mut Lines,
    out: &Out,
) -> anyhow::Result<()> {
    out.send(&Report::Ready {
        phones: floor.count,
    })
    .await;
    loop {
        match next_command(lines).await? {
            Command::Join => break,
            Command::Stop => return Ok(()),
            Command::Answer { .. } => {}
        }
    }
    let gate = Arc::new(Semaphore::new(floor.connect_concurrency.max(1)));
    let joined = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..floor.count {
        let url = floor.urls[(i as usize) % floor.urls.len()].clone();
        let (gate, joined, stop, source) =
            (gate.clone(), joined.clone(), stop.clone(), plan.source);
        tasks.push(tokio::spawn(async move {
            let mut record = PhoneRecord::default();
            let ws = {
                let _permit = gate.acquire().await;
                match open_websocket(&url, None, Some(source)).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        record.failure = Some(("connect".into(), e.to_string()));
                        return record;
                    }
                }
            };
            record.welcomed_at = Some(now_us());
            joined.fetch_add(1, Ordering::Relaxed);
            let mut ws = ws;
            loop {
                let frame = tokio::select! {
                    _ = stop.cancelled() => break,
                    f = ws.read_frame() => f,
                };
                let Ok(frame) = frame else { break };
                let at = now_us();
                if frame.opcode == OpCode::Text {
                    record.bytes += frame.payload.len() as u64;
                    record.frames += 1;
                    #[derive(Deserialize)]
                    struct Numbered {
                        n: u64,
                    }
                    if let Ok(m) = serde_json::from_slice::<Numbered>(&frame.payload) {
                        record.versions.push((m.n, at, true));
                    }
                }
            }
            record
        }));
    }
    let progress = {
        let (joined, out) = (joined.clone(), out.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let joined = joined.load(Ordering::Relaxed);
                out.send(&Report::Progress { joined, failed: 0 }).await;
            }
        })
    };
    while !matches!(next_command(lines).await?, Command::Stop) {}
    // Dropping a read mid-frame is fine here: the socket is abandoned.
    stop.cancel();
    progress.abort();
    let mut measured = Measured {
        phones: floor.count,
        ..Measured::default()
    };
    for task in tasks {
        if let Ok(record) = task.await {
            record.fold_into(&mut measured);
        }
    }
    out.send(&Report::Done(Box::new(measured))).await;
    Ok(())
}
