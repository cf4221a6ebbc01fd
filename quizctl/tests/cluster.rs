//! The cluster as separate OS processes (`quizctl router` and three `quizctl node`) on
//! PostgreSQL and a Redis Cluster:
//! - 300 phones spread over every edge play a quiz while its owner is SIGKILLed mid-question:
//!   the quiz goes on on another node, every acknowledged answer is counted exactly once, and
//!   every phone gets the final standings;
//! - a zombie: the owner is SIGSTOPped past its lease, another node takes the quiz over, the
//!   old one is SIGCONTed with an answer waiting in its socket, and nothing it writes lands;
//! - a node short of descriptors, its public port flooded with idle sockets, keeps its admin
//!   port, its playing phones and room for new ones.

mod support;

use std::time::Duration;

use quiz_local::processes::{Plan, ProcessCluster};
use quiz_protocol::client::{AnswerFrame, ClientMessage, Role, ServerMessage};
use quiz_protocol::{AnswerId, HostCommand, Phase, QuizSettings};
use rand::{Rng, SeedableRng};
use support::*;

const PHONES: usize = 300;
const QUESTIONS: u32 = 8;

/// Three nodes and a router, each its own `quizctl` process, on `backends`.
async fn processes(backends: &Backends, name: &str) -> (ProcessCluster, std::path::PathBuf) {
    processes_with(backends, name, |_| {}).await
}

/// The same, with `adjust` applied to each node's configuration.
async fn processes_with(
    backends: &Backends,
    name: &str,
    adjust: impl Fn(&mut quiz_node::Config),
) -> (ProcessCluster, std::path::PathBuf) {
    processes_planned(backends, name, |plan| {
        plan.nodes.iter_mut().for_each(&adjust)
    })
    .await
}

