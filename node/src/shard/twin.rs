//! A quiz store twin for tests: the SQL store underneath, with faults a test switches on, so
//! that an interleaving which real processes hit only by chance happens every time.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use quiz_engine::{PlayerRecord, Progress};
use quiz_protocol::{Epoch, NodeId, QuizId};
use quiz_store::{QuizRecord, QuizStore, StoreError};
use tokio::sync::watch;

use super::lock;

pub(crate) struct QuizStoreTwin {
    inner: Arc<dyn QuizStore>,
    /// Progress another (previous) owner saves, at its epoch, right after the next read of
    /// the quiz.
    pub(crate) late_progress: Mutex<Option<(Epoch, Progress)>>,
    /// Player writes wait while this is true.
    players_held: watch::Sender<bool>,
}

impl QuizStoreTwin {
    /// Passes everything through; player writes are open.
    pub(crate) fn new(inner: Arc<dyn QuizStore>) -> Self {
        Self {
            inner,
            late_progress: Mutex::new(None),
            players_held: watch::Sender::new(false),
        }
    }

    /// From now on player writes hang until [`QuizStoreTwin::open_players`] (a store that
    /// stalls).
    pub(crate) fn hold_players(&self) {
        self.players_held.send_replace(true);
    }

    pub(crate) fn open_players(&self) {
        self.players_held.send_replace(false);
    }

    async fn player_write(&self) {
        let _ = self.players_held.subscribe().wait_for(|held| !held).await;
    }
}

#[async_trait]
impl QuizStore for QuizStoreTwin {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        self.inner.create_quiz(quiz).await
    }
    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        let read = self.inner.quiz(id).await;
        let late = lock(&self.late_progress).take();
        if let Some((epoch, progress)) = late {
            self.inner.save_progress(id, epoch, &progress).await?;
        }
        read
    }
    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        self.inner.save_progress(id, epoch, progress).await
    }
    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError> {
        self.player_write().await;
        self.inner.save_player(id, epoch, player).await
    }
    async fn save_players(
        &self,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        self.player_write().await;
        self.inner.save_players(id, epoch, players).await
    }
    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        self.inner.players(id).await
    }
    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        self.inner.live_quizzes().await
    }
    async fn claim(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        self.inner.claim(id, node, epoch).await
    }
    async fn release(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        self.inner.release(id, node, epoch).await
    }
}
