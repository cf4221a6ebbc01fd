//! Self-paced mode: per-player questions, timers and reveals inside the quiz's window.

use super::*;

fn quiz() -> Quiz {
    Quiz::new(
        vec![true_false(true), choice(), true_false(false)],
        self_paced(),
    )
}

fn own_reveals(sent: &[(Audience, ServerMessage)]) -> Vec<(PlayerNo, u32)> {
    sent.iter()
        .filter_map(|(audience, m)| match (audience, m) {
            (Audience::Player(p), ServerMessage::Reveal(r)) => {
                assert_eq!(r.seq, None, "per-player reveals carry no seq");
                Some((*p, r.index))
            }
            _ => None,
        })
        .collect()
}

fn next_frame(
    quiz: &mut Quiz,
    p: PlayerNo,
) -> Result<quiz_protocol::client::QuestionFrame, ErrorCode> {
    let r = quiz.s.next(p, quiz.now);
    quiz.drain();
    match r {
        Ok(ServerMessage::Question(frame)) => Ok(frame),
        Ok(other) => panic!("expected a question, got {other:?}"),
        Err(e) => Err(e.code),
    }
}

#[test]
fn each_player_works_through_the_questions_at_their_own_pace() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    assert_eq!(next_frame(&mut quiz, ana), Err(ErrorCode::BadCommand));
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Bool(true)),
        ErrorCode::NotOpen
    );
    quiz.take();
    assert_eq!(quiz.host(HostCommand::Start), Ok(Phase::InProgress));
    let effects = quiz.take();
    assert!(
        matches!(&effects[..], [Effect::SaveProgress(p), Effect::Send { msg: ServerMessage::Started(s), .. }]
            if p.phase == Phase::InProgress && p.opened_at == Some(T0) && s.seq == p.seq && s.ends_in_ms > 0),
        "start persists progress and tells every phone: {effects:?}"
    );
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Bool(true)),
        ErrorCode::NotOpen
    );

    quiz.at(1_000);
    let frame = next_frame(&mut quiz, ana).unwrap();
    assert_eq!(
        (frame.seq, frame.index, frame.count, frame.ends_in_ms),
        (None, 0, 3, 20_000)
    );
    assert!(quiz.take().iter().any(|e| matches!(e,
        Effect::SavePlayer(r) if r.player == ana && r.current == Some(0) && r.current_opened_at == Some(T0 + 1_000))));
    assert_eq!(next_frame(&mut quiz, ana), Err(ErrorCode::BadCommand));
    assert_eq!(
        quiz.rejected(ana, 1, "a1", Answer::Choice(1)),
        ErrorCode::NotOpen
    );

    // 2 s after her question opened: 950 points, and she alone sees the answer.
    quiz.at(3_000);
    let ack = quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    assert_eq!((ack.points, ack.streak), (950, 1));
    assert_eq!(own_reveals(&quiz.sent()), [(ana, 0)]);

    let frame = next_frame(&mut quiz, ana).unwrap();
    assert_eq!(frame.index, 1);
    assert_eq!(frame.options, Some(strings(&["go", "went", "gone"])));
    assert_eq!(
        quiz.rejected(ana, 0, "a0b", Answer::Bool(true)),
        ErrorCode::AlreadyAnswered
    );
    assert_eq!(
        quiz.rejected(ana, 2, "a2", Answer::Bool(true)),
        ErrorCode::NotOpen
    );
    // Her timer runs out on question 1: the streak ends and the answer is shown to her.
    quiz.tick(3_000);
    quiz.take();
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 23_300));
    quiz.tick(23_300);
    assert_eq!(own_reveals(&quiz.sent()), [(ana, 1)]);
    assert_eq!(quiz.s.streak(ana), Some(0));
    assert_eq!(
        quiz.rejected(ana, 1, "a1", Answer::Choice(1)),
        ErrorCode::TooLate
    );

    let frame = next_frame(&mut quiz, ana).unwrap();
    assert_eq!(frame.index, 2);
    let wrong = quiz.answer(ana, 2, "a2", Answer::Bool(true)).unwrap();
    assert_eq!(wrong.points, 0);
    let err = quiz.s.next(ana, quiz.now).unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (ErrorCode::BadCommand, "no more questions")
    );

    // The window closes for everyone an hour after the start.
    quiz.take();
    quiz.tick(3_599_999);
    assert!(quiz.events().is_empty());
    quiz.tick(3_600_000);
    let effects = quiz.take();
    assert!(effects.contains(&Effect::Ended));
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Send { audience: Audience::Everyone, msg: ServerMessage::Ended(end) } if end.seq == 2)));
    assert_eq!(next_frame(&mut quiz, ana), Err(ErrorCode::QuizEnded));
}

