//! Cases for the leaderboard store: counted once, the order, removed players.

use quiz_store::{League, LeagueRow};

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

// ---- rebuilds ----

/// A rebuild from the log gives the standings that applying the log gives.
pub(crate) async fn rebuild_equals_applying_the_log(b: &Backend) {
    let applied = created(b, 1).await;
    let rebuilt = created(b, 2).await;
    let lb = &b.stores.leaderboards;
    // 70 players × 3 questions: more rows than one statement holds, wrong answers, and ties.
    let log = |quiz: &QuizId| -> Vec<AnswerRecord> {
        (1..=70u32)
            .flat_map(|p| (0..3u32).map(move |q| (p, q)))
            .map(|(p, q)| {
                scored(
                    quiz,
                    p,
                    q,
                    (p * 37 + q * 11) % 5 * 100,
                    500 + p * q % 7 * 100,
                )
            })
            .collect()
    };
    for batch in log(&applied).chunks(50) {
        lb.apply(Epoch::FIRST, batch).await.unwrap();
    }
    lb.rebuild(&rebuilt, Epoch::FIRST, &log(&rebuilt), &[])
        .await
        .unwrap();
    let expected = lb.standings(&applied, 1_000).await.unwrap();
    assert_eq!(expected.len(), 70);
    assert_eq!(lb.standings(&rebuilt, 1_000).await.unwrap(), expected);

    // The rebuilt standings know what they counted: applying the log again adds nothing.
    lb.apply(Epoch::FIRST, &log(&rebuilt)).await.unwrap();
    assert_eq!(lb.standings(&rebuilt, 1_000).await.unwrap(), expected);
    // A rebuild of standings that were right leaves them right.
    lb.rebuild(&applied, Epoch::FIRST, &log(&applied), &[])
        .await
        .unwrap();
    assert_eq!(lb.standings(&applied, 1_000).await.unwrap(), expected);
}

