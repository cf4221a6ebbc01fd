//! `QuizConnection` against a fake edge: joining, resuming, answers across drops and
//! errors, token refresh, close codes, host and self-paced requests.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use quiz_client::{
    AnswerError, CloseReason, ConnectError, Event, HandshakeError, Options, QuizConnection,
    QuizView, Refresh, RequestError,
};
use quiz_protocol::client::{LeaderboardFrame, RankScore, ServerMessage, TopEntry, encode_server};
use quiz_protocol::{Answer, ErrorCode, HostCommand, Phase};
use support::*;

async fn connect(edge: &FakeEdge, options: Options) -> (QuizConnection, quiz_client::EventStream) {
    let (conn, mut events) = QuizConnection::connect(edge.ticket("t"), options)
        .await
        .expect("connect");
    match next_frame(&mut events).await {
        ServerMessage::Welcome(_) => {}
        other => panic!("expected welcome, got {other:?}"),
    }
    (conn, events)
}

fn is_closed(e: &Event) -> bool {
    matches!(e, Event::Closed { .. })
}

#[tokio::test]
async fn welcome_then_events_in_order_with_bytes_counted() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = QuizConnection::connect(edge.ticket("t"), Options::for_test())
            .await
            .unwrap();
        let mut view = QuizView::new();
        let mut bytes = 0;
        let mut take = async |events: &mut quiz_client::EventStream, view: &mut QuizView| {
            let msg = next_frame(events).await;
            bytes += encode_server(&msg).len() as u64;
            view.apply(&msg);
            msg
        };
        assert!(matches!(
            take(&mut events, &mut view).await,
            ServerMessage::Welcome(_)
        ));
        assert_eq!(view.nickname, "Ana");
        assert_eq!(edge.joins(), vec![None], "first join has no last_seq");

        edge.broadcast(|seq| ServerMessage::Question(question(Some(seq), 0)));
        edge.send_unsequenced(&ServerMessage::Leaderboard(LeaderboardFrame {
            v: 2,
            players: 2,
            top: Some(vec![TopEntry("Bo".into(), 900)]),
            you: Some(RankScore { rank: 2, score: 0 }),
            answered: None,
        }));
        let last = edge.broadcast(|seq| closed(seq, 0));

        assert!(
            matches!(take(&mut events, &mut view).await, ServerMessage::Question(q) if q.index == 0)
        );
        assert!(matches!(
            take(&mut events, &mut view).await,
            ServerMessage::Leaderboard(_)
        ));
        assert!(matches!(
            take(&mut events, &mut view).await,
            ServerMessage::Closed(_)
        ));
        assert_eq!(view.phase, Phase::Closed);
        assert_eq!(view.top, vec![TopEntry("Bo".into(), 900)]);
        assert_eq!((view.rank, view.players), (2, 2));
        assert_eq!(conn.last_seq(), Some(last));
        assert_eq!(conn.bytes_received(), bytes, "sum of text payloads");
        assert!(conn.is_connected());
    })
    .await;
}

#[tokio::test]
async fn resume_after_a_drop_sends_last_seq_and_replays_what_was_missed() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        let q0 = edge.broadcast(|seq| ServerMessage::Question(question(Some(seq), 0)));
        assert!(matches!(
            next_frame(&mut events).await,
            ServerMessage::Question(_)
        ));

        // The edge drops the phone and turns reconnects away while the quiz moves on.
        edge.set_refusing(true);
        edge.drop_all();
        wait_for(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
        let c0 = edge.broadcast(|seq| closed(seq, 0));
        let q1 = edge.broadcast(|seq| ServerMessage::Question(question(Some(seq), 1)));
        eventually("a refused reconnect", || edge.refused() >= 1).await;
        edge.set_refusing(false);

        wait_for(&mut events, |e| matches!(e, Event::Reconnected)).await;
        match next_frame(&mut events).await {
            ServerMessage::Resumed(r) => assert_eq!((r.from_seq, r.to_seq), (c0, q1)),
            other => panic!("expected resumed, got {other:?}"),
        }
        assert_eq!(next_frame(&mut events).await.seq(), Some(c0));
        assert_eq!(next_frame(&mut events).await.seq(), Some(q1));
        assert_eq!(edge.joins(), vec![None, Some(q0)]);
        assert_eq!(conn.last_seq(), Some(q1));
    })
    .await;
}

