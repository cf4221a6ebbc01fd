//! The suite on the in-memory store, each case with a fresh one: the simulation's store twin
//! must keep the contract the SQL and Redis backends keep.

use std::sync::Arc;

use futures_util::FutureExt;
use quiz_protocol::{Epoch, NodeId, QuizId};
use quiz_store::QuizStore;
use quiz_store::memory::{MemoryStore, stores};

use crate::suite::{Backend, TestDb};

async fn open() -> Option<TestDb> {
    let memory = Arc::new(MemoryStore::new());
    let bump = memory.clone();
    Some(TestDb {
        backend: Backend {
            name: "memory",
            stores: stores(memory),
            bump_epoch: Box::new(move |quiz: QuizId, epoch: Epoch| {
                let memory = bump.clone();
                async move {
                    memory
                        .claim(&quiz, &NodeId("next-owner".into()), epoch)
                        .await
                }
                .boxed()
            }),
        },
        cleanup: async {}.boxed(),
    })
}

crate::suite::instantiate!(open);
