//! Cases for cluster membership: node leases, and claims that move a quiz's ownership.

use quiz_protocol::NodeId;
use quiz_store::NodeLease;

use super::*;

fn node(name: &str) -> NodeId {
    NodeId(name.into())
}

fn lease(name: &str, expires_at: i64) -> NodeLease {
    NodeLease {
        node: node(name),
        ws_url: format!("ws://{name}.quiz.internal:8080/v1/ws"),
        cluster_addr: format!("{name}.quiz.internal:7000"),
        weight: 1,
        draining: false,
        renewed_at: expires_at - 10_000,
        expires_at,
    }
}

pub(crate) async fn claim_moves_owner_and_epoch(b: &Backend) {
    let id = created(b, 1).await;
    let q = &b.stores.quizzes;
    let before = q.quiz(&id).await.unwrap().unwrap();
    assert_eq!((before.owner.clone(), before.epoch), (None, Epoch::FIRST));

    q.claim(&id, &node("node-a"), Epoch(2)).await.unwrap();
    let after = q.quiz(&id).await.unwrap().unwrap();
    assert_eq!(
        (after.owner.clone(), after.epoch),
        (Some(node("node-a")), Epoch(2))
    );
    assert_eq!(
        QuizRecord {
            owner: None,
            epoch: Epoch::FIRST,
            ..after
        },
        before,
        "a claim changes ownership only"
    );
    // Epochs may jump (a claim that lost a race retries with a higher one).
    q.claim(&id, &node("node-b"), Epoch(5)).await.unwrap();
    let owner = |r: QuizRecord| (r.owner, r.epoch);
    assert_eq!(
        owner(q.quiz(&id).await.unwrap().unwrap()),
        (Some(node("node-b")), Epoch(5))
    );

    // An equal or older epoch is someone else's claim, and changes nothing.
    is_fenced(q.claim(&id, &node("node-a"), Epoch(5)).await, 5, 5);
    is_fenced(q.claim(&id, &node("node-a"), Epoch(3)).await, 3, 5);
    is_fenced(q.claim(&id, &node("node-b"), Epoch(5)).await, 5, 5);
    assert_eq!(
        owner(q.quiz(&id).await.unwrap().unwrap()),
        (Some(node("node-b")), Epoch(5))
    );

    let missing = q.claim(&quiz_id(9), &node("node-a"), Epoch(2)).await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchQuiz)),
        "{missing:?}"
    );
}

pub(crate) async fn writes_with_the_old_epoch_are_refused_after_a_claim(b: &Backend) {
    let id = created(b, 1).await;
    let s = &b.stores;
    let old = Epoch::FIRST;
    s.quizzes
        .save_player(&id, old, &player(1, "ann"))
        .await
        .unwrap();
    s.quizzes
        .claim(&id, &node("node-b"), Epoch(2))
        .await
        .unwrap();

    let open = Progress {
        phase: Phase::Open,
        question: Some(0),
        opened_at: Some(5),
        phase_at: 5,
        seq: 1,
        ..lobby(5)
    };
    is_fenced(s.quizzes.save_progress(&id, old, &open).await, 1, 2);
    let renamed = PlayerRecord {
        nickname: "Ann the zombie".into(),
        ..player(1, "ann")
    };
    is_fenced(s.quizzes.save_player(&id, old, &renamed).await, 1, 2);
    is_fenced(
        s.quizzes
            .save_players(&id, old, &[renamed.clone(), player(2, "bo")])
            .await,
        1,
        2,
    );
    is_fenced(s.answers.append(old, &[answer(&id, 1, 0, "a")]).await, 1, 2);
    assert_eq!(
        s.quizzes.quiz(&id).await.unwrap().unwrap().progress,
        quiz(1).progress
    );
    assert_eq!(
        s.quizzes.players(&id).await.unwrap(),
        vec![player(1, "ann")]
    );
    assert!(s.answers.answers(&id).await.unwrap().is_empty());

    // The new owner's writes go through.
    let new = Epoch(2);
    s.quizzes.save_progress(&id, new, &open).await.unwrap();
    s.quizzes
        .save_players(&id, new, &[renamed.clone(), player(2, "bo")])
        .await
        .unwrap();
    assert_eq!(
        s.answers
            .append(new, &[answer(&id, 1, 0, "a")])
            .await
            .unwrap(),
        vec![Appended::Inserted]
    );
    assert_eq!(s.quizzes.quiz(&id).await.unwrap().unwrap().progress, open);
    assert_eq!(
        s.quizzes.players(&id).await.unwrap(),
        vec![renamed, player(2, "bo")]
    );
}

/// Eight nodes claim the same epoch at once, several rounds in a row: each round exactly one
/// wins, and the store names the winner as the owner.
pub(crate) async fn concurrent_claims_of_one_epoch_have_one_winner(b: &Backend) {
    let id = created(b, 1).await;
    for epoch in 2..=6u64 {
        let claims: Vec<_> = (0..8)
            .map(|n| {
                let quizzes = b.stores.quizzes.clone();
                let quiz = id.clone();
                let name = node(&format!("node-{n}"));
                tokio::spawn(async move {
                    let claimed = quizzes.claim(&quiz, &name, Epoch(epoch)).await;
                    (name, claimed)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for claim in claims {
            match claim.await.unwrap() {
                (name, Ok(())) => winners.push(name),
                (_, refused) => is_fenced(refused, epoch, epoch),
            }
        }
        assert_eq!(winners.len(), 1, "epoch {epoch}: {winners:?}");
        let stored = b.stores.quizzes.quiz(&id).await.unwrap().unwrap();
        assert_eq!(stored.owner.as_ref(), Some(&winners[0]));
        assert_eq!(stored.epoch, Epoch(epoch));
    }
}

pub(crate) async fn leases_upsert_list_and_release(b: &Backend) {
    let m = &b.stores.membership;
    assert!(m.leases().await.unwrap().is_empty());
    let now = 1_700_000_000_000;
    // Listed by node id whatever the order of arrival; an expired lease is listed too.
    let c = lease("node-c", now + 5_000);
    let a = lease("node-a", now + 5_000);
    let expired = lease("node-b", now - 60_000);
    for l in [&c, &a, &expired] {
        m.renew_lease(l).await.unwrap();
    }
    assert_eq!(
        m.leases().await.unwrap(),
        vec![a.clone(), expired.clone(), c.clone()]
    );

    // A renewal replaces the whole row: a new address, weight and draining flag, and an older
    // expiry is taken as given.
    let renewed = NodeLease {
        ws_url: "ws://10.0.0.9:9090/v1/ws".into(),
        cluster_addr: "10.0.0.9:7001".into(),
        weight: 3,
        draining: true,
        renewed_at: now + 1_000,
        expires_at: now + 2_000,
        ..a.clone()
    };
    m.renew_lease(&renewed).await.unwrap();
    assert_eq!(
        m.leases().await.unwrap(),
        vec![renewed.clone(), expired.clone(), c.clone()]
    );

    // Released twice, and a node that never had a lease: no error either way.
    m.release_lease(&node("node-b")).await.unwrap();
    m.release_lease(&node("node-b")).await.unwrap();
    m.release_lease(&node("node-z")).await.unwrap();
    assert_eq!(m.leases().await.unwrap(), vec![renewed, c.clone()]);

    // A released node comes back with a fresh lease.
    m.renew_lease(&expired).await.unwrap();
    assert_eq!(m.leases().await.unwrap().len(), 3);
}
