//! Answers: every rejection, idempotent retries, the two-step commit, scoring through the
//! session, and the statistics a reveal shows.

use super::*;

use HostCommand::{End, Next, Pause, Resume, Start};

fn three_choices() -> Quiz {
    Quiz::new(
        vec![choice(), choice(), choice()],
        QuizSettings {
            close_when_all_answered: false,
            ..settings()
        },
    )
}

#[test]
fn every_rejection_has_its_code() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    let went = || Answer::Choice(1);
    assert_eq!(
        quiz.rejected(PlayerNo(99), 0, "x", went()),
        ErrorCode::NotJoined
    );
    assert_eq!(quiz.rejected(ana, 0, "a0", went()), ErrorCode::NotOpen);
    quiz.host(Start).unwrap();
    assert_eq!(
        quiz.rejected(ana, 3, "a0", went()),
        ErrorCode::UnknownQuestion
    );
    assert_eq!(quiz.rejected(ana, 1, "a0", went()), ErrorCode::NotOpen);
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Bool(true)),
        ErrorCode::BadAnswer
    );
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Choice(3)),
        ErrorCode::BadAnswer
    );
    // A refused answer uses up nothing: the same id goes through once it is right.
    let pending = quiz.accept(ana, 0, "a0", went());
    assert_eq!(quiz.submit(ana, 0, "a0", went()), Submit::InFlight);
    assert_eq!(
        quiz.rejected(ana, 0, "a0b", went()),
        ErrorCode::AlreadyAnswered
    );
    let ack = quiz.s.commit(&pending, quiz.now);
    assert_eq!(
        quiz.rejected(ana, 0, "a0b", Answer::Choice(0)),
        ErrorCode::AlreadyAnswered
    );
    assert_eq!(quiz.submit(ana, 0, "a0", went()), Submit::Duplicate(ack));
    // An answer id names one answer: reusing it for another question is a client bug.
    assert_eq!(quiz.rejected(ana, 1, "a0", went()), ErrorCode::BadMessage);

    quiz.host(Pause).unwrap();
    assert_eq!(
        quiz.rejected(bo, 0, "b0", went()),
        ErrorCode::QuestionPaused
    );
    quiz.host(Resume).unwrap();
    quiz.host(Next).unwrap();
    assert_eq!(quiz.rejected(bo, 0, "b0", went()), ErrorCode::TooLate);
    quiz.host(Next).unwrap();
    assert_eq!(quiz.rejected(bo, 0, "b0", went()), ErrorCode::TooLate);
    quiz.kick("Bo").unwrap();
    assert_eq!(quiz.rejected(bo, 1, "b1", went()), ErrorCode::Kicked);
    quiz.host(End).unwrap();
    assert_eq!(quiz.rejected(ana, 1, "a1", went()), ErrorCode::QuizEnded);
    // A retry of an answer that counted still gets its ack after the end.
    assert!(matches!(
        quiz.submit(ana, 0, "a0", went()),
        Submit::Duplicate(_)
    ));
}

#[test]
fn a_retry_gets_the_same_ack_with_the_current_rank() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.at(1_000);
    let bo_ack = quiz.answer(bo, 0, "b0", Answer::Choice(1)).unwrap();
    assert_eq!((bo_ack.points, bo_ack.rank), (975, 1));
    quiz.at(10_000);
    let first = quiz.answer(ana, 0, "a0", Answer::Choice(1)).unwrap();
    assert_eq!(
        (first.points, first.total, first.rank, first.streak),
        (750, 750, 2, 1)
    );
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    let second = quiz.answer(ana, 1, "a1", Answer::Choice(1)).unwrap();
    assert_eq!(
        (second.points, second.total, second.rank),
        (1_100, 1_850, 1)
    );
    let again = quiz.answer(ana, 0, "a0", Answer::Choice(1)).unwrap();
    assert_eq!(
        (again.points, again.total, again.rank, again.streak),
        (750, 750, 1, 1),
        "same points and total as the first time, the rank of now"
    );
    assert_eq!(quiz.s.score(ana), Some(1_850), "never counted twice");
}

#[test]
fn answer_ids_are_per_player() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    assert!(quiz.answer(ana, 0, "same", Answer::Choice(1)).is_ok());
    let bo_ack = quiz.answer(bo, 0, "same", Answer::Choice(0)).unwrap();
    assert_eq!(bo_ack.points, 0);
}

#[test]
fn an_aborted_answer_is_forgotten_and_may_be_retried() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.at(2_000);
    let pending = quiz.accept(ana, 0, "a0", Answer::Choice(1));
    quiz.s.abort(&pending);
    assert_eq!(quiz.s.score(ana), Some(0));
    // The retry is graded afresh, at its own time.
    quiz.at(4_000);
    let retry = quiz.accept(ana, 0, "a0", Answer::Choice(1));
    assert_eq!((retry.response_ms, retry.points), (4_000, 900));
    // Aborting something that is not pending does nothing.
    quiz.s.abort(&pending);
    let ack = quiz.s.commit(&retry, quiz.now);
    assert_eq!(ack.total, 900);
    quiz.s.abort(&retry);
    assert_eq!(quiz.s.score(ana), Some(900));
    assert!(matches!(
        quiz.submit(ana, 0, "a0", Answer::Choice(1)),
        Submit::Duplicate(_)
    ));
}

