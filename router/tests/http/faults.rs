//! Store faults as a client sees them: unavailable → 503 (retryable), corrupt → 500 without
//! detail, a store that hangs → 503 after the request timeout, and quiz-code collisions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use quiz_engine::{PlayerRecord, Progress};
use quiz_protocol::{Epoch, NodeId, QuizId};
use quiz_router::Config;
use quiz_store::{QuizRecord, QuizStore, StoreError, Stores};
use serde_json::json;

use crate::support::{Harness, memory_stores, within};

/// How [`Faulty`] misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// Every call fails with `Unavailable`.
    Unavailable,
    /// Every read fails with `Corrupt`.
    Corrupt,
    /// Reads never finish.
    Hang,
    /// The first `n` creations report the code as taken.
    Collide(usize),
}

/// A quiz store that delegates to a real (in-memory SQLite) store, but for its fault.
struct Faulty {
    inner: Stores,
    fault: Fault,
    creations: AtomicUsize,
}

async fn faulty(fault: Fault) -> Stores {
    let mut stores = memory_stores().await;
    stores.quizzes = Arc::new(Faulty {
        inner: stores.clone(),
        fault,
        creations: AtomicUsize::new(0),
    });
    stores
}

impl Faulty {
    async fn read_fault(&self) -> Result<(), StoreError> {
        match self.fault {
            Fault::Unavailable => Err(StoreError::Unavailable("connection refused".into())),
            Fault::Corrupt => Err(StoreError::Corrupt("secret table detail".into())),
            Fault::Hang => std::future::pending().await,
            Fault::Collide(_) => Ok(()),
        }
    }
}

#[async_trait]
impl QuizStore for Faulty {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        if let Fault::Collide(n) = self.fault
            && self.creations.fetch_add(1, Ordering::SeqCst) < n
        {
            return Err(StoreError::Conflict);
        }
        self.read_fault().await?;
        self.inner.quizzes.create_quiz(quiz).await
    }
    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        self.read_fault().await?;
        self.inner.quizzes.quiz(id).await
    }
    async fn save_progress(&self, id: &QuizId, e: Epoch, p: &Progress) -> Result<(), StoreError> {
        self.inner.quizzes.save_progress(id, e, p).await
    }
    async fn save_player(&self, id: &QuizId, e: Epoch, p: &PlayerRecord) -> Result<(), StoreError> {
        self.inner.quizzes.save_player(id, e, p).await
    }
    async fn save_players(
        &self,
        id: &QuizId,
        e: Epoch,
        p: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        self.inner.quizzes.save_players(id, e, p).await
    }
    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        self.read_fault().await?;
        self.inner.quizzes.players(id).await
    }
    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        self.inner.quizzes.live_quizzes().await
    }
    async fn claim(&self, id: &QuizId, node: &NodeId, e: Epoch) -> Result<(), StoreError> {
        self.inner.quizzes.claim(id, node, e).await
    }
    async fn release(&self, id: &QuizId, node: &NodeId, e: Epoch) -> Result<(), StoreError> {
        self.inner.quizzes.release(id, node, e).await
    }
}

#[tokio::test]
async fn an_unavailable_store_is_a_retryable_503() {
    within(async {
        let h = Harness::with_stores(Config::for_test(), faulty(Fault::Unavailable).await).await;
        let token = h.player("pat");
        let reply = h.get("/v1/quizzes/K7M3QX", Some(&token)).await;
        reply.expect_error(503, "unavailable");
        assert!(reply.body["retryable"].as_bool().unwrap());
        let reply = h
            .post(
                "/v1/quizzes/K7M3QX/join",
                Some(&token),
                &json!({"nickname": "Pat"}),
            )
            .await;
        reply.expect_error(503, "unavailable");
        assert!(!reply.text.contains("connection refused"), "{reply:?}");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn other_store_errors_are_500_without_detail() {
    within(async {
        let h = Harness::with_stores(Config::for_test(), faulty(Fault::Corrupt).await).await;
        let reply = h.get("/v1/quizzes/K7M3QX", Some(&h.player("pat"))).await;
        reply.expect_error(500, "internal");
        assert!(!reply.text.contains("secret"), "{reply:?}");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_hanging_store_times_out_as_503() {
    within(async {
        let mut config = Config::for_test();
        config.request_timeout_ms = 200;
        let h = Harness::with_stores(config, faulty(Fault::Hang).await).await;
        let reply = h.get("/v1/quizzes/K7M3QX", Some(&h.player("pat"))).await;
        reply.expect_error(503, "unavailable");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn taken_codes_are_retried_a_few_times() {
    within(async {
        let h = Harness::with_stores(Config::for_test(), faulty(Fault::Collide(2)).await).await;
        let host = h.host("teacher");
        let set = h.import_sample(&host).await;
        let body = json!({"question_set": set});
        h.post("/v1/quizzes", Some(&host), &body)
            .await
            .expect_ok(201);
        h.shutdown().await;

        let h = Harness::with_stores(Config::for_test(), faulty(Fault::Collide(100)).await).await;
        let host = h.host("teacher");
        let set = h.import_sample(&host).await;
        let body = json!({"question_set": set});
        let reply = h.post("/v1/quizzes", Some(&host), &body).await;
        reply.expect_error(503, "unavailable");
        h.shutdown().await;
    })
    .await;
}
