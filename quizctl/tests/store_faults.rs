//! The stores fail under a live quiz. PostgreSQL unreachable: phones get a retryable error,
//! nothing is half counted, and the retries are counted once when it is back. Redis
//! unreachable: the quiz goes on from memory and Redis catches up from the log. A quiz's Redis
//! keys vanish: the node notices and rebuilds them from the log.

mod support;

use std::time::Duration;

use quiz_client::RawSocket;
use quiz_harness::{PgDatabase, RedisCluster, TcpProxy};
use quiz_local::{LocalOptions, LocalSystem};
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{Answer, HostCommand, Phase, QuizId, QuizSettings};
use quiz_store::{League, RedisConfig, StandingRow, StoreConfig, Stores};
use support::{Phone, within};

fn redis_config(redis: &RedisCluster) -> RedisConfig {
    RedisConfig {
        nodes: redis.seed_urls(),
        connect_timeout_ms: 300,
        response_timeout_ms: 300,
        retries: 1,
        weekly_league_weeks_kept: 8,
    }
}

/// A local system (router + node in this process) on `store`, with a set of single-choice
/// questions `faults`.
async fn system(store: StoreConfig) -> LocalSystem {
    let mut options = LocalOptions::for_test();
    options.store = Some(store);
    let sys = LocalSystem::start(options).await.expect("system starts");
    let set = quiz_local::parse_set(&support::single_choice_set("faults", 4, 30)).unwrap();
    let access = quiz_store::SetAccess::public("");
    sys.stores
        .content
        .put_question_set(&set, &access, true, 0)
        .await
        .unwrap();
    sys
}

/// A system on a PostgreSQL database of its own and a Redis Cluster for the leaderboards.
async fn on_redis(purpose: &str) -> (PgDatabase, RedisCluster, LocalSystem) {
    let pg = PgDatabase::create(purpose).await.unwrap();
    let redis = RedisCluster::start(3, 1).await.unwrap();
    let store = StoreConfig {
        redis: Some(redis_config(&redis)),
        ..StoreConfig::sql(pg.url())
    };
    let sys = system(store).await;
    (pg, redis, sys)
}

async fn phone(sys: &LocalSystem, quiz: &QuizId, user: &str, role: Role) -> Phone {
    let router = sys.client(user, role).await.unwrap();
    let name = if role == Role::Host { "" } else { user };
    Phone::connect(&router, quiz, name, role).await
}

/// `url` with its `host:port` replaced by `addr`, and the `host:port` it had.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let start = url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |at| at + 1);
    let end = start + url[start..].find('/').unwrap();
    let target = url[start..end].parse().expect("a host:port of 127.0.0.1");
    (format!("{}{addr}{}", &url[..start], &url[end..]), target)
}

/// The standings the log implies, as (player, score, tiebreak), in leaderboard order.
async fn standings_from_log(stores: &Stores, quiz: &QuizId) -> Vec<(u32, u32, u64)> {
    let log = stores.answers.answers(quiz).await.unwrap();
    StandingRow::from_log(&log)
        .into_iter()
        .map(|r| (r.player.0, r.score, r.tiebreak))
        .collect()
}