#[test]
fn next_takes_a_timeout_the_timer_has_not_fired_yet() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    quiz.host(HostCommand::Start).unwrap();
    next_frame(&mut quiz, ana).unwrap();
    quiz.at(20_299);
    assert_eq!(next_frame(&mut quiz, ana), Err(ErrorCode::BadCommand));
    quiz.take();
    // The timer is late; the answer and `next` still see the deadline.
    quiz.at(20_300);
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Bool(true)),
        ErrorCode::TooLate
    );
    let frame = next_frame(&mut quiz, ana).unwrap();
    assert_eq!(frame.index, 1);
    assert_eq!(own_reveals(&quiz.sent()), [(ana, 0)]);
    // The stale timer does nothing when it finally fires.
    quiz.tick(20_300);
    assert!(own_reveals(&quiz.sent()).is_empty());
}

#[test]
fn a_pending_answer_holds_next_back() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    quiz.host(HostCommand::Start).unwrap();
    next_frame(&mut quiz, ana).unwrap();
    let record = quiz.accept(ana, 0, "a0", Answer::Bool(true));
    let err = quiz.s.next(ana, quiz.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadCommand);
    // Its deadline passes while it is being written: no timeout, the answer counts.
    quiz.take();
    quiz.tick(30_000);
    assert!(own_reveals(&quiz.sent()).is_empty());
    quiz.s.commit(&record, quiz.now);
    assert_eq!(own_reveals(&quiz.sent()), [(ana, 0)]);
    assert_eq!(next_frame(&mut quiz, ana).unwrap().index, 1);
}

#[test]
fn a_failed_write_after_the_deadline_is_a_missed_question() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    quiz.host(HostCommand::Start).unwrap();
    next_frame(&mut quiz, ana).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    next_frame(&mut quiz, ana).unwrap();
    quiz.at(20_000);
    let record = quiz.accept(ana, 1, "a1", Answer::Choice(1));
    quiz.tick(25_000);
    quiz.s.abort(&record);
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 20_300));
    quiz.take();
    quiz.tick(25_000);
    assert_eq!(own_reveals(&quiz.sent()), [(ana, 1)]);
    assert_eq!(quiz.s.streak(ana), Some(0));
}

#[test]
fn players_have_their_own_timers() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.tick(0);
    quiz.host(HostCommand::Start).unwrap();
    next_frame(&mut quiz, ana).unwrap();
    quiz.at(5_000);
    next_frame(&mut quiz, bo).unwrap();
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 20_300));
    quiz.at(21_000);
    // Ana's time is up, Bo's is not.
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Bool(true)),
        ErrorCode::TooLate
    );
    let ack = quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    assert_eq!(ack.points, 1000 - 400);
    quiz.take();
    quiz.tick(21_000);
    assert_eq!(own_reveals(&quiz.sent()), [(ana, 0)]);
    // A welcome shows each player their own question.
    assert_eq!(quiz.welcome(bo).question.unwrap().index, 0);
    assert!(quiz.welcome(bo).answered.is_some() && quiz.welcome(bo).reveal.is_some());
    assert!(quiz.welcome(ana).answered.is_none() && quiz.welcome(ana).reveal.is_some());
}

#[test]
fn time_left_never_runs_past_the_window() {
    let mut quiz = Quiz::new(
        vec![true_false(true)],
        QuizSettings {
            self_paced_window_s: 60,
            ..self_paced()
        },
    );
    let ana = quiz.join("Ana");
    quiz.host(HostCommand::Start).unwrap();
    quiz.at(50_000);
    assert_eq!(next_frame(&mut quiz, ana).unwrap().ends_in_ms, 10_000);
    quiz.at(60_000);
    assert_eq!(
        quiz.rejected(ana, 0, "a0", Answer::Bool(true)),
        ErrorCode::QuizEnded
    );
}

#[test]
fn hosts_can_kick_and_end_a_self_paced_quiz() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    quiz.join("Bo");
    quiz.host(HostCommand::Start).unwrap();
    assert_eq!(quiz.kick("Ana"), Ok(Phase::InProgress));
    assert_eq!(next_frame(&mut quiz, ana), Err(ErrorCode::Kicked));
    assert_eq!(quiz.host(HostCommand::End), Ok(Phase::Ended));
}

#[test]
fn a_reconnecting_self_paced_player_gets_a_welcome_that_holds_their_own_question() {
    let mut quiz = quiz();
    let ana = quiz.join("Ana");
    quiz.host(HostCommand::Start).unwrap();
    let frame = next_frame(&mut quiz, ana).unwrap();
    let seq = quiz.s.progress().seq;
    // Their question was theirs alone (no seq): a replay could not bring it back.
    assert_eq!(quiz.s.replay(seq, Some(ana), Role::Player, quiz.now), None);
    let welcome = quiz.welcome(ana);
    assert_eq!(welcome.question.map(|q| q.index), Some(frame.index));
    let left = welcome.ends_in_ms.expect("the window's time left");
    assert!(left > 0 && left <= u64::from(self_paced().self_paced_window_s) * 1000);
    // Hosts still resume by replay.
    assert!(quiz.s.replay(seq, None, Role::Host, quiz.now).is_some());
}
