//! 200 phones answer a 10-question quiz on PostgreSQL + Redis Cluster while the node process is
//! SIGKILLed twice at random moments and started again. Every acknowledged answer must be in
//! the log exactly once, and the final Redis leaderboard must equal the one computed from the
//! log and what the phones were last told.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_client::{AnswerError, RequestError};
use quiz_protocol::client::{Ack, Role};
use quiz_protocol::{Answer, HostCommand, Phase, PlayerNo, QuizSettings};
use rand::{Rng, SeedableRng};
use support::*;

const PHONES: usize = 200;
const QUESTIONS: u32 = 10;

/// Ten single-choice questions; the right option of question q is q % 4.
fn question_set() -> String {
    single_choice_set("restart", QUESTIONS, 12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sigkills_lose_nothing_acknowledged_and_count_nothing_twice() {
    within(async {
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let cluster = RealCluster::start("restart").await;
        let quiz = cluster.quiz(&question_set(), QuizSettings::default()).await;

        let host = Phone::join(&cluster, &quiz, "host", "", Role::Host).await;
        let mut phones = Vec::new();
        for i in 0..PHONES {
            phones.push(
                Phone::join(
                    &cluster,
                    &quiz,
                    &format!("u{i}"),
                    &format!("Pupil-{i}"),
                    Role::Player,
                )
                .await,
            );
        }
        // Every ack a phone got, by (phone, question).
        let acks: Arc<Mutex<HashMap<(usize, u32), Ack>>> = Arc::default();
        let mut drivers = Vec::new();
        for (i, phone) in phones.iter().cloned().enumerate() {
            let acks = acks.clone();
            let think = Duration::from_millis(rng.random_range(0..1500));
            drivers.push(tokio::spawn(
                async move { play(i, phone, think, acks).await },
            ));
        }

        // Two kills, each at a random moment of a random question.
        let kill_at = [rng.random_range(1..5u32), rng.random_range(5..9u32)];
        let kill_delay: Vec<u64> = (0..2).map(|_| rng.random_range(0..2500)).collect();
        let mut node = cluster.node;
        let host_view = host.clone();
        let killer = tokio::spawn(async move {
            for (k, at) in kill_at.iter().enumerate() {
                host_view
                    .until(Duration::from_secs(120), |v| {
                        (v.question.as_ref().is_some_and(|q| q.index >= *at)).then_some(())
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(kill_delay[k])).await;
                eprintln!("SIGKILL {} at question {at}", k + 1);
                node.kill().await;
                node.start().await;
            }
            node
        });

        drive_host(&host).await;
        let node = killer.await.unwrap();
        for d in drivers {
            d.await.unwrap();
        }
        assert_eq!(node.starts, 3, "killed twice, started three times");

        // 1. Every acknowledged answer is in the log, once, with the points it was acked for.
        let log = cluster.stores.answers.answers(&quiz).await.unwrap();
        let players = cluster.stores.quizzes.players(&quiz).await.unwrap();
        let by_nick: HashMap<&str, PlayerNo> = players
            .iter()
            .map(|p| (p.nickname.as_str(), p.player))
            .collect();
        let acks = acks.lock().unwrap().clone();
        assert!(
            acks.len() > PHONES * 5,
            "most answers were acknowledged ({}); node log:\n{}",
            acks.len(),
            node.log()
        );
        for ((i, q), ack) in &acks {
            let player = by_nick[format!("Pupil-{i}").as_str()];
            let rows: Vec<_> = log
                .iter()
                .filter(|r| r.player == player && r.question == *q)
                .collect();
            assert_eq!(rows.len(), 1, "phone {i} question {q}");
            assert_eq!(rows[0].answer_id, ack.answer_id);
            assert_eq!(
                rows[0].points, ack.points,
                "phone {i} question {q}: acked points are recorded"
            );
        }

        // 2. The Redis leaderboard equals the one computed from the log...
        let mut expected: HashMap<PlayerNo, (u32, u64)> = HashMap::new();
        for r in &log {
            let e = expected.entry(r.player).or_default();
            e.0 += r.points;
            if r.points > 0 {
                e.1 += u64::from(r.response_ms);
            }
        }
        let mut want: Vec<(PlayerNo, u32, u64)> =
            expected.iter().map(|(p, (s, t))| (*p, *s, *t)).collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        let mut got = Vec::new();
        for _ in 0..200 {
            got = cluster
                .stores
                .leaderboards
                .standings(&quiz, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.player, r.score, r.tiebreak))
                .collect();
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, want, "Redis standings equal the log's");

        // 3. ...and what every phone was last told.
        let rank_of: HashMap<PlayerNo, (u32, u32)> = want
            .iter()
            .enumerate()
            .map(|(i, (p, s, _))| (*p, (i as u32 + 1, *s)))
            .collect();
        for (i, phone) in phones.iter().enumerate() {
            let player = by_nick[format!("Pupil-{i}").as_str()];
            let (rank, score) = rank_of.get(&player).copied().unwrap_or((0, 0));
            let seen = phone
                .until(Duration::from_secs(20), |v| {
                    (v.phase == Phase::Ended && v.score == score && v.rank == rank).then_some(())
                })
                .await;
            let v = phone.view();
            assert!(
                seen.is_some(),
                "phone {i} was last told {} / #{}, the log says {score} / #{rank}",
                v.score,
                v.rank
            );
        }
        eprintln!(
            "{} answers acknowledged, {} in the log, node started {} times",
            acks.len(),
            log.len(),
            node.starts
        );
        RealCluster { node, ..cluster }.stop().await;
    })
    .await;
}

/// A phone answers every question it sees open, once, and keeps what it was acked.
async fn play(
    i: usize,
    phone: Phone,
    think: Duration,
    acks: Arc<Mutex<HashMap<(usize, u32), Ack>>>,
) {
    let mut next = 0;
    while next < QUESTIONS {
        let open = phone
            .until(Duration::from_secs(180), |v| {
                if v.phase == Phase::Ended {
                    return Some(None);
                }
                let q = v.question.as_ref()?;
                (v.phase == Phase::Open && q.index >= next && v.answered.is_none())
                    .then_some(Some(q.index))
            })
            .await
            .flatten();
        let Some(q) = open else { return };
        tokio::time::sleep(think).await;
        let right = !(i + q as usize).is_multiple_of(3);
        let choice = if right { q % 4 } else { (q + 1) % 4 };
        match phone.conn.answer(q, Answer::Choice(choice)).await {
            Ok(ack) => {
                acks.lock().unwrap().insert((i, q), ack);
            }
            // Too late after a restart, or already answered: not acknowledged, nothing to check.
            Err(AnswerError::Rejected(_)) | Err(AnswerError::Timeout { .. }) => {}
            Err(e) => panic!("phone {i}: {e}"),
        }
        next = q + 1;
    }
}

/// The host reveals each question once it has closed and moves on, retrying across restarts.
/// After an accepted command it waits for the view to move, because the `host_ok` can arrive
/// before the broadcast that shows the new phase: looking too early would send `next` twice
/// and skip a question.
async fn drive_host(host: &Phone) {
    loop {
        let view = host
            .until(Duration::from_secs(60), |v| match v.phase {
                Phase::Lobby | Phase::Closed | Phase::Reveal | Phase::Ended => Some(v.clone()),
                _ => None,
            })
            .await
            .unwrap_or_else(|| host.view());
        let command = match view.phase {
            Phase::Ended => return,
            Phase::Lobby => HostCommand::Start,
            Phase::Closed => HostCommand::Reveal,
            Phase::Reveal => HostCommand::Next,
            _ => continue,
        };
        let before = (view.phase, view.question.as_ref().map(|q| q.index));
        match host.conn.host(command, None).await {
            Ok(_) => {
                // If the view does not move (the node died right after acking), look again.
                host.until(Duration::from_secs(5), |v| {
                    ((v.phase, v.question.as_ref().map(|q| q.index)) != before).then_some(())
                })
                .await;
            }
            Err(RequestError::Rejected(_))
            | Err(RequestError::Disconnected)
            | Err(RequestError::NotConnected)
            | Err(RequestError::Timeout) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("host: {e}"),
        }
    }
}

/// A node killed while a question is open comes back with the same question open and the same
/// deadline: phones resume counting down from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_the_open_question_and_its_deadline() {
    within(async {
        let mut cluster = RealCluster::start("deadline").await;
        let quiz = cluster.quiz(&question_set(), QuizSettings::default()).await;
        let host = Phone::join(&cluster, &quiz, "host", "", Role::Host).await;
        let ana = Phone::join(&cluster, &quiz, "ana", "Ana", Role::Player).await;
        let _bo = Phone::join(&cluster, &quiz, "bo", "Bo", Role::Player).await;
        host.conn.host(HostCommand::Start, None).await.unwrap();
        ana.until(Duration::from_secs(10), |v| v.question.clone())
            .await
            .expect("question 0 open");
        let before = cluster
            .stores
            .quizzes
            .quiz(&quiz)
            .await
            .unwrap()
            .unwrap()
            .progress;
        assert_eq!(
            (before.phase, before.question),
            (Phase::Open, Some(0)),
            "the open question is durable"
        );
        let ack = ana.conn.answer(0, Answer::Choice(0)).await.unwrap();

        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.node.kill().await;
        cluster.node.start().await;

        // Ana's phone reconnects by itself and resumes: the same question, still open.
        ana.until(Duration::from_secs(30), |v| {
            let rejoined = ana.joins.load(std::sync::atomic::Ordering::SeqCst) >= 2;
            (rejoined
                && v.phase == Phase::Open
                && v.question.as_ref().is_some_and(|q| q.index == 0))
            .then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "Ana did not resume into the open question: {:?}\n{}",
                ana.view(),
                cluster.node.log()
            )
        });
        let after = cluster
            .stores
            .quizzes
            .quiz(&quiz)
            .await
            .unwrap()
            .unwrap()
            .progress;
        assert_eq!(
            after.opened_at, before.opened_at,
            "the deadline did not move"
        );
        assert_eq!(after.question, Some(0));
        // A phone joining now is told the time left on the original deadline, not a fresh one.
        let cy = Phone::join(&cluster, &quiz, "cy", "Cy", Role::Player).await;
        let left = cy
            .until(Duration::from_secs(10), |v| {
                v.question.as_ref().map(|q| q.ends_in_ms)
            })
            .await
            .expect("Cy sees the open question");
        assert!(
            left <= 12_000 - 1_500,
            "a fresh countdown ({left} ms) would mean a new deadline"
        );
        // Her answer from before the kill still counts, once.
        assert_eq!(
            ana.view().answered.map(|a| a.answer_id),
            Some(ack.answer_id)
        );
        let log = cluster.stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(log.len(), 1);
        cluster.stop().await;
    })
    .await;
}
