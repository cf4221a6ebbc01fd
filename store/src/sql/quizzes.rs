//! Question sets, quizzes with their progress, and players, in SQL. The answer log and the
//! leaderboard are in their own modules.
//!
//! Progress lives in columns of `quizzes` (phase, question, opened_at...) so that a quiz's
//! state can be queried; the settings and the question snapshot are JSON text. So does
//! ownership: the epoch every fenced write is checked against, and the node that claimed it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use quiz_engine::{Millis, PlayerRecord, Progress};
use quiz_protocol::{Epoch, NodeId, PlayerNo, QuestionSet, QuizId, UserId};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{ROWS_PER_STATEMENT, SqlStore, WriteTx, corrupt, db, epoch_i64, flag, int, json};
use super::{opt_int, parse_phase, phase_name, text, to_json, values_sql};
use crate::{
    ContentStore, QuestionSetSummary, QuizRecord, QuizStore, SetAccess, StoreError, StoredSet,
    Visibility,
};

/// The owner, visibility and sharing of a question set's row.
fn access(row: &AnyRow) -> Result<SetAccess, StoreError> {
    let visibility = text(row, "visibility")?;
    Ok(SetAccess {
        owner: text(row, "owner")?,
        visibility: Visibility::parse(&visibility)
            .ok_or_else(|| corrupt("question set visibility", &visibility))?,
        shared_with: json(row, "shared_with")?,
    })
}

/// The columns of `quizzes`, as a macro so that `concat!` can build static statements.
macro_rules! quiz_columns {
    () => {
        "id, title, host, question_set, settings, questions, created_at, epoch, phase, \
         question, opened_at, paused_ms, paused_at, phase_at, seq, owner"
    };
}

/// The head and tail of every upsert of players, as macros so that `concat!` can build
/// static statements.
macro_rules! insert_players {
    () => {
        "INSERT INTO players (quiz, player, user_id, nickname, joined_at, kicked, \
         current_question, current_opened_at)"
    };
}

macro_rules! on_player_conflict {
    () => {
        "ON CONFLICT (quiz, player) DO UPDATE SET user_id = excluded.user_id, \
         nickname = excluded.nickname, joined_at = excluded.joined_at, \
         kicked = excluded.kicked, current_question = excluded.current_question, \
         current_opened_at = excluded.current_opened_at"
    };
}

/// Columns bound per player.
const PLAYER_COLUMNS: usize = 8;

/// The upsert of a player, fenced: the `SELECT` yields no row when the quiz is missing or
/// holds a newer epoch. PostgreSQL also share-locks the quiz row, so that a claim waits for
/// this statement's commit.
const SAVE_PLAYER_SQLITE: &str = concat!(
    insert_players!(),
    " SELECT id, $3, $4, $5, $6, $7, $8, $9 FROM quizzes WHERE id = $1 AND epoch <= $2 ",
    on_player_conflict!()
);

const SAVE_PLAYER_POSTGRES: &str = concat!(
    insert_players!(),
    " SELECT id, $3, $4, $5, $6, $7, $8, $9 FROM quizzes WHERE id = $1 AND epoch <= $2 \
     FOR KEY SHARE ",
    on_player_conflict!()
);

impl SqlStore {
    /// The body of [`QuizStore::save_players`], inside its transaction: one fence check, then
    /// multi-row upserts in player order (so that two batches on PostgreSQL lock their rows in
    /// one order and cannot deadlock).
    async fn save_players_in(
        &self,
        tx: &mut WriteTx<'_>,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        self.check_fence(tx, id, epoch).await?;
        // One row per player number, the last record winning, as one save after another would;
        // PostgreSQL refuses a statement that upserts one row twice.
        let players: BTreeMap<PlayerNo, &PlayerRecord> =
            players.iter().map(|p| (p.player, p)).collect();
        let players: Vec<&PlayerRecord> = players.into_values().collect();
        for chunk in players.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                insert_players!(),
                chunk.len(),
                PLAYER_COLUMNS,
                on_player_conflict!(),
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                query = query
                    .bind(id.as_str())
                    .bind(i64::from(p.player.0))
                    .bind(p.user.as_str())
                    .bind(p.nickname.as_str())
                    .bind(p.joined_at)
                    .bind(p.kicked)
                    .bind(p.current.map(i64::from))
                    .bind(p.current_opened_at);
            }
            query.execute(&mut *tx.tx).await.map_err(db)?;
        }
        Ok(())
    }
}

