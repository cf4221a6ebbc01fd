//! The suite on SQLite, each case in a fresh temporary file; and SQLite's own set-up: the
//! file is created, WAL is on, two pools may share a file, and `sqlite::memory:` works.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::FutureExt;
use quiz_engine::Progress;
use quiz_protocol::{Epoch, Phase, QuizId, UserId};
use quiz_store::sql::{SqlLeaderboard, SqlStore};
use quiz_store::{QuizRecord, QuizStore, StoreError, Stores};

use crate::suite::{Backend, TestDb};

/// A database file path no other test (or test process) uses.
fn temp_db() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("quiz-store-{}-{nanos}-{n}.db", std::process::id()))
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Removes a database file and its journal files when dropped, also when a test panics.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.0.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

fn backend(sql: Arc<SqlStore>) -> Backend {
    let bump = sql.clone();
    Backend {
        name: "sqlite",
        stores: Stores {
            content: sql.clone(),
            quizzes: sql.clone(),
            answers: sql.clone(),
            leaderboards: Arc::new(SqlLeaderboard::new(sql)),
        },
        bump_epoch: Box::new(move |quiz: QuizId, epoch: Epoch| {
            let sql = bump.clone();
            async move { sql.bump_epoch(&quiz, epoch).await }.boxed()
        }),
    }
}

async fn open() -> Option<TestDb> {
    let path = Removed(temp_db());
    let sql = Arc::new(SqlStore::connect(&url(&path.0), 4).await.unwrap());
    let closing = sql.clone();
    Some(TestDb {
        backend: backend(sql),
        cleanup: async move {
            closing.close().await;
            drop(path);
        }
        .boxed(),
    })
}

crate::suite::instantiate!(open);

fn shared_quiz() -> QuizRecord {
    QuizRecord {
        id: QuizId::parse("K7M3QX").unwrap(),
        title: "shared".into(),
        host: UserId::parse("host").unwrap(),
        question_set: "set".into(),
        settings: Default::default(),
        questions: vec![],
        created_at: 1,
        epoch: Epoch::FIRST,
        progress: Progress {
            phase: Phase::Lobby,
            question: None,
            opened_at: None,
            paused_ms: 0,
            paused_at: None,
            phase_at: 1,
            seq: 0,
        },
    }
}

#[tokio::test]
async fn creates_the_file_in_wal_mode_and_shares_it_between_pools() {
    let removed = Removed(temp_db());
    let path = &removed.0;
    assert!(!path.exists());
    let first = SqlStore::connect(&url(path), 2).await.unwrap();
    assert!(path.exists(), "the database file is created");
    // A second pool on the same file, as the router and a node in separate processes: the
    // migrations are already there, and each sees the other's writes and epochs.
    let second = SqlStore::connect(&url(path), 2).await.unwrap();
    let record = shared_quiz();
    let quiz = record.id.clone();
    first.create_quiz(&record).await.unwrap();
    assert_eq!(second.quiz(&quiz).await.unwrap(), Some(record.clone()));
    assert!(
        Path::new(&format!("{}-wal", path.display())).exists(),
        "the journal is a write-ahead log"
    );
    second.bump_epoch(&quiz, Epoch(2)).await.unwrap();
    let fenced = first
        .save_progress(&quiz, Epoch::FIRST, &record.progress)
        .await;
    assert!(
        matches!(
            fenced,
            Err(StoreError::Fenced {
                held: 1,
                current: 2
            })
        ),
        "{fenced:?}"
    );
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_database_keeps_one_connection() {
    // Every connection to `sqlite::memory:` is a database of its own: asked for 8, readers
    // running at once must still all see the one that holds the schema and the quiz.
    let sql = Arc::new(SqlStore::connect("sqlite::memory:", 8).await.unwrap());
    let record = shared_quiz();
    sql.create_quiz(&record).await.unwrap();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let sql = sql.clone();
            let id = record.id.clone();
            tokio::spawn(async move { sql.quiz(&id).await })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), Some(record.clone()));
    }
    sql.close().await;
}

#[tokio::test]
async fn unknown_scheme_is_refused_clearly() {
    let err = SqlStore::connect("mysql://root:hunter2@localhost/quiz", 1)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("unsupported database URL scheme"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn unopenable_file_is_unavailable_with_its_cause() {
    // A folder cannot be made under a regular file.
    let file = TempPath::new();
    std::fs::write(&file.0, b"not a folder").unwrap();
    let url = format!("sqlite://{}/quiz.db", file.0.display());
    let err = SqlStore::connect(&url, 1).await.unwrap_err();
    assert!(err.retryable(), "{err:?}");
    assert!(
        err.to_string().contains("cannot create the folder"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_folder_is_created() {
    let dir = TempPath::new();
    let url = format!("sqlite://{}/nested/quiz.db", dir.0.display());
    SqlStore::connect(&url, 1)
        .await
        .expect("the folder is made");
    assert!(dir.0.join("nested/quiz.db").exists());
    let _ = std::fs::remove_dir_all(&dir.0);
}

/// A unique path in the temp folder, removed (file or folder) on drop.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self(std::env::temp_dir().join(format!("quiz-store-{}-{nanos}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
