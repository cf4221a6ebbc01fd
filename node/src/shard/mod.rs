//! The shard: the quizzes this node owns, one actor task each.
//!
//! [`Shard`] is the owner side of the cluster protocol: edges send it [`EdgeRequest`]s and
//! subscribe to a quiz's [`OwnerEvent`]s. A quiz is loaded from the durable store the first time
//! anyone asks for it (new, or restored after a restart), and unloaded when it has ended or sat
//! idle long enough. The quiz's state lives in its actor ([`actor`]); durable writes go through
//! its journal ([`journal`]).

mod actor;
pub(crate) use actor::next_edge_id;
mod journal;
mod outbox;
#[cfg(test)]
mod twin;

use crate::event::Event;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_engine::{QuizSpec, SavedQuiz, Session};
use quiz_protocol::cluster::{EdgeRequest, OwnerReply, Rejection};
use quiz_protocol::{Epoch, ErrorCode, NodeId, Phase, QuizId};
use quiz_store::Stores;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::placement::Placement;

pub(crate) use actor::EdgeId;

/// What an actor is asked to do.
pub(crate) enum Command {
    Request {
        request: EdgeRequest,
        reply: oneshot::Sender<OwnerReply>,
    },
    Subscribe {
        edge: EdgeId,
        events: mpsc::Sender<Event>,
        done: oneshot::Sender<()>,
    },
    Unsubscribe {
        edge: EdgeId,
    },
    /// Rebuild the quiz's standings in the leaderboard store from its answer log.
    RebuildLeaderboard {
        done: oneshot::Sender<Result<(), Rejection>>,
    },
    /// Another node owns the quiz now: flush, give it up, and stop.
    HandOff,
}

type Slot = Arc<OnceCell<mpsc::Sender<Command>>>;

