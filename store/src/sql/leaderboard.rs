//! The embedded leaderboard store: per-quiz standings in SQL tables of the same database as
//! the answer log, for setups without Redis.
//!
//! `lb_applied` remembers which (quiz, player, question) answers were counted, so applying one
//! twice counts it once; `lb_scores` holds each player's score and tie-break, and a `removed`
//! flag that keeps a kicked player out for good. The order is the engine's `RankKey`: score
//! descending, then tie-break ascending, then player number ascending.
//!
//! A rebuild replaces a quiz's rows in both tables with those the answer log gives, counted
//! exactly as `apply` counts. There is no generation marker to restore: the tables live in the
//! same database as the log, so they never lose a quiz's data on their own, and
//! [`StoreError::NeedsRebuild`] never comes from here. The leagues are in `league`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use quiz_engine::AnswerRecord;
use quiz_protocol::{Epoch, PlayerNo, QuizId};

use quiz_protocol::UserId;
use sqlx::AssertSqlSafe;

use super::{ROWS_PER_STATEMENT, SqlStore, WriteTx, db, int, text, values_sql};
use crate::{LeaderboardStore, League, LeagueRow, StandingRow, StoreError};

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
        // and cannot deadlock. Each phase is a few multi-row statements, not one per answer.
        let mut order: Vec<&AnswerRecord> = records.iter().collect();
        order.sort_by_key(|r| (&r.quiz, r.question, r.player));
        order.dedup_by_key(|r| (&r.quiz, r.question, r.player));
        let mut fresh: BTreeSet<(String, u32, u32)> = BTreeSet::new();
        for chunk in order.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO lb_applied (quiz, question, player)",
                chunk.len(),
                3,
                "ON CONFLICT (quiz, question, player) DO NOTHING RETURNING quiz, question, player",
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(r.quiz.as_str())
                    .bind(i64::from(r.question))
                    .bind(i64::from(r.player.0));
            }
            for row in query.fetch_all(&mut *tx.tx).await.map_err(db)? {
                fresh.insert((
                    text(&row, "quiz")?,
                    int(&row, "question")?,
                    int(&row, "player")?,
                ));
            }
        }
        // Answers counted before are skipped: applying one twice counts it once.
        let mut deltas: BTreeMap<(&QuizId, PlayerNo), (i64, i64)> = BTreeMap::new();
        let mut counts: BTreeMap<&QuizId, i64> = BTreeMap::new();
        for r in order {
            let key = (r.quiz.as_str().to_owned(), r.question, r.player.0);
            if !fresh.contains(&key) {
                continue;
            }
            *counts.entry(&r.quiz).or_default() += 1;
            let delta = deltas.entry((&r.quiz, r.player)).or_default();
            delta.0 += i64::from(r.points);
            if r.points > 0 {
                delta.1 += i64::from(r.response_ms);
            }
        }
        let deltas: Vec<_> = deltas.into_iter().collect();
        for chunk in deltas.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO lb_scores (quiz, player, score, tiebreak, removed)",
                chunk.len(),
                5,
                "ON CONFLICT (quiz, player) DO UPDATE SET \
                     score = lb_scores.score + excluded.score, \
                     tiebreak = lb_scores.tiebreak + excluded.tiebreak",
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for ((quiz, player), (score, tiebreak)) in chunk {
                query = query
                    .bind(quiz.as_str())
                    .bind(i64::from(player.0))
                    .bind(*score)
                    .bind(*tiebreak)
                    .bind(false);
            }
            query.execute(&mut *tx.tx).await.map_err(db)?;
        }
        for (quiz, n) in counts {
            add_count(tx, quiz, n, false).await?;
        }
        Ok(())
    }

    /// The body of [`LeaderboardStore::rebuild`], inside its transaction. The quiz row is
    /// locked exclusively, so no apply to this quiz interleaves with the delete and re-insert.
    async fn rebuild_in(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        removed: &[PlayerNo],
    ) -> Result<(), StoreError> {
        self.sql.check_fence_exclusive(tx, quiz, epoch).await?;
        for sql in [
            "DELETE FROM lb_applied WHERE quiz = $1",
            "DELETE FROM lb_scores WHERE quiz = $1",
        ] {
            sqlx::query(sql)
                .bind(quiz.as_str())
                .execute(&mut *tx.tx)
                .await
                .map_err(db)?;
        }
        let CountedLog { applied, scores } = count_log(quiz, records, removed);
        add_count(tx, quiz, applied.len() as i64, true).await?;
        // Rebuilds are rare: their statements are not kept prepared, where they would push the
        // answer path's out of the connection's statement cache.
        for chunk in applied.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO lb_applied (quiz, question, player)",
                chunk.len(),
                3,
                "",
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for (question, player) in chunk {
                query = query
                    .bind(quiz.as_str())
                    .bind(i64::from(*question))
                    .bind(i64::from(player.0));
            }
            query.execute(&mut *tx.tx).await.map_err(db)?;
        }
        for chunk in scores.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO lb_scores (quiz, player, score, tiebreak, removed)",
                chunk.len(),
                5,
                "",
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for (player, row) in chunk {
                query = query
                    .bind(quiz.as_str())
                    .bind(i64::from(player.0))
                    .bind(row.score)
                    .bind(row.tiebreak)
                    .bind(row.removed);
            }
            query.execute(&mut *tx.tx).await.map_err(db)?;
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

