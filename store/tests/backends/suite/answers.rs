//! Cases for the answer log: idempotency, batches, fencing, concurrent writers.

use super::*;

pub(crate) async fn append_is_idempotent_per_key(b: &Backend) {
    let id = created(b, 1).await;
    let log = &b.stores.answers;
    let first = answer(&id, 1, 0, "first-try");
    assert_eq!(
        log.append(Epoch::FIRST, std::slice::from_ref(&first))
            .await
            .unwrap(),
        vec![Appended::Inserted]
    );
    // A retry of the same answer: told it is there, with the same answer id.
    assert_eq!(
        log.append(Epoch::FIRST, std::slice::from_ref(&first))
            .await
            .unwrap(),
        vec![Appended::Existing(first.clone())]
    );
    // Another answer for the same key: the original stays and is reported.
    let second = AnswerRecord {
        answer: Answer::Text("other".into()),
        points: 0,
        correct: false,
        ..answer(&id, 1, 0, "second-try")
    };
    assert_eq!(
        log.append(Epoch::FIRST, &[second]).await.unwrap(),
        vec![Appended::Existing(first.clone())]
    );
    assert_eq!(log.answers(&id).await.unwrap(), vec![first]);
    assert_eq!(log.append(Epoch::FIRST, &[]).await.unwrap(), vec![]);
}

pub(crate) async fn batch_mixes_new_and_existing_rows(b: &Backend) {
    let id = created(b, 1).await;
    let log = &b.stores.answers;
    let old = answer(&id, 2, 0, "old");
    log.append(Epoch::FIRST, std::slice::from_ref(&old))
        .await
        .unwrap();

    let new_a = answer(&id, 3, 0, "new-a");
    let new_b = AnswerRecord {
        answer: Answer::Pairs(vec![(0, 1), (1, 0)]),
        ..answer(&id, 1, 1, "new-b")
    };
    let retry_of_old = answer(&id, 2, 0, "old-retry");
    let dup_of_a = answer(&id, 3, 0, "new-a-again");
    let outcomes = log
        .append(
            Epoch::FIRST,
            &[new_b.clone(), retry_of_old, new_a.clone(), dup_of_a],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            Appended::Inserted,
            Appended::Existing(old.clone()),
            Appended::Inserted,
            Appended::Existing(new_a.clone()),
        ]
    );
    // By (question, player).
    assert_eq!(log.answers(&id).await.unwrap(), vec![old, new_a, new_b]);
}

pub(crate) async fn answers_of_quizzes_are_kept_apart(b: &Backend) {
    let one = created(b, 1).await;
    let two = created(b, 2).await;
    let log = &b.stores.answers;
    let batch = [
        answer(&two, 1, 0, "x"),
        answer(&one, 1, 0, "x"),
        answer(&one, 2, 0, "y"),
        answer(&two, 1, 1, "z"),
    ];
    let outcomes = log.append(Epoch::FIRST, &batch).await.unwrap();
    assert_eq!(outcomes, vec![Appended::Inserted; 4]);
    assert_eq!(
        log.answers(&one).await.unwrap(),
        vec![batch[1].clone(), batch[2].clone()]
    );
    assert_eq!(
        log.answers(&two).await.unwrap(),
        vec![batch[0].clone(), batch[3].clone()]
    );
}

