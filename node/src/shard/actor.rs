//! One quiz's actor: the task that owns its [`Session`], feeds it requests and timeouts, makes
//! its writes durable through the journal, and pushes its events to subscribed edges.
//!
//! An answer is acknowledged only after the journal has appended it to the answer log; the
//! phone's request waits in `waiters` meanwhile, together with any retry of the same answer.
//! Events go to each edge once; a subscribed edge whose queue is full is dropped (it resyncs),
//! so one slow edge never stalls the quiz.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quiz_engine::{AnswerRecord, Effect, Session, Submit};
use quiz_protocol::client::{Role, ServerMessage, encode_server};
use quiz_protocol::cluster::{EdgeRequest, OwnerEvent, OwnerReply, Rejection};
use quiz_protocol::{AnswerId, Epoch, ErrorCode, HostCommand, Phase, PlayerNo, UserId};
use quiz_store::{Appended, Stores};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Command;
use super::journal::{self, Journal, Written};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::{Millis, now_ms};

/// Identifies one edge's subscription.
pub(crate) type EdgeId = u64;

static NEXT_EDGE: AtomicU64 = AtomicU64::new(1);

/// A fresh, process-unique edge id.
pub(crate) fn next_edge_id() -> EdgeId {
    NEXT_EDGE.fetch_add(1, Ordering::Relaxed)
}

type Waiters = HashMap<(PlayerNo, AnswerId), Vec<oneshot::Sender<OwnerReply>>>;