/// Waits until the leaderboard store's standings equal the log's.
async fn converges(stores: &Stores, quiz: &QuizId) {
    let want = standings_from_log(stores, quiz).await;
    let mut got = Vec::new();
    for _ in 0..300 {
        if let Ok(rows) = stores.leaderboards.standings(quiz, 1000).await {
            got = rows
                .iter()
                .map(|r| (r.player.0, r.score, r.tiebreak))
                .collect();
            if got == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, want, "the leaderboard store equals the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_gives_retryable_errors_and_counts_retries_once() {
    within(async {
        let pg = PgDatabase::create("pg-down").await.unwrap();
        // The node and router reach PostgreSQL through a proxy the test can block.
        let (_, target) = through(pg.url(), "127.0.0.1:1".parse().unwrap());
        let proxy = TcpProxy::start(target).await.unwrap();
        let store = StoreConfig::sql(through(pg.url(), proxy.addr()).0);
        let sys = system(store).await;
        let quiz = sys
            .create_quiz(
                "host",
                "faults",
                QuizSettings {
                    close_when_all_answered: false,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let host = phone(&sys, &quiz, "host", Role::Host).await;
        let ana = phone(&sys, &quiz, "ana", Role::Player).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        ana.until(Duration::from_secs(10), |v| {
            (v.phase == Phase::Open).then_some(())
        })
        .await
        .expect("open");

        proxy.block();
        // While the store is down the answer cannot be acknowledged: the node says
        // `unavailable` and the phone's SDK retries with the same answer_id.
        let answering = {
            let conn = ana.conn.clone();
            tokio::spawn(async move { conn.answer(0, Answer::Choice(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if answering.is_finished() {
            panic!(
                "no ack while the log cannot be written: {:?}",
                answering.await
            );
        }
        let refused = sys.node(0).metrics().render();
        assert!(
            refused.contains(r#"quiz_node_answers_total{result="unavailable"}"#),
            "the phone was told to retry"
        );
        proxy.unblock();
        let ack = answering
            .await
            .unwrap()
            .expect("acknowledged once the store is back");
        let log = sys.stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(log.len(), 1, "counted once");
        assert_eq!(log[0].answer_id, ack.answer_id);
        let view = ana
            .until(Duration::from_secs(10), |v| {
                (v.score == ack.points).then(|| v.clone())
            })
            .await;
        assert!(view.is_some(), "the phone's score is the one answer's");
        sys.shutdown().await;
        drop(proxy);
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// A phone with several answers pending must know which one a refusal is about: every error
/// frame that refuses an answer names its `answer_id`, whichever layer refused it. Here the
/// owner does not reply within the edge's request timeout (its store hangs: PostgreSQL takes
/// the statements and never answers), a refusal the quiz itself never makes; it used to come
/// without the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_answer_names_its_answer_id() {
    within(async {
        let pg = PgDatabase::create("refusal-ids").await.unwrap();
        let (_, target) = through(pg.url(), "127.0.0.1:1".parse().unwrap());
        let proxy = TcpProxy::start(target).await.unwrap();
        let mut options = LocalOptions::for_test();
        options.store = Some(StoreConfig::sql(through(pg.url(), proxy.addr()).0));
        options.node_config = |c| c.limits.request_timeout_ms = 300;
        let sys = LocalSystem::start(options).await.expect("system starts");
        let set = quiz_local::parse_set(&support::single_choice_set("faults", 2, 30)).unwrap();
        let access = quiz_store::SetAccess::public("");
        sys.stores
            .content
            .put_question_set(&set, &access, true, 0)
            .await
            .unwrap();
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..Default::default()
        };
        let quiz = sys.create_quiz("host", "faults", settings).await.unwrap();
        let host = phone(&sys, &quiz, "host", Role::Host).await;
        let mut sockets = Vec::new();
        for i in 0..20 {
            let router = sys.client(&format!("u{i}"), Role::Player).await.unwrap();
            let ticket = router.join(&quiz, &format!("p{i}"), None).await.unwrap();
            let mut s = RawSocket::connect(&ticket.ws_urls[0], Some(&ticket.session_token))
                .await
                .unwrap();
            s.send_text(r#"{"type":"join"}"#).await.unwrap();
            // Joined before the start, so the question comes as a `question` of its own (a
            // later join would find it inside the `welcome`).
            while !matches!(s.recv_message().await.unwrap(), ServerMessage::Welcome(_)) {}
            sockets.push(s);
        }
        host.conn.host(HostCommand::Start, None).await.unwrap();
        for s in &mut sockets {
            while !matches!(s.recv_message().await.unwrap(), ServerMessage::Question(_)) {}
        }

        proxy.stall();
        let answer = |i: usize| {
            format!(r#"{{"type":"answer","question":0,"answer_id":"a-{i}","choice":1}}"#)
        };
        for (i, s) in sockets.iter_mut().enumerate() {
            s.send_text(answer(i)).await.unwrap();
        }
        for (i, s) in sockets.iter_mut().enumerate() {
            let refusal = loop {
                match s.recv_message().await.unwrap() {
                    ServerMessage::Error(e) => break e,
                    ServerMessage::Ack(a) => panic!("acked while the log cannot be written: {a:?}"),
                    _ => {}
                }
            };
            assert!(refusal.retryable, "{refusal:?}");
            assert_eq!(
                refusal.answer_id.as_ref().map(|a| a.as_str()),
                Some(format!("a-{i}").as_str()),
                "the refusal names the answer: {refusal:?}"
            );
        }

        // Resent with the same ids once the store is back, each is counted once.
        proxy.unstall();
        for (i, s) in sockets.iter_mut().enumerate() {
            s.send_text(answer(i)).await.unwrap();
            let ack = loop {
                match s.recv_message().await.unwrap() {
                    ServerMessage::Ack(a) => break a,
                    ServerMessage::Error(e) if e.retryable => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        s.send_text(answer(i)).await.unwrap();
                    }
                    ServerMessage::Error(e) => panic!("refused for good: {e:?}"),
                    _ => {}
                }
            };
            assert_eq!(ack.answer_id.as_str(), format!("a-{i}"));
        }
        let log = sys.stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(log.len(), sockets.len(), "each answer in the log once");
        sys.shutdown().await;
        drop(proxy);
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// `host_ok` is a promise like an ack: the command survives whatever dies next. So it waits
/// for the progress it changed to be in PostgreSQL (it used to come at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_command_is_confirmed_only_once_it_is_durable() {
    within(async {
        let pg = PgDatabase::create("host-durable").await.unwrap();
        let (_, target) = through(pg.url(), "127.0.0.1:1".parse().unwrap());
        let proxy = TcpProxy::start(target).await.unwrap();
        let store = StoreConfig::sql(through(pg.url(), proxy.addr()).0);
        let sys = system(store).await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        let host = phone(&sys, &quiz, "host", Role::Host).await;
        let _ana = phone(&sys, &quiz, "ana", Role::Player).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();

        proxy.block();
        let ending = {
            let conn = host.conn.clone();
            tokio::spawn(async move { conn.host(HostCommand::End, None).await })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !ending.is_finished(),
            "no host_ok while the progress cannot be written: {:?}",
            ending.await
        );
        proxy.unblock();
        let ok = ending
            .await
            .unwrap()
            .expect("confirmed once the store is back");
        assert_eq!(ok.phase, Phase::Ended);
        let stored = sys.stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
        assert_eq!(
            stored.progress.phase,
            Phase::Ended,
            "what was confirmed is stored"
        );
        sys.shutdown().await;
        drop(proxy);
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// Plays `questions` questions with `phones` phones; `during(q)` runs as question q opens.
async fn play_quiz<F, Fut>(
    sys: &LocalSystem,
    quiz: &QuizId,
    phones: usize,
    questions: u32,
    mut during: F,
) -> usize
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let host = phone(sys, quiz, "host", Role::Host).await;
    let mut players = Vec::new();
    for i in 0..phones {
        players.push(phone(sys, quiz, &format!("player{i}"), Role::Player).await);
    }
    host.conn.host(HostCommand::Start, None).await.unwrap();
    let mut acked = 0;
    for q in 0..questions {
        during(q).await;
        let mut answers = Vec::new();
        for (i, p) in players.iter().enumerate() {
            p.until(Duration::from_secs(30), |v| {
                (v.phase == Phase::Open && v.question.as_ref().is_some_and(|f| f.index == q))
                    .then_some(())
            })
            .await
            .expect("the question opens");
            let conn = p.conn.clone();
            answers.push(tokio::spawn(async move {
                conn.answer(q, Answer::Choice((q + i as u32) % 2)).await
            }));
        }
        for a in answers {
            a.await
                .unwrap()
                .expect("acknowledged: the answer path does not wait on Redis");
            acked += 1;
        }
        host.until(Duration::from_secs(30), |v| {
            (v.phase == Phase::Closed && v.question.as_ref().is_some_and(|f| f.index == q))
                .then_some(())
        })
        .await
        .expect("closes");
        host.conn.host(HostCommand::Reveal, None).await.unwrap();
        host.conn.host(HostCommand::Next, None).await.unwrap();
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_the_quiz_goes_on_and_redis_catches_up() {
    within(async {
        let (pg, redis, sys) = on_redis("redis-down").await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        let redis = &redis;
        let acked = play_quiz(&sys, &quiz, 5, 4, |q| async move {
            match q {
                // Redis stops answering for a while in the middle of the quiz.
                1 => redis.pause_all().unwrap(),
                3 => redis.resume_all().unwrap(),
                _ => {}
            }
        })
        .await;
        assert_eq!(acked, 20);
        converges(&sys.stores, &quiz).await;
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// An ack means the answer is in the log; Redis is derived. So an answer is acked while
/// Redis hangs (every command waits out a long response timeout): the ack used to wait for
/// the batch's leaderboard write, so a slow Redis was on every ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_acked_while_redis_hangs() {
    within(async {
        let pg = PgDatabase::create("redis-hangs").await.unwrap();
        let redis = RedisCluster::start(3, 1).await.unwrap();
        let mut config = redis_config(&redis);
        // Far longer than the test waits for its acks.
        config.response_timeout_ms = 60_000;
        config.retries = 0;
        let store = StoreConfig {
            redis: Some(config),
            ..StoreConfig::sql(pg.url())
        };
        let sys = system(store).await;
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..Default::default()
        };
        let quiz = sys.create_quiz("host", "faults", settings).await.unwrap();
        let host = phone(&sys, &quiz, "host", Role::Host).await;
        let ana = phone(&sys, &quiz, "ana", Role::Player).await;
        let bo = phone(&sys, &quiz, "bo", Role::Player).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        for p in [&ana, &bo] {
            p.until(Duration::from_secs(10), |v| {
                (v.phase == Phase::Open).then_some(())
            })
            .await
            .expect("open");
        }
        redis.pause_all().unwrap();
        let answered = async {
            let a = ana.conn.answer(0, Answer::Choice(1)).await;
            let b = bo.conn.answer(0, Answer::Choice(0)).await;
            (a, b)
        };
        let (a, b) = tokio::time::timeout(Duration::from_secs(20), answered)
            .await
            .expect("acked while Redis hangs");
        let (a, b) = (a.expect("ana's ack"), b.expect("bo's ack"));
        // One of the two choices is right.
        let (scorer, ack) = if a.points > 0 { (&ana, &a) } else { (&bo, &b) };
        assert!(ack.points > 0 && a.points.min(b.points) == 0, "{a:?} {b:?}");
        // The phones' own leaderboards move without Redis too.
        let view = scorer
            .until(Duration::from_secs(10), |v| {
                (v.score == ack.points).then(|| v.clone())
            })
            .await;
        assert!(view.is_some(), "the scorer's board shows the points");
        redis.resume_all().unwrap();
        converges(&sys.stores, &quiz).await;
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiz_whose_redis_keys_vanished_is_rebuilt_from_the_log() {
    within(async {
        let (pg, redis, sys) = on_redis("redis-flushed").await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        let redis = &redis;
        let acked = play_quiz(&sys, &quiz, 5, 4, |q| async move {
            if q == 2 {
                // Redis loses everything (a restart without persistence, a bad failover).
                redis.flush_all().await.unwrap();
            }
        })
        .await;
        assert_eq!(acked, 20);
        converges(&sys.stores, &quiz).await;
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// Redis loses everything after a quiz has ended, so no owner writes the quiz again: the
/// router's final standings and the league still come back equal to the log, never as
/// figures that look right and are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_standings_of_an_ended_quiz_are_repaired_after_redis_lost_them() {
    within(async {
        let (pg, redis, sys) = on_redis("redis-ended").await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        play_quiz(&sys, &quiz, 4, 4, |_| async {}).await;
        converges(&sys.stores, &quiz).await;
        let league = |stores: Stores| async move {
            stores
                .leaderboards
                .league(&League::AllTime, 10)
                .await
                .unwrap()
        };
        let league_before = league(sys.stores.clone()).await;
        assert!(!league_before.is_empty(), "the quiz counted in the league");
        let viewer = sys.client("viewer", Role::Player).await.unwrap();
        let mut standings = None;
        for _ in 0..100 {
            match viewer.standings(&quiz, None).await {
                Ok(s) => {
                    standings = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let before = standings.expect("the quiz ends");

        redis.flush_all().await.unwrap();
        // Many phones ask at once: one rebuild serves them all.
        let reads: Vec<_> = (0..20)
            .map(|_| {
                let (viewer, quiz) = (viewer.clone(), quiz.clone());
                tokio::spawn(async move { viewer.standings(&quiz, None).await })
            })
            .collect();
        let mut served = Vec::new();
        for read in reads {
            served.push(read.await.unwrap().expect("standings"));
        }
        let after = served[0].clone();
        assert!(
            served.iter().all(|s| *s == after),
            "every reader gets the same"
        );
        let metrics = format!("http://{}/metrics", sys.router().admin_addr());
        let metrics = reqwest::get(metrics).await.unwrap().text().await.unwrap();
        assert!(
            metrics.contains(r#"quiz_router_standings_repairs_total{result="ok"} 1"#),
            "one rebuild: {}",
            metrics
                .lines()
                .filter(|l| l.contains("standings_repairs"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let nicknames: std::collections::HashMap<_, _> = sys
            .stores
            .quizzes
            .players(&quiz)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.player.0, p.nickname))
            .collect();
        let from_log: Vec<(String, u32)> = standings_from_log(&sys.stores, &quiz)
            .await
            .into_iter()
            .map(|(player, score, _)| (nicknames[&player].clone(), score))
            .collect();
        let served: Vec<(String, u32)> = after
            .standings
            .iter()
            .map(|s| (s.nickname.clone(), s.score))
            .collect();
        assert_eq!(served, from_log, "the standings equal the log");
        assert_eq!(after, before, "the same standings as before the loss");
        assert_eq!(
            league(sys.stores.clone()).await,
            league_before,
            "the league holds the quiz's contributions again"
        );
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// Redis loses the leagues after a quiz has ended and nobody reads its standings: the league
/// audit every router runs at start (and every `league_audit_interval_s`) brings them back
/// from the answer log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leagues_lost_after_a_quiz_ended_come_back_from_the_log() {
    within(async {
        let (pg, redis, mut sys) = on_redis("redis-leagues").await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        play_quiz(&sys, &quiz, 4, 4, |_| async {}).await;
        converges(&sys.stores, &quiz).await;
        let stores = sys.stores.clone();
        let all_time = || {
            let stores = stores.clone();
            async move {
                stores
                    .leaderboards
                    .league(&League::AllTime, 10)
                    .await
                    .unwrap()
            }
        };
        let mut before = all_time().await;
        for _ in 0..100 {
            if before.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            before = all_time().await;
        }
        assert_eq!(
            before.len(),
            2,
            "two of the four players scored: {before:?}"
        );

        redis.flush_all().await.unwrap();
        assert!(all_time().await.is_empty(), "the league is gone");
        sys.restart_router().await.unwrap();
        let mut after = Vec::new();
        for _ in 0..100 {
            after = all_time().await;
            if !after.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(after, before, "the league equals the log again");
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_answer_five_times_over_two_connections_counts_once_on_postgres_and_redis() {
    within(async {
        let (pg, _redis, sys) = on_redis("dup").await;
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..Default::default()
        };
        let quiz = sys.create_quiz("host", "faults", settings).await.unwrap();
        let host = phone(&sys, &quiz, "host", Role::Host).await;
        let a = phone(&sys, &quiz, "ana", Role::Player).await;
        let b = phone(&sys, &quiz, "ana", Role::Player).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        for p in [&a, &b] {
            p.until(Duration::from_secs(10), |v| {
                (v.phase == Phase::Open).then_some(())
            })
            .await
            .unwrap();
        }
        let id = quiz_protocol::AnswerId::parse("ana-once").unwrap();
        let sends: Vec<_> = (0..5)
            .map(|i| {
                let conn = if i % 2 == 0 {
                    a.conn.clone()
                } else {
                    b.conn.clone()
                };
                let id = id.clone();
                tokio::spawn(async move { conn.answer_with_id(0, id, Answer::Choice(0)).await })
            })
            .collect();
        let mut acks = Vec::new();
        for s in sends {
            acks.push(s.await.unwrap().expect("acknowledged"));
        }
        assert!(
            acks.windows(2).all(|w| w[0] == w[1]),
            "one ack, five times: {acks:?}"
        );
        assert_eq!(sys.stores.answers.answers(&quiz).await.unwrap().len(), 1);
        converges(&sys.stores, &quiz).await;
        let rows = sys.stores.leaderboards.standings(&quiz, 10).await.unwrap();
        assert_eq!(rows[0].score, acks[0].points, "counted once in Redis too");
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_command_restores_a_lost_leaderboard_from_the_log() {
    within(async {
        let (pg, redis, sys) = on_redis("rebuild").await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        play_quiz(&sys, &quiz, 3, 4, |_| async {}).await;
        converges(&sys.stores, &quiz).await;
        redis.flush_all().await.unwrap();
        assert!(
            sys.stores
                .leaderboards
                .standings(&quiz, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // `quizctl rebuild --quiz CODE --node-admin URL`
        let admin = format!("http://{}", sys.node(0).admin_addr());
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quizctl"))
            .args(["rebuild", "--quiz", quiz.as_str(), "--node-admin", &admin])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        converges(&sys.stores, &quiz).await;
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

/// Redis acknowledges a write, then a failover loses it: nothing errors, but the quiz's Redis
/// data no longer counts every answer of the log. The node notices on its next write (the
/// count the script returns is short) and rebuilds from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_redis_lost_silently_are_noticed_and_rebuilt() {
    within(async {
        let (pg, redis, sys) = on_redis("redis-lost").await;
        let quiz = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        let seen = format!("{{quiz:{quiz}}}:seen");
        let port = redis.ports()[0];
        let redis_cli = |args: Vec<String>| async move {
            let out = tokio::process::Command::new("redis-cli")
                .args(["-c", "-p", &port.to_string()])
                .args(&args)
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (seen2, cli) = (seen.clone(), &redis_cli);
        play_quiz(&sys, &quiz, 3, 4, |q| {
            let seen = seen2.clone();
            async move {
                if q == 2 {
                    // Redis is written after the ack, off its path: wait for the answer of
                    // player 1 to question 0 to be there, then lose it, as if it never reached
                    // the replica that is master now.
                    for _ in 0..200 {
                        if cli(vec!["SISMEMBER".into(), seen.clone(), "1:0".into()]).await == "1" {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    assert_eq!(cli(vec!["SREM".into(), seen, "1:0".into()]).await, "1");
                }
            }
        })
        .await;
        let mut restored = String::new();
        for _ in 0..100 {
            restored = redis_cli(vec!["SISMEMBER".into(), seen.clone(), "1:0".into()]).await;
            if restored == "1" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            restored, "1",
            "the lost answer is back: rebuilt from the log"
        );
        converges(&sys.stores, &quiz).await;
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leagues_add_up_every_players_quiz_totals() {
    within(async {
        let (pg, _redis, sys) = on_redis("leagues").await;
        let first = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        play_quiz(&sys, &first, 3, 4, |_| async {}).await;
        let second = sys
            .create_quiz("host", "faults", QuizSettings::default())
            .await
            .unwrap();
        play_quiz(&sys, &second, 3, 4, |_| async {}).await;

        // What each user scored in the two quizzes, from the answer logs.
        let mut want: std::collections::BTreeMap<String, u64> = Default::default();
        for quiz in [&first, &second] {
            let players = sys.stores.quizzes.players(quiz).await.unwrap();
            for r in sys.stores.answers.answers(quiz).await.unwrap() {
                let user = players
                    .iter()
                    .find(|p| p.player == r.player)
                    .unwrap()
                    .user
                    .to_string();
                *want.entry(user).or_default() += u64::from(r.points);
            }
        }
        // A league lists the users who scored.
        want.retain(|_, points| *points > 0);
        let mut got: std::collections::BTreeMap<String, u64> = Default::default();
        for _ in 0..100 {
            let rows = sys
                .stores
                .leaderboards
                .league(&quiz_store::League::AllTime, 100)
                .await
                .unwrap();
            got = rows
                .into_iter()
                .map(|r| (r.user.to_string(), r.points))
                .collect();
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            got, want,
            "the all-time league is the sum of each user's quiz totals"
        );
        sys.shutdown().await;
        pg.drop_database().await.unwrap();
    })
    .await;
}
