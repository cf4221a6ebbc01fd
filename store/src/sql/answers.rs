//! The answer log in SQL: appending batches (group commit), idempotent on (quiz, player,
//! question) and fenced by epoch, and reading a quiz's answers back for a rebuild.
//!
//! A batch is one transaction: fence checks, then multi-row `INSERT ... ON CONFLICT DO NOTHING
//! RETURNING` of its rows in key order, then a read of the rows that were already there. Key
//! order matters on PostgreSQL: two overlapping batches lock their rows in the same order and
//! so cannot deadlock.

use std::collections::{BTreeSet, HashSet};

use async_trait::async_trait;
use quiz_engine::AnswerRecord;
use quiz_protocol::{AnswerId, Epoch, PlayerNo, QuizId, UserId};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::{ROWS_PER_STATEMENT, SqlStore, WriteTx, corrupt, db, epoch_i64, flag, int, json};
use super::{text, to_json, values_sql};
use crate::{AnswerLog, Appended, Millis, QuizTotals, StoreError};

/// Columns bound per row of a multi-row insert.
const COLUMNS_PER_ROW: usize = 11;

const SELECT_ONE: &str = "\
    SELECT quiz, player, question, answer_id, answer, received_at, response_ms, points, \
        correct, streak \
    FROM answers WHERE quiz = $1 AND question = $2 AND player = $3";

/// The log's unique key, as the database returns it.
type Key = (String, u32, u32);

impl SqlStore {
    /// The body of [`AnswerLog::append`], inside its transaction.
    async fn append_in(
        &self,
        tx: &mut WriteTx<'_>,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<Vec<Appended>, StoreError> {
        let quizzes: BTreeSet<&QuizId> = records.iter().map(|r| &r.quiz).collect();
        for quiz in quizzes {
            self.check_fence(tx, quiz, epoch).await?;
        }
        // Stable: of two records with the same key, the earlier one is inserted.
        let mut order: Vec<&AnswerRecord> = records.iter().collect();
        order.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let epoch = epoch_i64(epoch)?;
        let mut inserted = HashSet::with_capacity(records.len());
        for chunk in order.chunks(ROWS_PER_STATEMENT) {
            let mut query = sqlx::query(AssertSqlSafe(insert_sql(chunk.len())));
            for r in chunk {
                query = query
                    .bind(r.quiz.as_str())
                    .bind(i64::from(r.player.0))
                    .bind(i64::from(r.question))
                    .bind(r.answer_id.as_str())
                    .bind(to_json(&r.answer)?)
                    .bind(r.received_at)
                    .bind(i64::from(r.response_ms))
                    .bind(i64::from(r.points))
                    .bind(r.correct)
                    .bind(i64::from(r.streak))
                    .bind(epoch);
            }
            for row in query.fetch_all(&mut *tx.tx).await.map_err(db)? {
                let key: Key = (
                    text(&row, "quiz")?,
                    int(&row, "player")?,
                    int(&row, "question")?,
                );
                inserted.insert(key);
            }
        }

        let mut outcomes = Vec::with_capacity(records.len());
        for r in records {
            // `remove`: a second record with the same key reports the first as existing.
            let key: Key = (r.quiz.as_str().to_owned(), r.player.0, r.question);
            if inserted.remove(&key) {
                outcomes.push(Appended::Inserted);
            } else {
                outcomes.push(Appended::Existing(existing(tx, r).await?));
            }
        }
        Ok(outcomes)
    }
}

#[async_trait]
impl AnswerLog for SqlStore {
    async fn append(
        &self,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<Vec<Appended>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let result = self.append_in(&mut tx, epoch, records).await;
        tx.end(result).await
    }