/// What the league audit reads: per quiz created since a time, each user's points from the
/// log, without kicked players or zero totals; the count of a quiz's answers.
pub(crate) async fn league_totals_sum_each_users_points_from_the_log(b: &Backend) {
    let one = created(b, 1).await;
    let old = QuizRecord {
        created_at: 1_600_000_000_000,
        ..quiz(2)
    };
    b.stores.quizzes.create_quiz(&old).await.unwrap();
    let kicked = PlayerRecord {
        kicked: true,
        ..player(2, "bo")
    };
    for (quiz, players) in [
        (&one, vec![player(1, "ann"), kicked, player(3, "cy")]),
        (&old.id, vec![player(1, "ann")]),
    ] {
        b.stores
            .quizzes
            .save_players(quiz, Epoch::FIRST, &players)
            .await
            .unwrap();
    }
    let log = [
        scored(&one, 1, 0, 700, 900),
        scored(&one, 1, 1, 800, 900),
        scored(&one, 2, 0, 1000, 500),
        scored(&one, 3, 0, 0, 2000),
        scored(&old.id, 1, 0, 900, 800),
    ];
    b.stores.answers.append(Epoch::FIRST, &log).await.unwrap();
    assert_eq!(b.stores.answers.count(&one).await.unwrap(), 4);
    let totals = b
        .stores
        .answers
        .league_totals(1_650_000_000_000)
        .await
        .unwrap();
    assert_eq!(
        totals,
        vec![QuizTotals {
            quiz: one,
            created_at: quiz(1).created_at,
            totals: vec![(user("user-ann"), 1500)],
        }]
    );
    assert_eq!(b.stores.answers.league_totals(0).await.unwrap().len(), 2);
}

pub(crate) async fn stale_epoch_writes_are_fenced_and_write_nothing(b: &Backend) {
    let id = created(b, 1).await;
    let bystander = created(b, 2).await;
    let s = &b.stores;
    (b.bump_epoch)(id.clone(), Epoch(2)).await.unwrap();
    assert_eq!(s.quizzes.quiz(&id).await.unwrap().unwrap().epoch, Epoch(2));

    let old = Epoch::FIRST;
    let open = Progress {
        phase: Phase::Open,
        question: Some(0),
        opened_at: Some(5),
        phase_at: 5,
        seq: 1,
        ..lobby(5)
    };
    is_fenced(s.quizzes.save_progress(&id, old, &open).await, 1, 2);
    is_fenced(
        s.quizzes.save_player(&id, old, &player(1, "ann")).await,
        1,
        2,
    );
    is_fenced(s.answers.append(old, &[answer(&id, 1, 0, "a")]).await, 1, 2);
    // A batch is refused whole, even the records of a quiz it still owns.
    let mixed = [answer(&bystander, 1, 0, "b"), answer(&id, 1, 0, "a")];
    is_fenced(s.answers.append(old, &mixed).await, 1, 2);
    is_fenced(
        s.leaderboards
            .apply(old, &[scored(&id, 1, 0, 500, 900)])
            .await,
        1,
        2,
    );
    is_fenced(
        s.leaderboards.remove_player(&id, old, PlayerNo(1)).await,
        1,
        2,
    );

    let stored = s.quizzes.quiz(&id).await.unwrap().unwrap();
    assert_eq!(stored.progress, quiz(1).progress);
    assert!(s.quizzes.players(&id).await.unwrap().is_empty());
    assert!(s.answers.answers(&id).await.unwrap().is_empty());
    assert!(s.answers.answers(&bystander).await.unwrap().is_empty());
    assert!(s.leaderboards.standings(&id, 10).await.unwrap().is_empty());

    // The new owner writes.
    let new = Epoch(2);
    s.quizzes.save_progress(&id, new, &open).await.unwrap();
    s.quizzes
        .save_player(&id, new, &player(1, "ann"))
        .await
        .unwrap();
    let a = scored(&id, 1, 0, 500, 900);
    assert_eq!(
        s.answers
            .append(new, std::slice::from_ref(&a))
            .await
            .unwrap(),
        vec![Appended::Inserted]
    );
    s.leaderboards
        .apply(new, std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(s.quizzes.quiz(&id).await.unwrap().unwrap().progress, open);
    assert_eq!(s.answers.answers(&id).await.unwrap(), vec![a]);
    assert_eq!(
        s.leaderboards.standings(&id, 10).await.unwrap(),
        vec![row(1, 500, 900)]
    );
    // The other quiz was never fenced.
    s.answers
        .append(old, &[answer(&bystander, 1, 0, "b")])
        .await
        .unwrap();

    // An epoch is claimed once: a second claim of the same one is refused.
    is_fenced((b.bump_epoch)(id.clone(), Epoch(2)).await, 2, 2);
    let missing = (b.bump_epoch)(quiz_id(9), Epoch(2)).await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchQuiz)),
        "{missing:?}"
    );
}