pub(crate) async fn rebuild_replaces_stale_standings_and_leaves_removed_players_out(b: &Backend) {
    let id = created(b, 1).await;
    let bystander = created(b, 2).await;
    let lb = &b.stores.leaderboards;
    // Stale standings: a player the log does not know, points the log does not hold, and a
    // removal the rebuild is not told about.
    lb.apply(
        Epoch::FIRST,
        &[
            scored(&id, 9, 0, 1_000, 100),
            scored(&id, 1, 0, 50, 100),
            scored(&bystander, 1, 0, 300, 300),
        ],
    )
    .await
    .unwrap();
    lb.remove_player(&id, Epoch::FIRST, PlayerNo(2))
        .await
        .unwrap();

    let log = [
        scored(&id, 1, 0, 800, 2_000),
        scored(&id, 2, 0, 900, 1_000),
        scored(&id, 3, 0, 0, 4_000),
        scored(&id, 3, 1, 700, 1_500),
        scored(&id, 4, 0, 600, 900),
    ];
    lb.rebuild(&id, Epoch::FIRST, &log, &[PlayerNo(4), PlayerNo(7)])
        .await
        .unwrap();
    assert_eq!(
        lb.standings(&id, 10).await.unwrap(),
        vec![row(2, 900, 1_000), row(1, 800, 2_000), row(3, 700, 1_500)]
    );

    // Answers applied after the rebuild: the removed players stay out, the others count once.
    lb.apply(
        Epoch::FIRST,
        &[
            scored(&id, 4, 1, 900, 100),
            scored(&id, 7, 1, 900, 100),
            scored(&id, 1, 1, 100, 100),
            log[3].clone(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        lb.standings(&id, 10).await.unwrap(),
        vec![row(2, 900, 1_000), row(1, 900, 2_100), row(3, 700, 1_500)]
    );
    assert_eq!(
        lb.standings(&bystander, 10).await.unwrap(),
        vec![row(1, 300, 300)]
    );

    // An empty log leaves nobody.
    lb.rebuild(&id, Epoch::FIRST, &[], &[]).await.unwrap();
    assert!(lb.standings(&id, 10).await.unwrap().is_empty());
}

pub(crate) async fn rebuild_is_fenced(b: &Backend) {
    let id = created(b, 1).await;
    let lb = &b.stores.leaderboards;
    lb.apply(Epoch::FIRST, &[scored(&id, 1, 0, 500, 900)])
        .await
        .unwrap();
    (b.bump_epoch)(id.clone(), Epoch(2)).await.unwrap();
    let log = [scored(&id, 2, 0, 900, 100)];
    is_fenced(
        lb.rebuild(&id, Epoch::FIRST, &log, &[PlayerNo(1)]).await,
        1,
        2,
    );
    assert_eq!(lb.standings(&id, 10).await.unwrap(), vec![row(1, 500, 900)]);
    lb.rebuild(&id, Epoch(2), &log, &[PlayerNo(1)])
        .await
        .unwrap();
    assert_eq!(lb.standings(&id, 10).await.unwrap(), vec![row(2, 900, 100)]);
}

// ---- leagues ----

const WEEK: &str = "2026-W48";

fn weekly(week: &str) -> League {
    League::Weekly(week.into())
}

fn league_row(name: &str, points: u64) -> LeagueRow {
    LeagueRow {
        user: user(name),
        points,
    }
}

fn totals(rows: &[(&str, u32)]) -> Vec<(UserId, u32)> {
    rows.iter().map(|&(name, t)| (user(name), t)).collect()
}

pub(crate) async fn league_totals_count_once_and_grow_by_the_difference(b: &Backend) {
    let id = created(b, 1).await;
    let lb = &b.stores.leaderboards;
    let first = totals(&[("ann", 500), ("bo", 300)]);
    lb.record_league(&id, WEEK, &first).await.unwrap();
    lb.record_league(&id, WEEK, &first).await.unwrap();
    lb.record_league(&id, WEEK, &[]).await.unwrap();
    let expected = vec![league_row("ann", 500), league_row("bo", 300)];
    assert_eq!(lb.league(&weekly(WEEK), 10).await.unwrap(), expected);
    assert_eq!(lb.league(&League::AllTime, 10).await.unwrap(), expected);

    // The quiz goes on and Ann's total grows: only the difference is added, once.
    let grown = totals(&[("ann", 800), ("bo", 300)]);
    lb.record_league(&id, WEEK, &grown[..1]).await.unwrap();
    lb.record_league(&id, WEEK, &grown).await.unwrap();
    let expected = vec![league_row("ann", 800), league_row("bo", 300)];
    assert_eq!(lb.league(&weekly(WEEK), 10).await.unwrap(), expected);
    assert_eq!(lb.league(&League::AllTime, 10).await.unwrap(), expected);
}

pub(crate) async fn leagues_add_up_quizzes_and_keep_weeks_apart(b: &Backend) {
    let (q1, q2, q3) = (
        created(b, 1).await,
        created(b, 2).await,
        created(b, 3).await,
    );
    let lb = &b.stores.leaderboards;
    lb.record_league(&q1, WEEK, &totals(&[("ann", 500), ("bo", 300)]))
        .await
        .unwrap();
    lb.record_league(&q2, WEEK, &totals(&[("ann", 200), ("cy", 600)]))
        .await
        .unwrap();
    lb.record_league(&q3, "2026-W49", &totals(&[("bo", 1_000)]))
        .await
        .unwrap();
    // Ann's total in the first quiz grows after the second quiz counted: both still add up.
    lb.record_league(&q1, WEEK, &totals(&[("ann", 600)]))
        .await
        .unwrap();

    assert_eq!(
        lb.league(&weekly(WEEK), 10).await.unwrap(),
        vec![
            league_row("ann", 800),
            league_row("cy", 600),
            league_row("bo", 300)
        ]
    );
    assert_eq!(
        lb.league(&weekly("2026-W49"), 10).await.unwrap(),
        vec![league_row("bo", 1_000)]
    );
    let all_time = vec![
        league_row("bo", 1_300),
        league_row("ann", 800),
        league_row("cy", 600),
    ];
    assert_eq!(lb.league(&League::AllTime, 10).await.unwrap(), all_time);
    assert_eq!(lb.league(&League::AllTime, 2).await.unwrap(), all_time[..2]);
    assert!(lb.league(&League::AllTime, 0).await.unwrap().is_empty());
    assert!(lb.league(&weekly("2026-W50"), 10).await.unwrap().is_empty());
}

/// Best first; equal points go to the smaller user id, compared byte by byte (upper case
/// before lower case, a prefix before what extends it), whatever the database's locale.
pub(crate) async fn league_ties_go_to_the_smaller_user_id(b: &Backend) {
    let id = created(b, 1).await;
    let lb = &b.stores.leaderboards;
    let rows = [
        ("dee", 400),
        ("al2", 400),
        ("cy", 900),
        ("Bea", 400),
        ("al", 400),
    ];
    lb.record_league(&id, WEEK, &totals(&rows)).await.unwrap();
    let expected = vec![
        league_row("cy", 900),
        league_row("Bea", 400),
        league_row("al", 400),
        league_row("al2", 400),
        league_row("dee", 400),
    ];
    assert_eq!(lb.league(&weekly(WEEK), 10).await.unwrap(), expected);
    assert_eq!(lb.league(&League::AllTime, 10).await.unwrap(), expected);
    assert_eq!(lb.league(&League::AllTime, 3).await.unwrap(), expected[..3]);
}

/// Eight writers record overlapping totals of two quizzes at once (retries racing each
/// other): each quiz contributes each user's total once.
pub(crate) async fn concurrent_league_records_count_each_total_once(b: &Backend) {
    let quizzes = [created(b, 1).await, created(b, 2).await];
    let total = |q: usize, u: u32| 100 + 3 * u + q as u32;
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let lb = b.stores.leaderboards.clone();
        let q = (task % 2) as usize;
        let quiz = quizzes[q].clone();
        // Each user is in at least one of the four tasks of each quiz.
        let mine: Vec<(UserId, u32)> = (0..100u32)
            .filter(|u| (u + task) % 3 != 0)
            .map(|u| (user(&format!("u{u:03}")), total(q, u)))
            .collect();
        tasks.push(tokio::spawn(async move {
            lb.record_league(&quiz, WEEK, &mine).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let expected: Vec<LeagueRow> = (0..100u32)
        .rev()
        .map(|u| league_row(&format!("u{u:03}"), u64::from(total(0, u) + total(1, u))))
        .collect();
    assert_eq!(lb_league(b, &weekly(WEEK)).await, expected);
    assert_eq!(lb_league(b, &League::AllTime).await, expected);
}

async fn lb_league(b: &Backend, league: &League) -> Vec<LeagueRow> {
    b.stores.leaderboards.league(league, 1_000).await.unwrap()
}

pub(crate) async fn counted_follows_the_log(b: &Backend) {
    let id = created(b, 1).await;
    let lb = &b.stores.leaderboards;
    let batch = [
        scored(&id, 1, 0, 800, 2_000),
        scored(&id, 2, 0, 0, 5_000),
        scored(&id, 1, 1, 600, 3_000),
    ];
    assert_eq!(
        lb.apply_counted(&id, Epoch::FIRST, &batch).await.unwrap(),
        3
    );
    assert_eq!(
        lb.apply_counted(&id, Epoch::FIRST, &batch).await.unwrap(),
        3,
        "each answer once"
    );
    assert_eq!(lb.counted(&id).await.unwrap(), 3);
    // A removed player's answers are in the log too, so they are counted (not scored).
    lb.remove_player(&id, Epoch::FIRST, PlayerNo(2))
        .await
        .unwrap();
    lb.apply(Epoch::FIRST, &[scored(&id, 2, 1, 900, 1_000)])
        .await
        .unwrap();
    assert_eq!(lb.counted(&id).await.unwrap(), 4);
    assert_eq!(
        lb.standings(&id, 10).await.unwrap(),
        vec![row(1, 1_400, 5_000)]
    );
    // A rebuild counts exactly its log.
    let mut log = batch.to_vec();
    log.push(scored(&id, 2, 1, 900, 1_000));
    log.push(scored(&id, 3, 0, 100, 9_000));
    lb.rebuild(&id, Epoch::FIRST, &log, &[PlayerNo(2)])
        .await
        .unwrap();
    assert_eq!(lb.counted(&id).await.unwrap(), 5);
}
