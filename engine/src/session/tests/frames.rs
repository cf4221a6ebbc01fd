//! What phones see: welcome snapshots, sequence numbers, replays, and question frames that
//! never give the answer away.

use quiz_protocol::client::{QuestionFrame, RankScore};

use super::*;

use HostCommand::{Next, Pause, Start};

#[test]
fn welcome_in_the_lobby() {
    let mut quiz = Quiz::live();
    let ana = quiz.join("Ana");
    let w = quiz.welcome(ana);
    assert_eq!(w.seq, 0);
    assert_eq!(w.phase, Phase::Lobby);
    assert_eq!(w.quiz.id, "K7M3QX");
    assert_eq!(w.quiz.title, "Past simple");
    assert_eq!((w.quiz.mode, w.quiz.question_count), (Mode::Live, 3));
    assert_eq!(
        (w.you.role, w.you.nickname.as_str(), w.you.rank),
        (Role::Player, "Ana", 1)
    );
    assert!(w.question.is_none() && w.answered.is_none() && w.reveal.is_none());
    assert_eq!(w.leaderboard.players, 1);
    assert_eq!(w.leaderboard.you, Some(RankScore { rank: 1, score: 0 }));
    assert_eq!(w.leaderboard.answered, None);
    let host = quiz.s.welcome(None, Role::Host, quiz.now);
    assert_eq!(
        (host.you.nickname.as_str(), host.you.rank, host.you.score),
        ("", 0, 0)
    );
    assert_eq!(host.leaderboard.answered, Some(0));
    assert_eq!(host.leaderboard.you, None);
    assert_eq!(host.leaderboard.top.unwrap()[0].0, "Ana");
}

#[test]
fn welcome_through_a_question() {
    let mut quiz = Quiz::new(
        vec![true_false(true), true_false(true)],
        QuizSettings {
            close_when_all_answered: false,
            ..settings()
        },
    );
    let ana = quiz.join("Ana");
    let bo = quiz.join("Bo");
    quiz.host(Start).unwrap();
    quiz.at(5_000);
    let w = quiz.welcome(ana);
    let q = w.question.unwrap();
    assert_eq!(
        (q.seq, q.index, q.ends_in_ms, q.time_limit_ms),
        (Some(1), 0, 15_000, 20_000)
    );
    assert_eq!(w.answered, None);
    let ack = quiz.answer(ana, 0, "a0", Answer::Bool(true)).unwrap();
    let w = quiz.welcome(ana);
    assert_eq!(w.answered, Some(ack));
    assert_eq!(w.you.score, 875);
    assert_eq!(quiz.welcome(bo).answered, None);
    let host = quiz.s.welcome(None, Role::Host, quiz.now);
    assert_eq!(host.leaderboard.answered, Some(1));

    quiz.tick(20_300);
    let w = quiz.welcome(bo);
    assert_eq!(w.phase, Phase::Closed);
    assert_eq!(w.question.unwrap().ends_in_ms, 0);
    assert!(
        w.reveal.is_none(),
        "the answer is not out before the reveal"
    );
    quiz.host(Next).unwrap();
    let w = quiz.welcome(bo);
    let reveal = w.reveal.unwrap();
    assert_eq!((reveal.seq, reveal.index), (Some(w.seq), 0));
    assert_eq!(reveal.correct.unwrap().value, Some(true));
    quiz.host(Next).unwrap();
    let w = quiz.welcome(bo);
    assert_eq!(w.question.unwrap().index, 1);
    assert!(w.reveal.is_none());
}

