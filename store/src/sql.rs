//! The SQL backends: one sqlx code path for SQLite and PostgreSQL through the Any driver.
//!
//! This module owns the connection (which dialect a URL names; SQLite's file, journal and busy
//! settings; migrations, one folder per dialect under `migrations/`), the fencing rule that
//! every epoch-carrying write follows, the mapping of sqlx errors onto [`StoreError`], and the
//! helpers that turn rows into domain values. The stores are in submodules: `quizzes`
//! (question sets, quizzes, progress, players, ownership claims and releases), `answers` (the
//! answer log), `membership` (node leases and the published ring), `leaderboard` (the embedded
//! leaderboard store) and `league` (its cross-quiz leagues).
//!
//! Fencing: a write carrying epoch `e` is refused when the quiz's stored epoch is greater than
//! `e`, and the check and the write are atomic. On SQLite a write is either one statement or a
//! `BEGIN IMMEDIATE` transaction, so it holds the database's single write lock from its first
//! read. On PostgreSQL the check locks the quiz row (`FOR KEY SHARE`, or the row lock of an
//! `UPDATE`) until commit, and a claim ([`crate::QuizStore::claim`]) takes `FOR UPDATE`, which
//! waits for those writes to commit and makes later ones see the new epoch.

use std::fmt::Write as _;
use std::time::Duration;

use quiz_protocol::{Epoch, NodeId, Phase, QuizId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::StoreError;

mod answers;
mod leaderboard;
mod league;
mod membership;
mod quizzes;

pub use leaderboard::SqlLeaderboard;

/// How long an operation waits for a pooled connection before it reports the store
/// unavailable. Longer rides out a burst; shorter fails an answer's ack sooner so the phone
/// retries.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows per multi-row statement ([`values_sql`]). Bigger writes take several statements; the
/// limit keeps the binds per statement far below both dialects' caps, and the number of
/// distinct prepared statements per connection bounded (one per size up to this, per kind).
const ROWS_PER_STATEMENT: usize = 64;

/// Set on every SQLite connection.
const SQLITE_PRAGMAS: &[&str] = &[
    // Wait up to 5 s for another process's write lock (the router and a node may share one
    // file) before failing with `StoreError::Unavailable`.
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
    // FULL (SQLite's default) syncs the WAL on every commit. NORMAL would be faster but can
    // lose the last commits on power loss, and those may be acknowledged answers.
    "PRAGMA synchronous = FULL",
];

/// How many times connecting retries switching a new SQLite file to WAL while another process
/// holds it (that switch cannot wait on the busy timeout), 100 ms apart.
const WAL_ATTEMPTS: u32 = 50;

/// Question sets, quizzes, players and the answer log in SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite has one writer at a time. Queueing this process's writers here, instead of in
    /// SQLite's busy handler (which sleeps and polls), keeps the answer-ack path smooth. `None`
    /// on PostgreSQL, which has row locks.
    writer: Option<Mutex<()>>,
}

/// The SQL dialect a URL names. The statements are shared; only row locking and the way a
/// write transaction begins differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// A write transaction, holding this process's SQLite writer slot until it ends. End it with
/// [`WriteTx::end`]; dropping it also rolls back.
struct WriteTx<'a> {
    // Declared first so that it is dropped (rolled back) before the writer slot is released.
    tx: Transaction<'static, Any>,
    _writer: Option<MutexGuard<'a, ()>>,
}

