//! Cases for question sets, quizzes, progress and players.

use super::*;
use quiz_store::{SetAccess, StoredSet, Visibility};

pub(crate) async fn quiz_round_trips(b: &Backend) {
    let mut q = quiz(1);
    q.progress = Progress {
        phase: Phase::Paused,
        question: Some(1),
        opened_at: Some(1_700_000_005_000),
        paused_ms: 1_250,
        paused_at: Some(1_700_000_009_000),
        phase_at: 1_700_000_009_000,
        seq: 42,
    };
    b.stores.quizzes.create_quiz(&q).await.unwrap();
    assert_eq!(b.stores.quizzes.quiz(&q.id).await.unwrap(), Some(q));
    assert_eq!(b.stores.quizzes.quiz(&quiz_id(2)).await.unwrap(), None);
}

pub(crate) async fn duplicate_quiz_is_a_conflict(b: &Backend) {
    let q = quiz(1);
    b.stores.quizzes.create_quiz(&q).await.unwrap();
    let again = QuizRecord {
        title: "someone else's".into(),
        ..quiz(1)
    };
    let result = b.stores.quizzes.create_quiz(&again).await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(b.stores.quizzes.quiz(&q.id).await.unwrap(), Some(q));
}

pub(crate) async fn progress_round_trips_and_overwrites(b: &Backend) {
    let id = created(b, 1).await;
    let open = Progress {
        phase: Phase::Open,
        question: Some(0),
        opened_at: Some(1_700_000_010_000),
        paused_ms: 0,
        paused_at: None,
        phase_at: 1_700_000_010_000,
        seq: 3,
    };
    b.stores
        .quizzes
        .save_progress(&id, Epoch::FIRST, &open)
        .await
        .unwrap();
    assert_eq!(
        b.stores.quizzes.quiz(&id).await.unwrap().unwrap().progress,
        open
    );

    let paused = Progress {
        phase: Phase::Paused,
        paused_at: Some(1_700_000_015_000),
        paused_ms: 700,
        phase_at: 1_700_000_015_000,
        seq: 4,
        ..open
    };
    b.stores
        .quizzes
        .save_progress(&id, Epoch::FIRST, &paused)
        .await
        .unwrap();
    let stored = b.stores.quizzes.quiz(&id).await.unwrap().unwrap();
    assert_eq!(stored.progress, paused);
    assert_eq!(stored.epoch, Epoch::FIRST);
    assert_eq!(
        stored.questions,
        questions(),
        "progress saves leave the content alone"
    );
}

pub(crate) async fn writes_to_a_missing_quiz_are_refused(b: &Backend) {
    let ghost = quiz_id(9);
    let s = &b.stores;
    let no_quiz = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NoSuchQuiz));
    assert!(no_quiz(
        s.quizzes
            .save_progress(&ghost, Epoch::FIRST, &lobby(1))
            .await
    ));
    assert!(no_quiz(
        s.quizzes
            .save_player(&ghost, Epoch::FIRST, &player(1, "ann"))
            .await
    ));
    let appended = s
        .answers
        .append(Epoch::FIRST, &[answer(&ghost, 1, 0, "a")])
        .await;
    assert!(
        matches!(appended, Err(StoreError::NoSuchQuiz)),
        "{appended:?}"
    );
    // A leaderboard store outside the SQL database (Redis) cannot tell a quiz that never
    // existed from one whose standings it lost: it asks for a rebuild, and writes nothing.
    let refused_by_board = |r: Result<(), StoreError>| match r {
        Err(StoreError::NoSuchQuiz) => true,
        Err(StoreError::NeedsRebuild(quiz)) => quiz == ghost,
        _ => false,
    };
    assert!(refused_by_board(
        s.leaderboards
            .apply(Epoch::FIRST, &[answer(&ghost, 1, 0, "a")])
            .await
    ));
    assert!(refused_by_board(
        s.leaderboards
            .remove_player(&ghost, Epoch::FIRST, PlayerNo(1))
            .await
    ));
    assert!(s.answers.answers(&ghost).await.unwrap().is_empty());
    assert!(s.quizzes.players(&ghost).await.unwrap().is_empty());
    assert!(
        s.leaderboards
            .standings(&ghost, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn players_round_trip_and_upsert(b: &Backend) {
    let id = created(b, 1).await;
    let other = created(b, 2).await;
    let q = &b.stores.quizzes;
    for p in [player(3, "cy"), player(1, "ann"), player(2, "bo")] {
        q.save_player(&id, Epoch::FIRST, &p).await.unwrap();
    }
    q.save_player(&other, Epoch::FIRST, &player(1, "zed"))
        .await
        .unwrap();
    assert_eq!(
        q.players(&id).await.unwrap(),
        vec![player(1, "ann"), player(2, "bo"), player(3, "cy")]
    );

    // Kicked, and self-paced progress: the same player number is updated, not added.
    let bo = PlayerRecord {
        kicked: true,
        current: Some(1),
        current_opened_at: Some(1_700_000_020_000),
        ..player(2, "bo")
    };
    q.save_player(&id, Epoch::FIRST, &bo).await.unwrap();
    q.save_player(&id, Epoch::FIRST, &bo).await.unwrap();
    assert_eq!(
        q.players(&id).await.unwrap(),
        vec![player(1, "ann"), bo, player(3, "cy")]
    );
    assert_eq!(q.players(&other).await.unwrap(), vec![player(1, "zed")]);

    // One user is one player of a quiz.
    let twin = PlayerRecord {
        player: PlayerNo(4),
        ..player(1, "ann")
    };
    let result = q.save_player(&id, Epoch::FIRST, &twin).await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(q.players(&id).await.unwrap().len(), 3);
}

/// A join storm's batch: one transaction, bigger than one statement, fenced like one save.
pub(crate) async fn save_players_upserts_a_batch_atomically(b: &Backend) {
    let id = created(b, 1).await;
    let other = created(b, 2).await;
    let q = &b.stores.quizzes;
    q.save_player(&id, Epoch::FIRST, &player(2, "bo"))
        .await
        .unwrap();
    q.save_players(&id, Epoch::FIRST, &[]).await.unwrap();

    // New players out of order, and an update of one already there.
    let bo = PlayerRecord {
        kicked: true,
        current: Some(1),
        current_opened_at: Some(1_700_000_020_000),
        ..player(2, "bo")
    };
    let numbered = |n: u32| player(n, &format!("p{n}"));
    let mut batch: Vec<PlayerRecord> = (3..=150).rev().map(numbered).collect();
    batch.push(bo.clone());
    batch.push(player(1, "ann"));
    q.save_players(&id, Epoch::FIRST, &batch).await.unwrap();
    let mut expected = vec![player(1, "ann"), bo];
    expected.extend((3..=150).map(numbered));
    assert_eq!(q.players(&id).await.unwrap(), expected);
    // Saved again: the same rows, no more.
    q.save_players(&id, Epoch::FIRST, &batch).await.unwrap();
    assert_eq!(q.players(&id).await.unwrap(), expected);

    // A player listed twice: the later record wins, as with two saves in a row.
    let annie = PlayerRecord {
        nickname: "Annie".into(),
        ..player(1, "ann")
    };
    q.save_players(&id, Epoch::FIRST, &[player(1, "ann"), annie.clone()])
        .await
        .unwrap();
    expected[0] = annie;
    assert_eq!(q.players(&id).await.unwrap(), expected);

    // One user is one player of a quiz: a batch that breaks it is refused whole.
    let twin = PlayerRecord {
        player: PlayerNo(152),
        ..numbered(3)
    };
    let result = q
        .save_players(&id, Epoch::FIRST, &[numbered(151), twin])
        .await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(q.players(&id).await.unwrap(), expected);

    let missing = q
        .save_players(&quiz_id(9), Epoch::FIRST, &[player(1, "ann")])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchQuiz)),
        "{missing:?}"
    );
    assert!(q.players(&other).await.unwrap().is_empty());

    // Fenced as a whole once the quiz has moved on.
    (b.bump_epoch)(id.clone(), Epoch(2)).await.unwrap();
    is_fenced(
        q.save_players(&id, Epoch::FIRST, &[numbered(151), numbered(4)])
            .await,
        1,
        2,
    );
    assert_eq!(q.players(&id).await.unwrap(), expected);
    q.save_players(&id, Epoch(2), &[numbered(151)])
        .await
        .unwrap();
    assert_eq!(q.players(&id).await.unwrap().len(), expected.len() + 1);
}

