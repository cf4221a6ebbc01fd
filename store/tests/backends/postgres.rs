//! The suite on PostgreSQL, each case in a database of its own, created in the server at
//! `QUIZ_TEST_PG_URL` and dropped afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use quiz_protocol::{Epoch, NodeId, QuizId};
use quiz_store::sql::{SqlLeaderboard, SqlStore};
use quiz_store::{QuizStore, Stores};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

use crate::suite::{Backend, TestDb};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `admin_url` with its database name replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

async fn open() -> Option<TestDb> {
    if std::env::var("QUIZ_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("QUIZ_SKIP_PG=1: PostgreSQL case skipped");
        return None;
    }
    let admin_url =
        std::env::var("QUIZ_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    sqlx::any::install_default_drivers();
    let connecting =
        tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(&admin_url))
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
    let mut admin = connecting.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is unreachable at QUIZ_TEST_PG_URL (default {DEFAULT_ADMIN_URL}): \
                 {e}. Start it, point QUIZ_TEST_PG_URL at a server where this user may create \
                 databases, or set QUIZ_SKIP_PG=1 to skip the PostgreSQL tests."
        )
    });

    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "quiz_test_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sql = Arc::new(
        SqlStore::connect(&database_url(&admin_url, &name), 4)
            .await
            .unwrap(),
    );
    let closing = sql.clone();
    let bump = sql.clone();
    let backend = Backend {
        name: "postgres",
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
    };
    Some(TestDb {
        backend,
        cleanup: async move {
            closing.close().await;
            let dropped = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            if let Err(e) = dropped {
                eprintln!("could not drop test database {name}: {e}");
            }
            let _ = admin.close().await;
        }
        .boxed(),
    })
}

crate::suite::instantiate!(open);

#[test]
fn database_url_replaces_only_the_database() {
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        database_url("postgres://u:p@h/db?sslmode=disable", "t2"),
        "postgres://u:p@h/t2?sslmode=disable"
    );
    assert_eq!(database_url("postgres://u@h", "t3"), "postgres://u@h/t3");
}