impl SqlStore {
    /// Connects and runs the dialect's migrations. `url` is `sqlite://path/to/file.db` (the
    /// file is created if missing), `sqlite::memory:` (one connection, gone when closed) or
    /// `postgres://user@host/db`.
    pub async fn connect(url: &str, pool_size: u32) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url)?;
        let pool_size = pool_size.max(1);
        let store = match dialect {
            Dialect::Sqlite => SqlStore {
                pool: open_sqlite(url, pool_size).await?,
                dialect,
                writer: Some(Mutex::new(())),
            },
            Dialect::Postgres => SqlStore {
                pool: open_postgres(url, pool_size).await?,
                dialect,
                writer: None,
            },
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The body of [`crate::QuizStore::claim`], inside its transaction: the quiz row is read
    /// `FOR UPDATE` on PostgreSQL, so the claim waits for fenced writes that read the old epoch
    /// to commit, and writes after it read the new one.
    async fn claim_in(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        node: &NodeId,
        epoch: Epoch,
    ) -> Result<(), StoreError> {
        let current = self.stored_epoch(tx, quiz, true).await?;
        if current >= epoch.0 {
            return Err(StoreError::Fenced {
                held: epoch.0,
                current,
            });
        }
        sqlx::query("UPDATE quizzes SET epoch = $2, owner = $3 WHERE id = $1")
            .bind(quiz.as_str())
            .bind(epoch_i64(epoch)?)
            .bind(node.0.as_str())
            .execute(&mut *tx.tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        let first = migrator.run(&self.pool).await;
        let result = match (first, self.dialect) {
            // sqlx cannot lock SQLite against a second migrating process: if another process
            // applied the same migration meanwhile, ours failed on its tables. Running again
            // finds it applied.
            (Err(e), Dialect::Sqlite) => {
                tracing::debug!(error = %e, "migration failed; retrying once");
                migrator.run(&self.pool).await
            }
            (result, _) => result,
        };
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => db(e),
            e => StoreError::Corrupt(format!("schema migrations: {e}")),
        })
    }

    /// Takes this process's SQLite writer slot (no-op on PostgreSQL).
    async fn writer(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.writer {
            Some(writer) => Some(writer.lock().await),
            None => None,
        }
    }

    /// Begins a write transaction. On SQLite, `BEGIN IMMEDIATE` takes the write lock now: a
    /// deferred transaction that read first could not upgrade once another writer committed.
    async fn begin_write(&self) -> Result<WriteTx<'_>, StoreError> {
        let writer = self.writer().await;
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
        .map_err(db)?;
        Ok(WriteTx {
            tx,
            _writer: writer,
        })
    }

    /// Checks, inside `tx`, that `quiz` exists and holds no newer epoch than `epoch`. On
    /// PostgreSQL the quiz row stays share-locked until `tx` ends, so a claim waits for it.
    /// Callers check several quizzes in id order.
    async fn check_fence(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        epoch: Epoch,
    ) -> Result<(), StoreError> {
        let current = self.stored_epoch(tx, quiz, false).await?;
        fence(current, epoch)
    }

    /// [`SqlStore::check_fence`] for a write that replaces data of the quiz wholesale (a
    /// leaderboard rebuild): on PostgreSQL the quiz row stays locked exclusively, so the
    /// quiz's other fenced writes wait for it, and it for them, instead of interleaving. Its
    /// owner writes one batch at a time, so this costs the owner nothing.
    async fn check_fence_exclusive(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        epoch: Epoch,
    ) -> Result<(), StoreError> {
        let current = self.stored_epoch(tx, quiz, true).await?;
        fence(current, epoch)
    }

    /// The quiz's stored epoch, read inside `tx`; on PostgreSQL the row stays locked until
    /// `tx` ends (exclusively for a claim or a rebuild, shared for a fenced write).
    async fn stored_epoch(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        exclusive: bool,
    ) -> Result<u64, StoreError> {
        let sql = match (self.dialect, exclusive) {
            (Dialect::Sqlite, _) => "SELECT epoch FROM quizzes WHERE id = $1",
            (Dialect::Postgres, true) => "SELECT epoch FROM quizzes WHERE id = $1 FOR UPDATE",
            (Dialect::Postgres, false) => "SELECT epoch FROM quizzes WHERE id = $1 FOR KEY SHARE",
        };
        let row = sqlx::query(sql)
            .bind(quiz.as_str())
            .fetch_optional(&mut *tx.tx)
            .await
            .map_err(db)?;
        int(&row.ok_or(StoreError::NoSuchQuiz)?, "epoch")
    }

    /// Why a fenced single-statement write touched no row: the quiz is missing, or its epoch is
    /// newer than `epoch`.
    async fn refusal(&self, quiz: &QuizId, epoch: Epoch) -> StoreError {
        let row = sqlx::query("SELECT epoch FROM quizzes WHERE id = $1")
            .bind(quiz.as_str())
            .fetch_optional(&self.pool)
            .await;
        match row {
            Ok(None) => StoreError::NoSuchQuiz,
            Ok(Some(row)) => match int(&row, "epoch") {
                Ok(current) => StoreError::Fenced {
                    held: epoch.0,
                    current,
                },
                Err(e) => e,
            },
            Err(e) => db(e),
        }
    }
}

