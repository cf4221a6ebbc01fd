//! One quiz's actor: the task that owns its [`Session`], feeds it requests and timeouts, makes
//! its writes durable through the journal, and pushes its events to subscribed edges through
//! the outbox.
//!
//! An answer is acknowledged only after the journal has appended it to the answer log; the
//! phone's request waits in `waiters` meanwhile, together with any retry of the same answer.
//! A phase change is announced only after it is durable (see [`super::outbox`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quiz_engine::{AnswerRecord, Effect, Session, Submit};
use quiz_protocol::client::{Role, ServerMessage, encode_server};
use quiz_protocol::cluster::{EdgeRequest, OwnerEvent, OwnerReply, Rejection};
use quiz_protocol::{AnswerId, Epoch, ErrorCode, HostCommand, NodeId, Phase, PlayerNo, UserId};
use quiz_store::{Appended, StoreError, Stores};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Command;
use super::journal::{self, BoardWritten, DurableWritten, Journal, Written};
use super::outbox::Outbox;
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

type Refusal = (oneshot::Sender<OwnerReply>, Rejection);

/// Refusals waiting for a read of the quiz's epoch: those the running read answers, and those
/// that came after it started (the next read answers them).
#[derive(Default)]
struct Refusals {
    checking: Option<Vec<Refusal>>,
    next: Vec<Refusal>,
}

pub(super) struct QuizActor {
    session: Session,
    /// This node, the quiz's owner at `epoch`.
    node: NodeId,
    /// Another node owns the quiz now: flush and give it up.
    handing_off: bool,
    epoch: Epoch,
    commands: mpsc::Receiver<Command>,
    outbox: Outbox,
    /// Replies to host commands carried out and to joins, waiting for their effects to reach
    /// the outbox (they go out once those are durable).
    held_replies: Vec<(oneshot::Sender<OwnerReply>, OwnerReply)>,
    waiters: Waiters,
    journal: Journal,
    /// The ISO week of the quiz, for its weekly league.
    week: String,
    /// Answers of this quiz in the log (as far as this actor knows: appended and settled).
    logged: u64,
    written_tx: mpsc::Sender<Written>,
    written_rx: mpsc::Receiver<Written>,
    /// Open connections per player, across edges.
    connections: HashMap<PlayerNo, u32>,
    hosts: u32,
    ended_at: Option<Instant>,
    last_activity: Instant,
    fenced: bool,
    /// Rebuild requests (from the admin endpoint) waiting for the board to catch up.
    rebuild_waiters: Vec<oneshot::Sender<Result<(), Rejection>>>,
    /// Refusals of answers waiting for the store to confirm the owner (see `refuse`).
    refusals: Refusals,
    config: Arc<Config>,
    stores: Stores,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl QuizActor {
    #[allow(clippy::too_many_arguments)] // one call site, in `Shard::load`
    pub(super) fn new(
        session: Session,
        node: NodeId,
        epoch: Epoch,
        week: String,
        logged: u64,
        journal: Journal,
        commands: mpsc::Receiver<Command>,
        config: Arc<Config>,
        stores: Stores,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        // One batch in flight per lane (durable, board), and one owner check.
        let (written_tx, written_rx) = mpsc::channel(3);
        let ended_at = (session.phase() == Phase::Ended).then(Instant::now);
        Self {
            session,
            node,
            handing_off: false,
            epoch,
            week,
            logged,
            commands,
            outbox: Outbox::default(),
            held_replies: Vec::new(),
            waiters: HashMap::new(),
            journal,
            written_tx,
            written_rx,
            connections: HashMap::new(),
            hosts: 0,
            ended_at,
            last_activity: Instant::now(),
            fenced: false,
            rebuild_waiters: Vec::new(),
            refusals: Refusals::default(),
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
            self.catch_up();
            let wake = self.next_wake();
            // Deadlines and leaderboard pushes come before requests: a quiz whose queue is
            // never empty still closes its questions and pushes its board on time.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(written) = self.written_rx.recv() => self.on_written(written),
                _ = tokio::time::sleep_until(wake) => {
                    self.session.handle_timeout(now_ms());
                }
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
            }
            self.perform_effects();
            if self.fenced || self.handing_off || self.should_retire() {
                break;
            }
        }
        self.finish().await;
    }