    async fn answers(&self, quiz: &QuizId) -> Result<Vec<AnswerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT quiz, player, question, answer_id, answer, received_at, response_ms, \
                 points, correct, streak \
             FROM answers WHERE quiz = $1 ORDER BY question, player",
        )
        .bind(quiz.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_answer).collect()
    }

    async fn league_totals(&self, since: Millis) -> Result<Vec<QuizTotals>, StoreError> {
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast back for the Any driver.
        let rows = sqlx::query(
            "SELECT q.id AS quiz, q.created_at AS created_at, p.user_id AS user_id, \
                 CAST(SUM(a.points) AS BIGINT) AS total \
             FROM quizzes q \
             JOIN answers a ON a.quiz = q.id \
             JOIN players p ON p.quiz = a.quiz AND p.player = a.player \
             WHERE q.created_at >= $1 AND p.kicked = $2 \
             GROUP BY q.id, q.created_at, p.user_id \
             HAVING SUM(a.points) > 0 \
             ORDER BY q.id, p.user_id",
        )
        .bind(since)
        .bind(false)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut quizzes: Vec<QuizTotals> = Vec::new();
        for row in &rows {
            let quiz = QuizId::parse(&text(row, "quiz")?).map_err(|e| corrupt("quiz id", e))?;
            let user = UserId::parse(&text(row, "user_id")?).map_err(|e| corrupt("user id", e))?;
            let total = int(row, "total")?;
            match quizzes.last_mut() {
                Some(last) if last.quiz == quiz => last.totals.push((user, total)),
                _ => quizzes.push(QuizTotals {
                    quiz,
                    created_at: int(row, "created_at")?,
                    totals: vec![(user, total)],
                }),
            }
        }
        Ok(quizzes)
    }

    async fn count(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM answers WHERE quiz = $1")
            .bind(quiz.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        int(&row, "n")
    }
}

/// The key order of the table's primary key.
fn sort_key(r: &AnswerRecord) -> (&QuizId, u32, u32) {
    (&r.quiz, r.question, r.player.0)
}

/// `INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING` the keys it inserted.
fn insert_sql(rows: usize) -> String {
    values_sql(
        "INSERT INTO answers (quiz, player, question, answer_id, answer, received_at, \
         response_ms, points, correct, streak, epoch)",
        rows,
        COLUMNS_PER_ROW,
        "ON CONFLICT (quiz, question, player) DO NOTHING RETURNING quiz, player, question",
    )
}

/// The row already in the log under `record`'s key.
async fn existing(tx: &mut WriteTx<'_>, record: &AnswerRecord) -> Result<AnswerRecord, StoreError> {
    let row = sqlx::query(SELECT_ONE)
        .bind(record.quiz.as_str())
        .bind(i64::from(record.question))
        .bind(i64::from(record.player.0))
        .fetch_optional(&mut *tx.tx)
        .await
        .map_err(db)?;
    match row {
        Some(row) => decode_answer(&row),
        // The insert skipped this key because of a row that is not there: only a database
        // that breaks its own constraint could do that.
        None => Err(StoreError::Corrupt(format!(
            "answer of player {} to question {} in quiz {} neither inserted nor found",
            record.player, record.question, record.quiz
        ))),
    }
}

fn decode_answer(row: &AnyRow) -> Result<AnswerRecord, StoreError> {
    Ok(AnswerRecord {
        quiz: QuizId::parse(&text(row, "quiz")?).map_err(|e| corrupt("quiz id", e))?,
        player: PlayerNo(int(row, "player")?),
        question: int(row, "question")?,
        answer_id: AnswerId::parse(&text(row, "answer_id")?)
            .map_err(|e| corrupt("answer id", e))?,
        answer: json(row, "answer")?,
        received_at: int(row, "received_at")?,
        response_ms: int(row, "response_ms")?,
        points: int(row, "points")?,
        correct: flag(row, "correct")?,
        streak: int(row, "streak")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_every_placeholder_once() {
        let sql = insert_sql(2);
        assert!(sql.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11), ($12, "));
        assert!(sql.contains("$22)"));
        assert!(!sql.contains("$23"));
    }
}