impl WriteTx<'_> {
    /// Commits if `result` is a success, rolls back if not. Rolling back here rather than on
    /// drop ends SQLite's write lock before the writer slot goes to the next writer.
    async fn end<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.tx.commit().await.map_err(db)?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = self.tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback failed");
                }
                Err(e)
            }
        }
    }
}

impl Dialect {
    fn of_url(url: &str) -> Result<Dialect, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            // Only the scheme is echoed: the rest of the URL may hold a password.
            _ => Err(StoreError::Unavailable(format!(
                "unsupported database URL scheme {scheme:?}: use sqlite://path/to/file.db or \
                 postgres://user@host/db"
            ))),
        }
    }

    fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

async fn open_postgres(url: &str, pool_size: u32) -> Result<AnyPool, StoreError> {
    let connected = AnyPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await;
    match connected {
        Ok(pool) => Ok(pool),
        Err(e) => Err(connect_error(url, e).await),
    }
}

/// Opens a SQLite pool: the file is created if missing and switched to WAL (readers do not
/// block the writer; the setting is stored in the file, so every process gets it).
async fn open_sqlite(url: &str, pool_size: u32) -> Result<AnyPool, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory {
        create_parent_dir(url)?;
    }
    let url = match (in_memory || url.contains("mode="), url.contains('?')) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}&mode=rwc"),
        (false, false) => format!("{url}?mode=rwc"),
    };
    let mut options = AnyPoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn: &mut AnyConnection, _| {
            Box::pin(async move {
                for pragma in SQLITE_PRAGMAS {
                    sqlx::query(*pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        });
    options = if in_memory {
        // Every connection to `sqlite::memory:` opens a database of its own: keep exactly one,
        // forever.
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options.max_connections(pool_size)
    };
    let pool = match options.connect(&url).await {
        Ok(pool) => pool,
        Err(e) => return Err(connect_error(&url, e).await),
    };
    if !in_memory {
        use_wal(&pool).await?;
    }
    Ok(pool)
}

async fn use_wal(pool: &AnyPool) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                // Some file systems cannot do WAL; SQLite keeps the old journal and still works.
                tracing::warn!(%mode, "SQLite refused WAL journal mode");
                return Ok(());
            }
            Err(e) if attempt < WAL_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "switching SQLite to WAL");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(db(e)),
        }
    }
}

/// Why the pool could not open its first connection. The pool reports only that it timed
/// out; one direct attempt recovers the cause (refused, unknown host, bad password, no such
/// file) for the operator.
async fn connect_error(url: &str, e: sqlx::Error) -> StoreError {
    let cause = match e {
        sqlx::Error::PoolTimedOut => match AnyConnection::connect(url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                sqlx::Error::PoolTimedOut
            }
            Err(cause) => cause,
        },
        e => e,
    };
    StoreError::Unavailable(format!("cannot connect to the database: {cause}"))
}