    /// Runs the engine's deadlines that have passed and starts the writes that are due.
    /// A passed deadline is run here, not left to the timer: a timer only fires when the
    /// runtime turns its driver, which a queue that is never empty can put off until the
    /// whole queue is served.
    fn catch_up(&mut self) {
        if self.session.poll_timeout().is_some_and(|at| at <= now_ms()) {
            self.session.handle_timeout(now_ms());
            self.perform_effects();
        }
        self.start_writes();
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
        if let Some(at) = self.journal.board_due_at(self.board_every(), now) {
            wake = wake.min(at);
        }
        if self.may_retire() {
            wake = wake.min(self.retire_at());
        }
        wake
    }

    /// When the quiz may be unloaded, if nothing happens before then.
    fn retire_at(&self) -> Instant {
        let limits = &self.config.limits;
        match self.ended_at {
            Some(ended) => ended + Duration::from_secs(limits.ended_linger_s),
            None => self.last_activity + Duration::from_secs(limits.idle_quiz_linger_s),
        }
    }

    /// Whether the quiz retires once [`QuizActor::retire_at`] passes, if nothing changes first.
    /// A quiz that may not retire waits for a change, not for that time: a passed time would
    /// wake it over and over.
    fn may_retire(&self) -> bool {
        if !self.journal.is_idle() || !self.waiters.is_empty() {
            return false;
        }
        self.ended_at.is_some() || (self.hosts == 0 && self.connections.is_empty())
    }

    fn should_retire(&self) -> bool {
        self.may_retire() && Instant::now() >= self.retire_at()
    }

    fn on_command(&mut self, command: Command) {
        self.last_activity = Instant::now();
        match command {
            Command::Request { request, reply } => self.on_request(request, reply),
            Command::Subscribe { edge, events, done } => {
                // The whole board first (in parts if big); an edge that cannot take it all
                // is not subscribed, and its room starts over.
                let sent = self
                    .session
                    .leaderboard_full_parts()
                    .into_iter()
                    .all(|part| {
                        let part = crate::event::SharedEvent::new(OwnerEvent::Leaderboard(part));
                        events.try_send(part).is_ok()
                    });
                if sent {
                    self.outbox.subscribe(edge, events);
                }
                let _ = done.send(());
            }
            Command::Unsubscribe { edge } => self.outbox.unsubscribe(edge),
            Command::HandOff => self.handing_off = true,
            Command::RebuildLeaderboard { done } => {
                self.journal.rebuild_board();
                self.queue_all_league_totals();
                self.rebuild_waiters.push(done);
            }
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
            } => {
                // The welcome waits for the player's record to be durable.
                let joined = self.join(&user, role, &nickname, last_seq, now);
                self.held_replies.push((reply, joined));
                return;
            }
            EdgeRequest::Answer {
                player,
                question,
                answer_id,
                answer,
            } => {
                return self.answer(player, question, answer_id, answer, reply, now);
            }
            EdgeRequest::Next { player } => match self.session.next(player, now) {
                Ok(frame) => {
                    // Shown once the player's open question is stored: a crash in between
                    // would open it again later with a fresh clock.
                    let frame = OwnerReply::Frame(encode_server(&frame));
                    self.held_replies.push((reply, frame));
                    return;
                }
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
            } => match self.host(&user, command, target, reference, now) {
                // Carried out: `host_ok` waits for the progress it changed to be durable.
                ok @ OwnerReply::Frame(_) => {
                    self.held_replies.push((reply, ok));
                    return;
                }
                // Refused on what may be stale state: confirmed as the owner first.
                OwnerReply::Error(rejection) => {
                    self.refuse(reply, rejection);
                    return;
                }
                other => other,
            },
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
        // A welcome carries the leaderboard at the current version (0 for a new quiz); a
        // replay carries none, so the edge sends the phone a fresh one.
        let (seq, leaderboard_v, frames, outcome) = match replay {
            Some((resumed, events)) => {
                let seq = resumed.to_seq;
                let mut frames = vec![encode_server(&ServerMessage::Resumed(resumed))];
                frames.extend(events.iter().map(encode_server));
                (seq, None, frames, "resumed")
            }
            None => {
                let welcome = self.session.welcome(player, role, now);
                let (seq, v) = (welcome.seq, welcome.leaderboard.v);
                let frame = encode_server(&ServerMessage::Welcome(Box::new(welcome)));
                (seq, Some(v), vec![frame], "welcome")
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
                self.refuse(reply, rejection);
            }
        }
    }