#[tokio::test]
async fn an_answer_in_flight_across_a_drop_is_resent_with_the_same_id() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, _events) = connect(&edge, Options::for_test()).await;
        // The first copy reaches the edge, which dies before acknowledging it.
        edge.script_answers([AnswerAction::Drop, AnswerAction::Ack]);
        let ack = conn.answer(0, Answer::Choice(1)).await.expect("acked");

        let sent = edge.answers();
        assert_eq!(sent.len(), 2, "sent once, re-sent once after the reconnect");
        assert_eq!(sent[0], sent[1], "same answer_id and same answer");
        assert_eq!(ack.answer_id, sent[0].answer_id);
        assert_eq!(ack.total, 100, "counted once");
        assert_eq!(edge.joins().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn pending_answers_wait_for_the_new_socket_to_be_joined() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, _events) = connect(&edge, Options::for_test()).await;
        // The edge is slow to answer joins: an answer before the welcome would be refused.
        edge.set_join_delay(Duration::from_millis(100));
        edge.script_answers([AnswerAction::Drop, AnswerAction::Ack]);
        let ack = conn.answer(0, Answer::Choice(1)).await.expect("acked");
        assert_eq!(ack.total, 100);
        assert_eq!(
            edge.answers().len(),
            2,
            "no copy reached the edge before the join"
        );
    })
    .await;
}

#[tokio::test]
async fn an_answer_given_while_reconnecting_is_sent_once_on_the_new_socket() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        edge.set_refusing(true);
        edge.drop_all();
        wait_for(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
        let answering = tokio::spawn({
            let conn = conn.clone();
            async move { conn.answer(0, Answer::Bool(true)).await }
        });
        eventually("a refused reconnect", || edge.refused() >= 1).await;
        edge.set_refusing(false);
        let ack = answering.await.unwrap().expect("acked after the reconnect");
        assert_eq!(edge.answers().len(), 1);
        assert_eq!(edge.answers()[0].answer_id, ack.answer_id);
    })
    .await;
}

#[tokio::test]
async fn retryable_errors_are_retried_with_the_same_id() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, _events) = connect(&edge, Options::for_test()).await;
        edge.script_answers([
            AnswerAction::Error(ErrorCode::Unavailable),
            AnswerAction::Error(ErrorCode::QuestionPaused),
            AnswerAction::Ack,
        ]);
        let ack = conn
            .answer_with_id(2, aid("retry-me"), Answer::Text("went".into()))
            .await
            .expect("acked after two retryable errors");
        let sent = edge.answers();
        assert_eq!(sent.len(), 3);
        assert!(
            sent.iter()
                .all(|a| a.answer_id == aid("retry-me") && a.question == 2)
        );
        assert_eq!(ack.answer_id, aid("retry-me"));
        assert_eq!(edge.joins().len(), 1, "no reconnect needed");
    })
    .await;
}

#[tokio::test]
async fn a_final_error_is_returned_without_retrying() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, _events) = connect(&edge, Options::for_test()).await;
        edge.script_answers([AnswerAction::Error(ErrorCode::TooLate)]);
        match conn.answer(0, Answer::Choice(0)).await {
            Err(AnswerError::Rejected(e)) => {
                assert_eq!(e.code, ErrorCode::TooLate);
                assert!(!e.retryable);
            }
            other => panic!("expected too_late, got {other:?}"),
        }
        assert_eq!(edge.answers().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn retryable_errors_stop_at_the_answer_timeout() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let options = Options {
            answer_timeout: Duration::from_millis(300),
            ..Options::for_test()
        };
        let (conn, _events) = connect(&edge, options).await;
        edge.script_answers(std::iter::repeat_n(
            AnswerAction::Error(ErrorCode::Unavailable),
            1000,
        ));
        match conn.answer(0, Answer::Choice(0)).await {
            Err(AnswerError::Timeout {
                last_error: Some(e),
            }) => {
                assert_eq!(e.code, ErrorCode::Unavailable)
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        let sent = edge.answers();
        assert!(sent.len() >= 2, "retried");
        assert!(sent.windows(2).all(|w| w[0].answer_id == w[1].answer_id));
    })
    .await;
}