/// The same, with `adjust` applied to the whole plan.
async fn processes_planned(
    backends: &Backends,
    name: &str,
    adjust: impl FnOnce(&mut Plan),
) -> (ProcessCluster, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("quiz-mp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut plan = Plan::on_free_ports(&backends.store, 3, &dir.join("certs")).expect("a plan");
    for node in &mut plan.nodes {
        // Phones notice a frozen edge by its silence: ping often.
        node.limits.ping_interval_s = 1;
        node.limits.idle_timeout_s = 10;
    }
    adjust(&mut plan);
    let cluster = ProcessCluster::launch(env!("CARGO_BIN_EXE_quizctl").as_ref(), &dir, plan)
        .await
        .expect("the cluster starts");
    (cluster, dir)
}

/// Every process's log, for a failure message.
fn logs(cluster: &ProcessCluster) -> String {
    let mut out = String::new();
    for p in cluster.nodes.iter().chain([&cluster.router]) {
        out += &format!("\n===== {} =====\n{}\n", p.name, p.log_tail(60));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_is_killed_mid_question_and_every_acknowledged_answer_counts_once() {
    within(async {
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let backends = Backends::start("mp_failover").await;
        let (mut cluster, dir) = processes(&backends, "failover").await;
        let router = cluster.router_url();
        let set = single_choice_set("failover", QUESTIONS, 30);
        let quiz = create_quiz(&router, &set, QuizSettings::default()).await;
        let owner = cluster.owner_of(&quiz).await.unwrap();
        let owner_name = cluster.plan.nodes[owner].node_id.clone();
        eprintln!("{quiz} is owned by {owner_name}");

        // The phones spread evenly over the three edges; the host on the owner's.
        let host_router = dev_client(&router, "host", Role::Host).await;
        let host = Phone::connect(&host_router, &quiz, "", Role::Host).await;
        let mut phones = Vec::new();
        for i in 0..PHONES {
            let client = dev_client(&router, &format!("u{i}"), Role::Player).await;
            let edge = cluster.ws_url(i % 3);
            phones.push(
                Phone::connect_at(&client, &quiz, &nickname(i), Role::Player, Some(&edge)).await,
            );
        }
        let acks = Acks::default();
        let mut drivers = Vec::new();
        for (i, phone) in phones.iter().cloned().enumerate() {
            let think = Duration::from_millis(rng.random_range(0..2500));
            drivers.push(tokio::spawn(play(i, phone, QUESTIONS, think, acks.clone())));
        }

        // The owner dies at a random moment of question 2, 3 or 4.
        let kill_at = rng.random_range(2..5u32);
        let kill_delay = Duration::from_millis(rng.random_range(0..2000));
        let watcher = host.clone();
        let killed = async {
            watcher
                .until(Duration::from_secs(200), |v| {
                    (v.phase == Phase::Open && v.question.as_ref().is_some_and(|q| q.index >= kill_at))
                        .then_some(())
                })
                .await
                .expect("the quiz gets there");
            tokio::time::sleep(kill_delay).await;
            let answers_before = acks.lock().unwrap().len();
            cluster.nodes[owner].kill().await;
            eprintln!("SIGKILL {owner_name} at question {kill_at} (+{kill_delay:?}), {answers_before} answers acked");
        };
        tokio::join!(drive_host(&host), killed);
        for d in drivers {
            d.await.unwrap();
        }

        // The quiz moved: the ring lost the dead node, and another node owns it now.
        let ring = cluster.wait_for_ring(2).await.unwrap();
        assert!(ring.members.iter().all(|m| m.node.0 != owner_name));
        let record = backends.stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
        let new_owner = record.owner.clone().expect("an owner").0;
        assert_ne!(new_owner, owner_name, "another node took the quiz over");
        assert!(record.epoch.0 >= 2, "claimed with a higher epoch ({})", record.epoch.0);

        let acked = acks.lock().unwrap().len();
        assert!(
            acked > PHONES * (QUESTIONS as usize - 2),
            "most answers were acknowledged ({acked}); logs:{}",
            logs(&cluster)
        );
        let logged = check_outcome(&backends.stores, &quiz, &phones, &acks).await;
        let resumed = phones
            .iter()
            .filter(|p| p.joins.load(std::sync::atomic::Ordering::SeqCst) > 1)
            .count();
        eprintln!(
            "REPORT {acked} answers acknowledged, {logged} in the log; {new_owner} took over; \
             {resumed} phones rejoined"
        );
        cluster.shutdown().await;
        backends.stop().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_owner_paused_past_its_lease_writes_nothing_and_lets_the_quiz_go() {
    within(async {
        let backends = Backends::start("mp_zombie").await;
        let (cluster, dir) = processes(&backends, "zombie").await;
        let router = cluster.router_url();
        let settings = QuizSettings {
            close_when_all_answered: false,
            ..QuizSettings::default()
        };
        let set = single_choice_set("zombie", 3, 120);
        let quiz = create_quiz(&router, &set, settings).await;
        let owner = cluster.owner_of(&quiz).await.unwrap();
        let other = (owner + 1) % 3;
        let owner_name = cluster.plan.nodes[owner].node_id.clone();

        // The host and two phones on another edge; a raw socket on the owner's own edge.
        let host_router = dev_client(&router, "host", Role::Host).await;
        let host = Phone::connect_at(&host_router, &quiz, "", Role::Host, Some(&cluster.ws_url(other))).await;
        let mut phones = Vec::new();
        for i in 0..2 {
            let client = dev_client(&router, &format!("u{i}"), Role::Player).await;
            phones.push(Phone::connect_at(&client, &quiz, &nickname(i), Role::Player, Some(&cluster.ws_url(other))).await);
        }
        let late = dev_client(&router, "late", Role::Player).await;
        let ticket = late.join(&quiz, "Late", None).await.unwrap();
        let mut raw = quiz_client::RawSocket::connect(&cluster.ws_url(owner), Some(&ticket.session_token))
            .await
            .expect("a socket to the owner");
        raw.send(&ClientMessage::Join { last_seq: None }).await.unwrap();

        host.conn.host(HostCommand::Start, None).await.unwrap();
        for (i, p) in phones.iter().enumerate() {
            p.until(Duration::from_secs(10), |v| v.question.clone()).await.expect("question 0");
            p.conn.answer(0, quiz_protocol::Answer::Choice(i as u32)).await.expect("acked by the owner");
        }
        let before = backends.stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
        assert_eq!(before.owner.as_ref().map(|n| n.0.as_str()), Some(owner_name.as_str()));

        // Frozen past its lease: the ring drops it and another node claims the quiz.
        cluster.nodes[owner].pause();
        cluster.wait_for_ring(2).await.expect("the ring drops the frozen node");
        let taken = loop {
            let record = backends.stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
            if record.epoch > before.epoch {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(taken.owner.as_ref().map(|n| n.0.as_str()), Some(owner_name.as_str()));
        // The quiz goes on under the new owner: question 1, answered.
        // (`next` on an open question closes and reveals it; the second opens question 1.)
        let on_question_1 = |v: &quiz_client::QuizView| {
            v.phase == Phase::Open && v.question.as_ref().is_some_and(|q| q.index == 1)
        };
        while !on_question_1(&host.view()) {
            if let Err(e) = host.conn.host(HostCommand::Next, None).await {
                eprintln!("next: {e}");
            }
            host.until(Duration::from_secs(2), |v| on_question_1(v).then_some(()))
                .await;
        }
        for (i, p) in phones.iter().enumerate() {
            p.until(Duration::from_secs(30), |v| v.question.as_ref().filter(|q| q.index == 1).map(|_| ()))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "question 1 under the new owner; phone {:?}\nhost {:?}\nlogs:{}",
                        p.view(),
                        host.view(),
                        logs(&cluster)
                    )
                });
            p.conn.answer(1, quiz_protocol::Answer::Choice(i as u32)).await.expect("acked by the new owner");
        }

        // While it is frozen, an answer to question 0 waits in the old owner's socket; it wakes.
        let stale = AnswerId::parse("zombie-answer").unwrap();
        raw.send(&ClientMessage::Answer(AnswerFrame {
            question: 0,
            answer_id: stale.clone(),
            choice: Some(0),
            ..Default::default()
        }))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.nodes[owner].resume();

        // What the raw socket hears from the woken node: never an ack for that answer.
        let heard = tokio::time::timeout(Duration::from_secs(5), async {
            let mut heard = Vec::new();
            while let Ok(message) = raw.recv_message().await {
                let ack = matches!(&message, ServerMessage::Ack(a) if a.answer_id == stale);
                heard.push(format!("{message:?}").chars().take(100).collect::<String>());
                assert!(!ack, "the zombie acknowledged an answer: {heard:?}");
            }
            heard
        })
        .await;
        eprintln!("the raw socket heard: {heard:?}");

        // It let the quiz go by itself.
        let zombie_log = loop {
            let log = cluster.nodes[owner].log();
            if log.contains("lease lapsed") || log.contains("fenced") {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            zombie_log.contains("handing the quiz off") || zombie_log.contains("fenced"),
            "the old owner stopped serving the quiz:\n{}",
            cluster.nodes[owner].log_tail(40)
        );

        // None of its writes landed: the log holds exactly the acknowledged answers.
        let log = backends.stores.answers.answers(&quiz).await.unwrap();
        assert!(log.iter().all(|r| r.answer_id != stale), "the zombie's answer is not in the log");
        assert_eq!(log.len(), 4, "two answers to each of two questions: {log:?}");

        // The quiz still ends with standings that equal the log, wherever it lives now.
        host.conn.host(HostCommand::End, None).await.unwrap();
        let players = backends.stores.quizzes.players(&quiz).await.unwrap();
        for p in &phones {
            let player = players.iter().find(|r| r.nickname == p.name).unwrap().player;
            let score: u32 = log.iter().filter(|r| r.player == player).map(|r| r.points).sum();
            p.until(Duration::from_secs(20), |v| (v.phase == Phase::Ended && v.score == score).then_some(()))
                .await
                .unwrap_or_else(|| panic!("{} ends with {score}; logs:{}", p.name, logs(&cluster)));
        }
        eprintln!(
            "REPORT zombie {owner_name}: quiz claimed at epoch {} by {:?} while it slept; its stale answer did not land",
            taken.epoch.0, taken.owner
        );
        cluster.shutdown().await;
        backends.stop().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_waiting_on_a_frozen_owner_goes_to_the_new_owner() {
    within(async {
        let backends = Backends::start("mp_reroute").await;
        // Edges wait for an owner far longer than a phone waits for its ack: only following
        // the quiz to its new owner gets the answer acknowledged in time.
        let (cluster, dir) = processes_with(&backends, "reroute", |node| {
            let c = node.cluster.as_mut().expect("clustered");
            c.peer_timeout_ms = 600_000;
            c.peer_idle_timeout_ms = 600_000;
        })
        .await;
        let router = cluster.router_url();
        let set = single_choice_set("reroute", 2, 120);
        let quiz = create_quiz(&router, &set, QuizSettings::default()).await;
        let owner = cluster.owner_of(&quiz).await.unwrap();
        let other = (owner + 1) % 3;
        let host_router = dev_client(&router, "host", Role::Host).await;
        let host = Phone::connect_at(
            &host_router,
            &quiz,
            "",
            Role::Host,
            Some(&cluster.ws_url(other)),
        )
        .await;
        let client = dev_client(&router, "u0", Role::Player).await;
        let phone = Phone::connect_at(
            &client,
            &quiz,
            &nickname(0),
            Role::Player,
            Some(&cluster.ws_url(other)),
        )
        .await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        phone
            .until(Duration::from_secs(10), |v| v.question.clone())
            .await
            .expect("question 0");

        // The owner freezes; the answer goes to its edge, which forwards it to the frozen
        // owner and waits. The phone's SDK gives up after its answer timeout (60 s).
        cluster.nodes[owner].pause();
        let ack = phone.conn.answer(0, quiz_protocol::Answer::Choice(0)).await;
        let ack = ack.unwrap_or_else(|e| {
            panic!(
                "the answer was not acknowledged: {e}; logs:{}",
                logs(&cluster)
            )
        });
        let record = backends.stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
        let new_owner = record.owner.expect("an owner").0;
        assert_ne!(
            new_owner, cluster.plan.nodes[owner].node_id,
            "acknowledged by the new owner"
        );
        let log = backends.stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (&log[0].answer_id, log[0].points),
            (&ack.answer_id, ack.points)
        );

        cluster.nodes[owner].resume();
        cluster.shutdown().await;
        backends.stop().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_restarts_is_reached_on_a_new_connection() {
    within(async {
        let backends = Backends::start("mp_restarted_peer").await;
        // A stale connection to the old process would hang for the whole peer timeout, far
        // longer than a phone waits.
        let (mut cluster, dir) = processes_with(&backends, "restarted-peer", |node| {
            let c = node.cluster.as_mut().expect("clustered");
            c.peer_timeout_ms = 600_000;
            c.peer_idle_timeout_ms = 600_000;
        })
        .await;
        let router = cluster.router_url();
        let set = single_choice_set("restarted-peer", 2, 120);
        // Two quizzes owned by the same node.
        let mut quizzes: Vec<(quiz_protocol::QuizId, usize)> = Vec::new();
        while quizzes.len() < 2 {
            let quiz = create_quiz(&router, &set, QuizSettings::default()).await;
            let owner = cluster.owner_of(&quiz).await.unwrap();
            if quizzes.first().is_none_or(|(_, o)| *o == owner) {
                quizzes.push((quiz, owner));
            }
        }
        let owner = quizzes[0].1;
        let edge = cluster.ws_url((owner + 1) % 3);

        // A phone on another edge makes that edge open a connection to the owner.
        let first = dev_client(&router, "u0", Role::Player).await;
        let phone = Phone::connect_at(
            &first,
            &quizzes[0].0,
            &nickname(0),
            Role::Player,
            Some(&edge),
        )
        .await;
        phone.conn.close().await;

        // The owner dies and comes back as a new process.
        cluster.nodes[owner].kill().await;
        cluster.wait_for_ring(2).await.unwrap();
        cluster.nodes[owner].start().await.unwrap();
        cluster.wait_for_ring(3).await.unwrap();
        assert_eq!(cluster.owner_of(&quizzes[1].0).await.unwrap(), owner);

        // A phone joins its other quiz through the same edge, and answers.
        let second = dev_client(&router, "u1", Role::Player).await;
        let phone = Phone::connect_at(
            &second,
            &quizzes[1].0,
            &nickname(1),
            Role::Player,
            Some(&edge),
        )
        .await;
        let host_router = dev_client(&router, "host", Role::Host).await;
        let host =
            Phone::connect_at(&host_router, &quizzes[1].0, "", Role::Host, Some(&edge)).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        phone
            .until(Duration::from_secs(30), |v| v.question.clone())
            .await
            .expect("question 0");
        let ack = phone.conn.answer(0, quiz_protocol::Answer::Choice(0)).await;
        ack.unwrap_or_else(|e| {
            panic!(
                "the answer was not acknowledged: {e}; logs:{}",
                logs(&cluster)
            )
        });

        cluster.shutdown().await;
        backends.stop().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

/// Idle sockets the flood opens on the owner's public port: more than its open-file limit
/// allows.
const FLOOD: usize = 600;
/// The nodes' soft limit on open files; 256 of them are kept back (`reserved_fds`).
const OPEN_FILES: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_short_of_descriptors_keeps_its_admin_port_and_its_phones_under_a_flood() {
    within(async {
        let backends = Backends::start("mp_descriptors").await;
        let (cluster, dir) = processes_planned(&backends, "descriptors", |plan| {
            plan.node_open_files = Some(OPEN_FILES);
            for node in &mut plan.nodes {
                // Idle sockets are closed only to make room, never by the clock.
                node.listener.header_timeout_ms = 600_000;
            }
        })
        .await;
        let router = cluster.router_url();
        let set = single_choice_set("descriptors", 2, 120);
        let quiz = create_quiz(&router, &set, QuizSettings::default()).await;
        let owner = cluster.owner_of(&quiz).await.unwrap();
        let edge = cluster.ws_url(owner);
        let host_router = dev_client(&router, "host", Role::Host).await;
        let host = Phone::connect_at(&host_router, &quiz, "", Role::Host, Some(&edge)).await;
        let early = dev_client(&router, "u0", Role::Player).await;
        let early = Phone::connect_at(&early, &quiz, &nickname(0), Role::Player, Some(&edge)).await;

        // The flood: idle sockets from four other addresses (each under its own cap on
        // handshakes), opened a few at a time, never a byte.
        let target = cluster.plan.nodes[owner].listen;
        let mut flood = Vec::new();
        for i in 0..FLOOD {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8);
            socket.bind((source, 0).into()).unwrap();
            // A node out of descriptors stops accepting: its backlog fills, connects hang.
            match tokio::time::timeout(Duration::from_secs(10), socket.connect(target)).await {
                Ok(Ok(stream)) => flood.push(stream),
                Ok(Err(e)) => panic!("flood socket {i}: {e}; logs:{}", logs(&cluster)),
                Err(_) => panic!(
                    "flood socket {i} not accepted in 10 s; logs:{}",
                    logs(&cluster)
                ),
            }
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let evicted = cluster
            .node_metric(owner, "quiz_node_listener_closed_total{reason=\"evicted\"}")
            .await
            .unwrap_or(0.0);
        let open = cluster
            .node_metric(owner, "quiz_node_listener_connections")
            .await
            .unwrap();
        eprintln!("flood of {FLOOD}: {open} connections open, {evicted} idle ones evicted");
        assert!(
            open < OPEN_FILES as f64,
            "the listener holds {open} connections with {OPEN_FILES} descriptors"
        );

        // The admin port answers.
        let health = reqwest::Client::new()
            .get(format!("{}/healthz", cluster.admin_url(owner)))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the admin port answers during the flood");
        assert!(health.status().is_success(), "{}", health.status());

        // A new phone gets in (an idle socket makes room), and both play.
        let late = dev_client(&router, "u1", Role::Player).await;
        let late = Phone::connect_at(&late, &quiz, &nickname(1), Role::Player, Some(&edge)).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        for phone in [&early, &late] {
            phone
                .until(Duration::from_secs(30), |v| v.question.clone())
                .await
                .expect("question 0");
            let ack = phone.conn.answer(0, quiz_protocol::Answer::Choice(0)).await;
            ack.unwrap_or_else(|e| panic!("no ack during the flood: {e}; logs:{}", logs(&cluster)));
        }
        let owner_log = cluster.nodes[owner].log();
        assert!(
            !owner_log.contains("Too many open files"),
            "the owner ran out of descriptors:{}",
            logs(&cluster)
        );

        drop(flood);
        cluster.shutdown().await;
        backends.stop().await;
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}
