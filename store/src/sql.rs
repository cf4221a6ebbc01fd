//! The SQL backends: one sqlx code path for SQLite and PostgreSQL through the Any driver.

use std::sync::Arc;

use async_trait::async_trait;
use quiz_engine::{AnswerRecord, Millis, PlayerRecord, Progress};
use quiz_protocol::{Epoch, PlayerNo, QuestionSet, QuizId};

use crate::{
    AnswerLog, Appended, ContentStore, LeaderboardStore, QuestionSetSummary, QuizRecord, QuizStore,
    StandingRow, StoreError,
};

/// Question sets, quizzes, players and the answer log in SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlStore {
    _private: (),
}

impl SqlStore {
    /// Connects and runs the dialect's migrations.
    pub async fn connect(url: &str, pool_size: u32) -> Result<SqlStore, StoreError> {
        let _ = (url, pool_size);
        todo!()
    }
}

/// The embedded leaderboard store: standings in SQL tables of the same database.
#[derive(Debug)]
pub struct SqlLeaderboard {
    _sql: Arc<SqlStore>,
}

impl SqlLeaderboard {
    pub fn new(sql: Arc<SqlStore>) -> Self {
        Self { _sql: sql }
    }
}

#[async_trait]
impl ContentStore for SqlStore {
    async fn put_question_set(&self, set: &QuestionSet, now: Millis) -> Result<(), StoreError> {
        let _ = (set, now);
        todo!()
    }
    async fn question_set(&self, id: &str) -> Result<Option<QuestionSet>, StoreError> {
        let _ = id;
        todo!()
    }
    async fn question_sets(&self) -> Result<Vec<QuestionSetSummary>, StoreError> {
        todo!()
    }
}

#[async_trait]
impl QuizStore for SqlStore {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        let _ = quiz;
        todo!()
    }
    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        let _ = id;
        todo!()
    }
    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let _ = (id, epoch, progress);
        todo!()
    }
    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError> {
        let _ = (id, epoch, player);
        todo!()
    }
    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        let _ = id;
        todo!()
    }
    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        todo!()
    }
}

#[async_trait]
impl AnswerLog for SqlStore {
    async fn append(
        &self,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<Vec<Appended>, StoreError> {
        let _ = (epoch, records);
        todo!()
    }
    async fn answers(&self, quiz: &QuizId) -> Result<Vec<AnswerRecord>, StoreError> {
        let _ = quiz;
        todo!()
    }
}

#[async_trait]
impl LeaderboardStore for SqlLeaderboard {
    async fn apply(&self, epoch: Epoch, records: &[AnswerRecord]) -> Result<(), StoreError> {
        let _ = (epoch, records);
        todo!()
    }
    async fn remove_player(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError> {
        let _ = (quiz, epoch, player);
        todo!()
    }
    async fn standings(&self, quiz: &QuizId, limit: usize) -> Result<Vec<StandingRow>, StoreError> {
        let _ = (quiz, limit);
        todo!()
    }
}