#[tokio::test]
async fn the_same_answer_id_gets_the_same_ack() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, _events) = connect(&edge, Options::for_test()).await;
        let first = conn
            .answer_with_id(0, aid("twice"), Answer::Choice(2))
            .await
            .unwrap();
        let again = conn
            .answer_with_id(0, aid("twice"), Answer::Choice(2))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(edge.answers().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_expired_token_calls_the_refresh_hook() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        edge.set_valid_tokens(&["old"]);
        let calls = Arc::new(AtomicU32::new(0));
        let refresh = Refresh::new({
            let (calls, url) = (calls.clone(), edge.url());
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let fresh = ticket(vec![url.clone()], "fresh");
                async move { Ok(fresh) }
            }
        });
        let options = Options::for_test().with_refresh(refresh);
        let (_conn, mut events) = QuizConnection::connect(edge.ticket("old"), options)
            .await
            .unwrap();
        assert!(matches!(
            next_frame(&mut events).await,
            ServerMessage::Welcome(_)
        ));

        edge.set_valid_tokens(&["fresh"]);
        edge.drop_all();
        wait_for(&mut events, |e| matches!(e, Event::Reconnected)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(edge.tokens(), ["old", "old", "fresh"]);
        assert_eq!(edge.joins(), vec![None, Some(1)]);
    })
    .await;
}

#[tokio::test]
async fn an_expired_token_at_connect_is_refreshed_once() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        edge.set_valid_tokens(&["fresh"]);
        let calls = Arc::new(AtomicU32::new(0));
        let refresh = Refresh::new({
            let (calls, url) = (calls.clone(), edge.url());
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let fresh = ticket(vec![url.clone()], "fresh");
                async move { Ok(fresh) }
            }
        });
        let options = Options::for_test().with_refresh(refresh);
        let (conn, _events) = QuizConnection::connect(edge.ticket("stale"), options)
            .await
            .unwrap();
        assert!(conn.is_connected());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn an_expired_token_without_a_hook_ends_the_session() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (_conn, mut events) = connect(&edge, Options::for_test()).await;
        edge.set_valid_tokens(&["someone-else"]);
        edge.drop_all();
        match wait_for(&mut events, is_closed).await {
            Event::Closed {
                reason: CloseReason::Refused { status, code, .. },
                ..
            } => assert_eq!((status, code), (401, Some(ErrorCode::TokenExpired))),
            other => panic!("{other:?}"),
        }
        assert!(events.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn unauthorized_at_connect_is_an_error() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        edge.set_unauthorized(&["bad"]);
        match QuizConnection::connect(edge.ticket("bad"), Options::for_test()).await {
            Err(ConnectError::Handshake(HandshakeError::Refused { status, code, .. })) => {
                assert_eq!((status, code), (401, Some(ErrorCode::Unauthorized)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(edge.upgrades(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_join_refused_as_retryable_is_retried_on_a_new_socket() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        // The quiz's owner is failing over: the edge cannot join the phone yet.
        edge.refuse_joins([(ErrorCode::Unavailable, None)]);
        let (conn, mut events) = QuizConnection::connect(edge.ticket("t"), Options::for_test())
            .await
            .expect("joined on the second socket");
        assert!(conn.is_connected());
        assert_eq!(edge.joins(), vec![None, None]);
        assert_eq!(edge.upgrades(), 2);
        // The refusal is an event too, before the welcome.
        assert!(matches!(next_frame(&mut events).await, ServerMessage::Error(e) if e.code == ErrorCode::Unavailable));
        assert!(matches!(next_frame(&mut events).await, ServerMessage::Welcome(_)));
    })
    .await;
}

#[tokio::test]
async fn a_join_refused_for_good_ends_the_session() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        edge.refuse_joins([(ErrorCode::QuizFull, Some(1000))]);
        match QuizConnection::connect(edge.ticket("t"), Options::for_test()).await {
            Err(ConnectError::Closed {
                code: Some(1000),
                reason: CloseReason::Refused { code, .. },
            }) => assert_eq!(code, Some(ErrorCode::QuizFull)),
            other => panic!("{other:?}"),
        }
        // Without a close frame after the error, the session ends after a short grace.
        edge.refuse_joins([(ErrorCode::NicknameNotAllowed, None)]);
        match QuizConnection::connect(edge.ticket("t"), Options::for_test()).await {
            Err(ConnectError::Closed {
                code: None,
                reason: CloseReason::Refused { code, .. },
            }) => assert_eq!(code, Some(ErrorCode::NicknameNotAllowed)),
            other => panic!("{other:?}"),
        }
        // A refusal that closes with 4004 is the quiz being gone.
        edge.refuse_joins([(ErrorCode::UnknownQuiz, Some(4004))]);
        assert!(matches!(
            QuizConnection::connect(edge.ticket("t"), Options::for_test()).await,
            Err(ConnectError::Closed {
                reason: CloseReason::QuizGone,
                ..
            })
        ));
        assert_eq!(edge.upgrades(), 3, "none of them retried");
    })
    .await;
}

#[tokio::test]
async fn kicked_ends_the_stream_without_reconnecting() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        edge.close_all(4003);
        let closed = next_event(&mut events).await;
        assert_eq!(
            closed,
            Event::Closed {
                code: Some(4003),
                reason: CloseReason::Kicked
            }
        );
        assert!(
            events.recv().await.is_none(),
            "the stream ends after Closed"
        );
        assert_eq!(edge.upgrades(), 1, "no reconnect");
        assert_eq!(conn.close_reason(), Some(CloseReason::Kicked));
        assert_eq!(
            conn.answer(0, Answer::Choice(0)).await,
            Err(AnswerError::Closed(CloseReason::Kicked))
        );
    })
    .await;
}