/// The quizzes this node owns.
#[derive(Clone)]
pub struct Shard {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    placement: Placement,
    /// The node is being drained: its lease says so, and the ring moves its quizzes away.
    draining: AtomicBool,
    stores: Stores,
    metrics: Metrics,
    quizzes: Mutex<HashMap<QuizId, Slot>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Shard {
    pub(crate) fn new(
        config: Arc<Config>,
        placement: Placement,
        stores: Stores,
        metrics: Metrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let inner = Inner {
            config,
            placement,
            draining: AtomicBool::new(false),
            stores,
            metrics,
            quizzes: Mutex::new(HashMap::new()),
            tracker,
            shutdown,
        };
        Shard {
            inner: Arc::new(inner),
        }
    }

    /// Sends a request to a quiz's actor (loading the quiz if needed) and waits for the reply.
    pub async fn request(&self, quiz: &QuizId, request: EdgeRequest) -> OwnerReply {
        let (reply, rx) = oneshot::channel();
        if let Err(rejection) = self.send(quiz, Command::Request { request, reply }).await {
            return OwnerReply::Error(rejection);
        }
        match tokio::time::timeout(self.inner.config.request_timeout(), rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => OwnerReply::Error(unavailable("the quiz stopped before replying")),
            Err(_) => OwnerReply::Error(unavailable("the quiz did not reply in time")),
        }
    }

    /// Subscribes an edge to a quiz's events. The first event is the full leaderboard.
    pub(crate) async fn subscribe(
        &self,
        quiz: &QuizId,
        edge: EdgeId,
        events: mpsc::Sender<Event>,
    ) -> Result<(), Rejection> {
        let (done, rx) = oneshot::channel();
        self.send(quiz, Command::Subscribe { edge, events, done })
            .await?;
        rx.await
            .map_err(|_| unavailable("the quiz stopped before the subscription"))
    }

    /// Whether the node is being drained.
    pub(crate) fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Starts draining: the next lease renewal says so, the routers take the node out of the
    /// ring, and its quizzes move to other nodes. Phones keep using its edge.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// After a ring change: hands off the loaded quizzes this node no longer owns (all of
    /// them when its lease lapsed), and takes up the live quizzes it now owns.
    pub(crate) async fn rebalance(&self, lease_ok: bool) {
        let loaded: Vec<(QuizId, mpsc::Sender<Command>)> = lock(&self.inner.quizzes)
            .iter()
            .filter_map(|(q, slot)| slot.get().map(|tx| (q.clone(), tx.clone())))
            .collect();
        let placement = &self.inner.placement;
        for (quiz, tx) in loaded {
            if !lease_ok || !placement.is_mine(&quiz) {
                tracing::info!(%quiz, "handing the quiz off");
                let _ = tx.send(Command::HandOff).await;
            }
        }
        if !lease_ok || !placement.is_member() {
            return;
        }
        let live = match self.inner.stores.quizzes.live_quizzes().await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "could not list live quizzes after a ring change");
                return;
            }
        };
        for quiz in live {
            if placement.is_mine(&quiz) && self.loaded(&quiz).is_none() {
                let shard = self.clone();
                self.inner
                    .tracker
                    .spawn(async move { shard.take_over(quiz).await });
            }
        }
    }

    /// Takes up a quiz this node now owns (see [`Shard::load`]).
    async fn take_over(&self, quiz: QuizId) {
        if !self.inner.placement.is_mine(&quiz) {
            return; // the ring moved on meanwhile
        }
        let slot = self.slot(&quiz);
        if let Err(r) = slot.get_or_try_init(|| self.load(&quiz)).await {
            self.forget(&quiz, &slot);
            tracing::warn!(%quiz, reason = %r.message, "could not take the quiz up");
        }
    }

    /// Waits (a bounded time) for a previous owner that is still alive to hand the quiz over:
    /// to flush what it accepted and let go. One that is dead, or too slow, is fenced by the
    /// claim that follows instead.
    async fn wait_for_previous_owner(&self, quiz: &QuizId) {
        let wait = self
            .inner
            .config
            .cluster
            .as_ref()
            .map_or(0, |c| c.handoff_wait_ms);
        if wait == 0 {
            // A single node: nobody to wait for (its own earlier life is fenced by the claim).
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        let stores = &self.inner.stores;
        while tokio::time::Instant::now() < deadline {
            let previous = match stores.quizzes.quiz(quiz).await {
                Ok(Some(record)) => record.owner,
                _ => None,
            };
            let Some(previous) = previous.filter(|p| p != self.inner.placement.me()) else {
                return;
            };
            let now = now_ms();
            let alive = match stores.membership.leases().await {
                Ok(leases) => leases
                    .iter()
                    .any(|l| l.node == previous && l.expires_at > now),
                Err(_) => false,
            };
            if !alive {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(%quiz, "the previous owner did not hand the quiz over in time; fencing it");
    }

    /// Loads every quiz that has not ended, so that their timers run (deadlines, auto-advance)
    /// before any phone comes back: what a restarted node does first. Returns how many.
    pub(crate) async fn load_live(&self) -> Result<usize, quiz_store::StoreError> {
        let live = self.inner.stores.quizzes.live_quizzes().await?;
        let mut loaded = 0;
        for quiz in live.iter().filter(|q| self.inner.placement.is_mine(q)) {
            let slot = self.slot(quiz);
            match slot.get_or_try_init(|| self.load(quiz)).await {
                Ok(_) => loaded += 1,
                Err(r) => {
                    self.forget(quiz, &slot);
                    tracing::warn!(%quiz, reason = %r.message, "could not load a live quiz");
                }
            }
        }
        Ok(loaded)
    }

    /// Rebuilds a quiz's standings in the leaderboard store from its answer log: through its
    /// actor when it is loaded here (so no live write races the rebuild), directly otherwise
    /// (with the quiz's league contributions).
    pub async fn rebuild_leaderboard(&self, quiz: &QuizId) -> Result<(), Rejection> {
        if let Some(tx) = self.loaded(quiz) {
            let (done, rx) = oneshot::channel();
            if tx.send(Command::RebuildLeaderboard { done }).await.is_ok() {
                return rx
                    .await
                    .unwrap_or_else(|_| Err(unavailable("the quiz stopped")));
            }
        }
        let stores = &self.inner.stores;
        let record = stores
            .quizzes
            .quiz(quiz)
            .await
            .map_err(|e| store_rejection("loading the quiz", &e))?
            .ok_or_else(|| unknown_quiz(quiz))?;
        stores
            .repair_leaderboard(&record)
            .await
            .map_err(|e| store_rejection("rebuilding the leaderboard", &e))
    }

    pub(crate) async fn unsubscribe(&self, quiz: &QuizId, edge: EdgeId) {
        let sender = self.loaded(quiz);
        if let Some(tx) = sender {
            let _ = tx.send(Command::Unsubscribe { edge }).await;
        }
    }

    /// Delivers a command, loading the quiz first if it is not loaded. An actor that has just
    /// retired is replaced by a fresh load.
    async fn send(&self, quiz: &QuizId, mut command: Command) -> Result<(), Rejection> {
        for _ in 0..2 {
            let slot = self.slot(quiz);
            let tx = slot
                .get_or_try_init(|| self.load(quiz))
                .await
                .inspect_err(|_| {
                    self.forget(quiz, &slot);
                })?;
            match tx.send(command).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    self.forget(quiz, &slot);
                    command = back;
                }
            }
        }
        Err(unavailable("the quiz is restarting; try again"))
    }

    fn slot(&self, quiz: &QuizId) -> Slot {
        let mut map = lock(&self.inner.quizzes);
        map.entry(quiz.clone()).or_default().clone()
    }

    fn loaded(&self, quiz: &QuizId) -> Option<mpsc::Sender<Command>> {
        lock(&self.inner.quizzes)
            .get(quiz)
            .and_then(|s| s.get().cloned())
    }

    /// Removes a quiz's slot if it is still `slot` (a newer load may have replaced it).
    fn forget(&self, quiz: &QuizId, slot: &Slot) {
        let mut map = lock(&self.inner.quizzes);
        if map.get(quiz).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(quiz);
        }
    }

    /// Loads a quiz from the store and starts its actor.
    async fn load(&self, quiz: &QuizId) -> Result<mpsc::Sender<Command>, Rejection> {
        if self.inner.shutdown.is_cancelled() {
            // A phone reconnecting during shutdown must not start a quiz nobody will stop.
            return Err(unavailable("this node is shutting down; try another"));
        }
        let not_mine = || {
            // A stale edge, or a ring change in flight: never two owners.
            unavailable(&format!(
                "this node does not own the quiz (ring epoch {}); retry",
                self.inner.placement.epoch()
            ))
        };
        if !self.inner.placement.is_mine(quiz) {
            return Err(not_mine());
        }
        // Whether it came with a ring change or with a phone, a quiz another live node still
        // holds is taken only once that node has let go (or could not in time): taking it
        // sooner would fence the writes it still has in flight.
        self.wait_for_previous_owner(quiz).await;
        if !self.inner.placement.is_mine(quiz) {
            return Err(not_mine());
        }
        let stores = &self.inner.stores;
        let record = stores
            .quizzes
            .quiz(quiz)
            .await
            .map_err(|e| store_rejection("loading the quiz", &e))?
            .ok_or_else(|| unknown_quiz(quiz))?;
        // Fence every earlier owner, this node's previous life included: from now on their
        // writes carry an older epoch and are refused.
        let epoch = Epoch(record.epoch.0 + 1);
        let node = NodeId(self.inner.config.node_id.clone());
        stores
            .quizzes
            .claim(quiz, &node, epoch)
            .await
            .map_err(|e| store_rejection("claiming the quiz", &e))?;
        crate::failpoints::crash("quiz_claimed");
        // The progress as the claim fenced it: the previous owner may have saved progress
        // after the read above and before the claim, and restoring the older one would issue
        // its sequence numbers again for other events.
        let record = stores
            .quizzes
            .quiz(quiz)
            .await
            .map_err(|e| store_rejection("loading the quiz", &e))?
            .ok_or_else(|| unknown_quiz(quiz))?;
        if record.epoch != epoch {
            return Err(unavailable(
                "another node claimed the quiz meanwhile; retry",
            ));
        }
        let engine = self.inner.config.engine.clone();
        let spec = QuizSpec {
            id: record.id.clone(),
            title: record.title.clone(),
            settings: record.settings.clone(),
            questions: record.questions.clone(),
        };
        let fresh = record.progress.phase == Phase::Lobby && record.progress.seq == 0;
        let players = stores
            .quizzes
            .players(quiz)
            .await
            .map_err(|e| store_rejection("loading players", &e))?;
        let mut logged = 0;
        let (session, loaded) = if fresh && players.is_empty() {
            let loaded = journal::Loaded {
                answers: Vec::new(),
                kicked: Vec::new(),
            };
            (Session::new(spec, engine, now_ms()), loaded)
        } else {
            let answers = stores
                .answers
                .answers(quiz)
                .await
                .map_err(|e| store_rejection("loading answers", &e))?;
            tracing::info!(%quiz, players = players.len(), answers = answers.len(), "restoring quiz");
            logged = answers.len() as u64;
            // The board is checked against this very log, and rebuilt from it if it differs.
            let loaded = journal::Loaded {
                answers: answers.clone(),
                kicked: players
                    .iter()
                    .filter(|p| p.kicked)
                    .map(|p| p.player)
                    .collect(),
            };
            let saved = SavedQuiz {
                progress: record.progress.clone(),
                players,
                answers,
            };
            let mut session = Session::restore(spec, engine, saved);
            session.start_leaderboard_versions_at(now_ms() as u64);
            session.begin_rejoin_grace(now_ms());
            (session, loaded)
        };
        let (tx, rx) = mpsc::channel(self.inner.config.limits.quiz_queue_requests);
        let actor = actor::QuizActor::new(
            session,
            node.clone(),
            epoch,
            quiz_store::iso_week(record.created_at),
            logged,
            journal::Journal::loaded(Some(loaded)),
            rx,
            self.inner.config.clone(),
            stores.clone(),
            self.inner.metrics.clone(),
            self.inner.shutdown.clone(),
        );
        let span = tracing::info_span!("quiz", quiz = %quiz);
        self.inner.metrics.quizzes.inc();
        let metrics = self.inner.metrics.clone();
        self.inner.tracker.spawn(
            async move {
                actor.run().await;
                metrics.quizzes.dec();
            }
            .instrument(span),
        );
        Ok(tx)
    }
}