#[async_trait]
impl ContentStore for SqlStore {
    async fn put_question_set(
        &self,
        set: &QuestionSet,
        access: &SetAccess,
        any_owner: bool,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let _writer = self.writer().await;
        // One statement decides: a new set is the writer's; an existing one is replaced only
        // for its owner (or an admin), and keeps its owner.
        let done = sqlx::query(
            "INSERT INTO question_sets \
                 (id, title, body, questions, updated_at, owner, visibility, shared_with) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET title = excluded.title, body = excluded.body, \
                 questions = excluded.questions, updated_at = excluded.updated_at, \
                 visibility = excluded.visibility, shared_with = excluded.shared_with \
             WHERE question_sets.owner = excluded.owner OR $9",
        )
        .bind(set.id.as_str())
        .bind(set.title.as_str())
        .bind(to_json(set)?)
        .bind(i64::try_from(set.questions.len()).unwrap_or(i64::MAX))
        .bind(now)
        .bind(access.owner.as_str())
        .bind(access.visibility.as_str())
        .bind(to_json(&access.shared_with)?)
        .bind(any_owner)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn question_set(&self, id: &str) -> Result<Option<StoredSet>, StoreError> {
        let row = sqlx::query(
            "SELECT body, owner, visibility, shared_with FROM question_sets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|row| {
            Ok(StoredSet {
                set: json(&row, "body")?,
                access: access(&row)?,
            })
        })
        .transpose()
    }

    async fn question_sets(&self) -> Result<Vec<QuestionSetSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, title, questions, updated_at, owner, visibility, shared_with \
             FROM question_sets ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(QuestionSetSummary {
                    id: text(row, "id")?,
                    title: text(row, "title")?,
                    questions: int(row, "questions")?,
                    updated_at: int(row, "updated_at")?,
                    access: access(row)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl QuizStore for SqlStore {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO quizzes (",
            quiz_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (id) DO NOTHING"
        );
        let p = &quiz.progress;
        let _writer = self.writer().await;
        let done = sqlx::query(sql)
            .bind(quiz.id.as_str())
            .bind(quiz.title.as_str())
            .bind(quiz.host.as_str())
            .bind(quiz.question_set.as_str())
            .bind(to_json(&quiz.settings)?)
            .bind(to_json(&quiz.questions)?)
            .bind(quiz.created_at)
            .bind(epoch_i64(quiz.epoch)?)
            .bind(phase_name(p.phase))
            .bind(p.question.map(i64::from))
            .bind(p.opened_at)
            .bind(p.paused_ms)
            .bind(p.paused_at)
            .bind(p.phase_at)
            .bind(seq_i64(p.seq)?)
            .bind(quiz.owner.as_ref().map(|n| n.0.as_str()))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        let sql = concat!("SELECT ", quiz_columns!(), " FROM quizzes WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(decode_quiz).transpose()
    }

    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let _writer = self.writer().await;
        // One conditional UPDATE: on PostgreSQL its row lock serialises it with an epoch bump,
        // and the epoch is re-checked on the row it finally updates.
        let done = sqlx::query(
            "UPDATE quizzes SET phase = $3, question = $4, opened_at = $5, paused_ms = $6, \
                 paused_at = $7, phase_at = $8, seq = $9 \
             WHERE id = $1 AND epoch <= $2",
        )
        .bind(id.as_str())
        .bind(epoch_i64(epoch)?)
        .bind(phase_name(progress.phase))
        .bind(progress.question.map(i64::from))
        .bind(progress.opened_at)
        .bind(progress.paused_ms)
        .bind(progress.paused_at)
        .bind(progress.phase_at)
        .bind(seq_i64(progress.seq)?)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(self.refusal(id, epoch).await);
        }
        Ok(())
    }

    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError> {
        let sql = self.dialect.pick(SAVE_PLAYER_SQLITE, SAVE_PLAYER_POSTGRES);
        let _writer = self.writer().await;
        let done = sqlx::query(sql)
            .bind(id.as_str())
            .bind(epoch_i64(epoch)?)
            .bind(i64::from(player.player.0))
            .bind(player.user.as_str())
            .bind(player.nickname.as_str())
            .bind(player.joined_at)
            .bind(player.kicked)
            .bind(player.current.map(i64::from))
            .bind(player.current_opened_at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(self.refusal(id, epoch).await);
        }
        Ok(())
    }

    async fn save_players(
        &self,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        if players.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let result = self.save_players_in(&mut tx, id, epoch, players).await;
        tx.end(result).await
    }

    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT player, user_id, nickname, joined_at, kicked, current_question, \
                 current_opened_at \
             FROM players WHERE quiz = $1 ORDER BY player",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_player).collect()
    }

    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        // The literal predicate matches the partial index `quizzes_live`.
        let rows = sqlx::query("SELECT id FROM quizzes WHERE phase <> 'ended' ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| QuizId::parse(&text(row, "id")?).map_err(|e| corrupt("quiz id", e)))
            .collect()
    }

