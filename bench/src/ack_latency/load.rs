//! One run's load on a started system: quizzes from a generated question set, a host per
//! quiz, phones that answer every question after a think time, and what they measured.
//!
//! Each phone is one [`QuizConnection`] with the SDK's default (phone) options, driven by a
//! task of its own that keeps reading its events while its answers are in flight (an unread
//! event queue would stop the socket being read, and the ack with it). An answer's latency
//! is taken around `answer()`: from just before the call to the ack, retries included.
//!
//! The warmup questions are left out of every figure. Client side, by question index. Server
//! side, the node's histograms are scraped once every phone has settled its warmup answers
//! and again at the end, and the difference is reported: with quizzes not in lockstep, a
//! few answers of the fastest quiz's first measured question may fall before that scrape
//! (the report gives the server's count beside the client's).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use quiz_client::{Event, EventStream, Options, QuizConnection, RouterClient};
use quiz_local::LocalSystem;
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{Answer, AutoAdvance, HostCommand, Phase, QuestionSet, QuizId, QuizSettings};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::histogram::LatencyHistogram;
use crate::machine::{CpuSnapshot, CpuUse};
use crate::scrape::{self, PromHistogram};

/// The user that hosts every bench quiz.
const HOST_USER: &str = "bench-host";
/// The generated question set's id.
const SET_ID: &str = "bench-single-choice";
/// Every question's time limit: long enough that no think time runs into it.
pub(super) const TIME_LIMIT_S: u32 = 30;
/// Phones joining at once (router HTTP + WebSocket handshake each).
const JOIN_CONCURRENCY: usize = 32;
/// Sockets per source address: under the node's 10,000 per IP, and far from the ~28,000
/// ephemeral ports one (source, destination) pair has.
const PHONES_PER_SOURCE: usize = 5_000;
/// Bounds joining everyone; also the slack on a run's bound beyond the quizzes' own length.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// What one run asks of the system.
#[derive(Clone, Debug)]
pub(super) struct Load {
    pub(super) quizzes: usize,
    pub(super) phones: usize,
    pub(super) think: Duration,
    pub(super) questions: u32,
    pub(super) warmup: u32,
}

/// What one run measured, before it is turned into figures.
#[derive(Debug)]
pub(super) struct Measured {
    /// Client-side latencies of acked answers to measured questions.
    pub(super) client: LatencyHistogram,
    /// From the first measured question reaching a phone to the last measured ack.
    pub(super) window: Duration,
    /// Answers (any question) that got no ack, and the first reason seen.
    pub(super) failed: u64,
    pub(super) first_failure: Option<String>,
    /// The node's histograms over the measured part of the run.
    pub(super) server_ack: Option<PromHistogram>,
    pub(super) write_batch: Option<PromHistogram>,
    pub(super) store_write: Option<PromHistogram>,
    pub(super) store_write_errors: Option<PromHistogram>,
    pub(super) cpu: CpuUse,
}

/// What one phone saw.
#[derive(Default)]
struct PhoneResult {
    /// Latencies of acked answers to measured questions.
    latencies: Vec<Duration>,
    /// When the first measured question reached this phone.
    measured_from: Option<Instant>,
    /// When this phone's last measured ack arrived.
    last_ack: Option<Instant>,
    failed: u64,
    first_failure: Option<String>,
}

/// One settled answer.
struct Answered {
    question: u32,
    latency: Duration,
    at: Instant,
    result: Result<(), String>,
}

/// The node's `/metrics` and the CPU counters at one moment.
struct Snapshot {
    metrics: String,
    cpu: CpuSnapshot,
}

