//! 200 phones answer a 10-question quiz on PostgreSQL + Redis Cluster while the node process is
//! SIGKILLed twice at random moments and started again. Every acknowledged answer must be in
//! the log exactly once, and the final Redis leaderboard must equal the one computed from the
//! log and what the phones were last told.

mod support;

use std::time::Duration;

use quiz_protocol::client::Role;
use quiz_protocol::{Answer, HostCommand, Phase, QuizSettings};
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
                    &nickname(i),
                    Role::Player,
                )
                .await,
            );
        }
        let acks = Acks::default();
        let mut drivers = Vec::new();
        for (i, phone) in phones.iter().cloned().enumerate() {
            let acks = acks.clone();
            let think = Duration::from_millis(rng.random_range(0..1500));
            drivers.push(tokio::spawn(async move {
                play(i, phone, QUESTIONS, think, acks).await
            }));
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

        let acked = acks.lock().unwrap().len();
        assert!(
            acked > PHONES * 5,
            "most answers were acknowledged ({acked}); node log:\n{}",
            node.log()
        );
        let logged = check_outcome(&cluster.stores, &quiz, &phones, &acks).await;
        eprintln!(
            "{acked} answers acknowledged, {logged} in the log, node started {} times",
            node.starts
        );
        RealCluster { node, ..cluster }.stop().await;
    })
    .await;
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
