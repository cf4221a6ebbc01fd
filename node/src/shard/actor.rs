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
use std::time::{Duration, Instant};

use quiz_engine::{AnswerRecord, Effect, Session, Submit};
use quiz_protocol::client::{Role, ServerMessage, encode_server};
use quiz_protocol::cluster::{EdgeRequest, OwnerEvent, OwnerReply, Rejection};
use quiz_protocol::{AnswerId, Epoch, ErrorCode, HostCommand, NodeId, Phase, PlayerNo, UserId};
use quiz_store::{Appended, StoreError, Stores};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Command;
use super::journal::{self, Journal, Written};
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

pub(super) struct QuizActor {
    session: Session,
    /// This node, the quiz's owner at `epoch`.
    node: NodeId,
    /// Another node owns the quiz now: flush and give it up.
    handing_off: bool,
    epoch: Epoch,
    commands: mpsc::Receiver<Command>,
    outbox: Outbox,
    /// Host commands carried out, waiting for their effects to reach the outbox.
    host_replies: Vec<(oneshot::Sender<OwnerReply>, OwnerReply)>,
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
        commands: mpsc::Receiver<Command>,
        config: Arc<Config>,
        stores: Stores,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        let (written_tx, written_rx) = mpsc::channel(1);
        let ended_at = (session.phase() == Phase::Ended).then(Instant::now);
        let mut journal = Journal::default();
        // The leaderboard store may have missed answers the log has (a crash between the two
        // writes) or lost them (a Redis failover): a newly loaded quiz starts it from the log.
        journal.rebuild_board();
        Self {
            session,
            node,
            handing_off: false,
            epoch,
            week,
            logged,
            commands,
            outbox: Outbox::default(),
            host_replies: Vec::new(),
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
            if self.fenced || self.handing_off || self.should_retire() {
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
            } => match self.host(&user, command, target, reference, now) {
                // Carried out: `host_ok` waits for the progress it changed to be durable.
                ok @ OwnerReply::Frame(_) => {
                    self.host_replies.push((reply, ok));
                    return;
                }
                refused => refused,
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
        let max = self.config.limits.max_write_batch;
        let now = Instant::now();
        let Some(batch) = self.journal.take_batch(max, &self.week, self.logged, now) else {
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
        match &written.progress {
            Ok(()) => {
                if let Some(version) = written.progress_saved() {
                    self.outbox.progress_durable(version);
                }
            }
            Err(e) => tracing::warn!(error = %e, "saving progress failed; will retry"),
        }
        let board_attempted = written.batch.board.is_some();
        match &written.board {
            Err(StoreError::NeedsRebuild(_)) => {
                tracing::warn!("the leaderboard store lost this quiz; rebuilding from the log");
                // Its leagues may be gone too: every total goes again.
                self.queue_all_league_totals();
            }
            Err(e) => tracing::warn!(error = %e, "leaderboard store update failed; will catch up"),
            Ok(()) => {}
        }
        self.journal.settle(written, Instant::now());
        if board_attempted && !self.journal.board_behind() {
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
                    let version = self.outbox.progress_saved();
                    self.journal.save_progress(p, version);
                }
                Effect::SavePlayer(p) => self.journal.save_player(p),
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
        for (reply, frame) in self.host_replies.drain(..) {
            self.outbox.reply(reply, frame);
        }
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
        if self.handing_off && !self.fenced && self.journal.is_empty() {
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