    /// Sends a definite refusal of an answer or a host command only once the store confirms
    /// that this node still owns the quiz. An actor's state may be stale: a zombie owner that
    /// closed a question in memory without storing it, while a newer owner (which restored the
    /// stored state) took answers to it, would tell a phone "too late" for an answer the log
    /// counts.
    /// Refusals wait for one read of the quiz's epoch that began after them, shared by every
    /// refusal meanwhile (a burst of late answers costs one read); if another node owns the
    /// quiz, they become `unavailable` (the phone retries and finds the new owner) and the
    /// actor stops. Refusals about the request itself need no owner.
    fn refuse(&mut self, reply: oneshot::Sender<OwnerReply>, rejection: Rejection) {
        let intrinsic = matches!(
            rejection.code,
            ErrorCode::BadMessage
                | ErrorCode::UnknownType
                | ErrorCode::BadAnswer
                | ErrorCode::UnknownQuestion
        );
        if intrinsic || rejection.code.retryable() {
            let _ = reply.send(OwnerReply::Error(rejection));
            return;
        }
        self.refusals.next.push((reply, rejection));
        self.check_owner();
    }

    /// Starts a read of the quiz's epoch for the refusals waiting, unless one is running.
    fn check_owner(&mut self) {
        if self.refusals.checking.is_some() || self.refusals.next.is_empty() {
            return;
        }
        self.refusals.checking = Some(std::mem::take(&mut self.refusals.next));
        let (stores, quiz) = (self.stores.clone(), self.session.id().clone());
        let written = self.written_tx.clone();
        tokio::spawn(async move {
            let current = match stores.quizzes.quiz(&quiz).await {
                Ok(record) => record.map(|r| r.epoch),
                Err(_) => None,
            };
            let _ = written.send(Written::OwnerChecked(current)).await;
        });
    }

