//! The cluster in one process: a router and three nodes with real QUIC between them and real
//! WebSockets to phones. Placement, proxying from every edge, one message per edge per event,
//! failover, handoff (a node joining, a node draining) and a rolling restart.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_client::{AnswerError, RequestError};
use quiz_local::LocalOptions;
use quiz_protocol::client::{Ack, Role, ServerMessage};
use quiz_protocol::ring::{DEFAULT_VNODES_PER_WEIGHT, Ring};
use quiz_protocol::{Answer, HostCommand, NodeId, Phase, QuizId, QuizSettings};
use support::*;

/// Which node (index) owns `quiz` on the stored ring.
async fn owner_of(sys: &System, quiz: &QuizId) -> usize {
    let ring = sys
        .local
        .stores
        .membership
        .ring()
        .await
        .unwrap()
        .expect("a ring");
    let weights: Vec<(NodeId, u32)> = ring
        .members
        .iter()
        .map(|m| (m.node.clone(), m.weight))
        .collect();
    let owner = Ring::new(ring.epoch, &weights, DEFAULT_VNODES_PER_WEIGHT)
        .owner(quiz)
        .cloned()
        .expect("an owner");
    owner
        .0
        .trim_start_matches("node-")
        .parse::<usize>()
        .unwrap()
        - 1
}

fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

