//! The live lifecycle: host commands, timing, pauses, auto-advance, early close, kicks, joins
//! and streaks across questions.

use super::*;

use HostCommand::{End, Next, Pause, Resume, Reveal, Start};

fn no_early_close() -> QuizSettings {
    QuizSettings {
        close_when_all_answered: false,
        ..settings()
    }
}

#[test]
fn host_drives_a_live_quiz_from_lobby_to_end() {
    let mut quiz = Quiz::live();
    quiz.join("Ana");
    assert!(matches!(quiz.take()[..], [Effect::SavePlayer(_)]));
    assert_eq!(quiz.s.phase(), Phase::Lobby);

    assert_eq!(quiz.host(Start), Ok(Phase::Open));
    let effects = quiz.take();
    assert!(
        matches!(&effects[0], Effect::SaveProgress(p) if p.phase == Phase::Open && p.question == Some(0) && p.seq == 1)
    );
    assert_eq!(effects.len(), 2);

    // `next` on an open question closes and reveals it: one command, two events.
    assert_eq!(quiz.host(Next), Ok(Phase::Reveal));
    assert_eq!(
        quiz.events(),
        [("closed".to_owned(), 2), ("reveal".to_owned(), 3)]
    );
    assert_eq!(quiz.host(Next), Ok(Phase::Open));
    assert_eq!(quiz.events(), [("question".to_owned(), 4)]);
    assert_eq!(quiz.s.progress().question, Some(1));
    assert_eq!(quiz.host(Reveal), Ok(Phase::Reveal));
    assert_eq!(names(&quiz.events()), ["closed", "reveal"]);
    assert_eq!(quiz.host(Next), Ok(Phase::Open));
    assert_eq!(quiz.host(Next), Ok(Phase::Reveal));
    quiz.take();
    // After the last question's reveal, `next` ends the quiz.
    assert_eq!(quiz.host(Next), Ok(Phase::Ended));
    let effects = quiz.take();
    assert_eq!(
        effects.iter().filter(|e| **e == Effect::Ended).count(),
        1,
        "{effects:?}"
    );
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Send { msg: ServerMessage::Ended(ended), .. } if ended.seq == 10 && ended.players == 1)));
    assert_eq!(quiz.host(Next), Err(ErrorCode::QuizEnded));
    assert_eq!(quiz.host(End), Err(ErrorCode::QuizEnded));
    assert!(quiz.take().is_empty());
}

#[test]
fn commands_that_do_not_apply_say_why() {
    let mut quiz = Quiz::live();
    quiz.join("Ana");
    for (command, phase) in [
        (Next, "Lobby"),
        (Reveal, "Lobby"),
        (Pause, "Lobby"),
        (Resume, "Lobby"),
    ] {
        let err = quiz.s.host(command, None, quiz.now).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadCommand, "{command:?} in {phase}");
        assert!(!err.message.is_empty());
    }
    assert_eq!(
        quiz.s.host(Next, None, quiz.now).unwrap_err().message,
        "start the quiz first"
    );
    quiz.host(Start).unwrap();
    assert_eq!(quiz.host(Start), Err(ErrorCode::BadCommand));
    assert_eq!(quiz.host(Resume), Err(ErrorCode::BadCommand));
    quiz.host(Pause).unwrap();
    assert_eq!(quiz.host(Pause), Err(ErrorCode::BadCommand));
    quiz.host(Resume).unwrap();
    quiz.host(Reveal).unwrap();
    assert_eq!(quiz.host(Reveal), Err(ErrorCode::BadCommand));
    assert_eq!(quiz.host(Pause), Err(ErrorCode::BadCommand));
    let before = quiz.s.progress();
    quiz.take();
    assert_eq!(quiz.host(Resume), Err(ErrorCode::BadCommand));
    assert_eq!(
        quiz.s.progress(),
        before,
        "a refused command changes nothing"
    );
    assert!(quiz.take().is_empty());
    // `end` works from any phase, once.
    assert_eq!(quiz.host(End), Ok(Phase::Ended));
    for command in [Start, Next, Reveal, Pause, Resume, End, HostCommand::Kick] {
        assert_eq!(quiz.host(command), Err(ErrorCode::QuizEnded));
    }
}