    fn owner_checked(&mut self, current: Option<Epoch>) {
        let mut answered = self.refusals.checking.take().unwrap_or_default();
        let still_owner = current == Some(self.epoch);
        if let Some(current) = current.filter(|c| c.0 > self.epoch.0) {
            tracing::error!(
                held = self.epoch.0,
                current = current.0,
                "another node owns this quiz now (a newer epoch); stopping"
            );
            self.fenced = true;
        }
        if self.fenced {
            answered.append(&mut self.refusals.next);
        }
        for (reply, rejection) in answered {
            let frame = if still_owner && !self.fenced {
                OwnerReply::Error(rejection)
            } else {
                OwnerReply::Error(Rejection {
                    code: ErrorCode::Unavailable,
                    message: "this node may no longer own the quiz; retry".into(),
                    answer_id: rejection.answer_id,
                })
            };
            let _ = reply.send(frame);
        }
        self.check_owner();
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

    /// Starts the next batch of each journal lane that has none in flight.
    fn start_writes(&mut self) {
        let now = Instant::now();
        let quiz = self.session.id().clone();
        let epoch = self.epoch;
        if let Some(batch) = self
            .journal
            .take_durable(self.config.limits.max_write_batch, now)
        {
            let n = batch.answers.len();
            if n > 0 {
                self.metrics.write_batch_answers.observe(n as f64);
            }
            let (stores, tx, quiz) = (self.stores.clone(), self.written_tx.clone(), quiz.clone());
            // The write runs beside the actor so that new answers keep queueing meanwhile.
            tokio::spawn(async move {
                let _ = tx
                    .send(journal::write_durable(stores, quiz, epoch, batch).await)
                    .await;
            });
        }
        let every = self.board_every();
        if let Some(batch) = self.journal.take_board(&self.week, self.logged, every, now) {
            let (stores, tx) = (self.stores.clone(), self.written_tx.clone());
            tokio::spawn(async move {
                let _ = tx
                    .send(journal::write_board(stores, quiz, epoch, batch).await)
                    .await;
            });
        }
    }

    /// How far apart regular leaderboard store batches are.
    fn board_every(&self) -> Duration {
        Duration::from_millis(self.config.limits.leaderboard_store_interval_ms)
    }

    fn on_written(&mut self, written: Written) {
        match written {
            Written::Durable(w) => self.on_durable(w),
            Written::Board(w) => self.on_board(w),
            Written::OwnerChecked(current) => self.owner_checked(current),
        }
    }

    fn on_durable(&mut self, written: DurableWritten) {
        let appended = written.answers.as_ref().is_some_and(|a| a.is_ok());
        let result = if appended { "ok" } else { "err" };
        self.metrics
            .store_write_seconds
            .with_label_values(&[result])
            .observe(written.elapsed.as_secs_f64());
        if written.fenced() {
            tracing::error!("another node owns this quiz now (fenced); stopping");
            self.fenced = true;
        }
        if appended && !written.batch.answers.is_empty() {
            crate::failpoints::crash("answers_committed");
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
                    tracing::warn!(error = %e, "appending answers failed; will append again");
                } else if let Err(e) = &written.players {
                    tracing::warn!(error = %e, "saving players failed");
                }
                for record in &written.batch.answers {
                    self.settle_answer(record, None, now);
                }
                if !self.fenced {
                    // The outcome is unknown: append them again until the log says.
                    self.journal.append_again(written.batch.answers.clone());
                }
            }
        }
        if let Err(e) = &written.progress {
            tracing::warn!(error = %e, "saving progress failed; will retry");
        }
        if let Some(version) = written.version_durable() {
            self.outbox.changes_durable(version);
        }
        self.journal.settle_durable(written, Instant::now());
    }

    fn on_board(&mut self, written: BoardWritten) {
        let result = if written.result.is_ok() { "ok" } else { "err" };
        self.metrics
            .leaderboard_store_write_seconds
            .with_label_values(&[result])
            .observe(written.elapsed.as_secs_f64());
        if written.fenced() {
            tracing::error!("another node owns this quiz now (fenced); stopping");
            self.fenced = true;
        }
        match &written.result {
            Err(StoreError::NeedsRebuild(_)) => {
                tracing::warn!("the leaderboard store lost this quiz; rebuilding from the log");
                // Its leagues may be gone too: every total goes again.
                self.queue_all_league_totals();
            }
            Err(e) => tracing::warn!(error = %e, "leaderboard store update failed; will catch up"),
            Ok(()) => {}
        }
        self.journal.settle_board(written, Instant::now());
        if !self.journal.board_behind() {
            for done in self.rebuild_waiters.drain(..) {
                let _ = done.send(Ok(()));
            }
        }
    }

    /// Queues every player's current total for the leagues.
    fn queue_all_league_totals(&mut self) {
        let players: Vec<PlayerNo> = self
            .session
            .leaderboard()
            .ranked()
            .map(|k| k.player)
            .collect();
        for p in players {
            self.queue_league_total(p);
        }
    }

    fn queue_league_total(&mut self, player: PlayerNo) {
        if let Some(record) = self.session.player(player).filter(|r| !r.kicked) {
            let total = self.session.score(player).unwrap_or(0);
            self.journal.league_total(record.user.clone(), total);
        }
    }

    /// Acks or refuses one answer of a written batch (`None`: the write failed).
    fn settle_answer(&mut self, record: &AnswerRecord, outcome: Option<&Appended>, now: Millis) {
        let reply = match outcome {
            Some(Appended::Inserted) if !self.fenced => {
                self.metrics.answers.with_label_values(&["accepted"]).inc();
                self.logged += 1;
                self.journal.logged(record.clone());
                let ack = self.session.commit(record, now);
                self.queue_league_total(record.player);
                OwnerReply::Frame(encode_server(&ServerMessage::Ack(ack)))
            }
            Some(Appended::Existing(stored))
                if stored.answer_id == record.answer_id && !self.fenced =>
            {
                // An earlier attempt of this very answer reached the log; count what it stored.
                self.metrics.answers.with_label_values(&["accepted"]).inc();
                self.logged += 1;
                self.journal.logged(stored.clone());
                let ack = self.session.commit(stored, now);
                self.queue_league_total(record.player);
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
                // Still pending: the journal appends it again, and a retry from the phone
                // waits for that. Only a fenced (former) owner lets it go.
                if self.fenced {
                    self.session.abort(record);
                }
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
                Effect::SaveProgress(p) => {
                    let version = self.outbox.change_queued();
                    self.journal.save_progress(p, version);
                }
                Effect::SavePlayer(p) => {
                    let version = self.outbox.change_queued();
                    self.journal.save_player(p, version);
                }
                Effect::Send { audience, msg } => self.outbox.send(audience, msg),
                Effect::Leaderboard(update) => self.outbox.event(OwnerEvent::Leaderboard(update)),
                Effect::Kicked(player) => {
                    self.journal.remove_from_leaderboard(player);
                    self.outbox.event(OwnerEvent::Kicked { player });
                }
                Effect::Ended => {
                    tracing::info!("quiz ended");
                    self.ended_at = Some(Instant::now());
                }
            }
        }
        for (reply, frame) in self.held_replies.drain(..) {
            self.outbox.reply(reply, frame);
        }
    }

    /// Flushes the journal (bounded by the shutdown grace) and tells edges the quiz is gone.
    async fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(self.config.limits.shutdown_grace_s);
        while !self.fenced && !self.journal.is_idle() && Instant::now() < deadline {
            self.start_writes();
            // A batch in flight, a retry after a failure, or the board's next turn.
            let next = [
                self.journal.retry_at(),
                self.journal
                    .board_due_at(self.board_every(), Instant::now()),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                written = self.written_rx.recv() => match written {
                    Some(w) => self.on_written(w),
                    None => break,
                },
            }
        }
        if self.journal.durable_busy() {
            tracing::error!("stopping with writes that could not be made durable");
        } else if !self.journal.is_idle() {
            tracing::warn!(
                "stopping with leaderboard updates not applied; the next owner checks the board"
            );
        }
        for done in self.rebuild_waiters.drain(..) {
            let _ = done.send(Err(super::unavailable(
                "the quiz stopped before the rebuild",
            )));
        }
        for (_, waiters) in self.waiters.drain() {
            for w in waiters {
                let _ = w.send(OwnerReply::Error(super::unavailable(
                    "the quiz is moving; retry",
                )));
            }
        }
        if self.handing_off && !self.fenced && !self.journal.durable_busy() {
            // The next owner need not wait out this node's lease.
            let quiz = self.session.id().clone();
            if let Err(e) = self
                .stores
                .quizzes
                .release(&quiz, &self.node, self.epoch)
                .await
            {
                tracing::warn!(error = %e, "releasing the quiz failed; the next owner will wait");
            }
            tracing::info!("quiz handed off");
        }
        // Over for good only when an ended quiz lingered out here; a node stopping or handing
        // off sends its phones elsewhere, where the final standings still are.
        let ended = self.ended_at.is_some()
            && !self.fenced
            && !self.handing_off
            && !self.shutdown.is_cancelled();
        // Straight out: events still held for a progress that never became durable are dropped;
        // phones resume from the store's state wherever they reconnect.
        self.outbox.broadcast(OwnerEvent::Gone { ended });
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