#[tokio::test]
async fn protocol_violation_and_quiz_gone_are_final() {
    within_timeout(async {
        for (code, reason) in [
            (1008, CloseReason::Protocol { code: 1008 }),
            (4004, CloseReason::QuizGone),
            (1000, CloseReason::Normal),
        ] {
            let edge = FakeEdge::start().await;
            let (_conn, mut events) = connect(&edge, Options::for_test()).await;
            edge.close_all(code);
            let closed = wait_for(&mut events, is_closed).await;
            assert_eq!(
                closed,
                Event::Closed {
                    code: Some(code),
                    reason
                }
            );
            assert_eq!(edge.upgrades(), 1, "no reconnect after {code}");
        }
    })
    .await;
}

#[tokio::test]
async fn reconnectable_close_codes_reconnect_and_resume() {
    within_timeout(async {
        for code in [1011, 4008, 4009] {
            let edge = FakeEdge::start().await;
            let (_conn, mut events) = connect(&edge, Options::for_test()).await;
            edge.close_all(code);
            wait_for(&mut events, |e| matches!(e, Event::Reconnected)).await;
            assert!(matches!(
                next_frame(&mut events).await,
                ServerMessage::Resumed(_)
            ));
            assert_eq!(edge.joins(), vec![None, Some(1)], "after {code}");
        }
    })
    .await;
}

#[tokio::test]
async fn going_away_reconnects_to_the_next_url() {
    within_timeout(async {
        let a = FakeEdge::start().await;
        let b = FakeEdge::start().await;
        let t = ticket(vec![a.url(), b.url()], "t");
        let (_conn, mut events) = QuizConnection::connect(t, Options::for_test())
            .await
            .unwrap();
        assert!(matches!(
            next_frame(&mut events).await,
            ServerMessage::Welcome(_)
        ));
        a.close_all(1001);
        wait_for(&mut events, |e| matches!(e, Event::Reconnected)).await;
        assert_eq!(a.upgrades(), 1);
        assert_eq!(b.joins(), vec![Some(1)]);
    })
    .await;
}

#[tokio::test]
async fn connect_tries_the_next_url_when_the_first_is_down() {
    within_timeout(async {
        let dead = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("ws://{}/ws", l.local_addr().unwrap())
        };
        let edge = FakeEdge::start().await;
        let t = ticket(vec![dead, edge.url()], "t");
        let (conn, _events) = QuizConnection::connect(t, Options::for_test())
            .await
            .unwrap();
        assert!(conn.is_connected());
        assert_eq!(edge.joins(), vec![None]);
    })
    .await;
}

#[tokio::test]
async fn a_silent_socket_is_replaced_after_the_idle_timeout() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let options = Options {
            idle_timeout: Duration::from_millis(200),
            ..Options::for_test()
        };
        let (_conn, mut events) = connect(&edge, options).await;
        // The fake edge never pings: after 200 ms of silence the client gives the socket up.
        wait_for(&mut events, |e| matches!(e, Event::Reconnected)).await;
        assert_eq!(&edge.joins()[..2], [None, Some(1)]);
    })
    .await;
}