#[test]
fn self_paced_only_commands_are_refused_in_live_and_vice_versa() {
    let mut quiz = Quiz::new(vec![choice()], self_paced());
    for command in [Next, Reveal, Pause, Resume] {
        assert_eq!(quiz.host(command), Err(ErrorCode::WrongMode));
    }
    let mut live = Quiz::live();
    let ana = live.join("Ana");
    live.host(Start).unwrap();
    assert_eq!(
        live.s.next(ana, live.now).unwrap_err().code,
        ErrorCode::WrongMode
    );
}

#[test]
fn a_pause_stops_the_clock_and_resume_gives_the_time_back() {
    let mut quiz = Quiz::new(vec![true_false(true), true_false(true)], no_early_close());
    let ana = quiz.join("Ana");
    quiz.tick(0);
    quiz.host(Start).unwrap();
    quiz.take();
    quiz.at(5_000);
    assert_eq!(quiz.host(Pause), Ok(Phase::Paused));
    let sent = quiz.sent();
    assert!(
        matches!(&sent[..], [(_, ServerMessage::Paused(p))] if p.remaining_ms == 15_000 && p.seq == 2)
    );
    quiz.at(10_000);
    assert_eq!(
        quiz.rejected(ana, 0, "a1", Answer::Bool(true)),
        ErrorCode::QuestionPaused
    );
    assert!(ErrorCode::QuestionPaused.retryable());
    // A paused question never closes, however long the host waits.
    quiz.tick(100_000);
    assert_eq!(quiz.s.phase(), Phase::Paused);
    assert_eq!(quiz.welcome(ana).question.unwrap().ends_in_ms, 15_000);
    quiz.at(65_000);
    assert_eq!(quiz.host(Resume), Ok(Phase::Open));
    let sent = quiz.sent();
    assert!(
        matches!(&sent[..], [(_, ServerMessage::Unpaused(u))] if u.ends_in_ms == 15_000 && u.seq == 3)
    );
    // 70 s of wall clock, 60 s of it paused: answered in 10 s of 20 → 750 points.
    quiz.at(70_000);
    let ack = quiz.answer(ana, 0, "a1", Answer::Bool(true)).unwrap();
    assert_eq!(ack.points, 750);
    assert_eq!(quiz.s.progress().paused_ms, 60_000);
    // The deadline moved by the pause: 0 + 60 s paused + 20 s, plus the 300 ms grace.
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 70_000));
    quiz.tick(70_000);
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 80_300));
    quiz.tick(80_299);
    assert_eq!(quiz.s.phase(), Phase::Open);
    quiz.tick(80_300);
    assert_eq!(quiz.s.phase(), Phase::Closed);
}

#[test]
fn answers_count_until_the_deadline_plus_grace() {
    let mut quiz = Quiz::new(vec![true_false(true)], no_early_close());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.tick(0);
    quiz.host(Start).unwrap();
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 20_300));
    // In the grace period: accepted, scored as at the deadline.
    quiz.at(20_299);
    let ack = quiz.answer(ana, 0, "a1", Answer::Bool(true)).unwrap();
    assert_eq!(ack.points, 500);
    // At the close time: too late, even though no timer has fired yet.
    quiz.at(20_300);
    assert_eq!(quiz.s.phase(), Phase::Open);
    assert_eq!(
        quiz.rejected(bo, 0, "b1", Answer::Bool(true)),
        ErrorCode::TooLate
    );
    quiz.take();
    quiz.tick(20_300);
    assert_eq!(names(&quiz.events()), ["closed"]);
    assert_eq!(
        quiz.rejected(bo, 0, "b1", Answer::Bool(true)),
        ErrorCode::TooLate
    );
}

