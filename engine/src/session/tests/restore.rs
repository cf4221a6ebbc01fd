//! Rebuilding a session from progress, players and the answer log: same standings, same
//! deadlines, same acks for retries, and timers that catch up.

use super::*;

use HostCommand::{Next, Pause, Resume, Start};

fn no_early_close() -> QuizSettings {
    QuizSettings {
        close_when_all_answered: false,
        ..settings()
    }
}

#[test]
fn a_restored_question_keeps_its_deadline_and_its_answers() {
    let mut quiz = Quiz::new(vec![true_false(true), true_false(false)], no_early_close());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.join("Cy");
    quiz.host(Start).unwrap();
    quiz.at(2_000);
    let ana_ack = quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.at(5_000);
    quiz.host(Pause).unwrap();
    quiz.at(10_000);
    quiz.host(Resume).unwrap();
    quiz.at(12_000);
    let bo_ack = quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    assert_eq!((ana_ack.points, bo_ack.points), (950, 825));
    quiz.at(13_000);
    let before = quiz.full();

    let mut back = quiz.restored();
    assert_eq!(board(&back.full()), board(&before));
    assert_eq!(back.s.phase(), Phase::Open);
    assert_eq!(back.s.progress(), quiz.s.progress());
    // 0 + 5 s paused + 20 s + 300 ms grace, as before the crash.
    assert_eq!(back.s.poll_timeout(), Some(T0 + 25_300));
    assert_eq!(back.welcome(ana).answered, Some(ana_ack.clone()));
    assert_eq!(back.welcome(ana).question.unwrap().ends_in_ms, 12_000);
    // Retries after the move get the acks the old owner gave.
    assert_eq!(
        back.submit(ana, 0, "a0", Answer::Bool(true)),
        Submit::Duplicate(ana_ack)
    );
    assert_eq!(
        back.rejected(bo, 0, "b0-again", Answer::Bool(false)),
        ErrorCode::AlreadyAnswered
    );
    // The replay buffer did not survive: a resuming phone gets a welcome.
    let seq = back.s.progress().seq;
    assert_eq!(
        back.s.replay(seq - 1, Some(ana), Role::Player, back.now),
        None
    );
    assert!(
        back.s
            .replay(seq, Some(ana), Role::Player, back.now)
            .is_some()
    );
    back.tick(25_299);
    assert_eq!(back.s.phase(), Phase::Open);
    back.take();
    back.tick(25_300);
    assert_eq!(back.events(), [("closed".to_owned(), seq + 1)]);
}

#[test]
fn a_restore_after_downtime_catches_up_with_auto_advance() {
    let mut quiz = Quiz::new(vec![true_false(true); 2], auto(2_000, 5_000));
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.at(1_000);
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    // Ana was the only one: the question closed at 1 s. The node dies in the reveal.
    quiz.tick(3_000);
    assert_eq!(quiz.s.phase(), Phase::Reveal);
    let mut back = quiz.restored();
    back.tick(60_000);
    assert_eq!(
        names(&back.events()),
        ["question", "closed", "reveal", "ended"]
    );
    // q1 opened at 3 s + 5 s = 8 s, closed at 28.3 s, revealed at 30.3 s, ended at 35.3 s.
    assert_eq!(back.s.progress().phase_at, T0 + 35_300);
}

#[test]
fn streaks_survive_a_restore() {
    let mut quiz = Quiz::new(vec![true_false(true); 4], settings());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    // q1: Ana answers, Bo does not.
    quiz.answer(ana, 1, "a1", Answer::Bool(true)).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    assert_eq!((quiz.s.streak(ana), quiz.s.streak(bo)), (Some(2), Some(0)));
    let mut back = quiz.restored();
    assert_eq!((back.s.streak(ana), back.s.streak(bo)), (Some(2), Some(0)));
    let a = back.answer(ana, 2, "a2", Answer::Bool(true)).unwrap();
    let b = back.answer(bo, 2, "b2", Answer::Bool(true)).unwrap();
    assert_eq!((a.points, a.streak), (1_200, 3));
    assert_eq!((b.points, b.streak), (1_000, 1));
}

#[test]
fn players_keep_their_numbers_names_and_kicks() {
    let mut quiz = Quiz::live();
    quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.kick("Bo").unwrap();
    let mut back = quiz.restored();
    assert_eq!(back.full().players, 1);
    let user = UserId::parse("user-Bo").unwrap();
    assert_eq!(
        back.s.join(&user, "Bo", back.now).unwrap_err().code,
        ErrorCode::Kicked
    );
    assert_eq!(
        back.rejected(bo, 0, "b0", Answer::Bool(true)),
        ErrorCode::Kicked
    );
    let again = back
        .s
        .join(&UserId::parse("user-Ana").unwrap(), "x", back.now)
        .unwrap();
    assert_eq!((again.player, again.new), (PlayerNo(1), false));
    let newcomer = back
        .s
        .join(&UserId::parse("new").unwrap(), "ANA", back.now)
        .unwrap();
    assert_eq!(
        (newcomer.player, newcomer.nickname.as_str()),
        (PlayerNo(3), "ANA 2")
    );
}

#[test]
fn self_paced_players_keep_their_own_deadlines() {
    let mut quiz = Quiz::new(vec![true_false(true); 2], self_paced());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.s.next(ana, quiz.now).unwrap();
    quiz.at(4_000);
    quiz.s.next(bo, quiz.now).unwrap();
    quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    quiz.at(10_000);
    let mut back = quiz.restored();
    assert_eq!(back.welcome(ana).question.unwrap().ends_in_ms, 10_000);
    back.tick(20_299);
    assert!(back.sent().is_empty());
    back.tick(20_300);
    let sent = back.sent();
    assert!(
        matches!(&sent[..], [(Audience::Player(p), ServerMessage::Reveal(r))] if *p == ana && r.index == 0)
    );
    // Bo answered before the crash: his next question opens as usual.
    assert!(back.s.next(bo, back.now).is_ok());
}

#[test]
fn an_ended_quiz_stays_ended() {
    let mut quiz = Quiz::live();
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.host(HostCommand::End).unwrap();
    let mut back = quiz.restored();
    back.tick(1_000_000);
    assert!(
        !back.take().contains(&Effect::Ended),
        "ended once, before the crash"
    );
    assert_eq!(back.s.phase(), Phase::Ended);
    assert_eq!(back.standing(ana), (1, 1_000));
    let user = UserId::parse("late").unwrap();
    assert_eq!(
        back.s.join(&user, "Late", back.now).unwrap_err().code,
        ErrorCode::QuizEnded
    );
}

#[test]
fn after_a_restore_the_first_phones_back_do_not_close_the_question_for_the_rest() {
    let mut quiz = Quiz::new(vec![true_false(true); 2], settings());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.join("Cy");
    quiz.host(Start).unwrap();
    quiz.at(1_000);
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();

    // The owner dies; the new one loads the quiz at 2 s. Nobody is connected to it yet.
    let mut back = quiz.restored();
    back.at(2_000);
    back.s.begin_rejoin_grace(back.now);
    back.take();
    // Bo is back first and answers: he is the only one connected and everyone connected has
    // answered, but Cy is still on her way back.
    back.s.set_connected(bo, true, back.now);
    back.at(2_500);
    back.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    back.drain();
    assert_eq!(back.s.phase(), Phase::Open);
    back.tick(6_999);
    assert_eq!(back.s.phase(), Phase::Open);
    // The grace is over (5 s after the load) and nobody else came back: it closes then.
    back.tick(7_000);
    assert_eq!(back.s.phase(), Phase::Closed);
}