/// Runs the load on `system` and measures it. Every phone and host is closed on return.
pub(super) async fn run(system: &LocalSystem, load: &Load) -> anyhow::Result<Measured> {
    let host = system.client(HOST_USER, Role::Host).await?;
    host.put_question_set(&question_set(load.questions))
        .await
        .context("storing the bench question set")?;
    let settings = QuizSettings {
        auto_advance: Some(AutoAdvance {
            reveal_after_ms: 0,
            next_after_ms: 0,
        }),
        close_when_all_answered: true,
        max_players: u32::try_from(load.phones)?.max(QuizSettings::default().max_players),
        ..QuizSettings::default()
    };
    let mut quizzes = Vec::new();
    for _ in 0..load.quizzes {
        quizzes.push(
            system
                .create_quiz(HOST_USER, SET_ID, settings.clone())
                .await?,
        );
    }

    let mut hosts = Vec::new();
    for quiz in &quizzes {
        let ticket = host.join(quiz, "host", Some(Role::Host)).await?;
        let (conn, events) = QuizConnection::connect(ticket, Options::default())
            .await
            .with_context(|| format!("host connecting to quiz {quiz}"))?;
        hosts.push((conn, tokio::spawn(until_ended(events))));
    }

    let warm = Arc::new(Semaphore::new(0));
    let phones = join_phones(system, &quizzes, load, &warm).await?;

    let measured = play(system, load, &mut hosts, phones, &warm).await;
    for (conn, drain) in hosts {
        conn.close().await;
        drain.abort();
    }
    measured
}

/// Starts every quiz, waits for the phones, and measures.
async fn play(
    system: &LocalSystem,
    load: &Load,
    hosts: &mut [(QuizConnection, JoinHandle<bool>)],
    phones: Vec<JoinHandle<PhoneResult>>,
    warm: &Semaphore,
) -> anyhow::Result<Measured> {
    let admin = system.node(0).admin_addr();
    let aborts: Vec<_> = phones.iter().map(|p| p.abort_handle()).collect();
    let total = u32::try_from(phones.len())?;
    // A quiz lasts at most one time limit per question (auto-advance waits no longer).
    let limit =
        Duration::from_secs(u64::from(TIME_LIMIT_S) * u64::from(load.questions)) + SETUP_TIMEOUT;
    let played = tokio::time::timeout(limit, async {
        for (conn, _) in hosts.iter() {
            conn.host(HostCommand::Start, None)
                .await
                .context("host start")?;
        }
        // Every phone signals once its warmup answers are settled (or it has stopped).
        let _all = warm.acquire_many(total).await?;
        let start = snapshot(admin).await?;
        let mut results = Vec::new();
        for phone in phones {
            results.push(phone.await.context("a phone task failed")?);
        }
        let end = snapshot(admin).await?;
        // Every phone is done, so each quiz ends at once.
        for (_, drain) in hosts.iter_mut() {
            match tokio::time::timeout(Duration::from_secs(10), drain).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => bail!("a host's session closed before its quiz ended"),
                Ok(Err(e)) => return Err(anyhow::Error::from(e).context("a host task failed")),
                Err(_) => bail!("a quiz did not end after its phones finished"),
            }
        }
        anyhow::Ok(measure(results, &start, &end))
    })
    .await;
    let measured =
        played.unwrap_or_else(|_| Err(anyhow!("the run did not finish within {limit:?}")));
    if measured.is_err() {
        // Phones still playing would go on reconnecting to a system about to stop.
        for abort in aborts {
            abort.abort();
        }
    }
    measured
}

/// Joins `load.phones` phones to each quiz, at most [`JOIN_CONCURRENCY`] at a time, and
/// starts each one's task as soon as it is in.
async fn join_phones(
    system: &LocalSystem,
    quizzes: &[QuizId],
    load: &Load,
    warm: &Arc<Semaphore>,
) -> anyhow::Result<Vec<JoinHandle<PhoneResult>>> {
    let gate = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let router = RouterClient::new(system.router_url(), "");
    let mut joining = JoinSet::new();
    for (q, quiz) in quizzes.iter().enumerate() {
        for p in 0..load.phones {
            let index = q * load.phones + p;
            let (gate, router, quiz, warm) =
                (gate.clone(), router.clone(), quiz.clone(), warm.clone());
            let load = load.clone();
            joining.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let user = format!("bench-q{q}-p{p}");
                let nickname = format!("q{q}-p{p}");
                let (conn, events) = join_phone(&router, &quiz, &user, &nickname, index).await?;
                let signal = WarmupSignal(warm);
                anyhow::Ok(tokio::spawn(phone(conn, events, load, signal)))
            });
        }
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut phones = Vec::new();
    loop {
        let joined = match tokio::time::timeout_at(deadline, joining.join_next()).await {
            Ok(None) => return Ok(phones),
            Ok(Some(joined)) => joined.map_err(anyhow::Error::from).and_then(|r| r),
            Err(_) => Err(anyhow!("phones did not all join within {SETUP_TIMEOUT:?}")),
        };
        match joined {
            Ok(handle) => phones.push(handle),
            Err(e) => {
                joining.abort_all();
                phones.iter().for_each(JoinHandle::abort);
                return Err(e.context("joining the phones"));
            }
        }
    }
}