#[test]
fn a_question_closes_early_once_every_connected_player_answered() {
    let mut quiz = Quiz::new(vec![true_false(true); 3], settings());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.take();
    quiz.at(1_000);
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    assert_eq!(quiz.s.phase(), Phase::Open);
    quiz.answer(bo, 0, "b0", Answer::Bool(false)).unwrap();
    assert_eq!(quiz.s.phase(), Phase::Closed);
    assert_eq!(names(&quiz.events()), ["closed"]);

    // A disconnected player is not waited for (and keeps their place).
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    quiz.s.set_connected(bo, false, quiz.now);
    quiz.answer(ana, 1, "a1", Answer::Bool(true)).unwrap();
    assert_eq!(quiz.s.phase(), Phase::Closed);
    assert!(quiz.welcome(bo).you.rank > 0);

    // Nobody connected: nothing closes early.
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    quiz.s.set_connected(ana, false, quiz.now);
    assert_eq!(quiz.s.phase(), Phase::Open);
    // The last one waited for leaving closes it.
    quiz.s.set_connected(bo, true, quiz.now);
    quiz.s.set_connected(ana, true, quiz.now);
    quiz.answer(ana, 2, "a2", Answer::Bool(true)).unwrap();
    assert_eq!(quiz.s.phase(), Phase::Open);
    quiz.s.set_connected(bo, false, quiz.now);
    assert_eq!(quiz.s.phase(), Phase::Closed);
}

#[test]
fn a_returning_player_who_answered_does_not_close_the_question() {
    // As after a failover: everyone is disconnected, and the first phone back had answered.
    let mut quiz = Quiz::new(vec![true_false(true)], settings());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.s.set_connected(ana, false, quiz.now);
    quiz.s.set_connected(bo, false, quiz.now);
    quiz.s.set_connected(ana, true, quiz.now);
    assert_eq!(quiz.s.phase(), Phase::Open);
    quiz.s.set_connected(bo, true, quiz.now);
    quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    assert_eq!(quiz.s.phase(), Phase::Closed);
}

#[test]
fn without_early_close_the_clock_decides() {
    let mut quiz = Quiz::new(vec![true_false(true)], no_early_close());
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    assert_eq!(quiz.s.phase(), Phase::Open);
}

#[test]
fn auto_advance_paces_the_quiz_and_catches_up_when_late() {
    let mut quiz = Quiz::new(vec![true_false(true); 3], auto(2_000, 5_000));
    quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.take();
    quiz.tick(20_299);
    assert!(quiz.events().is_empty());
    quiz.tick(20_300);
    assert_eq!(names(&quiz.events()), ["closed"]);
    quiz.tick(22_299);
    assert!(quiz.events().is_empty());
    quiz.tick(22_300);
    assert_eq!(names(&quiz.events()), ["reveal"]);
    quiz.tick(27_300);
    assert_eq!(names(&quiz.events()), ["question"]);
    assert_eq!(quiz.s.progress().opened_at, Some(T0 + 27_300));

    // Far behind (a slow timer, a restore): every step is taken at its own time.
    quiz.tick(1_000_000);
    assert_eq!(
        names(&quiz.events()),
        ["closed", "reveal", "question", "closed", "reveal", "ended"]
    );
    let p = quiz.s.progress();
    assert_eq!(p.phase, Phase::Ended);
    // q1 closes at 47.6 s, reveal 49.6, q2 opens 54.6, closes 74.9, reveal 76.9, ends 81.9.
    assert_eq!(p.phase_at, T0 + 81_900);
    assert_eq!(quiz.s.poll_timeout(), None);
}

#[test]
fn the_host_can_still_step_ahead_of_auto_advance() {
    let mut quiz = Quiz::new(vec![true_false(true); 2], auto(2_000, 5_000));
    quiz.join("Ana");
    quiz.tick(0);
    quiz.host(Start).unwrap();
    quiz.at(3_000);
    assert_eq!(quiz.host(Reveal), Ok(Phase::Reveal));
    assert_eq!(quiz.s.poll_timeout(), Some(T0 + 8_000));
}

