//! Cases for cluster membership: node leases, the published ring, and claims and releases
//! that move a quiz's ownership.

use quiz_protocol::NodeId;
use quiz_protocol::cluster::RingMember;
use quiz_store::{NodeLease, RingRecord};

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

fn member(name: &str, weight: u32) -> RingMember {
    RingMember {
        node: node(name),
        weight,
        ws_url: format!("ws://{name}.quiz.internal:8080/v1/ws"),
        cluster_addr: format!("{name}.quiz.internal:7000"),
    }
}

fn ring(epoch: u64, members: &[(&str, u32)]) -> RingRecord {
    RingRecord {
        epoch,
        members: members.iter().map(|(n, w)| member(n, *w)).collect(),
        updated_at: 1_700_000_000_000 + i64::try_from(epoch).unwrap(),
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

/// A router publishes the first ring, then the next ones, each adopted whole by a reader.
pub(crate) async fn ring_publishes_in_epoch_order_and_reads_back(b: &Backend) {
    let m = &b.stores.membership;
    assert_eq!(m.ring().await.unwrap(), None);
    // Nothing is stored: only epoch 1 can be published.
    assert!(!m.publish_ring(&ring(2, &[("node-a", 1)])).await.unwrap());
    assert!(!m.publish_ring(&ring(0, &[("node-a", 1)])).await.unwrap());
    assert_eq!(m.ring().await.unwrap(), None);

    let first = ring(1, &[("node-a", 1), ("node-b", 2)]);
    assert!(m.publish_ring(&first).await.unwrap());
    assert_eq!(m.ring().await.unwrap(), Some(first));

    // Members may go (all of them: an empty ring is a ring) and come back.
    let second = ring(2, &[("node-b", 2)]);
    assert!(m.publish_ring(&second).await.unwrap());
    assert_eq!(m.ring().await.unwrap(), Some(second));
    let empty = ring(3, &[]);
    assert!(m.publish_ring(&empty).await.unwrap());
    assert_eq!(m.ring().await.unwrap(), Some(empty));
    let fourth = ring(4, &[("node-a", 3), ("node-c", 1)]);
    assert!(m.publish_ring(&fourth).await.unwrap());
    assert_eq!(m.ring().await.unwrap(), Some(fourth));
}

/// A ring that is not the next epoch (the current one again, an older one, or one that skips
/// ahead) changes nothing.
pub(crate) async fn a_ring_that_is_not_the_next_epoch_loses(b: &Backend) {
    let m = &b.stores.membership;
    for epoch in 1..=3 {
        assert!(
            m.publish_ring(&ring(epoch, &[("node-a", 1)]))
                .await
                .unwrap()
        );
    }
    let stored = m.ring().await.unwrap();
    for stale in [
        ring(3, &[("node-z", 1)]),
        ring(2, &[("node-z", 1)]),
        ring(1, &[("node-z", 1)]),
        ring(5, &[("node-z", 1)]),
    ] {
        assert!(
            !m.publish_ring(&stale).await.unwrap(),
            "epoch {}",
            stale.epoch
        );
        assert_eq!(m.ring().await.unwrap(), stored, "epoch {}", stale.epoch);
    }
}

/// Eight routers publish different rings under the same epoch at once, several rounds in a
/// row, the first round included (which inserts the row): each round exactly one wins, and
/// the store holds the winner's ring.
pub(crate) async fn concurrent_ring_publishers_of_one_epoch_have_one_winner(b: &Backend) {
    for epoch in 1..=5u64 {
        let publishers: Vec<_> = (0..8u32)
            .map(|n| {
                let membership = b.stores.membership.clone();
                let proposal = ring(epoch, &[(&format!("node-{n}"), n + 1)]);
                tokio::spawn(async move {
                    let won = membership.publish_ring(&proposal).await.unwrap();
                    (proposal, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for publisher in publishers {
            let (proposal, won) = publisher.await.unwrap();
            if won {
                winners.push(proposal);
            }
        }
        assert_eq!(winners.len(), 1, "epoch {epoch}: {winners:?}");
        assert_eq!(
            b.stores.membership.ring().await.unwrap().as_ref(),
            Some(&winners[0])
        );
    }
}

/// A release clears the owner only while it is still the releasing node at the releasing
/// epoch; the epoch stays, and the next claim goes above it.
pub(crate) async fn release_clears_only_the_matching_owner_and_epoch(b: &Backend) {
    let id = created(b, 1).await;
    let q = &b.stores.quizzes;
    let owner = |r: QuizRecord| (r.owner, r.epoch);
    q.claim(&id, &node("node-a"), Epoch(2)).await.unwrap();

    // Another node, an older epoch, a newer epoch: none is the current claim.
    q.release(&id, &node("node-b"), Epoch(2)).await.unwrap();
    q.release(&id, &node("node-a"), Epoch(1)).await.unwrap();
    q.release(&id, &node("node-a"), Epoch(3)).await.unwrap();
    assert_eq!(
        owner(q.quiz(&id).await.unwrap().unwrap()),
        (Some(node("node-a")), Epoch(2))
    );

    q.release(&id, &node("node-a"), Epoch(2)).await.unwrap();
    assert_eq!(
        q.quiz(&id).await.unwrap().unwrap(),
        QuizRecord {
            epoch: Epoch(2),
            owner: None,
            ..quiz(1)
        },
        "a release clears the owner, and only the owner"
    );
    // Again: still released, no error.
    q.release(&id, &node("node-a"), Epoch(2)).await.unwrap();
    is_fenced(q.claim(&id, &node("node-b"), Epoch(2)).await, 2, 2);
    q.claim(&id, &node("node-b"), Epoch(3)).await.unwrap();
    // The old owner's late release does not undo the new claim.
    q.release(&id, &node("node-a"), Epoch(2)).await.unwrap();
    assert_eq!(
        owner(q.quiz(&id).await.unwrap().unwrap()),
        (Some(node("node-b")), Epoch(3))
    );
    // A quiz that does not exist: nothing to release.
    q.release(&quiz_id(9), &node("node-a"), Epoch(2))
        .await
        .unwrap();
}
