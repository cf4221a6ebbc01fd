//! The embedded leaderboard store: per-quiz standings in SQL tables of the same database as
//! the answer log, for setups without Redis.
//!
//! `lb_applied` remembers which (quiz, player, question) answers were counted, so applying one
//! twice counts it once; `lb_scores` holds each player's score and tie-break, and a `removed`
//! flag that keeps a kicked player out for good. The order is the engine's `RankKey`: score
//! descending, then tie-break ascending, then player number ascending.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use quiz_engine::AnswerRecord;
use quiz_protocol::{Epoch, PlayerNo, QuizId};

use super::{SqlStore, WriteTx, db, int};
use crate::{LeaderboardStore, StandingRow, StoreError};

/// The embedded leaderboard store: standings in SQL tables of the same database.
#[derive(Debug)]
pub struct SqlLeaderboard {
    sql: Arc<SqlStore>,
}

impl SqlLeaderboard {
    pub fn new(sql: Arc<SqlStore>) -> Self {
        Self { sql }
    }

    /// The body of [`LeaderboardStore::apply`], inside its transaction.
    async fn apply_in(
        &self,
        tx: &mut WriteTx<'_>,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<(), StoreError> {
        let quizzes: BTreeSet<&QuizId> = records.iter().map(|r| &r.quiz).collect();
        for quiz in quizzes {
            self.sql.check_fence(tx, quiz, epoch).await?;
        }
        // Two phases, each in key order, so that concurrent applies on PostgreSQL take their
        // row locks in one global order (all `lb_applied` rows, then all `lb_scores` rows)
        // and cannot deadlock.
        let mut order: Vec<&AnswerRecord> = records.iter().collect();
        order.sort_by_key(|r| (&r.quiz, r.player, r.question));
        let mut deltas: BTreeMap<(&QuizId, PlayerNo), (i64, i64)> = BTreeMap::new();
        for r in order {
            let done = sqlx::query(
                "INSERT INTO lb_applied (quiz, question, player) VALUES ($1, $2, $3) \
                 ON CONFLICT (quiz, question, player) DO NOTHING",
            )
            .bind(r.quiz.as_str())
            .bind(i64::from(r.question))
            .bind(i64::from(r.player.0))
            .execute(&mut *tx.tx)
            .await
            .map_err(db)?;
            if done.rows_affected() == 0 {
                continue; // counted before
            }
            let delta = deltas.entry((&r.quiz, r.player)).or_default();
            delta.0 += i64::from(r.points);
            if r.points > 0 {
                delta.1 += i64::from(r.response_ms);
            }
        }
        for ((quiz, player), (score, tiebreak)) in deltas {
            sqlx::query(
                "INSERT INTO lb_scores (quiz, player, score, tiebreak, removed) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (quiz, player) DO UPDATE SET \
                     score = lb_scores.score + excluded.score, \
                     tiebreak = lb_scores.tiebreak + excluded.tiebreak",
            )
            .bind(quiz.as_str())
            .bind(i64::from(player.0))
            .bind(score)
            .bind(tiebreak)
            .bind(false)
            .execute(&mut *tx.tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    /// The body of [`LeaderboardStore::remove_player`], inside its transaction.
    async fn remove_in(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError> {
        self.sql.check_fence(tx, quiz, epoch).await?;
        // A flag rather than a delete: later applies for this player still land in their row
        // and stay invisible.
        sqlx::query(
            "INSERT INTO lb_scores (quiz, player, score, tiebreak, removed) \
             VALUES ($1, $2, 0, 0, $3) \
             ON CONFLICT (quiz, player) DO UPDATE SET removed = excluded.removed",
        )
        .bind(quiz.as_str())
        .bind(i64::from(player.0))
        .bind(true)
        .execute(&mut *tx.tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl LeaderboardStore for SqlLeaderboard {
    async fn apply(&self, epoch: Epoch, records: &[AnswerRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.sql.begin_write().await?;
        let result = self.apply_in(&mut tx, epoch, records).await;
        tx.end(result).await
    }

    async fn remove_player(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError> {
        let mut tx = self.sql.begin_write().await?;
        let result = self.remove_in(&mut tx, quiz, epoch, player).await;
        tx.end(result).await
    }

    async fn standings(&self, quiz: &QuizId, limit: usize) -> Result<Vec<StandingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT player, score, tiebreak FROM lb_scores \
             WHERE quiz = $1 AND removed = $2 \
             ORDER BY score DESC, tiebreak ASC, player ASC LIMIT $3",
        )
        .bind(quiz.as_str())
        .bind(false)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.sql.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(StandingRow {
                    player: PlayerNo(int(row, "player")?),
                    score: int(row, "score")?,
                    tiebreak: int(row, "tiebreak")?,
                })
            })
            .collect()
    }
}