#[test]
fn kicked_players_leave_the_board_and_cannot_come_back() {
    let mut quiz = Quiz::new(vec![true_false(true); 2], settings());
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    let cy = quiz.join("Cy");
    quiz.host(Start).unwrap();
    assert_eq!(quiz.kick("Nobody"), Err(ErrorCode::UnknownPlayer));
    assert_eq!(
        quiz.s
            .host(HostCommand::Kick, None, quiz.now)
            .unwrap_err()
            .code,
        ErrorCode::UnknownPlayer
    );
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    quiz.take();
    // Nicknames match case-insensitively.
    assert_eq!(quiz.kick(" bO "), Ok(Phase::Open));
    let effects = quiz.take();
    assert!(effects.contains(&Effect::Kicked(bo)));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::SavePlayer(r) if r.player == bo && r.kicked))
    );
    assert_eq!(quiz.full().players, 2);
    assert!(quiz.full().changes.iter().all(|s| s.player != bo));
    assert_eq!(quiz.welcome(bo).you.rank, 0);
    quiz.tick(1_000);
    let update = quiz.take().into_iter().find_map(|e| match e {
        Effect::Leaderboard(u) => Some(u),
        _ => None,
    });
    assert_eq!(update.unwrap().removed, vec![bo]);
    let user = UserId::parse("user-Bo").unwrap();
    assert_eq!(
        quiz.s.join(&user, "Bo", quiz.now).unwrap_err().code,
        ErrorCode::Kicked
    );
    assert_eq!(
        quiz.rejected(bo, 1, "b1", Answer::Bool(true)),
        ErrorCode::Kicked
    );
    // A retried kick is done already.
    assert_eq!(quiz.kick("Bo"), Ok(Phase::Open));
    // Kicking the last player who had not answered closes the question.
    assert_eq!(quiz.kick("Cy"), Ok(Phase::Closed));
    assert_eq!(quiz.s.leaderboard().players(), 1);
    let _ = cy;
}

#[test]
fn joining_is_idempotent_and_has_limits() {
    let mut quiz = Quiz::new(
        vec![true_false(true)],
        QuizSettings {
            max_players: 2,
            ..settings()
        },
    );
    let user = UserId::parse("u1").unwrap();
    let first = quiz.s.join(&user, "Ana", quiz.now).unwrap();
    assert!(first.new);
    assert_eq!(first.player, PlayerNo(1));
    let again = quiz.s.join(&user, "Someone Else", quiz.now).unwrap();
    assert_eq!(
        (again.player, again.nickname.as_str(), again.new),
        (first.player, "Ana", false)
    );
    quiz.take();
    let other = UserId::parse("u2").unwrap();
    let second = quiz.s.join(&other, "  ana ", quiz.now).unwrap();
    assert_eq!(
        (second.player, second.nickname.as_str()),
        (PlayerNo(2), "ana 2")
    );
    assert!(
        matches!(&quiz.take()[..], [Effect::SavePlayer(r)] if r.nickname == "ana 2" && r.joined_at == T0)
    );
    let third = UserId::parse("u3").unwrap();
    assert_eq!(
        quiz.s.join(&third, "Cy", quiz.now).unwrap_err().code,
        ErrorCode::QuizFull
    );
    quiz.kick("ana 2").unwrap();
    let joined = quiz.s.join(&third, "Cy", quiz.now).unwrap();
    assert_eq!(joined.player, PlayerNo(3));
    let bad = UserId::parse("u4").unwrap();
    quiz.kick("Cy").unwrap();
    assert_eq!(
        quiz.s.join(&bad, "", quiz.now).unwrap_err().code,
        ErrorCode::NicknameInvalid
    );
    assert_eq!(
        quiz.s.join(&bad, "b1tch", quiz.now).unwrap_err().code,
        ErrorCode::NicknameNotAllowed
    );
    quiz.host(End).unwrap();
    assert_eq!(
        quiz.s.join(&bad, "Di", quiz.now).unwrap_err().code,
        ErrorCode::QuizEnded
    );
    // A player of the quiz may still come back to see the final standings.
    assert!(!quiz.s.join(&user, "Ana", quiz.now).unwrap().new);
}