    async fn claim(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let result = self.claim_in(&mut tx, id, node, epoch).await;
        tx.end(result).await
    }

    async fn release(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        let _writer = self.writer().await;
        // One conditional UPDATE: a newer claim (another owner, or a higher epoch) is left as
        // it is, and so is a quiz that is gone. The epoch stays: the next owner claims above it.
        sqlx::query("UPDATE quizzes SET owner = NULL WHERE id = $1 AND owner = $2 AND epoch = $3")
            .bind(id.as_str())
            .bind(node.0.as_str())
            .bind(epoch_i64(epoch)?)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

fn decode_quiz(row: &AnyRow) -> Result<QuizRecord, StoreError> {
    let owner: Option<String> = row.try_get("owner").map_err(db)?;
    Ok(QuizRecord {
        owner: owner.map(NodeId),
        id: QuizId::parse(&text(row, "id")?).map_err(|e| corrupt("quiz id", e))?,
        title: text(row, "title")?,
        host: UserId::parse(&text(row, "host")?).map_err(|e| corrupt("host", e))?,
        question_set: text(row, "question_set")?,
        settings: json(row, "settings")?,
        questions: json(row, "questions")?,
        created_at: int(row, "created_at")?,
        epoch: Epoch(int(row, "epoch")?),
        progress: Progress {
            phase: parse_phase(&text(row, "phase")?)?,
            question: opt_int(row, "question")?,
            opened_at: opt_int(row, "opened_at")?,
            paused_ms: int(row, "paused_ms")?,
            paused_at: opt_int(row, "paused_at")?,
            phase_at: int(row, "phase_at")?,
            seq: int(row, "seq")?,
        },
    })
}

fn decode_player(row: &AnyRow) -> Result<PlayerRecord, StoreError> {
    Ok(PlayerRecord {
        player: PlayerNo(int(row, "player")?),
        user: UserId::parse(&text(row, "user_id")?).map_err(|e| corrupt("user id", e))?,
        nickname: text(row, "nickname")?,
        joined_at: int(row, "joined_at")?,
        kicked: flag(row, "kicked")?,
        current: opt_int(row, "current_question")?,
        current_opened_at: opt_int(row, "current_opened_at")?,
    })
}

fn seq_i64(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| corrupt("seq", format_args!("{seq} is too large")))
}
