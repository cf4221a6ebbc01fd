//! Cases for the leaderboard store: counted once, the order, removed players.

use super::*;

pub(crate) async fn leaderboard_counts_each_answer_once(b: &Backend) {
    let id = created(b, 1).await;
    let lb = &b.stores.leaderboards;
    let batch = [
        scored(&id, 1, 0, 800, 2_000),
        scored(&id, 2, 0, 0, 5_000), // wrong: no points, and its time does not count
        scored(&id, 1, 1, 600, 3_000),
    ];
    lb.apply(Epoch::FIRST, &batch).await.unwrap();
    lb.apply(Epoch::FIRST, &batch).await.unwrap();
    // Overlapping, with the retry first.
    lb.apply(
        Epoch::FIRST,
        &[batch[2].clone(), scored(&id, 2, 1, 1_000, 700)],
    )
    .await
    .unwrap();
    lb.apply(Epoch::FIRST, &[]).await.unwrap();
    assert_eq!(
        lb.standings(&id, 10).await.unwrap(),
        vec![row(1, 1_400, 5_000), row(2, 1_000, 700)]
    );
}

pub(crate) async fn standings_break_ties_by_tiebreak_then_player(b: &Backend) {
    let id = created(b, 1).await;
    let other = created(b, 2).await;
    let lb = &b.stores.leaderboards;
    lb.apply(
        Epoch::FIRST,
        &[
            scored(&id, 5, 0, 500, 1_000),
            scored(&id, 4, 0, 500, 1_000),
            scored(&id, 3, 0, 500, 900),
            scored(&id, 2, 0, 900, 4_000),
            scored(&id, 1, 0, 100, 100),
            scored(&other, 9, 0, 2_000, 1),
        ],
    )
    .await
    .unwrap();
    let all = vec![
        row(2, 900, 4_000),
        row(3, 500, 900),
        row(4, 500, 1_000),
        row(5, 500, 1_000),
        row(1, 100, 100),
    ];
    assert_eq!(lb.standings(&id, 10).await.unwrap(), all);
    assert_eq!(lb.standings(&id, 3).await.unwrap(), all[..3]);
    assert!(lb.standings(&id, 0).await.unwrap().is_empty());
    assert_eq!(
        lb.standings(&other, 10).await.unwrap(),
        vec![row(9, 2_000, 1)]
    );
}

pub(crate) async fn removed_player_stays_off_the_standings(b: &Backend) {
    let id = created(b, 1).await;
    let lb = &b.stores.leaderboards;
    lb.apply(
        Epoch::FIRST,
        &[scored(&id, 1, 0, 900, 1_000), scored(&id, 2, 0, 500, 1_000)],
    )
    .await
    .unwrap();
    lb.remove_player(&id, Epoch::FIRST, PlayerNo(1))
        .await
        .unwrap();
    lb.remove_player(&id, Epoch::FIRST, PlayerNo(1))
        .await
        .unwrap();
    // Removed before ever scoring.
    lb.remove_player(&id, Epoch::FIRST, PlayerNo(3))
        .await
        .unwrap();
    assert_eq!(
        lb.standings(&id, 10).await.unwrap(),
        vec![row(2, 500, 1_000)]
    );

    // Answers that were in flight when they were kicked do not bring them back.
    lb.apply(
        Epoch::FIRST,
        &[
            scored(&id, 1, 1, 900, 1_000),
            scored(&id, 3, 1, 900, 1_000),
            scored(&id, 2, 1, 100, 1_000),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        lb.standings(&id, 10).await.unwrap(),
        vec![row(2, 600, 2_000)]
    );
}

/// Eight writers apply overlapping batches at once: each answer counts once.
pub(crate) async fn concurrent_applies_count_each_answer_once(b: &Backend) {
    let id = created(b, 1).await;
    let all: Vec<AnswerRecord> = (1..=5)
        .flat_map(|p| (0..4).map(move |q| (p, q)))
        .map(|(p, q)| scored(&id, p, q, 100 * p, 10 * q + 1))
        .collect();
    let mut tasks = Vec::new();
    for task in 0..8usize {
        let lb = b.stores.leaderboards.clone();
        let mut mine: Vec<AnswerRecord> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + task) % 4 != 0)
            .map(|(_, r)| r.clone())
            .collect();
        if task % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(
            async move { lb.apply(Epoch::FIRST, &mine).await },
        ));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // Each player: 4 answers of 100 × p points, response times 1 + 11 + 21 + 31.
    let expected: Vec<StandingRow> = (1..=5).rev().map(|p| row(p, 400 * p, 64)).collect();
    assert_eq!(
        b.stores.leaderboards.standings(&id, 10).await.unwrap(),
        expected
    );
}