#[test]
fn every_quiz_wide_event_takes_the_next_seq_and_is_saved_with_it() {
    let mut quiz = Quiz::live();
    quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.host(Pause).unwrap();
    quiz.host(HostCommand::Resume).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(HostCommand::End).unwrap();
    let mut seqs = Vec::new();
    let mut saved = Vec::new();
    for e in quiz.take() {
        match e {
            Effect::Send { audience, msg } => {
                assert_eq!(audience, Audience::Everyone);
                seqs.push(msg.seq().unwrap());
            }
            Effect::SaveProgress(p) => saved.push(p.seq),
            _ => {}
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(saved, seqs, "progress is saved with each event's seq");
    assert_eq!(quiz.s.progress().seq, 6);
}

#[test]
fn replay_sends_what_was_missed_with_the_time_left_now() {
    let mut quiz = Quiz::live();
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.at(5_000);
    let (resumed, events) = quiz.s.replay(0, Some(ana), Role::Player, quiz.now).unwrap();
    assert_eq!((resumed.from_seq, resumed.to_seq), (1, 1));
    assert_eq!(resumed.you.nickname, "Ana");
    let [ServerMessage::Question(q)] = &events[..] else {
        panic!("{events:?}");
    };
    assert_eq!((q.seq, q.ends_in_ms), (Some(1), 15_000));
    // Up to date: nothing to send. Ahead of the quiz: a welcome instead.
    let (resumed, events) = quiz.s.replay(1, Some(ana), Role::Player, quiz.now).unwrap();
    assert_eq!((resumed.from_seq, resumed.to_seq, events.len()), (2, 1, 0));
    assert_eq!(quiz.s.replay(2, Some(ana), Role::Player, quiz.now), None);
    // A question replayed after it closed shows no time left.
    quiz.host(Next).unwrap();
    let (_, events) = quiz.s.replay(0, None, Role::Host, quiz.now).unwrap();
    let kinds: Vec<_> = events.iter().map(kind).collect();
    assert_eq!(kinds, ["question", "closed", "reveal"]);
    assert!(matches!(&events[0], ServerMessage::Question(q) if q.ends_in_ms == 0));
}

#[test]
fn replay_needs_every_missed_event_in_the_buffer() {
    let config = EngineConfig {
        replay_buffer: 2,
        ..EngineConfig::default()
    };
    let mut quiz = Quiz::with_config(vec![true_false(true); 3], settings(), config);
    quiz.join("Ana");
    quiz.host(Start).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Next).unwrap();
    quiz.host(Pause).unwrap();
    assert_eq!(quiz.s.progress().seq, 5);
    let replay = |last| quiz.s.replay(last, None, Role::Host, quiz.now);
    assert_eq!(replay(0), None);
    assert_eq!(replay(2), None);
    let (resumed, events) = replay(3).unwrap();
    assert_eq!((resumed.from_seq, resumed.to_seq), (4, 5));
    assert_eq!(
        events.iter().map(kind).collect::<Vec<_>>(),
        ["question", "paused"]
    );

    let none = EngineConfig {
        replay_buffer: 0,
        ..EngineConfig::default()
    };
    let mut quiz = Quiz::with_config(vec![true_false(true)], settings(), none);
    quiz.host(Start).unwrap();
    assert_eq!(quiz.s.replay(0, None, Role::Host, quiz.now), None);
    assert!(quiz.s.replay(1, None, Role::Host, quiz.now).is_some());
}

fn open_frame(question: Question) -> (QuestionFrame, String) {
    let mut quiz = Quiz::new(vec![question], settings());
    quiz.host(Start).unwrap();
    let frame = quiz
        .sent()
        .into_iter()
        .find_map(|(_, m)| match m {
            ServerMessage::Question(q) => Some(q),
            _ => None,
        })
        .unwrap();
    let json = serde_json::to_string(&frame).unwrap();
    (frame, json)
}

#[test]
fn question_frames_do_not_give_the_answer_away() {
    let (frame, json) = open_frame(question(QuestionBody::TypedAnswer {
        accept: strings(&["swum"]),
        reject: strings(&["swam"]),
        accents_matter: false,
    }));
    assert_eq!(frame.kind, quiz_protocol::QuestionKind::TypedAnswer);
    assert!(!json.contains("swum") && !json.contains("swam"), "{json}");
    assert!(frame.options.is_none() && frame.tiles.is_none());

    let answer = strings(&["I", "have", "never", "seen", "it"]);
    let (frame, _) = open_frame(question(QuestionBody::WordOrder {
        answer: answer.clone(),
        alternatives: vec![],
    }));
    let tiles = frame.tiles.unwrap();
    assert_ne!(tiles, answer);
    let mut sorted = tiles.clone();
    sorted.sort();
    let mut expected = answer.clone();
    expected.sort();
    assert_eq!(sorted, expected);

    let (frame, _) = open_frame(question(QuestionBody::Matching {
        pairs: vec![
            ("big".into(), "large".into()),
            ("small".into(), "little".into()),
            ("quick".into(), "fast".into()),
        ],
    }));
    assert_eq!(frame.left, Some(strings(&["big", "small", "quick"])));
    let right = frame.right.unwrap();
    assert_ne!(right, strings(&["large", "little", "fast"]));
    assert_eq!(right.len(), 3);

    let (frame, json) = open_frame(choice());
    assert_eq!(frame.options, Some(strings(&["go", "went", "gone"])));
    assert_eq!((frame.points, frame.multiplier), (1000, 1));
    assert!(!json.contains("\"answer\""));
}

#[test]
fn the_reveal_states_the_answer_in_the_order_phones_were_shown() {
    let mut quiz = Quiz::new(
        vec![question(QuestionBody::WordOrder {
            answer: strings(&["she", "has", "gone"]),
            alternatives: vec![],
        })],
        settings(),
    );
    let ana = quiz.join("Ana");
    quiz.host(Start).unwrap();
    let tiles = quiz.welcome(ana).question.unwrap().tiles.unwrap();
    let order: Vec<u32> = ["she", "has", "gone"]
        .iter()
        .map(|w| tiles.iter().position(|t| t == w).unwrap() as u32)
        .collect();
    let ack = quiz
        .answer(ana, 0, "a0", Answer::Order(order.clone()))
        .unwrap();
    assert_eq!(ack.points, 1000);
    quiz.host(HostCommand::Reveal).unwrap();
    let correct = quiz.welcome(ana).reveal.unwrap().correct.unwrap();
    assert_eq!(correct.order, Some(order));
    assert_eq!(correct.sentence.as_deref(), Some("she has gone"));
}
