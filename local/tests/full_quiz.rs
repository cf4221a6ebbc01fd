//! Fifty phones play a whole quiz through the router and a node, on real WebSockets, and every
//! phone's final score and rank must equal what the engine computes from the answer log.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use quiz_engine::{EngineConfig, QuizSpec, SavedQuiz, Session};
use quiz_protocol::client::{Ack, Role, ServerMessage};
use quiz_protocol::{HostCommand, Phase, QuizSettings};
use support::*;

const PHONES: usize = 50;

/// Phone `i` answers question `q` right unless (i + q) is a multiple of 3.
fn right(i: usize, q: u32) -> bool {
    !(i + q as usize).is_multiple_of(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_phones_play_a_full_quiz() {
    within(async {
        let sys = System::start().await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let mut phones = Vec::new();
        for i in 0..PHONES {
            let phone = Phone::join(&sys, &quiz, &format!("user-{i}"), &format!("Phone {i}"), Role::Player, None).await;
            phones.push(phone);
        }
        host.until("every phone in the lobby", |l| (l.view.players == PHONES as u32).then_some(())).await;

        // Each phone answers every question as it opens, after a think time of its own.
        let mut drivers = Vec::new();
        for (i, phone) in phones.iter().cloned().enumerate() {
            drivers.push(tokio::spawn(async move {
                let mut acks: Vec<(u32, bool, Ack)> = Vec::new();
                for q in 0..TEST_QUESTIONS {
                    let frame = phone
                        .until("the next question", |l| {
                            l.frames.iter().rev().find_map(|f| match f {
                                ServerMessage::Question(frame) if frame.index == q => Some(frame.clone()),
                                _ => None,
                            })
                        })
                        .await;
                    tokio::time::sleep(Duration::from_millis((i as u64 % 10) * 30)).await;
                    let r = right(i, q);
                    let ack = phone.conn.answer(q, answer_for(&frame, r)).await.expect("answer acked");
                    acks.push((q, r, ack));
                }
                acks
            }));
        }

        host.conn.host(HostCommand::Start, None).await.expect("start");
        for q in 0..TEST_QUESTIONS {
            // The question closes by itself once every phone has answered.
            host.until("the question to close", |l| {
                l.frames.iter().any(|f| matches!(f, ServerMessage::Closed(c) if c.index == q)).then_some(())
            })
            .await;
            host.conn.host(HostCommand::Reveal, None).await.expect("reveal");
            host.conn.host(HostCommand::Next, None).await.expect("next");
        }
        let mut acks = Vec::new();
        for d in drivers {
            acks.push(d.await.expect("phone driver"));
        }

        // What the engine makes of the durable answer log.
        let stores = &sys.local.stores;
        host.until("the end", |l| l.view.ended.as_ref().map(|_| ())).await;
        let record = loop {
            // Progress is written behind the events; give the journal its moment.
            let record = stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
            if record.progress.phase == Phase::Ended {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let players = stores.quizzes.players(&quiz).await.unwrap();
        let answers = stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(answers.len(), PHONES * TEST_QUESTIONS as usize, "every answer is in the log once");
        let by_nick: HashMap<String, quiz_protocol::PlayerNo> =
            players.iter().map(|p| (p.nickname.clone(), p.player)).collect();
        let spec = QuizSpec {
            id: record.id.clone(),
            title: record.title.clone(),
            settings: record.settings.clone(),
            questions: record.questions.clone(),
        };
        let saved = SavedQuiz { progress: record.progress.clone(), players, answers };
        let engine = Session::restore(spec, EngineConfig::default(), saved);

        let mut final_top = None;
        for (i, phone) in phones.iter().enumerate() {
            let player = by_nick[&format!("Phone {i}")];
            let expected = engine.leaderboard().standing(player).expect("on the board");
            let mine = &acks[i];
            let sum: u32 = mine.iter().map(|(_, _, a)| a.points).sum();
            assert_eq!(sum, expected.score, "phone {i}: acks add up to the engine's score");
            for (q, r, ack) in mine {
                let scored = *q != 6; // the poll scores nothing
                assert_eq!(ack.points > 0, *r && scored, "phone {i} question {q}: points {}", ack.points);
            }
            let view = phone
                .until("the final standings", |l| {
                    let v = &l.view;
                    (v.ended.is_some() && v.score == expected.score && v.rank == expected.rank).then(|| v.clone())
                })
                .await;
            assert_eq!(view.phase, Phase::Ended);
            let top = view.ended.as_ref().unwrap().top.clone();
            assert_eq!(*final_top.get_or_insert_with(|| top.clone()), top, "every phone sees the same final top");
            let seqs = phone.seqs();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "phone {i} missed or repeated events: {seqs:?}");
        }
        // Ranks are a permutation of 1..=50.
        let mut ranks: Vec<u32> = phones.iter().map(|p| p.view().rank).collect();
        ranks.sort();
        assert_eq!(ranks, (1..=PHONES as u32).collect::<Vec<_>>());

        let metrics = sys.node_metrics().await;
        let (p50, n) = histogram_quantile(&metrics, "quiz_node_answer_ack_seconds", 0.5);
        let (p99, _) = histogram_quantile(&metrics, "quiz_node_answer_ack_seconds", 0.99);
        assert_eq!(n, (PHONES * TEST_QUESTIONS as usize) as u64, "one ack observation per answer");
        let bytes: u64 = phones.iter().map(|p| p.conn.bytes_received()).sum();
        eprintln!(
            "REPORT answer-ack latency from /metrics: p50 <= {:.1} ms, p99 <= {:.1} ms over {n} answers; \
             bytes per phone per question: {:.0} (whole quiz incl. welcome: {:.0} per phone)",
            p50 * 1000.0,
            p99 * 1000.0,
            bytes as f64 / PHONES as f64 / TEST_QUESTIONS as f64,
            bytes as f64 / PHONES as f64,
        );
        sys.local.shutdown().await;
    })
    .await;
}
