//! A phone whose network drops mid-quiz reconnects on its own, resumes from its last
//! sequence number, and misses nothing: the events it missed are replayed in order, and an
//! answer sent while it was offline is delivered and counted once.

mod support;

use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{HostCommand, QuizSettings};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_phone_resumes_and_misses_nothing() {
    within(async {
        let sys = System::start().await;
        // Questions stay open while a phone is away, so the test decides when they close.
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..QuizSettings::default()
        };
        let quiz = sys.quiz(settings).await;
        let edge = sys.local.node(0).ws_addr();
        let proxy = Proxy::start(edge).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let flaky = Phone::join(&sys, &quiz, "flaky", "Flaky", Role::Player, Some(&proxy)).await;
        let steady = Phone::join(&sys, &quiz, "steady", "Steady", Role::Player, None).await;

        host.conn.host(HostCommand::Start, None).await.unwrap();
        let q0 = flaky.until("question 0", |l| l.view.question.clone()).await;
        let first = flaky.conn.answer(0, answer_for(&q0, true)).await.unwrap();

        // The network drops mid-question; meanwhile the quiz moves on.
        proxy.cut();
        host.conn.host(HostCommand::Reveal, None).await.unwrap();
        host.conn.host(HostCommand::Next, None).await.unwrap();
        let q1 = steady
            .until("question 1", |l| {
                l.view.question.clone().filter(|q| q.index == 1)
            })
            .await;
        // Answered while (possibly) still offline: the SDK sends it once it is back.
        let offline = flaky.conn.answer(1, answer_for(&q1, true)).await.unwrap();
        assert!(offline.points > 0);

        flaky
            .until("question 1 replayed", |l| {
                l.view
                    .question
                    .as_ref()
                    .filter(|q| q.index == 1)
                    .map(|_| ())
            })
            .await;
        host.conn.host(HostCommand::End, None).await.unwrap();
        for p in [&flaky, &steady] {
            p.until("the end", |l| l.view.ended.as_ref().map(|_| ()))
                .await;
        }

        {
            let log = flaky.log.lock().unwrap();
            assert!(log.reconnects >= 1, "the phone reconnected");
            let count = |f: fn(&ServerMessage) -> bool| log.frames.iter().filter(|m| f(m)).count();
            assert_eq!(
                count(|m| matches!(m, ServerMessage::Welcome(_))),
                1,
                "a resume, not a fresh snapshot"
            );
            assert!(count(|m| matches!(m, ServerMessage::Resumed(_))) >= 1);
        }
        // Exactly the sequenced events the steady phone saw, in order, none twice.
        assert_eq!(flaky.seqs(), steady.seqs());
        assert!(flaky.seqs().windows(2).all(|w| w[1] == w[0] + 1));

        // Counted once: the log holds one answer per question, and the score adds up.
        let answers = sys.local.stores.answers.answers(&quiz).await.unwrap();
        let flaky_answers: Vec<_> = answers
            .iter()
            .filter(|a| a.answer_id == offline.answer_id || a.answer_id == first.answer_id)
            .collect();
        assert_eq!(flaky_answers.len(), 2);
        let view = flaky
            .until("final score", |l| {
                (l.view.score == first.points + offline.points).then(|| l.view.clone())
            })
            .await;
        assert_eq!(view.score, first.points + offline.points);
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_away_too_long_for_the_replay_buffer_gets_a_snapshot() {
    within(async {
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| c.engine.replay_buffer = 2,
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..QuizSettings::default()
        };
        let quiz = sys.quiz(settings).await;
        let proxy = Proxy::start(sys.local.node(0).ws_addr()).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let phone = Phone::join(&sys, &quiz, "away", "Away", Role::Player, Some(&proxy)).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        phone.until("question 0", |l| l.view.question.clone()).await;
        proxy.block();
        // Six events while away, more than the buffer of two holds.
        for _ in 0..2 {
            host.conn.host(HostCommand::Reveal, None).await.unwrap();
            host.conn.host(HostCommand::Next, None).await.unwrap();
        }
        proxy.unblock();
        let view = phone
            .until("a fresh snapshot", |l| {
                let welcomes = l
                    .frames
                    .iter()
                    .filter(|f| matches!(f, ServerMessage::Welcome(_)))
                    .count();
                (welcomes == 2).then(|| l.view.clone())
            })
            .await;
        assert_eq!(
            view.question.map(|q| q.index),
            Some(2),
            "the snapshot shows the current question"
        );
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboard_versions_keep_rising_after_a_quiz_is_reloaded() {
    use quiz_client::RawSocket;
    use quiz_protocol::client::ClientMessage;
    within(async {
        // Quizzes with nobody connected unload after a second; the next phone reloads them.
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| c.limits.idle_quiz_linger_s = 1,
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let router = sys.router_as("ana", Role::Player).await;
        let ticket = router.join(&quiz, "Ana", None).await.unwrap();
        let url = &ticket.ws_urls[0];
        let mut first = RawSocket::connect(url, Some(&ticket.session_token))
            .await
            .unwrap();
        first
            .send(&ClientMessage::Join { last_seq: None })
            .await
            .unwrap();
        let (seq, mut v) = match first.recv_message().await.unwrap() {
            ServerMessage::Welcome(w) => (w.seq, w.leaderboard.v),
            other => panic!("{other:?}"),
        };
        // Others join one by one; each join is a new leaderboard version.
        let mut others = Vec::new();
        for i in 0..3 {
            let name = format!("other-{i}");
            let t = sys
                .router_as(&name, Role::Player)
                .await
                .join(&quiz, &name, None)
                .await
                .unwrap();
            let mut s = RawSocket::connect(url, Some(&t.session_token))
                .await
                .unwrap();
            s.send(&ClientMessage::Join { last_seq: None })
                .await
                .unwrap();
            others.push(s);
            loop {
                if let ServerMessage::Leaderboard(lb) = first.recv_message().await.unwrap()
                    && lb.players == i + 2
                {
                    v = lb.v;
                    break;
                }
            }
        }
        for mut s in others {
            s.close(1000, "bye").await.unwrap();
        }
        first.close(1000, "bye").await.unwrap();
        let _ = first.closed().await;
        // Wait for the quiz to unload, then come back: the quiz is loaded again.
        loop {
            let metrics = sys.node_metrics().await;
            if metrics.lines().any(|l| l == "quiz_node_quizzes 0") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut again = RawSocket::connect(url, Some(&ticket.session_token))
            .await
            .unwrap();
        again
            .send(&ClientMessage::Join {
                last_seq: Some(seq),
            })
            .await
            .unwrap();
        assert!(matches!(
            again.recv_message().await.unwrap(),
            ServerMessage::Resumed(_)
        ));
        let newer = loop {
            if let ServerMessage::Leaderboard(lb) = again.recv_message().await.unwrap() {
                break lb;
            }
        };
        assert!(
            newer.v > v,
            "a reloaded quiz's leaderboard version {} must be above {v}",
            newer.v
        );
        assert_eq!(newer.you.map(|y| y.rank), Some(1));
        sys.local.shutdown().await;
    })
    .await;
}
