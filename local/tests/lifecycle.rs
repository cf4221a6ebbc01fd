//! What phones see around the edges of a quiz's life: heartbeats, kicks, the end, a node
//! shutting down, retries of one answer from several connections, and the answer rate limit.

mod support;

use quiz_client::RawSocket;
use quiz_protocol::client::{AnswerFrame, ClientMessage, Pong, Role, ServerMessage, close};
use quiz_protocol::{Answer, AnswerId, ErrorCode, HostCommand, QuizSettings};
use support::*;

async fn joined(url: &str, ticket: &quiz_client::JoinTicket) -> RawSocket {
    raw_joined(url, &ticket.session_token).await
}

/// The next frame that is not a leaderboard.
async fn next_event(s: &mut RawSocket) -> ServerMessage {
    loop {
        match s.recv_message().await.unwrap() {
            ServerMessage::Leaderboard(_) => continue,
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong() {
    within(async {
        let sys = System::start().await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let ticket = sys
            .router_as("ana", Role::Player)
            .await
            .join(&quiz, "Ana", None)
            .await
            .unwrap();
        let mut s = joined(&ticket.ws_urls[0], &ticket).await;
        s.send(&ClientMessage::Ping {
            reference: Some("hb-1".into()),
        })
        .await
        .unwrap();
        assert_eq!(
            next_event(&mut s).await,
            ServerMessage::Pong(Pong {
                reference: Some("hb-1".into())
            })
        );
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_player_is_closed_taken_off_the_board_and_kept_out() {
    within(async {
        let sys = System::start().await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let router = sys.router_as("troll", Role::Player).await;
        let ticket = router.join(&quiz, "Troll", None).await.unwrap();
        let mut troll = joined(&ticket.ws_urls[0], &ticket).await;
        let _ana = Phone::join(&sys, &quiz, "ana", "Ana", Role::Player, None).await;
        host.until("two players", |l| (l.view.players == 2).then_some(())).await;

        host.conn.host(HostCommand::Kick, Some("troll")).await.expect("kick by nickname, any case");
        assert_eq!(troll.closed().await, Some(close::KICKED));
        let view = host.until("the board without them", |l| (l.view.players == 1).then(|| l.view.clone())).await;
        assert!(view.top.iter().all(|e| e.0 != "Troll"));
        // Kicking twice is harmless; kicking a stranger is an error.
        host.conn.host(HostCommand::Kick, Some("Troll")).await.unwrap();
        let err = host.conn.host(HostCommand::Kick, Some("Nobody")).await.unwrap_err();
        assert!(matches!(err, quiz_client::RequestError::Rejected(e) if e.code == ErrorCode::UnknownPlayer));
        // They cannot come back on this quiz.
        let ticket = router.join(&quiz, "Troll", None).await.unwrap();
        let mut again = RawSocket::connect(&ticket.ws_urls[0], Some(&ticket.session_token)).await.unwrap();
        again.send(&ClientMessage::Join { last_seq: None }).await.unwrap();
        match next_event(&mut again).await {
            ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::Kicked),
            other => panic!("{other:?}"),
        }
        assert_eq!(again.closed().await, Some(close::KICKED));
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_end_phones_are_closed_normally_once_the_quiz_unloads() {
    within(async {
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| c.limits.ended_linger_s = 1,
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let ticket = sys
            .router_as("ana", Role::Player)
            .await
            .join(&quiz, "Ana", None)
            .await
            .unwrap();
        let mut phone = joined(&ticket.ws_urls[0], &ticket).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        host.conn.host(HostCommand::End, None).await.unwrap();
        assert!(matches!(
            next_event(&mut phone).await,
            ServerMessage::Ended(_)
        ));
        assert_eq!(
            phone.closed().await,
            Some(close::NORMAL),
            "over for good: no reconnect"
        );
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_tells_phones_to_go_elsewhere() {
    within(async {
        let sys = System::start().await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let ticket = sys
            .router_as("ana", Role::Player)
            .await
            .join(&quiz, "Ana", None)
            .await
            .unwrap();
        let mut phone = joined(&ticket.ws_urls[0], &ticket).await;
        let stopping = tokio::spawn(sys.local.shutdown());
        assert_eq!(phone.closed().await, Some(close::GOING_AWAY));
        stopping.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_answer_sent_five_times_over_two_connections_counts_once() {
    within(async {
        let sys = System::start().await;
        let quiz = sys.open_quiz().await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let a = Phone::join(&sys, &quiz, "ana", "Ana", Role::Player, None).await;
        let b = Phone::join(&sys, &quiz, "ana", "Ana", Role::Player, None).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        a.until("question 0", |l| l.view.question.clone()).await;
        b.until("question 0", |l| l.view.question.clone()).await;
        let id = AnswerId::parse("ana-q0").unwrap();
        let sends = (0..5).map(|i| {
            let conn = if i % 2 == 0 {
                a.conn.clone()
            } else {
                b.conn.clone()
            };
            let id = id.clone();
            tokio::spawn(async move { conn.answer_with_id(0, id, Answer::Choice(1)).await })
        });
        let mut acks = Vec::new();
        for s in sends {
            acks.push(s.await.unwrap().expect("every copy is acknowledged"));
        }
        assert!(
            acks.windows(2).all(|w| w[0] == w[1]),
            "the same ack every time: {acks:?}"
        );
        let answers = sys.local.stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(answers.len(), 1);
        let view = a
            .until("the score", |l| (l.view.score > 0).then(|| l.view.clone()))
            .await;
        assert_eq!(view.score, acks[0].points, "counted once");
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_beyond_the_rate_limit_are_refused_with_a_retryable_error() {
    within(async {
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| {
                c.limits.answers_per_sec = 1;
                c.limits.answer_burst = 2;
            },
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let ticket = sys
            .router_as("ana", Role::Player)
            .await
            .join(&quiz, "Ana", None)
            .await
            .unwrap();
        let mut phone = joined(&ticket.ws_urls[0], &ticket).await;
        for i in 0..3 {
            let frame =
                format!(r#"{{"type":"answer","question":0,"answer_id":"r{i}","choice":0}}"#);
            phone.send_text(frame.into_bytes()).await.unwrap();
        }
        let mut codes = Vec::new();
        while codes.len() < 3 {
            if let ServerMessage::Error(e) = next_event(&mut phone).await {
                codes.push((e.code, e.retryable));
            }
        }
        // Two within the burst reach the quiz (not open yet); the third is rate limited.
        assert_eq!(
            codes.iter().filter(|c| c.0 == ErrorCode::NotOpen).count(),
            2,
            "{codes:?}"
        );
        assert!(codes.contains(&(ErrorCode::RateLimited, true)), "{codes:?}");
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_that_answer_pings_stay_and_silent_ones_are_closed() {
    within(async {
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| {
                c.limits.ping_interval_s = 1;
                c.limits.idle_timeout_s = 2;
            },
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        let router = sys.router_as("ana", Role::Player).await;
        let ticket = router.join(&quiz, "Ana", None).await.unwrap();
        let mut silent = joined(&ticket.ws_urls[0], &ticket).await;
        // A phone that keeps reading answers the server's pings (the client library does it).
        let bo = Phone::join(&sys, &quiz, "bo", "Bo", Role::Player, None).await;
        // The silent phone reads nothing, so it answers no ping: after the idle timeout the
        // server closes it with 4009, while the reading phone stays.
        // Wait until the node has closed exactly one phone for idleness and holds the other.
        loop {
            let metrics = sys.node_metrics().await;
            let idle_closed = metrics.contains(r#"quiz_node_closes_total{code="4009"} 1"#);
            if idle_closed && metrics.contains("quiz_node_connections 1") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // (Reading the silent socket now may show the 4009 close frame or a reset: its pongs
        // reach a socket the server has already closed.)
        let _ = silent.closed().await;
        assert!(bo.conn.is_connected(), "a phone answering pings is kept");
        assert_eq!(bo.log.lock().unwrap().reconnects, 0);
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_moved_by_others_reaches_a_player_at_most_once_an_interval_and_its_own_score_at_once()
 {
    within(async {
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| c.limits.drift_interval_ms = 5_000,
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        let quiz = sys
            .quiz(QuizSettings {
                top_n: 1,
                close_when_all_answered: false,
                ..QuizSettings::default()
            })
            .await;
        let router = sys.router_as("ana", Role::Player).await;
        let ticket = router.join(&quiz, "Ana", None).await.unwrap();
        let mut ana = joined(&ticket.ws_urls[0], &ticket).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let mut others = Vec::new();
        for n in 2..=5 {
            let user = format!("p{n}");
            others.push(Phone::join(&sys, &quiz, &user, &user, Role::Player, None).await);
        }
        host.until("every player", |l| (l.view.players == 5).then_some(()))
            .await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        // Four others score, each in a board push of its own; Ana has not answered.
        for (n, p) in others.iter().enumerate() {
            let q = p.until("question 0", |l| l.view.question.clone()).await;
            p.conn.answer(0, answer_for(&q, true)).await.unwrap();
            let n = n as u32 + 1;
            host.until("the answer on the board", |l| {
                (l.view.answers_in == Some(n)).then_some(())
            })
            .await;
        }
        // Ana's rank falls to 5th in fewer frames than the scores that moved it.
        let mut question = None;
        let mut ranks = Vec::new();
        while ranks.last() != Some(&5) {
            match ana.recv_message().await.unwrap() {
                ServerMessage::Leaderboard(l) => {
                    if let Some(you) = l.you {
                        assert_eq!(you.score, 0, "Ana did not score");
                        ranks.push(you.rank);
                    }
                }
                ServerMessage::Question(q) => question = Some(q),
                _ => {}
            }
        }
        assert!(ranks.len() < 4, "a frame per score: {ranks:?}");
        // Her own score is news: it is not held for the interval.
        let question = question.expect("question 0");
        let id = AnswerId::parse("ana-q0").unwrap();
        let frame = AnswerFrame::new(0, id, &answer_for(&question, true));
        ana.send(&ClientMessage::Answer(frame)).await.unwrap();
        let total = loop {
            match ana.recv_message().await.unwrap() {
                ServerMessage::Ack(ack) => break ack.total,
                ServerMessage::Leaderboard(_) => {}
                other => panic!("{other:?}"),
            }
        };
        assert!(total > 0);
        loop {
            if let ServerMessage::Leaderboard(l) = ana.recv_message().await.unwrap()
                && let Some(you) = l.you
            {
                assert_eq!(you.score, total, "her new score, with the rank it gives");
                break;
            }
        }
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_lobby_sends_players_the_count_at_most_once_an_interval_and_hosts_every_change() {
    within(async {
        let sys = System::start_with(quiz_local::LocalOptions {
            node_config: |c| c.limits.drift_interval_ms = 3_000,
            ..quiz_local::LocalOptions::for_test()
        })
        .await;
        // With a top of one, later joins change nothing Ana shows but the count.
        let quiz = sys
            .quiz(QuizSettings {
                top_n: 1,
                ..QuizSettings::default()
            })
            .await;
        let router = sys.router_as("ana", Role::Player).await;
        let ticket = router.join(&quiz, "Ana", None).await.unwrap();
        let mut ana = joined(&ticket.ws_urls[0], &ticket).await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        // Five joins, each in a board push of its own: the host sees every count.
        for n in 2..=6u32 {
            let user = format!("p{n}");
            let _ = Phone::join(&sys, &quiz, &user, &user, Role::Player, None).await;
            host.until("the new count", |l| (l.view.players == n).then_some(()))
                .await;
        }
        // Ana gets the count the interval held back, in fewer frames than the joins, and
        // never a count below the one her welcome showed.
        let mut counts = Vec::new();
        while counts.last() != Some(&6) {
            match ana.recv_message().await.unwrap() {
                ServerMessage::Leaderboard(l) => counts.push(l.players),
                other => panic!("{other:?}"),
            }
        }
        assert!(counts[0] >= 1, "the welcome showed Ana herself: {counts:?}");
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert!(counts.len() < 5, "one frame per join: {counts:?}");
        sys.local.shutdown().await;
    })
    .await;
}