#[cfg(test)]
pub(super) mod tests {
    use quiz_engine::{EngineConfig, Progress, QuizSpec};
    use quiz_protocol::{
        Level, Mode, Question, QuestionBody, QuizId, QuizSettings, cluster::LeaderboardUpdate,
    };
    use quiz_store::{QuizRecord, QuizStore, StoreConfig};

    use super::super::twin::QuizStoreTwin;
    use super::*;

    pub(in crate::shard) fn question() -> Question {
        Question {
            id: "q1".into(),
            level: Level::A1,
            topic: "vocabulary".into(),
            prompt: "A young cat is a ___.".into(),
            body: QuestionBody::SingleChoice {
                options: vec!["puppy".into(), "kitten".into()],
                answer: 1,
            },
            time_limit_s: 30,
            points: 1000,
            multiplier: 1,
            explanation: None,
        }
    }

    /// A quiz in a fresh SQLite file, claimed at epoch 1 by `node-1`, and its actor.
    async fn actor(
        dir: &tempfile::TempDir,
        engine: EngineConfig,
        commands: mpsc::Receiver<Command>,
    ) -> QuizActor {
        let config = Config {
            engine,
            ..Config::for_test("sqlite::memory:")
        };
        actor_with(dir, config, commands).await
    }

    async fn actor_with(
        dir: &tempfile::TempDir,
        config: Config,
        commands: mpsc::Receiver<Command>,
    ) -> QuizActor {
        actor_on(stores_in(dir).await, config, commands).await
    }