/// Maps a sqlx error onto the store's errors: decoding problems are corrupt data, a taken
/// unique key is a conflict, and everything else (I/O, pool timeouts, a busy database,
/// configuration) makes the store unavailable.
fn db(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match &e {
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        sqlx::Error::Database(d) => match d.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict,
            ErrorKind::ForeignKeyViolation => StoreError::NoSuchQuiz,
            _ => StoreError::Unavailable(e.to_string()),
        },
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The fencing rule: a write carrying `epoch` is refused when the stored epoch is newer.
fn fence(current: u64, epoch: Epoch) -> Result<(), StoreError> {
    if current > epoch.0 {
        return Err(StoreError::Fenced {
            held: epoch.0,
            current,
        });
    }
    Ok(())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// An integer column, range-checked into `T`.
fn int<T: TryFrom<i64>>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let value: i64 = row.try_get(col).map_err(db)?;
    T::try_from(value).map_err(|_| corrupt(col, format_args!("{value} is out of range")))
}

fn opt_int<T: TryFrom<i64>>(row: &AnyRow, col: &str) -> Result<Option<T>, StoreError> {
    let value: Option<i64> = row.try_get(col).map_err(db)?;
    value
        .map(|v| T::try_from(v).map_err(|_| corrupt(col, format_args!("{v} is out of range"))))
        .transpose()
}

fn text(row: &AnyRow, col: &str) -> Result<String, StoreError> {
    row.try_get(col).map_err(db)
}

/// A boolean column: PostgreSQL has booleans; SQLite stores 0 or 1, which the Any driver hands
/// over as an integer.
fn flag(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(col) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(col).map_err(db)? != 0),
    }
}

/// A JSON text column.
fn json<T: DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    serde_json::from_str(&text(row, col)?).map_err(|e| corrupt(col, e))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt("cannot encode as JSON", e))
}

fn epoch_i64(epoch: Epoch) -> Result<i64, StoreError> {
    i64::try_from(epoch.0).map_err(|_| corrupt("epoch", format_args!("{} is too large", epoch.0)))
}

/// A [`Phase`] as stored: its protocol name.
fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Lobby => "lobby",
        Phase::Open => "open",
        Phase::Paused => "paused",
        Phase::Closed => "closed",
        Phase::Reveal => "reveal",
        Phase::InProgress => "in_progress",
        Phase::Ended => "ended",
    }
}

fn parse_phase(name: &str) -> Result<Phase, StoreError> {
    Ok(match name {
        "lobby" => Phase::Lobby,
        "open" => Phase::Open,
        "paused" => Phase::Paused,
        "closed" => Phase::Closed,
        "reveal" => Phase::Reveal,
        "in_progress" => Phase::InProgress,
        "ended" => Phase::Ended,
        other => return Err(corrupt("phase", format_args!("unknown phase {other:?}"))),
    })
}

/// `{head} VALUES ($1, .., $cols), (..), .. {tail}`: a statement of `rows` rows of `cols`
/// placeholders each, numbered in order.
fn values_sql(head: &str, rows: usize, cols: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * cols * 6 + 8);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..cols {
            let sep = if col == 0 { "" } else { ", " };
            // Writing to a String cannot fail.
            let _ = write!(sql, "{sep}${}", row * cols + col + 1);
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// SQLite creates a missing database file but not its folder; a fresh checkout's default
/// (`sqlite://.local/quiz.db`) should just work.
fn create_parent_dir(url: &str) -> Result<(), StoreError> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create the folder {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Phase; 7] = [
        Phase::Lobby,
        Phase::Open,
        Phase::Paused,
        Phase::Closed,
        Phase::Reveal,
        Phase::InProgress,
        Phase::Ended,
    ];

    #[test]
    fn stored_phase_names_are_the_protocol_names_and_round_trip() {
        for phase in PHASES {
            let name = phase_name(phase);
            assert_eq!(
                serde_json::to_string(&phase).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(parse_phase(name).unwrap(), phase);
        }
        assert!(matches!(parse_phase("done"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn values_sql_numbers_every_placeholder_once() {
        let sql = values_sql("INSERT INTO t (a, b)", 3, 2, "ON CONFLICT DO NOTHING");
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn url_scheme_picks_the_dialect() {
        assert_eq!(Dialect::of_url("sqlite://x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(Dialect::of_url("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(
            Dialect::of_url("postgres://u@h/d").unwrap(),
            Dialect::Postgres
        );
        assert_eq!(
            Dialect::of_url("postgresql://u@h/d").unwrap(),
            Dialect::Postgres
        );
        let err = Dialect::of_url("mysql://root:secret@h/d").unwrap_err();
        assert!(err.to_string().contains("\"mysql\""), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
