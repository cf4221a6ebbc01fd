//! The suite on PostgreSQL, each case in a database of its own, created in the server at
//! `QUIZ_TEST_PG_URL` and dropped afterwards.

use std::sync::Arc;

use futures_util::FutureExt;
use quiz_harness::PgDatabase;
use quiz_protocol::{Epoch, NodeId, QuizId};
use quiz_store::sql::{SqlLeaderboard, SqlStore};
use quiz_store::{QuizStore, Stores};

use crate::suite::{Backend, TestDb};

async fn open() -> Option<TestDb> {
    if std::env::var("QUIZ_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("QUIZ_SKIP_PG=1: PostgreSQL case skipped");
        return None;
    }
    sqlx::any::install_default_drivers();
    let db = PgDatabase::create("test")
        .await
        .unwrap_or_else(|e| panic!("{e:#}. Or set QUIZ_SKIP_PG=1 to skip the PostgreSQL tests."));
    let sql = Arc::new(SqlStore::connect(db.url(), 4).await.unwrap());
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
            let name = db.name().to_owned();
            if let Err(e) = db.drop_database().await {
                eprintln!("could not drop test database {name}: {e:#}");
            }
        }
        .boxed(),
    })
}

crate::suite::instantiate!(open);