async fn node_metrics(sys: &System, i: usize) -> String {
    let url = format!("http://{}/metrics", sys.local.node(i).admin_addr());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// A phone on edge `i` (or the router's choice when `None`).
async fn phone_on(
    sys: &System,
    quiz: &QuizId,
    user: &str,
    role: Role,
    edge: Option<usize>,
) -> Phone {
    let urls = edge.map(|i| vec![sys.local.node(i).ws_url()]);
    let name = if role == Role::Host { "" } else { user };
    Phone::connect_with(sys, quiz, user, name, role, urls, patient()).await
}

/// The host moves the quiz on whenever a question has closed, across restarts and
/// failovers, until it ends. After an accepted command it waits for the view to move: the
/// `host_ok` can arrive before the broadcast, and looking too early would skip a question.
async fn drive_host(host: &Phone) {
    loop {
        let (phase, index) = host
            .until("a step to take", |l| match l.view.phase {
                Phase::Lobby | Phase::Closed | Phase::Reveal | Phase::Ended => {
                    Some((l.view.phase, l.view.question.as_ref().map(|q| q.index)))
                }
                _ => None,
            })
            .await;
        let command = match phase {
            Phase::Ended => return,
            Phase::Lobby => HostCommand::Start,
            Phase::Closed => HostCommand::Reveal,
            _ => HostCommand::Next,
        };
        match host.conn.host(command, None).await {
            Ok(_) => {
                // If the view does not move (the owner died right after acking), look again.
                host.within(Duration::from_secs(5), |l| {
                    let now = (l.view.phase, l.view.question.as_ref().map(|q| q.index));
                    (now != (phase, index)).then_some(())
                })
                .await;
            }
            Err(
                RequestError::Rejected(_)
                | RequestError::Disconnected
                | RequestError::NotConnected
                | RequestError::Timeout,
            ) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("host: {e}"),
        }
    }
}

type Acks = Arc<Mutex<HashMap<(String, u32), Ack>>>;

/// A phone answers every question it sees open, once, and records its acks.
async fn play(phone: Phone, questions: u32, acks: Acks, think: Duration) {
    let mut next = 0;
    while next < questions {
        let open = phone
            .until("a question or the end", |l| {
                let v = &l.view;
                if v.phase == Phase::Ended {
                    return Some(None);
                }
                let q = v.question.as_ref()?;
                (v.phase == Phase::Open && q.index >= next && v.answered.is_none())
                    .then_some(Some(q.index))
            })
            .await;
        let Some(q) = open else { return };
        tokio::time::sleep(think).await;
        match phone.conn.answer(q, Answer::Choice(q % 4)).await {
            Ok(ack) => {
                acks.lock().unwrap().insert((phone.name.clone(), q), ack);
            }
            Err(AnswerError::Rejected(_) | AnswerError::Timeout { .. }) => {}
            Err(e) => panic!("{}: {e}", phone.name),
        }
        next = q + 1;
    }
}

/// Every acknowledged answer is in the log once, with its points, and the leaderboard store
/// converges on the log.
async fn check_log(sys: &System, quiz: &QuizId, acks: &Acks) {
    let log = sys.local.stores.answers.answers(quiz).await.unwrap();
    let players = sys.local.stores.quizzes.players(quiz).await.unwrap();
    let acks = acks.lock().unwrap().clone();
    for ((name, q), ack) in &acks {
        let player = players
            .iter()
            .find(|p| &p.nickname == name)
            .expect("a player")
            .player;
        let rows: Vec<_> = log
            .iter()
            .filter(|r| r.player == player && r.question == *q)
            .collect();
        assert_eq!(rows.len(), 1, "{name} question {q}: once in the log");
        assert_eq!(rows[0].answer_id, ack.answer_id);
        assert_eq!(rows[0].points, ack.points);
    }
    assert!(!acks.is_empty());
}

const QUESTIONS: u32 = 5;

async fn cluster() -> System {
    System::start_with(LocalOptions::cluster_for_test(3)).await
}

async fn quiz(sys: &System) -> QuizId {
    let settings = QuizSettings {
        close_when_all_answered: true,
        ..QuizSettings::default()
    };
    sys.local
        .create_quiz("host", "e2e-cluster", settings)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_edge_proxies_to_the_owner_with_one_message_per_edge_per_event() {
    within(async {
        let sys = cluster().await;
        let quiz = quiz(&sys).await;
        let owner = owner_of(&sys, &quiz).await;
        // The router sends a phone to the owner's edge first.
        let router = sys.router_as("probe", Role::Player).await;
        let ticket = router.join(&quiz, "Probe", None).await.unwrap();
        assert_eq!(ticket.ws_urls[0], sys.local.node(owner).ws_url());
        assert_eq!(ticket.ws_urls.len(), 3, "every edge, owner first");

        // Three phones on each edge, and the host on a non-owner edge.
        let host = phone_on(&sys, &quiz, "host", Role::Host, Some((owner + 1) % 3)).await;
        let mut phones = Vec::new();
        for edge in 0..3 {
            for k in 0..3 {
                phones.push(phone_on(&sys, &quiz, &format!("e{edge}p{k}"), Role::Player, Some(edge)).await);
            }
        }
        let acks = Acks::default();
        let players: Vec<_> = phones
            .iter()
            .cloned()
            .map(|p| tokio::spawn(play(p, QUESTIONS, acks.clone(), Duration::ZERO)))
            .collect();
        drive_host(&host).await;
        for p in players {
            p.await.unwrap();
        }
        assert_eq!(acks.lock().unwrap().len(), 9 * QUESTIONS as usize, "every answer from every edge acked");
        check_log(&sys, &quiz, &acks).await;
        for p in &phones {
            let seqs: Vec<u64> = p
                .log
                .lock()
                .unwrap()
                .frames
                .iter()
                .filter(|f| !matches!(f, ServerMessage::Welcome(_) | ServerMessage::Resumed(_)))
                .filter_map(|f| f.seq())
                .collect();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{} missed events: {seqs:?}", p.name);
            assert!(p.view().ended.is_some(), "{} saw the end", p.name);
        }
        // One message per edge per event: each of the two other edges received exactly the
        // events the owner sent it, whatever the number of phones on it.
        let (mut sent, mut received) = (0, vec![0, 0]);
        for _ in 0..100 {
            // Read the edges first: whatever they counted, the owner had sent.
            received.clear();
            for edge in (0..3).filter(|e| *e != owner) {
                let m = node_metrics(&sys, edge).await;
                received.push(metric(&m, r#"quiz_node_cluster_messages_total{kind="event_in"} "#));
            }
            sent = metric(&node_metrics(&sys, owner).await, r#"quiz_node_cluster_messages_total{kind="event"} "#);
            if sent == received[0] + received[1] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // (The two edges subscribed a moment apart, so one may have missed an event from
        // before its subscription; it got the full leaderboard instead.)
        assert!(received.iter().all(|r| *r > 0));
        assert_eq!(sent, received[0] + received[1], "one message per edge per event, none lost");
        let frames: u64 = {
            let mut total = 0;
            for edge in 0..3 {
                total += metric(&node_metrics(&sys, edge).await, "quiz_node_frames_sent_total ");
            }
            total
        };
        eprintln!(
            "REPORT owner sent {sent} event messages to 2 remote edges ({received:?}) for 9 phones and a host; \
             edges pushed {frames} frames to phones"
        );
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quizzes_are_spread_over_the_nodes() {
    within(async {
        let sys = cluster().await;
        let mut per_node = [0usize; 3];
        for _ in 0..30 {
            let quiz = quiz(&sys).await;
            per_node[owner_of(&sys, &quiz).await] += 1;
        }
        assert!(
            per_node.iter().all(|n| *n > 0),
            "every node owns some quizzes: {per_node:?}"
        );
        sys.local.shutdown().await;
    })
    .await;
}

/// A phone that prefers edge `first` and falls back to the others in turn.
async fn phone_from(sys: &System, quiz: &QuizId, user: &str, role: Role, first: usize) -> Phone {
    let n = sys.local.nodes.len();
    let urls: Vec<String> = (0..n)
        .map(|k| (first + k) % n)
        .filter_map(|k| sys.local.nodes[k].as_ref().map(|node| node.ws_url()))
        .collect();
    let name = if role == Role::Host { "" } else { user };
    Phone::connect_with(sys, quiz, user, name, role, Some(urls), patient()).await
}

/// Host and `per_edge` phones per edge for `quiz`, playing until the end; returns the acks.
async fn run_quiz(
    sys: &System,
    quiz: &QuizId,
    per_edge: usize,
    tag: &str,
    think: Duration,
) -> (Acks, Vec<Phone>, tokio::task::JoinHandle<()>) {
    let nodes = sys.local.nodes.len();
    let host = phone_from(sys, quiz, "host", Role::Host, 0).await;
    let mut phones = Vec::new();
    for edge in 0..nodes {
        for k in 0..per_edge {
            phones.push(
                phone_from(sys, quiz, &format!("{tag}-e{edge}p{k}"), Role::Player, edge).await,
            );
        }
    }
    let acks = Acks::default();
    let players: Vec<_> = phones
        .iter()
        .cloned()
        .map(|p| tokio::spawn(play(p, QUESTIONS, acks.clone(), think)))
        .collect();
    let done = tokio::spawn(async move {
        drive_host(&host).await;
        for p in players {
            p.await.unwrap();
        }
    });
    (acks, phones, done)
}

async fn check_ended(sys: &System, quiz: &QuizId, acks: &Acks, phones: &[Phone]) {
    for p in phones {
        p.until("the end", |l| l.view.ended.as_ref().map(|_| ()))
            .await;
    }
    check_log(sys, quiz, acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owner_is_replaced_and_nothing_acknowledged_is_lost() {
    within(async {
        let mut sys = cluster().await;
        let quiz = quiz(&sys).await;
        let owner = owner_of(&sys, &quiz).await;
        let epoch = sys
            .local
            .stores
            .membership
            .ring()
            .await
            .unwrap()
            .unwrap()
            .epoch;
        let (acks, phones, done) = run_quiz(&sys, &quiz, 2, "f", Duration::from_millis(200)).await;
        // Mid-quiz, the owner dies without a goodbye.
        phones[0]
            .until("question 2", |l| {
                l.view
                    .question
                    .as_ref()
                    .filter(|q| q.index >= 2)
                    .map(|_| ())
            })
            .await;
        let before = acks.lock().unwrap().len();
        let crashed = tokio::time::Instant::now();
        sys.local.stop_node(owner, true).await;
        sys.local.wait_for_ring(2).await.unwrap();
        done.await.unwrap();
        let after = sys.local.stores.membership.ring().await.unwrap().unwrap();
        assert!(after.epoch > epoch, "a new ring without the dead node");
        let new_owner = owner_of(&sys, &quiz).await;
        assert_ne!(new_owner, owner);
        let record = sys.local.stores.quizzes.quiz(&quiz).await.unwrap().unwrap();
        assert!(
            record.epoch.0 >= 3,
            "claimed again (epoch {})",
            record.epoch.0
        );
        assert_eq!(
            record.owner.map(|n| n.0),
            Some(format!("node-{}", new_owner + 1))
        );
        let phones: Vec<Phone> = phones;
        check_ended(&sys, &quiz, &acks, &phones).await;
        assert!(
            acks.lock().unwrap().len() > before,
            "the quiz went on after the crash"
        );
        // Phones on the surviving edges kept their sockets: each was resynced in place.
        for (i, phone) in phones.iter().enumerate() {
            if i / 2 == owner {
                continue;
            }
            let log = phone.log.lock().unwrap();
            assert_eq!(log.reconnects, 0, "{} reconnected", phone.name);
            let snapshots = log
                .frames
                .iter()
                .filter(|f| matches!(f, ServerMessage::Welcome(_) | ServerMessage::Resumed(_)))
                .count();
            assert_eq!(snapshots, 2, "{}: a welcome, then a resync", phone.name);
        }
        eprintln!(
            "REPORT failover: the quiz ended {:?} after the owner crashed",
            crashed.elapsed()
        );
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quizzes_move_live_when_a_node_joins_and_when_one_drains() {
    within(async {
        let mut sys = cluster().await;
        // Quizzes that a fourth node would take, and some it would not.
        let four: Vec<(NodeId, u32)> = (1..=4).map(|i| (NodeId(format!("node-{i}")), 1)).collect();
        let bigger = Ring::new(99, &four, DEFAULT_VNODES_PER_WEIGHT);
        let (mut moving, mut staying) = (Vec::new(), Vec::new());
        while moving.len() < 2 || staying.is_empty() {
            let q = quiz(&sys).await;
            if bigger.owner(&q).is_some_and(|n| n.0 == "node-4") {
                if moving.len() < 2 {
                    moving.push(q);
                }
            } else if staying.is_empty() {
                staying.push(q);
            }
        }
        let all: Vec<QuizId> = moving.iter().chain(&staying).cloned().collect();
        let mut runs = Vec::new();
        for (i, q) in all.iter().enumerate() {
            runs.push((
                q.clone(),
                run_quiz(&sys, q, 1, &format!("j{i}"), Duration::from_millis(300)).await,
            ));
        }
        // A node joins mid-quiz: the quizzes it now owns move to it.
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        runs[0].1.1[0]
            .until("question 1", |l| {
                l.view
                    .question
                    .as_ref()
                    .filter(|q| q.index >= 1)
                    .map(|_| ())
            })
            .await;
        sys.local.add_node(any, any).await.unwrap();
        sys.local.wait_for_ring(4).await.unwrap();
        // And the owner of the quiz that stays drains: that quiz moves too.
        let staying_owner = owner_of(&sys, &staying[0]).await;
        let drain = format!(
            "http://{}/admin/drain",
            sys.local.node(staying_owner).admin_addr()
        );
        reqwest::Client::new()
            .post(drain)
            .bearer_auth(quiz_local::DEV_ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        sys.local.wait_for_ring(3).await.unwrap();
        for (q, (acks, phones, done)) in runs {
            done.await.unwrap();
            check_ended(&sys, &q, &acks, &phones).await;
            // No node died: every phone kept its socket as its quiz moved.
            for phone in &phones {
                assert_eq!(phone.log.lock().unwrap().reconnects, 0, "{}", phone.name);
            }
            let record = sys.local.stores.quizzes.quiz(&q).await.unwrap().unwrap();
            if moving.contains(&q) {
                assert_eq!(
                    record.owner.map(|n| n.0),
                    Some("node-4".to_owned()),
                    "{q} moved to the new node"
                );
            } else {
                assert_ne!(
                    record.owner.map(|n| n.0),
                    Some(format!("node-{}", staying_owner + 1)),
                    "{q} left the drained node"
                );
            }
        }
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_nothing() {
    within(async {
        let mut sys = cluster().await;
        let quiz = quiz(&sys).await;
        // Slow phones: the quiz lasts longer than the three restarts.
        let (acks, phones, done) = run_quiz(&sys, &quiz, 2, "r", Duration::from_millis(1500)).await;
        for i in 0..3 {
            phones[0]
                .until("a question", |l| l.view.question.as_ref().map(|_| ()))
                .await;
            sys.local.stop_node(i, false).await;
            sys.local.wait_for_ring(2).await.unwrap();
            sys.local.start_node(i).await.unwrap();
            sys.local.wait_for_ring(3).await.unwrap();
        }
        assert!(!done.is_finished(), "the restarts happened during the quiz");
        done.await.unwrap();
        check_ended(&sys, &quiz, &acks, &phones).await;
        sys.local.shutdown().await;
    })
    .await;
}