/// One phone joins through the router (a dev token, then `join`) and opens its socket
/// from its source address.
async fn join_phone(
    router: &RouterClient,
    quiz: &QuizId,
    user: &str,
    nickname: &str,
    index: usize,
) -> anyhow::Result<(QuizConnection, EventStream)> {
    let token = RouterClient::dev_token(router.base_url(), user, Role::Player).await?;
    let router = router.with_token(token);
    let ticket = router.join(quiz, nickname, None).await?;
    let options = Options {
        local_addr: Some(source_address(index)),
        ..Options::default()
    }
    .with_refresh(router.refresher(quiz.clone(), nickname.to_owned(), None));
    Ok(QuizConnection::connect(ticket, options).await?)
}

/// 127.0.0.2 for the first [`PHONES_PER_SOURCE`] phones, 127.0.0.3 for the next, ...
fn source_address(index: usize) -> IpAddr {
    let host = 2 + index / PHONES_PER_SOURCE;
    // Validation keeps the phone count far below 250 × PHONES_PER_SOURCE.
    let host = u8::try_from(host).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// Releases one permit of the warmup semaphore when dropped: when the phone has settled its
/// warmup answers, or whenever its task ends.
struct WarmupSignal(Arc<Semaphore>);

impl Drop for WarmupSignal {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// One phone: answers each question once, after a random think time, until the quiz ends.
async fn phone(
    conn: QuizConnection,
    mut events: EventStream,
    load: Load,
    signal: WarmupSignal,
) -> PhoneResult {
    let mut result = PhoneResult::default();
    let mut signal = (load.warmup > 0).then_some(signal);
    let mut warmup_left = load.warmup;
    let mut answering = JoinSet::new();
    let mut next_question = 0;
    let mut open = true;
    while open || !answering.is_empty() {
        tokio::select! {
            Some(done) = answering.join_next() => {
                let done: Answered = match done {
                    Ok(done) => done,
                    Err(e) => {
                        result.failed += 1;
                        result.first_failure.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                };
                let measured = done.question >= load.warmup;
                match done.result {
                    Ok(()) if measured => {
                        result.latencies.push(done.latency);
                        result.last_ack = Some(result.last_ack.map_or(done.at, |t| t.max(done.at)));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        result.failed += 1;
                        result.first_failure.get_or_insert(e);
                    }
                }
                if !measured {
                    warmup_left -= 1;
                    if warmup_left == 0 {
                        signal = None;
                    }
                }
            }
            event = events.recv(), if open => match event {
                Some(Event::Frame(frame)) => {
                    if matches!(*frame, ServerMessage::Ended(_)) {
                        open = false;
                    }
                    match open_question(&frame) {
                        Some(index) if index >= next_question => {
                            next_question = index + 1;
                            if index == load.warmup {
                                result.measured_from = Some(Instant::now());
                            }
                            let (think, choice) = think_and_choose(load.think);
                            answering.spawn(answer(conn.clone(), index, choice, think));
                        }
                        _ => {}
                    }
                }
                Some(Event::Closed { reason, .. }) => {
                    result.first_failure.get_or_insert_with(|| format!("session closed: {reason}"));
                    open = false;
                }
                Some(Event::Reconnecting { .. } | Event::Reconnected) => {}
                None => open = false,
            },
        }
    }
    drop(signal);
    conn.close().await;
    result
}

/// The question a frame asks this phone to answer: a new question, or the open one in the
/// snapshot of a rejoin that found no answer of ours to it.
fn open_question(frame: &ServerMessage) -> Option<u32> {
    match frame {
        ServerMessage::Question(q) => Some(q.index),
        ServerMessage::Welcome(w) if w.phase == Phase::Open && w.answered.is_none() => {
            w.question.as_ref().map(|q| q.index)
        }
        _ => None,
    }
}

/// A think time uniform in [0, `think`] and one of the options, uniformly.
fn think_and_choose(think: Duration) -> (Duration, u32) {
    let mut rng = rand::rng();
    let think_us = u64::try_from(think.as_micros()).unwrap_or(u64::MAX);
    (
        Duration::from_micros(rng.random_range(0..=think_us)),
        rng.random_range(0..crate::content::OPTIONS.len() as u32),
    )
}

/// Thinks, then answers and times the answer to its ack.
async fn answer(conn: QuizConnection, question: u32, choice: u32, think: Duration) -> Answered {
    tokio::time::sleep(think).await;
    let sent = Instant::now();
    let result = conn.answer(question, Answer::Choice(choice)).await;
    let at = Instant::now();
    Answered {
        question,
        latency: at - sent,
        at,
        result: result.map(drop).map_err(|e| e.to_string()),
    }
}

/// A host's events, read until its quiz ends: true if it did.
async fn until_ended(mut events: EventStream) -> bool {
    while let Some(event) = events.recv().await {
        match event {
            Event::Frame(frame) if matches!(*frame, ServerMessage::Ended(_)) => return true,
            Event::Closed { .. } => return false,
            _ => {}
        }
    }
    false
}

async fn snapshot(admin: std::net::SocketAddr) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        metrics: scrape::metrics(admin).await?,
        cpu: CpuSnapshot::now(),
    })
}