pub(crate) async fn live_quizzes_exclude_ended_ones(b: &Backend) {
    let lobby_quiz = created(b, 1).await;
    let ended = created(b, 2).await;
    let running = created(b, 3).await;
    let q = &b.stores.quizzes;
    let at = |phase| Progress { phase, ..lobby(10) };
    q.save_progress(&ended, Epoch::FIRST, &at(Phase::Ended))
        .await
        .unwrap();
    q.save_progress(&running, Epoch::FIRST, &at(Phase::InProgress))
        .await
        .unwrap();
    let mut expected = vec![lobby_quiz, running];
    expected.sort();
    assert_eq!(q.live_quizzes().await.unwrap(), expected);
}

pub(crate) async fn question_sets_put_replace_and_list(b: &Backend) {
    let c = &b.stores.content;
    let set = |id: &str, title: &str, n: usize| QuestionSet {
        id: id.into(),
        title: title.into(),
        description: Some("for tests".into()),
        questions: questions().into_iter().cycle().take(n).collect(),
    };
    let ann = SetAccess::private("ann");
    let bob = SetAccess::private("bob");
    let put = |s, access, any, at| c.put_question_set(s, access, any, at);
    let (first, second) = (
        set("phrasal-verbs", "Phrasal verbs", 1),
        set("english-a2", "English A2", 2),
    );
    assert!(put(&first, &ann, false, 100).await.unwrap());
    assert!(put(&second, &bob, false, 200).await.unwrap());
    // Another host cannot replace ann's set; ann can, and change who sees it.
    let hijack = set("phrasal-verbs", "Mine now", 1);
    assert!(!put(&hijack, &bob, false, 250).await.unwrap());
    let replaced = set("phrasal-verbs", "Phrasal verbs, revised", 2);
    let shared = SetAccess {
        visibility: Visibility::Shared,
        shared_with: vec!["carl".into()],
        ..SetAccess::private("ann")
    };
    assert!(put(&replaced, &shared, false, 300).await.unwrap());
    assert_eq!(
        c.question_set("phrasal-verbs").await.unwrap(),
        Some(StoredSet {
            set: replaced.clone(),
            access: shared.clone()
        })
    );
    // An admin's write replaces the set and keeps its owner.
    let public = SetAccess::public("admin");
    assert!(put(&replaced, &public, true, 300).await.unwrap());
    let held = c.question_set("phrasal-verbs").await.unwrap().unwrap();
    assert_eq!(held.access, SetAccess::public("ann"));
    assert!(put(&replaced, &shared, false, 300).await.unwrap());
    assert_eq!(c.question_set("missing").await.unwrap(), None);
    let listed: Vec<_> = c
        .question_sets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.title, s.questions, s.updated_at))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("english-a2".into(), "English A2".into(), 2, 200),
            (
                "phrasal-verbs".into(),
                "Phrasal verbs, revised".into(),
                2,
                300
            ),
        ]
    );
}
