//! A Redis master is killed in the middle of a quiz: its replica takes over, the quiz goes on
//! (acks never wait on Redis for long), and afterwards the Redis leaderboard equals the answer
//! log, even though the failover may have lost writes Redis had acknowledged.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_protocol::client::{Ack, Role};
use quiz_protocol::{Answer, HostCommand, Phase, PlayerNo, QuizSettings};
use quiz_store::StandingRow;
use support::*;

const PHONES: usize = 30;
const QUESTIONS: u32 = 8;

fn question_set() -> String {
    single_choice_set("failover", QUESTIONS, 15)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_master_dies_mid_quiz_and_the_leaderboard_still_equals_the_log() {
    within(async {
        let mut cluster = RealCluster::start("redis-failover").await;
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
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let mut drivers = Vec::new();
        for (i, phone) in phones.iter().cloned().enumerate() {
            let acks = acks.clone();
            drivers.push(tokio::spawn(async move {
                for q in 0..QUESTIONS {
                    phone
                        .until(Duration::from_secs(60), |v| {
                            (v.phase == Phase::Open
                                && v.question.as_ref().is_some_and(|f| f.index == q))
                            .then_some(())
                        })
                        .await
                        .expect("the question opens");
                    tokio::time::sleep(Duration::from_millis((i as u64 * 37) % 400)).await;
                    let ack = phone
                        .conn
                        .answer(q, Answer::Choice((q + i as u32) % 4))
                        .await
                        .expect("acked");
                    acks.lock().unwrap().push(ack);
                }
            }));
        }

        let master = cluster
            .redis
            .master_of_key(&format!("{{quiz:{quiz}}}:lb"))
            .await
            .unwrap();
        for q in 0..QUESTIONS {
            if q == 0 {
                host.conn.host(HostCommand::Start, None).await.unwrap();
            }
            if q == 3 {
                // Mid-question: the quiz's master dies; the quiz goes on while Redis fails over.
                cluster.redis.kill(master).await.unwrap();
                eprintln!("killed Redis master {master}");
            }
            host.until(Duration::from_secs(60), |v| {
                (v.phase == Phase::Closed && v.question.as_ref().is_some_and(|f| f.index == q))
                    .then_some(())
            })
            .await
            .expect("closes");
            host.conn.host(HostCommand::Reveal, None).await.unwrap();
            host.conn.host(HostCommand::Next, None).await.unwrap();
            if q == 3 {
                let new = cluster.redis.wait_for_new_master(master).await.unwrap();
                eprintln!("replica {new} took over");
            }
        }
        for d in drivers {
            d.await.unwrap();
        }
        let acked = acks.lock().unwrap().len();
        assert_eq!(
            acked,
            PHONES * QUESTIONS as usize,
            "every answer acknowledged despite the failover"
        );

        // The leaderboard store converges on the log.
        let log = cluster.stores.answers.answers(&quiz).await.unwrap();
        assert_eq!(log.len(), acked);
        let want: Vec<(PlayerNo, u32, u64)> = StandingRow::from_log(&log)
            .into_iter()
            .map(|r| (r.player, r.score, r.tiebreak))
            .collect();
        let mut got = Vec::new();
        for _ in 0..300 {
            if let Ok(rows) = cluster.stores.leaderboards.standings(&quiz, 1000).await {
                got = rows
                    .into_iter()
                    .map(|r| (r.player, r.score, r.tiebreak))
                    .collect();
                if got == want {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            got, want,
            "the Redis leaderboard equals the log after the failover"
        );
        cluster.stop().await;
    })
    .await;
}