#[test]
fn late_joiners_play_on_with_the_time_left() {
    let mut quiz = Quiz::new(vec![true_false(true)], no_early_close());
    quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.at(5_000);
    let dan = quiz.join("Dan");
    assert_eq!(quiz.full().players, 2);
    assert_eq!(quiz.standing(dan), (2, 0));
    assert_eq!(quiz.welcome(dan).question.unwrap().ends_in_ms, 15_000);
    // Response time counts from the question's opening: 6 s of 20 → 850.
    quiz.at(6_000);
    let ack = quiz.answer(dan, 0, "d0", Answer::Bool(true)).unwrap();
    assert_eq!((ack.points, ack.rank), (850, 1));
}

#[test]
fn streaks_build_cap_and_reset_on_a_wrong_or_missing_answer() {
    let mut quiz = Quiz::new(vec![true_false(true); 9], settings());
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    let mut acks = Vec::new();
    // Right ×7 (bonus 0, 100, … capped at 500), then skip q7, then right again.
    for q in 0..7 {
        acks.push(
            quiz.answer(ana, q, &format!("a{q}"), Answer::Bool(true))
                .unwrap(),
        );
        quiz.host(Next).unwrap();
        quiz.host(Next).unwrap();
    }
    let points: Vec<u32> = acks.iter().map(|a| a.points).collect();
    assert_eq!(points, [1000, 1100, 1200, 1300, 1400, 1500, 1500]);
    assert_eq!(acks[6].streak, 7);
    assert_eq!(acks[6].total, points.iter().sum::<u32>());
    assert_eq!(quiz.s.streak(ana), Some(7));
    // q7: no answer when it closes.
    quiz.host(Next).unwrap();
    assert_eq!(quiz.s.streak(ana), Some(0));
    quiz.host(Next).unwrap();
    let ack = quiz.answer(ana, 8, "a8", Answer::Bool(true)).unwrap();
    assert_eq!((ack.points, ack.streak), (1000, 1));

    // A wrong answer resets it too.
    let mut quiz = Quiz::new(vec![true_false(true); 3], settings());
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.answer(bo, 0, "b0", Answer::Bool(true)).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    let wrong = quiz.answer(bo, 1, "b1", Answer::Bool(false)).unwrap();
    assert_eq!((wrong.points, wrong.streak), (0, 0));
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    let ack = quiz.answer(bo, 2, "b2", Answer::Bool(true)).unwrap();
    assert_eq!((ack.points, ack.streak), (1000, 1));
}

#[test]
fn polls_and_practice_questions_leave_the_streak_alone() {
    let practice = Question {
        multiplier: 0,
        ..true_false(true)
    };
    let doubled = Question {
        multiplier: 2,
        ..true_false(true)
    };
    let mut quiz = Quiz::new(
        vec![
            true_false(true),
            poll(),
            practice.clone(),
            practice,
            doubled,
        ],
        settings(),
    );
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    let vote = quiz.answer(ana, 1, "a1", Answer::Choice(1)).unwrap();
    assert_eq!((vote.points, vote.streak), (0, 1));
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    let free = quiz.answer(ana, 2, "a2", Answer::Bool(true)).unwrap();
    assert_eq!((free.points, free.streak), (0, 1));
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    // q3 (practice) goes unanswered: no reset.
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    let double = quiz.answer(ana, 4, "a4", Answer::Bool(true)).unwrap();
    assert_eq!((double.points, double.streak), (2_100, 2));
    assert_eq!(double.total, 1_000 + 2_100);
}
