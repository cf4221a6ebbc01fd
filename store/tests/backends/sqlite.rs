//! The suite on SQLite, each case in a fresh temporary file; and SQLite's own set-up: the
//! file is created, WAL is on, two pools may share a file, and `sqlite::memory:` works.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::FutureExt;
use quiz_engine::Progress;
use quiz_protocol::{Epoch, NodeId, Phase, QuizId, UserId};
use quiz_store::sql::{SqlLeaderboard, SqlStore};
use quiz_store::{League, LeagueRow, MembershipStore, QuizRecord, QuizStore, StoreError, Stores};
use sqlx::any::AnyPoolOptions;

use crate::suite::{Backend, TestDb, is_fenced};

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
            membership: sql.clone(),
            leaderboards: Arc::new(SqlLeaderboard::new(sql)),
        },
        bump_epoch: Box::new(move |quiz: QuizId, epoch: Epoch| {
            let sql = bump.clone();
            async move { sql.claim(&quiz, &NodeId("next-owner".into()), epoch).await }.boxed()
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
        owner: None,
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
    let node_b = NodeId("node-b".into());
    second.claim(&quiz, &node_b, Epoch(2)).await.unwrap();
    assert_eq!(
        first.quiz(&quiz).await.unwrap().unwrap().owner,
        Some(node_b)
    );
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
async fn a_database_of_the_first_schema_upgrades_in_place() {
    // A database as the first release left it: only migration 1, and a quiz claimed twice.
    let removed = Removed(temp_db());
    let url = url(&removed.0);
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::migrate!("./migrations/sqlite")
        .run_to(1, &pool)
        .await
        .unwrap();
    let record = QuizRecord {
        epoch: Epoch(3),
        ..shared_quiz()
    };
    sqlx::query(
        "INSERT INTO quizzes (id, title, host, question_set, settings, questions, created_at, \
             epoch, phase, paused_ms, phase_at, seq) \
         VALUES ($1, $2, $3, $4, $5, '[]', 1, 3, 'lobby', 0, 1, 0)",
    )
    .bind(record.id.as_str())
    .bind(record.title.as_str())
    .bind(record.host.as_str())
    .bind(record.question_set.as_str())
    .bind(serde_json::to_string(&record.settings).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let sql = SqlStore::connect(&url, 2).await.unwrap();
    assert_eq!(sql.quiz(&record.id).await.unwrap(), Some(record.clone()));
    assert!(sql.leases().await.unwrap().is_empty());
    assert_eq!(sql.ring().await.unwrap(), None);
    let node = NodeId("node-a".into());
    is_fenced(sql.claim(&record.id, &node, Epoch(3)).await, 3, 3);
    sql.claim(&record.id, &node, Epoch(4)).await.unwrap();
    assert_eq!(
        sql.quiz(&record.id).await.unwrap().unwrap().owner,
        Some(node)
    );
    sql.close().await;
}

/// The SQL leagues keep each quiz's largest total: an older, smaller total that arrives late
/// (a retry of an earlier batch) takes nothing away.
#[tokio::test]
async fn a_smaller_league_total_changes_nothing() {
    let Some(db) = open().await else { return };
    let b = &db.backend;
    let quiz = shared_quiz();
    b.stores.quizzes.create_quiz(&quiz).await.unwrap();
    let ann = UserId::parse("ann").unwrap();
    let lb = &b.stores.leaderboards;
    lb.record_league(&quiz.id, "2026-W48", &[(ann.clone(), 800)])
        .await
        .unwrap();
    lb.record_league(
        &quiz.id,
        "2026-W48",
        &[(ann.clone(), 500), (ann.clone(), 0)],
    )
    .await
    .unwrap();
    let expected = vec![LeagueRow {
        user: ann.clone(),
        points: 800,
    }];
    assert_eq!(lb.league(&League::AllTime, 10).await.unwrap(), expected);
    lb.record_league(&quiz.id, "2026-W48", &[(ann.clone(), 900)])
        .await
        .unwrap();
    assert_eq!(
        lb.league(&League::Weekly("2026-W48".into()), 10)
            .await
            .unwrap(),
        vec![LeagueRow {
            user: ann,
            points: 900
        }]
    );
    db.cleanup.await;
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

/// A node's lease must be renewed while answers are being written: on one SQLite file the
/// renewal queued behind every other process's writes for the single write lock (a node
/// busy with answers lost its lease). Leases live in a file of their own, so a renewal goes
/// through while the answer database is locked by another writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renews_while_another_process_holds_the_answer_database() {
    let path = Removed(temp_db());
    let config = quiz_store::StoreConfig::sql(url(&path.0));
    let membership = Removed(
        config
            .membership_database()
            .strip_prefix("sqlite://")
            .unwrap()
            .into(),
    );
    assert_ne!(membership.0, path.0, "leases have a file of their own");
    let stores = Stores::open(&config).await.unwrap();
    // Another process writing answers: a connection of its own holds the write lock.
    let writer = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url(&path.0))
        .await
        .unwrap();
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE quizzes SET title = title")
        .execute(&mut *tx)
        .await
        .unwrap();
    let lease = quiz_store::NodeLease {
        node: NodeId("node-1".into()),
        ws_url: "ws://127.0.0.1:7001/v1/ws".into(),
        cluster_addr: "127.0.0.1:7101".into(),
        weight: 1,
        draining: false,
        renewed_at: 1,
        expires_at: 2,
    };
    let renewed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stores.membership.renew_lease(&lease),
    )
    .await
    .expect("the renewal returns");
    assert!(
        renewed.is_ok(),
        "renewed while the answer database is locked: {renewed:?}"
    );
    assert_eq!(stores.membership.leases().await.unwrap(), vec![lease]);
    // The lease is also where a separately opened membership store (the node's lease task)
    // and a router looking at the same configuration read it.
    let own = Stores::open_membership(&config).await.unwrap().unwrap();
    assert_eq!(own.leases().await.unwrap().len(), 1);
    tx.rollback().await.unwrap();
    drop(membership);
}

#[test]
fn membership_database_names() {
    let sql = |u: &str| quiz_store::StoreConfig::sql(u).membership_database();
    assert_eq!(
        sql("sqlite://.local/quiz.db"),
        "sqlite://.local/quiz-membership.db"
    );
    assert_eq!(
        sql("sqlite:///tmp/q.db?mode=rwc"),
        "sqlite:///tmp/q-membership.db?mode=rwc"
    );
    assert_eq!(sql("sqlite://data/quiz"), "sqlite://data/quiz-membership");
    assert_eq!(sql("sqlite::memory:"), "sqlite::memory:");
    assert_eq!(sql("postgres://u@h/db"), "postgres://u@h/db");
    let mut explicit = quiz_store::StoreConfig::sql("sqlite://a.db");
    explicit.membership_url = Some("sqlite://b.db".into());
    assert_eq!(explicit.membership_database(), "sqlite://b.db");
}