/// Adds `n` to a quiz's count of answers applied (`reset`: sets it to `n`).
async fn add_count(
    tx: &mut WriteTx<'_>,
    quiz: &QuizId,
    n: i64,
    reset: bool,
) -> Result<(), StoreError> {
    let sql = if reset {
        "INSERT INTO lb_counts (quiz, applied) VALUES ($1, $2) \
         ON CONFLICT (quiz) DO UPDATE SET applied = excluded.applied"
    } else {
        "INSERT INTO lb_counts (quiz, applied) VALUES ($1, $2) \
         ON CONFLICT (quiz) DO UPDATE SET applied = lb_counts.applied + excluded.applied"
    };
    sqlx::query(sql)
        .bind(quiz.as_str())
        .bind(n)
        .execute(&mut *tx.tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// A player's row of `lb_scores`, as a rebuild writes it.
#[derive(Debug, Default)]
struct ScoreRow {
    score: i64,
    tiebreak: i64,
    removed: bool,
}

/// The rows of a quiz that its answer log gives.
struct CountedLog {
    /// The answers counted, by (question, player).
    applied: Vec<(u32, PlayerNo)>,
    /// Each player's row, by player.
    scores: Vec<(PlayerNo, ScoreRow)>,
}

/// Counts a quiz's answer log into its rows, as `apply` counts: each (question, player) once,
/// the first record winning (the log holds one anyway); records of other quizzes are not this
/// quiz's log and are skipped. Removed players keep a flagged row, as `remove_player` leaves
/// them, so that answers applied later do not bring them back.
fn count_log(quiz: &QuizId, records: &[AnswerRecord], removed: &[PlayerNo]) -> CountedLog {
    let mut applied: BTreeSet<(u32, PlayerNo)> = BTreeSet::new();
    let mut scores: BTreeMap<PlayerNo, ScoreRow> = BTreeMap::new();
    for r in records.iter().filter(|r| &r.quiz == quiz) {
        if !applied.insert((r.question, r.player)) {
            continue;
        }
        let row = scores.entry(r.player).or_default();
        row.score += i64::from(r.points);
        if r.points > 0 {
            row.tiebreak += i64::from(r.response_ms);
        }
    }
    for player in removed {
        scores.entry(*player).or_default().removed = true;
    }
    CountedLog {
        applied: applied.into_iter().collect(),
        scores: scores.into_iter().collect(),
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

    async fn counted(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT applied FROM lb_counts WHERE quiz = $1")
            .bind(quiz.as_str())
            .fetch_optional(&self.sql.pool)
            .await
            .map_err(db)?;
        row.map_or(Ok(0), |row| int(&row, "applied"))
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

    async fn rebuild(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        removed: &[PlayerNo],
    ) -> Result<(), StoreError> {
        let mut tx = self.sql.begin_write().await?;
        let result = self
            .rebuild_in(&mut tx, quiz, epoch, records, removed)
            .await;
        tx.end(result).await
    }

    async fn record_league(
        &self,
        quiz: &QuizId,
        week: &str,
        totals: &[(UserId, u32)],
    ) -> Result<(), StoreError> {
        if totals.is_empty() {
            return Ok(());
        }
        let mut tx = self.sql.begin_write().await?;
        let result = self.sql.record_league_in(&mut tx, quiz, week, totals).await;
        tx.end(result).await
    }

    async fn league(&self, league: &League, limit: usize) -> Result<Vec<LeagueRow>, StoreError> {
        self.sql.league(league, limit).await
    }
}
