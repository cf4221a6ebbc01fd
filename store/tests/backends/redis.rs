//! The suite on the production pairing: SQLite (a temporary file per case) for the SQL stores
//! and a Redis Cluster for the leaderboards. Plus Redis' own faults, in `faults`.
//!
//! One cluster (3 masters, 1 replica each) serves every suite case of this test binary: it
//! starts on first use, and each case works in a namespace of its own (a key prefix outside
//! the hash tags), so cases running at once never see each other's quizzes or leagues. The
//! cluster lives in a static, which is never dropped; its servers still die with this process,
//! because the harness' watchdog kills them when the process' end closes its pipe (see
//! `quiz_harness::RedisCluster`). Fault cases start clusters of their own, which they may kill
//! or wipe.
//!
//! Redis knows nothing of the SQL quiz rows, so the backend adds what a node does around its
//! leaderboard: creating a quiz starts its board with a rebuild from the empty log (a new
//! owner's first step), and a claim also raises the quiz's epoch in Redis
//! (`RedisLeaderboard::fence`), so that the old owner's leaderboard writes are refused at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use futures_util::FutureExt;
use quiz_engine::{PlayerRecord, Progress};
use quiz_harness::{ClusterOptions, RedisCluster};
use quiz_protocol::{Epoch, NodeId, QuizId};
use quiz_store::redis::RedisLeaderboard;
use quiz_store::sql::SqlStore;
use quiz_store::{LeaderboardStore, QuizRecord, QuizStore, RedisConfig, StoreError, Stores};
use tokio::sync::OnceCell;

use crate::suite::{Backend, TestDb};

mod faults;

/// The cluster shared by the suite's cases.
async fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceCell<RedisCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            // No failover is wanted here: a longer node timeout keeps a busy machine's stalls
            // from looking like dead masters.
            let options = ClusterOptions {
                node_timeout_ms: 5_000,
                ..ClusterOptions::default()
            };
            RedisCluster::start_with(options).await.expect(
                "the shared Redis Cluster starts (are redis-server and redis-cli installed?)",
            )
        })
        .await
}

/// A client configuration for `cluster`, with timeouts that ride out a loaded machine.
pub(crate) fn config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        nodes: cluster.seed_urls(),
        connect_timeout_ms: 2_000,
        response_timeout_ms: 2_000,
        retries: 3,
        weekly_league_weeks_kept: 8,
    }
}

/// A key prefix no other case of this process uses.
pub(crate) fn namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("case{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A SQLite file path no other test uses, removed with its journals on drop.
pub(crate) struct TempDb(PathBuf);

impl TempDb {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!(
            "quiz-store-redis-{}-{nanos}-{n}.db",
            std::process::id()
        )))
    }

    pub(crate) fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.0.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The SQL quiz store, plus what a node does to the Redis board around quiz creation and
/// claims (see the module docs).
struct QuizzesWithBoards {
    sql: Arc<SqlStore>,
    boards: Arc<RedisLeaderboard>,
}

#[async_trait]
impl QuizStore for QuizzesWithBoards {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        self.sql.create_quiz(quiz).await?;
        self.boards.rebuild(&quiz.id, quiz.epoch, &[], &[]).await
    }
    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        self.sql.quiz(id).await
    }
    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        self.sql.save_progress(id, epoch, progress).await
    }
    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError> {
        self.sql.save_player(id, epoch, player).await
    }
    async fn save_players(
        &self,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        self.sql.save_players(id, epoch, players).await
    }
    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        self.sql.players(id).await
    }
    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        self.sql.live_quizzes().await
    }
    async fn claim(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        self.sql.claim(id, node, epoch).await?;
        self.boards.fence(id, epoch).await
    }
    async fn release(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        self.sql.release(id, node, epoch).await
    }
}

async fn open() -> Option<TestDb> {
    let cluster = shared_cluster().await;
    let file = TempDb::new();
    let sql = Arc::new(SqlStore::connect(&file.url(), 4).await.unwrap());
    let boards = Arc::new(
        RedisLeaderboard::connect_namespaced(&config(cluster), &namespace())
            .await
            .unwrap(),
    );
    let quizzes = Arc::new(QuizzesWithBoards {
        sql: sql.clone(),
        boards: boards.clone(),
    });
    let claims = quizzes.clone();
    let backend = Backend {
        name: "redis",
        stores: Stores {
            content: sql.clone(),
            quizzes,
            answers: sql.clone(),
            membership: sql.clone(),
            leaderboards: boards,
        },
        bump_epoch: Box::new(move |quiz: QuizId, epoch: Epoch| {
            let claims = claims.clone();
            async move {
                claims
                    .claim(&quiz, &NodeId("next-owner".into()), epoch)
                    .await
            }
            .boxed()
        }),
    };
    Some(TestDb {
        backend,
        cleanup: async move {
            sql.close().await;
            drop(file);
        }
        .boxed(),
    })
}

crate::suite::instantiate!(open);