/// Eight writers append overlapping batches at once, each in its own key order and with its
/// own answer ids: every key ends up stored once, exactly one writer was told `Inserted` for
/// it, and every other writer was shown that very row.
pub(crate) async fn concurrent_appends_store_each_key_once(b: &Backend) {
    let id = created(b, 1).await;
    let keys: Vec<(u32, u32)> = (1..=6).flat_map(|p| (0..4).map(move |q| (p, q))).collect();
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let log = b.stores.answers.clone();
        let mut mine: Vec<AnswerRecord> = keys
            .iter()
            .filter(|(p, q)| (p + q + task) % 3 != 0)
            .map(|&(p, q)| answer(&id, p, q, &format!("t{task}-p{p}-q{q}")))
            .collect();
        if task % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let outcomes = log.append(Epoch::FIRST, &mine).await;
            (mine, outcomes)
        }));
    }
    let mut inserted_by: HashMap<(u32, u32), String> = HashMap::new();
    let mut shown: Vec<AnswerRecord> = Vec::new();
    for task in tasks {
        let (mine, outcomes) = task.await.unwrap();
        let outcomes = outcomes.unwrap();
        assert_eq!(outcomes.len(), mine.len());
        for (record, outcome) in mine.into_iter().zip(outcomes) {
            match outcome {
                Appended::Inserted => {
                    let key = (record.player.0, record.question);
                    let id = record.answer_id.as_str().to_owned();
                    assert!(
                        inserted_by.insert(key, id).is_none(),
                        "{key:?} inserted twice"
                    );
                }
                Appended::Existing(row) => shown.push(row),
            }
        }
    }
    let stored = b.stores.answers.answers(&id).await.unwrap();
    assert_eq!(stored.len(), keys.len(), "every key once");
    let stored: BTreeMap<(u32, u32), AnswerRecord> = stored
        .into_iter()
        .map(|r| ((r.player.0, r.question), r))
        .collect();
    for (key, answer_id) in &inserted_by {
        assert_eq!(stored[key].answer_id.as_str(), answer_id);
    }
    assert_eq!(inserted_by.len(), keys.len());
    for row in shown {
        assert_eq!(row, stored[&(row.player.0, row.question)]);
    }
}

/// An owner keeps appending (four writers at once) while another node claims the quiz. Once
/// the claim returns, the old owner's writes are over: the log read then is the log for good,
/// and it holds every answer the old owner was told was appended.
pub(crate) async fn fence_holds_against_a_concurrent_bump(b: &Backend) {
    let id = created(b, 1).await;
    let appenders: Vec<_> = (0..4u32)
        .map(|writer| {
            let log = b.stores.answers.clone();
            let quiz = id.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..10_000u32 {
                    let player = writer * 1_000 + n % 100 + 1;
                    let record = answer(&quiz, player, n / 100, &format!("w{writer}n{n}"));
                    match log
                        .append(Epoch::FIRST, std::slice::from_ref(&record))
                        .await
                    {
                        Ok(outcome) => {
                            assert_eq!(outcome, vec![Appended::Inserted]);
                            acked.push(record);
                        }
                        Err(StoreError::Fenced {
                            held: 1,
                            current: 2,
                        }) => return acked,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                panic!("writer {writer} was never fenced");
            })
        })
        .collect();
    // Let some appends through first.
    while b.stores.answers.answers(&id).await.unwrap().len() < 20 {
        tokio::task::yield_now().await;
    }
    (b.bump_epoch)(id.clone(), Epoch(2)).await.unwrap();
    let at_bump = b.stores.answers.answers(&id).await.unwrap();
    let mut acked = Vec::new();
    for appender in appenders {
        acked.extend(appender.await.unwrap());
    }
    let at_end = b.stores.answers.answers(&id).await.unwrap();
    assert_eq!(at_end, at_bump, "an old-epoch write landed after the bump");
    assert_eq!(at_end.len(), acked.len());
    for record in &acked {
        assert!(
            at_end.contains(record),
            "acknowledged {record:?} is missing"
        );
    }
}