/// Locks a mutex that is only ever held briefly and never across an await; a poisoned lock
/// means a panic elsewhere already broke the process's invariants, so carry on with the data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unknown_quiz(quiz: &QuizId) -> Rejection {
    Rejection {
        code: ErrorCode::UnknownQuiz,
        message: format!("there is no quiz {quiz}"),
        answer_id: None,
    }
}

pub(crate) fn unavailable(message: &str) -> Rejection {
    Rejection {
        code: ErrorCode::Unavailable,
        message: message.into(),
        answer_id: None,
    }
}

fn store_rejection(what: &str, e: &quiz_store::StoreError) -> Rejection {
    tracing::warn!(error = %e, "{what} failed");
    unavailable(&format!("the store is unavailable ({what}); try again"))
}

#[cfg(test)]
mod tests {
    use super::twin::QuizStoreTwin;
    use super::*;
    use quiz_engine::Progress;
    use quiz_protocol::client::Role;
    use quiz_protocol::{QuizSettings, UserId};
    use quiz_store::QuizRecord;

    /// A shard of a node alone on `stores`.
    fn single_node(stores: Stores) -> Shard {
        Shard::new(
            Arc::new(Config::default()),
            Placement::single(NodeId("node-1".into())),
            stores,
            Metrics::new(),
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    fn host_join() -> EdgeRequest {
        EdgeRequest::Join {
            user: UserId::parse("host").unwrap(),
            role: Role::Host,
            nickname: String::new(),
            last_seq: None,
        }
    }

    /// What the tests' subscriber writes, to look at.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A single node has no previous owner to wait for, and said it fenced one that did not
    /// hand over in time on every quiz it loaded: a warning for nothing, in every log.
    #[tokio::test(flavor = "current_thread")]
    async fn a_single_node_loads_a_quiz_without_warning_of_a_previous_owner() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let stores = actor::tests::stores_in(&dir).await;
        let record = actor::tests::quiz_record(QuizSettings::default());
        let id = record.id.clone();
        stores.quizzes.create_quiz(&record).await.unwrap();
        let shard = single_node(stores);
        let join = host_join();
        assert!(matches!(
            shard.request(&id, join).await,
            OwnerReply::Joined { .. }
        ));
        let logged = String::from_utf8_lossy(&lock(&logs.0)).into_owned();
        assert!(
            !logged.contains("previous owner"),
            "no warning about a previous owner: {logged}"
        );
    }

    /// The previous owner saved progress after the new owner read the quiz and before it
    /// claimed it. The new owner restores that later progress, so it never issues a sequence
    /// number twice.
    #[tokio::test]
    async fn a_new_owner_restores_the_progress_its_claim_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let mut stores = actor::tests::stores_in(&dir).await;
        let old = NodeId("node-0".into());
        let previous = Epoch(Epoch::FIRST.0 + 1);
        let record = QuizRecord {
            questions: vec![actor::tests::question(), actor::tests::question()],
            ..actor::tests::quiz_record(QuizSettings::default())
        };
        let id = record.id.clone();
        stores.quizzes.create_quiz(&record).await.unwrap();
        stores.quizzes.claim(&id, &old, previous).await.unwrap();
        let at = now_ms();
        let saved = Progress {
            phase: Phase::Closed,
            question: Some(0),
            opened_at: Some(at),
            phase_at: at,
            seq: 4,
            ..Progress::lobby(at)
        };
        stores
            .quizzes
            .save_progress(&id, previous, &saved)
            .await
            .unwrap();
        let late = Progress {
            phase: Phase::Open,
            question: Some(1),
            seq: 6,
            ..saved.clone()
        };
        let twin = QuizStoreTwin::new(stores.quizzes.clone());
        *lock(&twin.late_progress) = Some((previous, late));
        stores.quizzes = Arc::new(twin);
        let shard = single_node(stores);
        let join = host_join();
        match shard.request(&id, join).await {
            OwnerReply::Joined { seq, .. } => assert_eq!(seq, 6, "the welcome folds in seq 6"),
            other => panic!("the host joins: {other:?}"),
        }
    }
}