    pub(in crate::shard) const QUIZ: &str = "K7M3QX";

    /// The stores of a fresh SQLite file in `dir`.
    pub(in crate::shard) async fn stores_in(dir: &tempfile::TempDir) -> Stores {
        let url = format!("sqlite://{}", dir.path().join("quiz.db").display());
        Stores::open(&StoreConfig::sql(url)).await.unwrap()
    }

    /// Those stores with their quiz store behind a twin the test can fault.
    async fn twin_stores(dir: &tempfile::TempDir) -> (Stores, Arc<QuizStoreTwin>) {
        let mut stores = stores_in(dir).await;
        let twin = Arc::new(QuizStoreTwin::new(stores.quizzes.clone()));
        stores.quizzes = twin.clone();
        (stores, twin)
    }

    /// Quiz [`QUIZ`] of one question, never claimed, in its lobby.
    pub(in crate::shard) fn quiz_record(settings: QuizSettings) -> QuizRecord {
        QuizRecord {
            id: QuizId::parse(QUIZ).unwrap(),
            title: "busy".into(),
            host: UserId::parse("host").unwrap(),
            question_set: "set".into(),
            settings,
            questions: vec![question()],
            created_at: now_ms(),
            epoch: Epoch::FIRST,
            owner: None,
            progress: Progress::lobby(now_ms()),
        }
    }

    /// The quiz [`QUIZ`] created in `stores`, claimed at epoch 1 by `node-1`, and its actor.
    async fn actor_on(
        stores: Stores,
        config: Config,
        commands: mpsc::Receiver<Command>,
    ) -> QuizActor {
        actor_of(stores, config, QuizSettings::default(), commands).await
    }