#[tokio::test]
async fn pings_are_answered() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (_conn, _events) = connect(&edge, Options::for_test()).await;
        edge.ping_all();
        eventually("a pong", || edge.pongs() == 1).await;
    })
    .await;
}

#[tokio::test]
async fn host_commands_are_correlated_by_ref() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, _events) = connect(&edge, Options::for_test()).await;
        let ok = conn.host(HostCommand::Start, None).await.unwrap();
        assert_eq!(ok.command, HostCommand::Start);
        assert_eq!(ok.reference, edge.hosts()[0].reference);

        edge.script_hosts([HostAction::Error(ErrorCode::UnknownPlayer)]);
        match conn.host(HostCommand::Kick, Some("Bo")).await {
            Err(RequestError::Rejected(e)) => assert_eq!(e.code, ErrorCode::UnknownPlayer),
            other => panic!("{other:?}"),
        }
        let sent = edge.hosts();
        assert_eq!(sent[1].player.as_deref(), Some("Bo"));
        assert_ne!(
            sent[0].reference, sent[1].reference,
            "each request has its own ref"
        );
    })
    .await;
}

#[tokio::test]
async fn a_host_command_in_flight_when_the_socket_drops_is_not_resent() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        edge.script_hosts([HostAction::Drop]);
        assert_eq!(
            conn.host(HostCommand::Next, None).await,
            Err(RequestError::Disconnected)
        );
        wait_for(&mut events, |e| matches!(e, Event::Reconnected)).await;
        assert_eq!(edge.hosts().len(), 1, "a host command is never sent twice");
        // Once joined again, commands work.
        eventually("joined", || conn.is_connected()).await;
        assert!(conn.host(HostCommand::Reveal, None).await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn next_returns_the_self_paced_question() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        let q = conn.next().await.unwrap();
        assert_eq!((q.seq, q.index), (None, 0));
        assert_eq!(conn.next().await.unwrap().index, 1);
        // The question frames are events too.
        assert!(
            matches!(next_frame(&mut events).await, ServerMessage::Question(q) if q.index == 0)
        );
    })
    .await;
}

#[tokio::test]
async fn leave_ends_the_session_as_left() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        conn.leave().await;
        assert_eq!(
            wait_for(&mut events, is_closed).await,
            Event::Closed {
                code: Some(1000),
                reason: CloseReason::Left
            }
        );
        assert_eq!(edge.others().len(), 1);
        assert_eq!(edge.upgrades(), 1);
    })
    .await;
}

#[tokio::test]
async fn close_and_drop_end_the_session_without_reconnecting() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        conn.close().await;
        assert_eq!(
            wait_for(&mut events, is_closed).await,
            Event::Closed {
                code: None,
                reason: CloseReason::ClientClosed
            }
        );
        assert!(events.recv().await.is_none());

        // Dropping the last handle does the same.
        let (conn, mut events) = connect(&edge, Options::for_test()).await;
        drop(conn);
        assert!(matches!(
            wait_for(&mut events, is_closed).await,
            Event::Closed {
                reason: CloseReason::ClientClosed,
                ..
            }
        ));
        eventually("sockets closed", || edge.joined() == 0).await;
        assert_eq!(edge.upgrades(), 2);
    })
    .await;
}

#[tokio::test]
async fn reconnecting_gives_up_after_max_attempts() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let mut options = Options::for_test();
        options.reconnect.max_attempts = 3;
        let (conn, mut events) = connect(&edge, options).await;
        edge.set_refusing(true);
        edge.drop_all();
        let mut attempts = Vec::new();
        let closed = loop {
            match next_event(&mut events).await {
                Event::Reconnecting { attempt } => attempts.push(attempt),
                e @ Event::Closed { .. } => break e,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(attempts, [1, 2, 3]);
        assert_eq!(
            closed,
            Event::Closed {
                code: None,
                reason: CloseReason::GaveUp { attempts: 3 }
            }
        );
        assert_eq!(edge.refused(), 3);
        assert!(!conn.is_connected());
    })
    .await;
}