#[test]
fn commit_counts_the_record_the_log_holds() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    // An earlier attempt of this answer reached the log (graded at 2 s), then a retry was
    // graded again at 10 s: the log's record is the one that counts.
    quiz.at(2_000);
    let logged = quiz.accept(ana, 0, "a0", Answer::Choice(1));
    quiz.s.abort(&logged);
    quiz.at(10_000);
    let retry = quiz.accept(ana, 0, "a0", Answer::Choice(1));
    assert_eq!(retry.points, 750);
    let ack = quiz.s.commit(&logged, quiz.now);
    assert_eq!((ack.points, ack.total), (950, 950));
    // Committing again (the shell retried) does not count twice.
    assert_eq!(quiz.s.commit(&retry, quiz.now).total, 950);
    assert_eq!(quiz.s.score(ana), Some(950));
}

#[test]
fn records_carry_what_the_log_needs() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.at(7_500);
    let record = quiz.accept(ana, 0, "a0", Answer::Choice(0));
    assert_eq!(record.quiz.as_str(), "K7M3QX");
    assert_eq!((record.player, record.question), (ana, 0));
    assert_eq!(
        (record.received_at, record.response_ms),
        (T0 + 7_500, 7_500)
    );
    assert_eq!(
        (record.points, record.correct, record.streak),
        (0, false, 0)
    );
    assert_eq!(record.answer, Answer::Choice(0));
}

#[test]
fn partial_credit_counts_but_breaks_the_streak() {
    let question = question(QuestionBody::MultipleSelect {
        options: strings(&["cat", "dog", "sky", "fish"]),
        answers: vec![0, 1, 3],
    });
    let mut quiz = Quiz::new(vec![true_false(true), question], settings());
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    // Two of three right, none wrong: 2/3 of 1000.
    let ack = quiz
        .answer(ana, 1, "a1", Answer::Choices(vec![3, 0]))
        .unwrap();
    assert_eq!((ack.points, ack.streak, ack.total), (667, 0, 1_667));
}

#[test]
fn a_pending_answer_at_close_counts_as_given() {
    let mut quiz = three_choices();
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Choice(1)).unwrap();
    quiz.answer(bo, 0, "b0", Answer::Choice(1)).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    quiz.at(19_000);
    let ana_pending = quiz.accept(ana, 1, "a1", Answer::Choice(1));
    let bo_pending = quiz.accept(bo, 1, "b1", Answer::Choice(1));
    quiz.tick(20_300);
    assert_eq!(quiz.s.phase(), Phase::Closed);
    // Written after the close: still counted, streak intact.
    let ack = quiz.s.commit(&ana_pending, quiz.now);
    assert_eq!((ack.points, ack.streak), (525 + 100, 2));
    // A write that failed after the close: the question was missed after all.
    quiz.s.abort(&bo_pending);
    assert_eq!(quiz.s.streak(bo), Some(0));
    assert_eq!(
        quiz.rejected(bo, 1, "b1", Answer::Choice(1)),
        ErrorCode::TooLate
    );
}

#[test]
fn the_reveal_shows_the_answer_and_how_everyone_answered() {
    let mut quiz = three_choices();
    let players: Vec<_> = ["Ana", "Bo", "Cy", "Di"].map(|n| quiz.join(n)).into();
    quiz.host(Start).unwrap();
    for (i, (p, choice)) in players.iter().zip([1, 1, 0]).enumerate() {
        quiz.at(1_000 * (i as Millis + 1));
        quiz.answer(*p, 0, &format!("x{i}"), Answer::Choice(choice))
            .unwrap();
    }
    quiz.take();
    quiz.host(Next).unwrap();
    let reveal = quiz
        .sent()
        .into_iter()
        .find_map(|(_, m)| match m {
            ServerMessage::Reveal(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(reveal.index, 0);
    assert_eq!(reveal.correct.as_ref().unwrap().choice, Some(1));
    assert_eq!(reveal.explanation.as_deref(), Some("Because."));
    let stats = &reveal.stats;
    assert_eq!((stats.answered, stats.correct), (3, 2));
    assert_eq!(stats.mean_ms, Some(2_000));
    assert_eq!(stats.counts, Some(vec![1, 2, 0]));
}

#[test]
fn a_poll_reveal_has_counts_but_no_answer() {
    let mut quiz = Quiz::new(vec![poll()], settings());
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    let ack = quiz.answer(ana, 0, "a0", Answer::Choice(1)).unwrap();
    assert_eq!(ack.points, 0);
    quiz.take();
    quiz.host(HostCommand::Reveal).unwrap();
    let reveal = quiz
        .sent()
        .into_iter()
        .find_map(|(_, m)| match m {
            ServerMessage::Reveal(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(reveal.correct, None);
    assert_eq!(reveal.stats.counts, Some(vec![0, 1]));
    assert_eq!(reveal.stats.correct, 0);
}

#[test]
fn accuracy_scoring_ignores_time_in_the_session() {
    let mut quiz = Quiz::new(
        vec![true_false(true)],
        QuizSettings {
            scoring: quiz_protocol::Scoring::Accuracy,
            ..settings()
        },
    );
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.at(19_000);
    assert_eq!(
        quiz.answer(ana, 0, "a0", Answer::Bool(true))
            .unwrap()
            .points,
        1_000
    );
}
