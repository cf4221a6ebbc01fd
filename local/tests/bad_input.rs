//! Bad input from a phone: every kind gets a clear error frame or the right close code, the
//! node stays up, and nothing changes in the quiz.

mod support;

use quiz_client::raw::OpCode;
use quiz_client::{HandshakeError, RawSocket};
use quiz_protocol::client::{ClientMessage, Role, ServerMessage, close};
use quiz_protocol::session::{SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims};
use quiz_protocol::{ErrorCode, HostCommand, QuizId, QuizSettings};
use support::*;

/// A session token signed like the router's, with `edit` applied to its claims.
fn token(
    quiz: &str,
    user: &str,
    role: Role,
    edit: impl FnOnce(&mut SessionClaims),
    secret: &str,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = SessionClaims {
        sub: user.into(),
        quiz: quiz.into(),
        role,
        nick: user.into(),
        aud: SESSION_AUDIENCE.into(),
        iss: SESSION_ISSUER.into(),
        iat: now,
        exp: now + 600,
    };
    edit(&mut claims);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

struct Setup {
    sys: System,
    quiz: QuizId,
    url: String,
}

async fn setup() -> Setup {
    let sys = System::start().await;
    let settings = QuizSettings {
        close_when_all_answered: false,
        ..QuizSettings::default()
    };
    let quiz = sys.quiz(settings).await;
    let url = sys.local.node(0).ws_url();
    Setup { sys, quiz, url }
}

impl Setup {
    async fn raw(&self, user: &str, role: Role) -> RawSocket {
        let t = token(
            self.quiz.as_str(),
            user,
            role,
            |_| {},
            quiz_local::DEV_SESSION_SECRET,
        );
        RawSocket::connect(&self.url, Some(&t))
            .await
            .expect("socket")
    }

    /// A joined raw socket (its welcome consumed).
    async fn joined(&self, user: &str, role: Role) -> RawSocket {
        let t = token(
            self.quiz.as_str(),
            user,
            role,
            |_| {},
            quiz_local::DEV_SESSION_SECRET,
        );
        raw_joined(&self.url, &t).await
    }
}

/// Sends `text` and returns the error frame it gets (skipping leaderboard frames).
async fn error_for(s: &mut RawSocket, text: &str) -> (ErrorCode, String) {
    s.send_text(text.as_bytes().to_vec()).await.unwrap();
    loop {
        match s.recv_message().await.unwrap() {
            ServerMessage::Error(e) => return (e.code, e.message),
            ServerMessage::Ack(a) => panic!("{text}: expected an error, got {a:?}"),
            // Quiz events and leaderboards keep coming meanwhile.
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_error_frames_and_change_nothing() {
    within(async {
        let s = setup().await;
        let mut phone = s.raw("p1", Role::Player).await;
        // Before joining.
        let (code, _) = error_for(
            &mut phone,
            r#"{"type":"answer","question":0,"answer_id":"a","choice":1}"#,
        )
        .await;
        assert_eq!(code, ErrorCode::NotJoined);
        let (code, _) = error_for(&mut phone, r#"{"type":"join","last_seq":"yes"}"#).await;
        assert_eq!(code, ErrorCode::BadMessage);
        phone
            .send(&ClientMessage::Join { last_seq: None })
            .await
            .unwrap();
        assert!(matches!(
            phone.recv_message().await.unwrap(),
            ServerMessage::Welcome(_)
        ));

        let cases = [
            ("not json", ErrorCode::BadMessage),
            ("[1,2,3]", ErrorCode::BadMessage),
            (r#"{"no_type":1}"#, ErrorCode::BadMessage),
            (r#"{"type":7}"#, ErrorCode::BadMessage),
            (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
            (r#"{"type":"answer"}"#, ErrorCode::BadMessage),
            (
                r#"{"type":"answer","question":0,"choice":1}"#,
                ErrorCode::BadMessage,
            ),
            (
                r#"{"type":"answer","question":"first","answer_id":"a","choice":1}"#,
                ErrorCode::BadMessage,
            ),
            (
                r#"{"type":"answer","question":0,"answer_id":"a"}"#,
                ErrorCode::BadAnswer,
            ),
            (
                r#"{"type":"answer","question":0,"answer_id":"a","choice":1,"value":true}"#,
                ErrorCode::BadAnswer,
            ),
            (
                r#"{"type":"answer","question":0,"answer_id":"has spaces","choice":1}"#,
                ErrorCode::BadMessage,
            ),
            (r#"{"type":"host"}"#, ErrorCode::BadMessage),
            (
                r#"{"type":"host","command":"explode"}"#,
                ErrorCode::BadMessage,
            ),
            (r#"{"type":"next","ref":7}"#, ErrorCode::BadMessage),
            (r#"{"type":"join"}"#, ErrorCode::BadMessage),
            // The rules of the quiz: not started yet.
            (
                r#"{"type":"answer","question":0,"answer_id":"a1","choice":1}"#,
                ErrorCode::NotOpen,
            ),
            (r#"{"type":"next"}"#, ErrorCode::WrongMode),
            (r#"{"type":"host","command":"start"}"#, ErrorCode::NotHost),
        ];
        for (text, want) in cases {
            let (code, message) = error_for(&mut phone, text).await;
            assert_eq!(code, want, "{text}: {message}");
            assert!(!message.is_empty());
        }

        // The host starts; now answers that break the quiz's rules.
        let mut host = s.joined("host", Role::Host).await;
        host.send(&ClientMessage::Host(quiz_protocol::client::HostFrame {
            command: HostCommand::Start,
            player: None,
            reference: Some("r1".into()),
        }))
        .await
        .unwrap();
        let rules = [
            (
                r#"{"type":"answer","question":99,"answer_id":"b1","choice":1}"#,
                ErrorCode::UnknownQuestion,
            ),
            (
                r#"{"type":"answer","question":1,"answer_id":"b2","choices":[0]}"#,
                ErrorCode::NotOpen,
            ),
            (
                r#"{"type":"answer","question":0,"answer_id":"b3","choice":3}"#,
                ErrorCode::BadAnswer,
            ),
            (
                r#"{"type":"answer","question":0,"answer_id":"b4","text":"kitten"}"#,
                ErrorCode::BadAnswer,
            ),
        ];
        for (text, want) in rules {
            let (code, message) = error_for(&mut phone, text).await;
            assert_eq!(code, want, "{text}: {message}");
        }
        // Nothing was recorded by any of it.
        assert!(
            s.sys
                .local
                .stores
                .answers
                .answers(&s.quiz)
                .await
                .unwrap()
                .is_empty()
        );

        // A good answer still works, then a different second one is refused.
        phone
            .send_text(br#"{"type":"answer","question":0,"answer_id":"good","choice":1}"#.to_vec())
            .await
            .unwrap();
        let ack = loop {
            match phone.recv_message().await.unwrap() {
                ServerMessage::Ack(a) => break a,
                ServerMessage::Error(e) => panic!("good answer refused: {e:?}"),
                _ => {}
            }
        };
        assert!(ack.points > 0);
        let (code, _) = error_for(
            &mut phone,
            r#"{"type":"answer","question":0,"answer_id":"other","choice":0}"#,
        )
        .await;
        assert_eq!(code, ErrorCode::AlreadyAnswered);

        // Close the question; a late answer is too late, and an earlier question too.
        let (_, _) = (
            host.send(&ClientMessage::Host(quiz_protocol::client::HostFrame {
                command: HostCommand::Reveal,
                player: None,
                reference: None,
            }))
            .await
            .unwrap(),
            (),
        );
        let mut late = s.joined("p2", Role::Player).await;
        let (code, _) = error_for(
            &mut late,
            r#"{"type":"answer","question":0,"answer_id":"late","choice":1}"#,
        )
        .await;
        assert_eq!(code, ErrorCode::TooLate);
        let answers = s.sys.local.stores.answers.answers(&s.quiz).await.unwrap();
        assert_eq!(answers.len(), 1, "only the one good answer is recorded");
        s.sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_right_code() {
    within(async {
        let s = setup().await;
        let max = quiz_protocol::client::DEFAULT_MAX_FRAME;
        let oversized = format!(r#"{{"type":"join","pad":"{}"}}"#, "x".repeat(max));
        let fragments: Vec<Vec<u8>> =
            vec![vec![b' '; max / 2], vec![b' '; max / 2], vec![b' '; 16]];
        let cases: Vec<(&str, u16)> = vec![
            ("binary", close::UNSUPPORTED_DATA),
            ("utf8", close::INVALID_PAYLOAD),
            ("big", close::TOO_BIG),
            ("fragments", close::TOO_BIG),
            ("bad fragment utf8", close::INVALID_PAYLOAD),
            ("unmasked", close::PROTOCOL_ERROR),
            ("text mid-message", close::PROTOCOL_ERROR),
        ];
        for (case, want) in cases {
            let mut sock = s.joined(&format!("u-{case}"), Role::Player).await;
            match case {
                "binary" => sock
                    .send_binary(b"{\"type\":\"join\"}".to_vec())
                    .await
                    .unwrap(),
                "utf8" => sock.send_text(vec![b'{', 0xff, 0xfe, b'}']).await.unwrap(),
                "big" => sock
                    .send_text(oversized.clone().into_bytes())
                    .await
                    .unwrap(),
                "fragments" => {
                    sock.send_frame(false, OpCode::Text, fragments[0].clone())
                        .await
                        .unwrap();
                    sock.send_frame(false, OpCode::Continuation, fragments[1].clone())
                        .await
                        .unwrap();
                    let _ = sock
                        .send_frame(true, OpCode::Continuation, fragments[2].clone())
                        .await;
                }
                "unmasked" => sock
                    .send_unmasked(OpCode::Text, br#"{"type":"ping"}"#.to_vec())
                    .await
                    .unwrap(),
                "text mid-message" => {
                    sock.send_frame(false, OpCode::Text, br#"{"type":"#.to_vec())
                        .await
                        .unwrap();
                    sock.send_frame(true, OpCode::Text, br#"{"type":"ping"}"#.to_vec())
                        .await
                        .unwrap();
                }
                _ => {
                    sock.send_frame(false, OpCode::Text, vec![b'{', 0xe2])
                        .await
                        .unwrap();
                    sock.send_frame(true, OpCode::Continuation, vec![0x28, b'}'])
                        .await
                        .unwrap();
                }
            }
            assert_eq!(sock.closed().await, Some(want), "{case}");
        }
        // Too many bad frames: a policy close. Exactly one over the budget of 20, so that
        // nothing more is written to a socket the server has closed (which would reset it
        // and could lose the close frame before we read it).
        let mut spammer = s.joined("spammer", Role::Player).await;
        for _ in 0..21 {
            spammer.send_text(b"garbage".to_vec()).await.unwrap();
        }
        assert_eq!(spammer.closed().await, Some(close::POLICY));
        // The node is still up and serving.
        let mut fine = s.joined("still-fine", Role::Player).await;
        let (code, _) = error_for(&mut fine, r#"{"type":"dance"}"#).await;
        assert_eq!(code, ErrorCode::UnknownType);
        s.sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() {
    within(async {
        let s = setup().await;
        let q = s.quiz.as_str().to_owned();
        let secret = quiz_local::DEV_SESSION_SECRET;
        let cases: Vec<(&str, Option<String>, ErrorCode)> = vec![
            ("none", None, ErrorCode::Unauthorized),
            ("garbage", Some("not.a.jwt".into()), ErrorCode::Unauthorized),
            (
                "expired",
                Some(token(
                    &q,
                    "u",
                    Role::Player,
                    |c| {
                        c.iat -= 7200;
                        c.exp -= 3600
                    },
                    secret,
                )),
                ErrorCode::TokenExpired,
            ),
            (
                "audience",
                Some(token(
                    &q,
                    "u",
                    Role::Player,
                    |c| c.aud = "someone-else".into(),
                    secret,
                )),
                ErrorCode::Unauthorized,
            ),
            (
                "issuer",
                Some(token(
                    &q,
                    "u",
                    Role::Player,
                    |c| c.iss = "mallory".into(),
                    secret,
                )),
                ErrorCode::Unauthorized,
            ),
            (
                "signature",
                Some(token(
                    &q,
                    "u",
                    Role::Player,
                    |_| {},
                    "another-secret-another-secret-0123",
                )),
                ErrorCode::Unauthorized,
            ),
            (
                "quiz code",
                Some(token("not a code", "u", Role::Player, |_| {}, secret)),
                ErrorCode::Unauthorized,
            ),
        ];
        for (case, t, want) in cases {
            match RawSocket::connect(&s.url, t.as_deref()).await {
                Err(HandshakeError::Refused { status, code, .. }) => {
                    assert_eq!(status, 401, "{case}");
                    assert_eq!(code, Some(want), "{case}");
                }
                other => panic!("{case}: expected a refusal, got {other:?}"),
            }
        }
        s.sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_an_unknown_or_ended_quiz_is_refused() {
    within(async {
        let s = setup().await;
        let secret = quiz_local::DEV_SESSION_SECRET;
        // A well-signed token for a quiz that does not exist.
        let t = token("ACDEFG", "u", Role::Player, |_| {}, secret);
        let mut sock = RawSocket::connect(&s.url, Some(&t)).await.unwrap();
        sock.send(&ClientMessage::Join { last_seq: None })
            .await
            .unwrap();
        match sock.recv_message().await.unwrap() {
            ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::UnknownQuiz),
            other => panic!("{other:?}"),
        }
        assert_eq!(sock.closed().await, Some(close::QUIZ_GONE));

        // The router refuses unknown and ended quizzes too.
        let router = s.sys.router_as("someone", Role::Player).await;
        let unknown = router
            .join(&QuizId::parse("ACDEFG").unwrap(), "Someone", None)
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Some(ErrorCode::UnknownQuiz));
        let mut host = s.joined("host", Role::Host).await;
        host.send(&ClientMessage::Host(quiz_protocol::client::HostFrame {
            command: HostCommand::End,
            player: None,
            reference: None,
        }))
        .await
        .unwrap();
        loop {
            if let ServerMessage::Ended(_) = host.recv_message().await.unwrap() {
                break;
            }
        }
        // A newcomer on the edge (token issued before the end) is refused and closed.
        let mut late = s.raw("latecomer", Role::Player).await;
        late.send(&ClientMessage::Join { last_seq: None })
            .await
            .unwrap();
        match late.recv_message().await.unwrap() {
            ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::QuizEnded),
            other => panic!("{other:?}"),
        }
        assert_eq!(late.closed().await, Some(close::NORMAL));
        let ended = loop {
            match router.join(&s.quiz, "Someone", None).await {
                Err(e) if e.code() == Some(ErrorCode::QuizEnded) => break e,
                // The end reaches the store just behind the event.
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(ended.status(), Some(410));
        s.sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_deadline_is_too_late() {
    within(async {
        let sys = System::start().await;
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..QuizSettings::default()
        };
        let quiz = sys
            .local
            .create_quiz("host", "e2e-fast", settings)
            .await
            .unwrap();
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let ticket = sys
            .router_as("slow", Role::Player)
            .await
            .join(&quiz, "Slow", None)
            .await
            .unwrap();
        let mut phone = RawSocket::connect(&ticket.ws_urls[0], Some(&ticket.session_token))
            .await
            .unwrap();
        phone
            .send(&ClientMessage::Join { last_seq: None })
            .await
            .unwrap();
        host.conn.host(HostCommand::Start, None).await.unwrap();
        // The question closes by itself when its five seconds (and the grace) are up.
        loop {
            if let ServerMessage::Closed(c) = phone.recv_message().await.unwrap() {
                assert_eq!(c.index, 0);
                break;
            }
        }
        let (code, message) = error_for(
            &mut phone,
            r#"{"type":"answer","question":0,"answer_id":"late","choice":0}"#,
        )
        .await;
        assert_eq!(code, ErrorCode::TooLate, "{message}");
        assert!(
            sys.local
                .stores
                .answers
                .answers(&quiz)
                .await
                .unwrap()
                .is_empty()
        );
        sys.local.shutdown().await;
    })
    .await;
}

/// A join refused as `unavailable` leaves the socket open for another `join`, even when the
/// refusal came after the join deadline: a phone that keeps trying is not an idle socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_as_unavailable_can_be_sent_again_past_the_join_deadline() {
    use sqlx::Connection;
    within(async {
        let mut options = quiz_local::LocalOptions::for_test();
        options.node_config = |c| c.limits.join_timeout_s = 1;
        let sys = System::start_with(options).await;
        let quiz = sys.quiz(QuizSettings::default()).await;
        // Another writer holds the database: the node cannot claim the quiz it loads for
        // the join, and refuses it once SQLite's busy timeout (5 s) has passed.
        let mut writer = sqlx::SqliteConnection::connect(&sys.local.store.database_url)
            .await
            .expect("a second connection to the database");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut writer)
            .await
            .unwrap();
        let t = token(
            quiz.as_str(),
            "patient",
            Role::Player,
            |_| {},
            quiz_local::DEV_SESSION_SECRET,
        );
        let mut phone = RawSocket::connect(&sys.local.node(0).ws_url(), Some(&t))
            .await
            .expect("socket");
        let join = ClientMessage::Join { last_seq: None };
        phone.send(&join).await.unwrap();
        let refusal = loop {
            match phone.recv_message().await {
                Ok(ServerMessage::Error(e)) => break e,
                Ok(_) => continue,
                Err(e) => panic!("no refusal: {e}"),
            }
        };
        assert_eq!(refusal.code, ErrorCode::Unavailable, "{}", refusal.message);
        assert!(refusal.retryable);
        sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
        phone.send(&join).await.unwrap();
        loop {
            match phone.recv_message().await {
                Ok(ServerMessage::Welcome(_)) => break,
                Ok(_) => continue,
                Err(e) => panic!("not welcomed: {e}"),
            }
        }
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_is_held_to_the_request_budget_and_the_bad_frame_budget() {
    within(async {
        let s = setup().await;
        // Host commands share the socket's request budget (burst 10): a flood of them is
        // refused with `rate_limited`, and the quiz only sees the first ten.
        let mut host = s.joined("host", Role::Host).await;
        for i in 0..15 {
            let frame = format!(r#"{{"type":"host","command":"pause","ref":"c{i}"}}"#);
            host.send_text(frame.into_bytes()).await.unwrap();
        }
        let mut limited = 0;
        while limited == 0 {
            if let ServerMessage::Error(e) = host.recv_message().await.unwrap()
                && e.code == ErrorCode::RateLimited
            {
                limited += 1;
            }
        }
        // Answers and `next` from a host are bad frames: past the budget of 20, a policy close.
        let mut host = s.joined("host-2", Role::Host).await;
        for i in 0..21 {
            let frame = if i % 2 == 0 {
                r#"{"type":"answer","question":0,"answer_id":"a-1","choice":1}"#.to_string()
            } else {
                r#"{"type":"next"}"#.to_string()
            };
            host.send_text(frame.into_bytes()).await.unwrap();
        }
        assert_eq!(host.closed().await, Some(close::POLICY));
        s.sys.local.shutdown().await;
    })
    .await;
}
