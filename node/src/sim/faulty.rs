//! A node's view of the shared in-memory stores, with seeded faults: every call waits a
//! random while (so calls of different nodes reorder), a write may fail before it is applied
//! or after (applied, then reported failed: its outcome unknown to the caller), and a node
//! can be cut off the stores altogether (a crash, as far as the stores can tell, or a
//! partition).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use quiz_engine::{AnswerRecord, PlayerRecord, Progress};
use quiz_protocol::{Epoch, NodeId, PlayerNo, QuizId, UserId};
use quiz_store::memory::MemoryStore;
use quiz_store::{
    AnswerLog, Appended, LeaderboardStore, League, LeagueRow, QuizRecord, QuizStore, QuizTotals,
    StandingRow, StoreError, Stores,
};
use rand::{Rng, SeedableRng};

/// How often stores misbehave.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    pub(crate) max_delay_ms: u64,
    pub(crate) fail_before: f64,
    pub(crate) fail_after: f64,
}

pub(crate) struct Faulty {
    inner: Arc<MemoryStore>,
    rng: Mutex<rand::rngs::StdRng>,
    faults: Faults,
    pub(crate) cut: AtomicBool,
    /// Progress writes that moved a quiz's sequence number backwards.
    pub(crate) seq_regressions: Mutex<Vec<String>>,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<MemoryStore>, seed: u64, faults: Faults) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            faults,
            cut: AtomicBool::new(false),
            seq_regressions: Mutex::new(Vec::new()),
        })
    }

    /// The stores of a node: quizzes, answers and leaderboards through the faults; content
    /// and membership straight to memory.
    pub(crate) fn stores(self: &Arc<Self>) -> Stores {
        Stores {
            content: self.inner.clone(),
            quizzes: self.clone(),
            answers: self.clone(),
            leaderboards: self.clone(),
            membership: self.inner.clone(),
        }
    }

    /// Waits, then says whether the call fails now; for a write, `Ok(true)` means it is
    /// applied and then reported failed.
    async fn before(&self, write: bool) -> Result<bool, StoreError> {
        let (delay, before, after) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (
                rng.random_range(0..=self.faults.max_delay_ms),
                rng.random_bool(self.faults.fail_before),
                rng.random_bool(self.faults.fail_after),
            )
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.cut.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("cut off".into()));
        }
        if write && before {
            return Err(StoreError::Unavailable("failed".into()));
        }
        Ok(write && after)
    }

    async fn write<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let lost_reply = self.before(true).await?;
        let result = op.await;
        match result {
            Ok(_) if lost_reply => Err(StoreError::Unavailable("reply lost".into())),
            other => other,
        }
    }

    async fn read<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.before(false).await?;
        op.await
    }
}

#[async_trait]
impl QuizStore for Faulty {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        self.write(self.inner.create_quiz(quiz)).await
    }
    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        self.read(self.inner.quiz(id)).await
    }
    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        self.write(async {
            let before = self.inner.quiz(id).await?.map(|q| q.progress.seq);
            self.inner.save_progress(id, epoch, progress).await?;
            if let Some(before) = before.filter(|b| *b > progress.seq) {
                self.seq_regressions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "epoch {} saved seq {} over {before}",
                        epoch.0, progress.seq
                    ));
            }
            Ok(())
        })
        .await
    }
    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError> {
        self.write(self.inner.save_player(id, epoch, player)).await
    }
    async fn save_players(
        &self,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        self.write(self.inner.save_players(id, epoch, players))
            .await
    }
    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        self.read(self.inner.players(id)).await
    }
    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        self.read(self.inner.live_quizzes()).await
    }
    async fn claim(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        self.write(self.inner.claim(id, node, epoch)).await
    }
    async fn release(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        self.write(self.inner.release(id, node, epoch)).await
    }
}

#[async_trait]
impl AnswerLog for Faulty {
    async fn append(
        &self,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<Vec<Appended>, StoreError> {
        self.write(self.inner.append(epoch, records)).await
    }
    async fn answers(&self, quiz: &QuizId) -> Result<Vec<AnswerRecord>, StoreError> {
        self.read(self.inner.answers(quiz)).await
    }
    async fn count(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        self.read(self.inner.count(quiz)).await
    }
    async fn league_totals(&self, since: i64) -> Result<Vec<QuizTotals>, StoreError> {
        self.read(self.inner.league_totals(since)).await
    }
}

#[async_trait]
impl LeaderboardStore for Faulty {
    async fn apply(&self, epoch: Epoch, records: &[AnswerRecord]) -> Result<(), StoreError> {
        self.write(self.inner.apply(epoch, records)).await
    }
    async fn remove_player(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError> {
        self.write(self.inner.remove_player(quiz, epoch, player))
            .await
    }
    async fn counted(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        self.read(self.inner.counted(quiz)).await
    }
    async fn standings(&self, quiz: &QuizId, limit: usize) -> Result<Vec<StandingRow>, StoreError> {
        self.read(self.inner.standings(quiz, limit)).await
    }
    async fn rebuild(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        removed: &[PlayerNo],
    ) -> Result<(), StoreError> {
        self.write(self.inner.rebuild(quiz, epoch, records, removed))
            .await
    }
    async fn record_league(
        &self,
        quiz: &QuizId,
        week: &str,
        totals: &[(UserId, u32)],
    ) -> Result<(), StoreError> {
        self.write(self.inner.record_league(quiz, week, totals))
            .await
    }
    async fn league(&self, league: &League, limit: usize) -> Result<Vec<LeagueRow>, StoreError> {
        self.read(self.inner.league(league, limit)).await
    }
}