    async fn actor_of(
        stores: Stores,
        config: Config,
        settings: QuizSettings,
        commands: mpsc::Receiver<Command>,
    ) -> QuizActor {
        let record = quiz_record(settings);
        let id = record.id.clone();
        stores.quizzes.create_quiz(&record).await.unwrap();
        let node = NodeId("node-1".into());
        let epoch = Epoch(Epoch::FIRST.0 + 1);
        stores.quizzes.claim(&id, &node, epoch).await.unwrap();
        let spec = QuizSpec {
            id,
            title: record.title,
            settings: record.settings,
            questions: record.questions,
        };
        let session = Session::new(spec, config.engine.clone(), now_ms());
        let config = Arc::new(config);
        QuizActor::new(
            session,
            node,
            epoch,
            "2026-W49".into(),
            0,
            Journal::loaded(None),
            commands,
            config,
            stores,
            Metrics::new(),
            CancellationToken::new(),
        )
    }

    fn join(user: &str, role: Role) -> (Command, oneshot::Receiver<OwnerReply>) {
        let (reply, rx) = oneshot::channel();
        let request = EdgeRequest::Join {
            user: UserId::parse(user).unwrap(),
            role,
            nickname: user.into(),
            last_seq: None,
        };
        (Command::Request { request, reply }, rx)
    }

    /// Persist, then announce: a phone's welcome waits for its player record to be in the
    /// store. It used to go out at once, so a crash before the write forgot a player who had
    /// been welcomed (and a kick's `host_ok` and close went out before the kick was stored).
    #[tokio::test]
    async fn a_welcome_waits_for_the_players_record_to_be_durable() {
        let dir = tempfile::TempDir::new().unwrap();
        let (stores, twin) = twin_stores(&dir).await;
        twin.hold_players();
        let (tx, rx) = mpsc::channel(8);
        let actor = actor_on(stores, Config::for_test("sqlite::memory:"), rx).await;
        let running = tokio::spawn(actor.run());
        let (ana, mut welcome) = join("ana", Role::Player);
        tx.send(ana).await.unwrap();
        // A request answered at once, queued behind the join: once it is answered, the join
        // has been handled.
        let (reply, handled) = oneshot::channel();
        let request = EdgeRequest::Disconnect { player: None };
        tx.send(Command::Request { request, reply }).await.unwrap();
        handled.await.unwrap();
        assert!(
            welcome.try_recv().is_err(),
            "no welcome while the player's record is not stored"
        );
        twin.open_players();
        assert!(matches!(
            welcome.await.unwrap(),
            OwnerReply::Joined {
                player: Some(_),
                ..
            }
        ));
        let id = QuizId::parse(QUIZ).unwrap();
        assert_eq!(twin.players(&id).await.unwrap().len(), 1, "stored first");
        drop(tx);
        let _ = running.await;
    }