pub(super) struct QuizActor {
    session: Session,
    epoch: Epoch,
    commands: mpsc::Receiver<Command>,
    edges: Vec<(EdgeId, mpsc::Sender<Arc<OwnerEvent>>)>,
    waiters: Waiters,
    journal: Journal,
    written_tx: mpsc::Sender<Written>,
    written_rx: mpsc::Receiver<Written>,
    /// Open connections per player, across edges.
    connections: HashMap<PlayerNo, u32>,
    hosts: u32,
    ended_at: Option<Instant>,
    last_activity: Instant,
    fenced: bool,
    config: Arc<Config>,
    stores: Stores,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl QuizActor {
    pub(super) fn new(
        session: Session,
        epoch: Epoch,
        commands: mpsc::Receiver<Command>,
        config: Arc<Config>,
        stores: Stores,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        let (written_tx, written_rx) = mpsc::channel(1);
        let ended_at = (session.phase() == Phase::Ended).then(Instant::now);
        Self {
            session,
            epoch,
            commands,
            edges: Vec::new(),
            waiters: HashMap::new(),
            journal: Journal::default(),
            written_tx,
            written_rx,
            connections: HashMap::new(),
            hosts: 0,
            ended_at,
            last_activity: Instant::now(),
            fenced: false,
            config,
            stores,
            metrics,
            shutdown,
        }
    }

    pub(super) async fn run(mut self) {
        // A restored session may have deadlines that passed while it was not loaded.
        self.session.handle_timeout(now_ms());
        self.perform_effects();
        loop {
            self.start_write();
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(written) = self.written_rx.recv() => self.on_written(written),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.session.handle_timeout(now_ms());
                }
            }
            self.perform_effects();
            if self.fenced || self.should_retire() {
                break;
            }
        }
        self.finish().await;
    }

    /// The earliest of the engine's next timeout, a journal retry, and the retirement check.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(60);
        if let Some(at) = self.session.poll_timeout() {
            wake = wake.min(instant_at(at, now));
        }
        if let Some(at) = self.journal.retry_at() {
            wake = wake.min(at);
        }
        wake.min(self.retire_at())
    }

    /// When the quiz may be unloaded, if nothing happens before then.
    fn retire_at(&self) -> Instant {
        let limits = &self.config.limits;
        match self.ended_at {
            Some(ended) => ended + Duration::from_secs(limits.ended_linger_s),
            None => self.last_activity + Duration::from_secs(limits.idle_quiz_linger_s),
        }
    }

    fn should_retire(&self) -> bool {
        if self.journal.in_flight() || !self.journal.is_empty() || !self.waiters.is_empty() {
            return false;
        }
        let idle = self.ended_at.is_some() || (self.hosts == 0 && self.connections.is_empty());
        idle && Instant::now() >= self.retire_at()
    }

    fn on_command(&mut self, command: Command) {
        self.last_activity = Instant::now();
        match command {
            Command::Request { request, reply } => self.on_request(request, reply),
            Command::Subscribe { edge, events, done } => {
                let full = OwnerEvent::Leaderboard(self.session.leaderboard_full());
                if events.try_send(Arc::new(full)).is_ok() {
                    self.edges.push((edge, events));
                }
                let _ = done.send(());
            }
            Command::Unsubscribe { edge } => self.edges.retain(|(id, _)| *id != edge),
        }
    }

    fn on_request(&mut self, request: EdgeRequest, reply: oneshot::Sender<OwnerReply>) {
        let now = now_ms();
        let answer = match request {
            EdgeRequest::Join {
                user,
                role,
                nickname,
                last_seq,
            } => self.join(&user, role, &nickname, last_seq, now),
            EdgeRequest::Answer {
                player,
                question,
                answer_id,
                answer,
            } => {
                return self.answer(player, question, answer_id, answer, reply, now);
            }
            EdgeRequest::Next { player } => match self.session.next(player, now) {
                Ok(frame) => OwnerReply::Frame(encode_server(&frame)),
                Err(r) => reject(r.code, r.message),
            },
            EdgeRequest::Leave { player }
            | EdgeRequest::Disconnect {
                player: Some(player),
            } => {
                self.disconnected(player, now);
                OwnerReply::Done
            }
            EdgeRequest::Disconnect { player: None } => {
                self.hosts = self.hosts.saturating_sub(1);
                OwnerReply::Done
            }
            EdgeRequest::Host {
                user,
                command,
                target,
                reference,
            } => self.host(&user, command, target, reference, now),
        };
        let _ = reply.send(answer);
    }

    fn join(
        &mut self,
        user: &UserId,
        role: Role,
        nickname: &str,
        last_seq: Option<u64>,
        now: Millis,
    ) -> OwnerReply {
        let player = match role {
            Role::Host => {
                self.hosts += 1;
                None
            }
            Role::Player => match self.session.join(user, nickname, now) {
                Ok(joined) => {
                    let count = self.connections.entry(joined.player).or_insert(0);
                    *count += 1;
                    if *count == 1 {
                        self.session.set_connected(joined.player, true, now);
                    }
                    Some(joined.player)
                }
                Err(r) => {
                    self.metrics
                        .joins
                        .with_label_values(&[r.code.as_str()])
                        .inc();
                    return reject(r.code, r.message);
                }
            },
        };
        let replay = last_seq.and_then(|seq| self.session.replay(seq, player, role, now));
        // A welcome carries the leaderboard at the current version; a replay carries none
        // (version 0), so the edge sends the phone a fresh one.
        let (seq, leaderboard_v, frames, outcome) = match replay {
            Some((resumed, events)) => {
                let seq = resumed.to_seq;
                let mut frames = vec![encode_server(&ServerMessage::Resumed(resumed))];
                frames.extend(events.iter().map(encode_server));
                (seq, 0, frames, "resumed")
            }
            None => {
                let welcome = self.session.welcome(player, role, now);
                let (seq, v) = (welcome.seq, welcome.leaderboard.v);
                let frame = encode_server(&ServerMessage::Welcome(Box::new(welcome)));
                (seq, v, vec![frame], "welcome")
            }
        };
        self.metrics.joins.with_label_values(&[outcome]).inc();
        OwnerReply::Joined {
            player,
            seq,
            leaderboard_v,
            frames,
        }
    }

    fn disconnected(&mut self, player: PlayerNo, now: Millis) {
        if let Some(count) = self.connections.get_mut(&player) {
            *count -= 1;
            if *count == 0 {
                self.connections.remove(&player);
                self.session.set_connected(player, false, now);
            }
        }
    }

    fn answer(
        &mut self,
        player: PlayerNo,
        question: u32,
        answer_id: AnswerId,
        answer: quiz_protocol::Answer,
        reply: oneshot::Sender<OwnerReply>,
        now: Millis,
    ) {
        if self.journal.queued_answers() >= self.config.limits.max_pending_answers {
            let rejection = Rejection {
                code: ErrorCode::Unavailable,
                message: "too many answers are waiting to be stored; retry".into(),
                answer_id: Some(answer_id),
            };
            self.metrics
                .answers
                .with_label_values(&["overloaded"])
                .inc();
            let _ = reply.send(OwnerReply::Error(rejection));
            return;
        }
        let key = (player, answer_id.clone());
        match self
            .session
            .submit(player, question, answer_id.clone(), answer, now)
        {
            Submit::Accepted(record) => {
                self.waiters.entry(key).or_default().push(reply);
                self.journal.append(record);
            }
            Submit::InFlight => self.waiters.entry(key).or_default().push(reply),
            Submit::Duplicate(ack) => {
                self.metrics.answers.with_label_values(&["duplicate"]).inc();
                let _ = reply.send(OwnerReply::Frame(encode_server(&ServerMessage::Ack(ack))));
            }
            Submit::Rejected(r) => {
                self.metrics
                    .answers
                    .with_label_values(&[r.code.as_str()])
                    .inc();
                let rejection = Rejection {
                    code: r.code,
                    message: r.message,
                    answer_id: Some(answer_id),
                };
                let _ = reply.send(OwnerReply::Error(rejection));
            }
        }
    }

    fn host(
        &mut self,
        user: &UserId,
        command: HostCommand,
        target: Option<String>,
        reference: Option<String>,
        now: Millis,
    ) -> OwnerReply {
        match self.session.host(command, target.as_deref(), now) {
            Ok(mut ok) => {
                tracing::info!(%user, ?command, phase = ?ok.phase, "host command");
                ok.reference = reference;
                OwnerReply::Frame(encode_server(&ServerMessage::HostOk(ok)))
            }
            Err(r) => reject(r.code, r.message),
        }
    }

    /// Starts the next journal batch if none is in flight.
    fn start_write(&mut self) {
        let Some(batch) = self
            .journal
            .take_batch(self.config.limits.max_write_batch, Instant::now())
        else {
            return;
        };
        let n = batch.answers.len();
        if n > 0 {
            self.metrics.write_batch_answers.observe(n as f64);
        }
        let stores = self.stores.clone();
        let quiz = self.session.id().clone();
        let tx = self.written_tx.clone();
        let epoch = self.epoch;
        // The write runs beside the actor so that new answers keep queueing meanwhile; the
        // actor never has more than one batch in flight.
        tokio::spawn(async move {
            let written = journal::write(stores, quiz, epoch, batch).await;
            let _ = tx.send(written).await;
        });
    }

    fn on_written(&mut self, written: Written) {
        let result = if written.answers.as_ref().is_some_and(|a| a.is_ok()) {
            "ok"
        } else {
            "err"
        };
        self.metrics
            .store_write_seconds
            .with_label_values(&[result])
            .observe(written.elapsed.as_secs_f64());
        if written.fenced() {
            tracing::error!("another node owns this quiz now (fenced); stopping");
            self.fenced = true;
        }
        let now = now_ms();
        match &written.answers {
            Some(Ok(outcomes)) => {
                for (record, outcome) in written.batch.answers.iter().zip(outcomes) {
                    self.settle_answer(record, Some(outcome), now);
                }
            }
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::warn!(error = %e, "appending answers failed");
                } else if let Err(e) = &written.players {
                    tracing::warn!(error = %e, "saving players failed");
                }
                for record in &written.batch.answers {
                    self.settle_answer(record, None, now);
                }
            }
        }
        if let Err(e) = &written.progress {
            tracing::warn!(error = %e, "saving progress failed; will retry");
        }
        if let Err(e) = &written.leaderboard.1 {
            tracing::warn!(error = %e, "leaderboard store update failed; will catch up");
        }
        self.journal.settle(&written, Instant::now());
    }

    /// Acks or refuses one answer of a written batch (`None`: the write failed).
    fn settle_answer(&mut self, record: &AnswerRecord, outcome: Option<&Appended>, now: Millis) {
        let reply = match outcome {
            Some(Appended::Inserted) if !self.fenced => {
                self.metrics.answers.with_label_values(&["accepted"]).inc();
                let ack = self.session.commit(record, now);
                OwnerReply::Frame(encode_server(&ServerMessage::Ack(ack)))
            }
            Some(Appended::Existing(stored))
                if stored.answer_id == record.answer_id && !self.fenced =>
            {
                // An earlier attempt of this very answer reached the log; count what it stored.
                self.metrics.answers.with_label_values(&["accepted"]).inc();
                let ack = self.session.commit(stored, now);
                OwnerReply::Frame(encode_server(&ServerMessage::Ack(ack)))
            }
            Some(Appended::Existing(_)) => {
                self.session.abort(record);
                self.metrics
                    .answers
                    .with_label_values(&["already_answered"])
                    .inc();
                OwnerReply::Error(Rejection {
                    code: ErrorCode::AlreadyAnswered,
                    message: "another answer to this question is already recorded".into(),
                    answer_id: Some(record.answer_id.clone()),
                })
            }
            _ => {
                self.session.abort(record);
                self.metrics
                    .answers
                    .with_label_values(&["unavailable"])
                    .inc();
                OwnerReply::Error(Rejection {
                    code: ErrorCode::Unavailable,
                    message: "the answer could not be stored; retry with the same answer_id".into(),
                    answer_id: Some(record.answer_id.clone()),
                })
            }
        };
        let key = (record.player, record.answer_id.clone());
        for waiter in self.waiters.remove(&key).unwrap_or_default() {
            let _ = waiter.send(reply.clone());
        }
    }

    fn perform_effects(&mut self) {
        while let Some(effect) = self.session.poll_effect() {
            match effect {
                Effect::SaveProgress(p) => self.journal.save_progress(p),
                Effect::SavePlayer(p) => self.journal.save_player(p),
                Effect::Send { audience, msg } => {
                    let json = encode_server(&msg);
                    self.broadcast(OwnerEvent::Frame {
                        audience,
                        seq: msg.seq(),
                        json,
                    });
                }
                Effect::Leaderboard(update) => self.broadcast(OwnerEvent::Leaderboard(update)),
                Effect::Kicked(player) => {
                    self.journal.remove_from_leaderboard(player);
                    self.broadcast(OwnerEvent::Kicked { player });
                }
                Effect::Ended => {
                    tracing::info!("quiz ended");
                    self.ended_at = Some(Instant::now());
                }
            }
        }
    }

    /// Sends one event to every subscribed edge; an edge that cannot keep up is dropped.
    fn broadcast(&mut self, event: OwnerEvent) {
        let event = Arc::new(event);
        self.edges
            .retain(|(edge, tx)| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(edge, error = %e, "dropping an edge that cannot keep up");
                    false
                }
            });
    }

    /// Flushes the journal (bounded by the shutdown grace) and tells edges the quiz is gone.
    async fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(self.config.limits.shutdown_grace_s);
        while !self.fenced && (self.journal.in_flight() || !self.journal.is_empty()) {
            if !self.journal.in_flight() {
                self.start_write();
                if !self.journal.in_flight() {
                    // Backing off after a failure: wait for the retry time.
                    let at = self.journal.retry_at().unwrap_or_else(Instant::now);
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
            }
            match tokio::time::timeout_at(deadline.into(), self.written_rx.recv()).await {
                Ok(Some(written)) => self.on_written(written),
                _ => break,
            }
        }
        if !self.journal.is_empty() {
            tracing::error!("stopping with writes that could not be made durable");
        }
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.send(OwnerReply::Error(super::unavailable(
                    "the quiz is moving; retry",
                )));
            }
        }
        let ended = self.ended_at.is_some() && !self.fenced;
        self.broadcast(OwnerEvent::Gone { ended });
        tracing::info!("quiz unloaded");
    }
}

fn reject(code: ErrorCode, message: String) -> OwnerReply {
    OwnerReply::Error(Rejection {
        code,
        message,
        answer_id: None,
    })
}

/// The monotonic instant of a wall-clock time.
fn instant_at(at: Millis, now: Instant) -> Instant {
    let delta = at - now_ms();
    if delta <= 0 {
        now
    } else {
        now + Duration::from_millis(delta as u64)
    }
}