/// Folds the phones' results and the two snapshots into what the run measured.
fn measure(results: Vec<PhoneResult>, start: &Snapshot, end: &Snapshot) -> Measured {
    let mut client = LatencyHistogram::new();
    let (mut from, mut to) = (None::<Instant>, None::<Instant>);
    let (mut failed, mut first_failure) = (0, None);
    for r in results {
        for latency in &r.latencies {
            client.record(*latency);
        }
        from = min_some(from, r.measured_from);
        to = max_some(to, r.last_ack);
        failed += r.failed;
        first_failure = first_failure.or(r.first_failure);
    }
    let window = match (from, to) {
        (Some(from), Some(to)) => to.saturating_duration_since(from),
        _ => Duration::ZERO,
    };
    let series = |name: &str, labels: &[(&str, &str)]| {
        let after = PromHistogram::parse(&end.metrics, name, labels)?;
        let before = PromHistogram::parse(&start.metrics, name, labels).unwrap_or_default();
        Some(after.since(&before))
    };
    Measured {
        client,
        window,
        failed,
        first_failure,
        server_ack: series("quiz_node_answer_ack_seconds", &[]),
        write_batch: series("quiz_node_write_batch_answers", &[]),
        store_write: series("quiz_node_store_write_seconds", &[("result", "ok")]),
        store_write_errors: series("quiz_node_store_write_seconds", &[("result", "err")]),
        cpu: end.cpu.since(&start.cpu),
    }
}

fn min_some(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_some(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `questions` single-choice questions with four options and a 30 s limit.
pub(super) fn question_set(questions: u32) -> QuestionSet {
    crate::content::single_choice_set(SET_ID, questions, TIME_LIMIT_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_set_is_valid() {
        let set = question_set(20);
        assert_eq!(set.questions.len(), 20);
        assert_eq!(set.validate(), Ok(()));
    }

    #[test]
    fn phones_spread_over_source_addresses_from_127_0_0_2() {
        assert_eq!(source_address(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            source_address(PHONES_PER_SOURCE - 1),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            source_address(PHONES_PER_SOURCE),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))
        );
    }
}