    /// A self-paced player's next question is sent once their open question is stored.
    #[tokio::test]
    async fn a_self_paced_question_waits_for_the_players_record_to_be_durable() {
        let dir = tempfile::TempDir::new().unwrap();
        let (stores, twin) = twin_stores(&dir).await;
        let settings = QuizSettings {
            mode: Mode::SelfPaced,
            ..QuizSettings::default()
        };
        let (tx, rx) = mpsc::channel(8);
        let config = Config::for_test("sqlite::memory:");
        let running = tokio::spawn(actor_of(stores, config, settings, rx).await.run());
        let ask = |request: EdgeRequest| {
            let (reply, rx) = oneshot::channel();
            tx.try_send(Command::Request { request, reply }).unwrap();
            rx
        };
        let (ana, welcome) = join("ana", Role::Player);
        tx.send(ana).await.unwrap();
        let Ok(OwnerReply::Joined {
            player: Some(player),
            ..
        }) = welcome.await
        else {
            panic!("Ana joins");
        };
        let start = EdgeRequest::Host {
            user: UserId::parse("host").unwrap(),
            command: HostCommand::Start,
            target: None,
            reference: None,
        };
        assert!(matches!(ask(start).await, Ok(OwnerReply::Frame(_))));
        twin.hold_players();
        let mut question = ask(EdgeRequest::Next { player });
        // Answered at once, queued behind `next`: once it is answered, `next` was handled.
        let handled = ask(EdgeRequest::Disconnect { player: None });
        handled.await.unwrap();
        assert!(
            question.try_recv().is_err(),
            "no question while the player's open question is not stored"
        );
        twin.open_players();
        let Ok(OwnerReply::Frame(frame)) = question.await else {
            panic!("the question comes");
        };
        assert!(String::from_utf8_lossy(&frame).contains(r#""type":"question""#));
        drop(tx);
        let _ = running.await;
    }

    /// A leaderboard push is a timer; so are question deadlines. The actor used to look at
    /// its timers only when no request was waiting, so a quiz whose queue never emptied
    /// (thousands of phones) pushed its board, and closed its questions, late. Here the board
    /// changes first and ten thousand requests wait behind that change: the push must come
    /// before the requests are all served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_quiz_pushes_its_leaderboard_before_serving_every_waiting_request() {
        const WAITING: usize = 10_000;
        let dir = tempfile::TempDir::new().unwrap();
        let (tx, rx) = mpsc::channel(WAITING + 8);
        let engine = EngineConfig {
            leaderboard_interval_ms: 1,
            ..EngineConfig::default()
        };
        let actor = actor(&dir, engine, rx).await;
        let (events_tx, mut events) = mpsc::channel(64);
        let (done, subscribed) = oneshot::channel();
        tx.try_send(Command::Subscribe {
            edge: 1,
            events: events_tx,
            done,
        })
        .unwrap();
        let (ana, _ana_reply) = join("ana", Role::Player);
        tx.try_send(ana).unwrap();
        let mut hosts = Vec::new();
        for i in 0..WAITING {
            let (command, reply) = join(&format!("host-{i}"), Role::Host);
            tx.try_send(command).unwrap();
            hosts.push(reply);
        }
        let running = tokio::spawn(actor.run());
        subscribed.await.unwrap();
        let full = events.recv().await.unwrap();
        assert!(
            matches!(
                full.event(),
                OwnerEvent::Leaderboard(LeaderboardUpdate { full: true, .. })
            ),
            "a subscription starts with the full board"
        );
        // The next leaderboard event is the push that shows Ana.
        let push = loop {
            let event = events.recv().await.unwrap();
            if let OwnerEvent::Leaderboard(update) = event.event() {
                break update.clone();
            }
        };
        let served = hosts
            .iter_mut()
            .map(|r| r.try_recv())
            .filter(Result::is_ok)
            .count();
        assert_eq!(push.players, 1, "the push shows Ana");
        assert!(
            served < WAITING,
            "the board was pushed only after all {WAITING} waiting requests were served"
        );
        drop(tx);
        let _ = running.await;
    }

    #[tokio::test]
    async fn a_quiz_with_players_past_its_idle_linger_sleeps_until_something_happens() {
        let dir = tempfile::TempDir::new().unwrap();
        let (_tx, rx) = mpsc::channel(8);
        let mut config = Config::for_test("sqlite::memory:");
        config.limits.idle_quiz_linger_s = 0;
        let mut actor = actor_with(&dir, config, rx).await;
        let (ana, mut ana_reply) = join("ana", Role::Player);
        actor.on_command(ana);
        actor.perform_effects();
        actor.catch_up();
        // The welcome waits for Ana's record to be stored (the board's first write may end
        // first).
        let welcome = loop {
            if let Ok(reply) = ana_reply.try_recv() {
                break reply;
            }
            let written = actor.written_rx.recv().await.expect("the writes end");
            actor.on_written(written);
        };
        assert!(matches!(
            welcome,
            OwnerReply::Joined {
                player: Some(_),
                ..
            }
        ));
        assert!(!actor.should_retire(), "Ana is still connected");
        assert!(
            actor.next_wake() > Instant::now(),
            "a quiz that cannot retire does not wake for its retirement time"
        );
    }
}
