//! Redis Cluster's own faults, against the Redis leaderboard store alone: a master dies in
//! the middle of a stream of applies, connections break under running scripts, the script
//! cache is flushed, every key is lost, Redis cannot be reached at all; and a rebuild of a
//! 100,000-answer log. Each destructive case starts a cluster of its own.
//!
//! The standings are checked against a model: the answer log counted by hand, each (player,
//! question) once, in the engine's order.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quiz_engine::AnswerRecord;
use quiz_harness::RedisCluster;
use quiz_protocol::{Epoch, PlayerNo, QuizId, UserId};
use quiz_store::redis::RedisLeaderboard;
use quiz_store::{LeaderboardStore, League, LeagueRow, RedisConfig, StandingRow, StoreError};

use super::{config, namespace, shared_cluster};
use crate::suite::{quiz_id, scored};

/// Every case's overall limit.
const CASE_TIMEOUT: Duration = Duration::from_secs(240);

async fn within<T>(case: impl Future<Output = T>) -> T {
    tokio::time::timeout(CASE_TIMEOUT, case)
        .await
        .expect("the case finished in time")
}

/// Short timeouts, so that a dead master costs a few failed calls rather than long waits.
fn fast_config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        connect_timeout_ms: 500,
        response_timeout_ms: 500,
        ..config(cluster)
    }
}

/// A quiz's standings as its log gives them.
fn model(records: &[AnswerRecord], removed: &[u32]) -> Vec<StandingRow> {
    let mut counted = BTreeSet::new();
    let mut rows: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for r in records {
        if !counted.insert((r.player.0, r.question)) || removed.contains(&r.player.0) {
            continue;
        }
        let row = rows.entry(r.player.0).or_default();
        row.0 += r.points;
        if r.points > 0 {
            row.1 += u64::from(r.response_ms);
        }
    }
    let mut rows: Vec<StandingRow> = rows
        .into_iter()
        .map(|(player, (score, tiebreak))| StandingRow {
            player: PlayerNo(player),
            score,
            tiebreak,
        })
        .collect();
    rows.sort_by_key(|r| (std::cmp::Reverse(r.score), r.tiebreak, r.player));
    rows
}

/// `players` × `questions` answers, with ties, wrong answers and varied times.
fn log_of(quiz: &QuizId, players: u32, questions: u32) -> Vec<AnswerRecord> {
    (0..questions)
        .flat_map(|q| (1..=players).map(move |p| (p, q)))
        .map(|(p, q)| {
            scored(
                quiz,
                p,
                q,
                (p * 7 + q * 13) % 10 * 100,
                100 + (p * 31 + q * 17) % 900,
            )
        })
        .collect()
}

/// The key of a quiz's standings, to find its master.
fn board_key(quiz: &QuizId) -> String {
    format!("{{quiz:{}}}:lb", quiz.as_str())
}

/// Applies a batch until it goes through, as the node's journal does; returns the failures.
/// `logged` is the answer log so far (the batch included: the log is written first); when
/// Redis answers that it lost the quiz (a failover before the replica had its data), the
/// quiz is rebuilt from it, as the journal does, and the batch applied again.
async fn apply_until_done(
    lb: &RedisLeaderboard,
    batch: &[AnswerRecord],
    logged: &[AnswerRecord],
) -> usize {
    let mut failures = 0;
    loop {
        match lb.apply(Epoch::FIRST, batch).await {
            Ok(()) => return failures,
            Err(StoreError::NeedsRebuild(quiz)) => {
                failures += 1;
                eprintln!("Redis lost {quiz}; rebuilding it from the log");
                if let Err(e) = lb.rebuild(&quiz, Epoch::FIRST, logged, &[]).await {
                    eprintln!("rebuild failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err(e) if e.retryable() => {
                failures += 1;
                if failures % 50 == 0 {
                    eprintln!("apply failed {failures} times, last: {e}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("apply failed for good: {e:?}"),
        }
    }
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A master dies while an owner streams applies, retrying each failed one with the same
/// records. Its replica takes over; whatever the failover lost (replication is asynchronous),
/// no answer ever counts twice, and replaying the log counts each lost one exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_counts_every_answer_once() {
    within(async {
        let mut cluster = RedisCluster::start(3, 1).await.unwrap();
        let lb = Arc::new(
            RedisLeaderboard::connect(&fast_config(&cluster))
                .await
                .unwrap(),
        );
        let quiz = quiz_id(1);
        lb.rebuild(&quiz, Epoch::FIRST, &[], &[]).await.unwrap();
        let master = cluster.master_of_key(&board_key(&quiz)).await.unwrap();

        let log = log_of(&quiz, 40, 30);
        let batches = log.len() / 4;
        let acked = Arc::new(AtomicUsize::new(0));
        let applier = {
            let (lb, log, acked) = (lb.clone(), log.clone(), acked.clone());
            tokio::spawn(async move {
                let mut failures = 0;
                for (i, batch) in log.chunks(4).enumerate() {
                    let logged = &log[..(i * 4 + batch.len())];
                    failures += apply_until_done(&lb, batch, logged).await;
                    acked.store(i + 1, Ordering::SeqCst);
                    // An owner's pace: the stream is still going when the master dies.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failures
            })
        };
        while acked.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.kill(master).await.unwrap();
        let acked_at_kill = acked.load(Ordering::SeqCst);
        let new_master = cluster.wait_for_new_master(master).await.unwrap();
        assert_ne!(new_master, master);
        let failures = applier.await.unwrap();
        assert!(
            acked_at_kill < batches,
            "the master died mid-stream ({acked_at_kill} of {batches} batches)"
        );

        let expected = model(&log, &[]);
        let after = lb.standings(&quiz, 1_000).await.unwrap();
        for row in &after {
            let full = expected.iter().find(|e| e.player == row.player).unwrap();
            assert!(
                row.score <= full.score && row.tiebreak <= full.tiebreak,
                "{row:?} counts more than the whole log gives ({full:?})"
            );
        }
        // What the failover lost went with its `seen` marks (one script, one replicated
        // effect): replaying the log counts exactly those.
        apply_until_done(&lb, &log, &log).await;
        assert_eq!(lb.standings(&quiz, 1_000).await.unwrap(), expected);
        eprintln!(
            "master {master} killed after {acked_at_kill}/{batches} batches, {new_master} took \
             over; {failures} applies failed and were retried; {} players counted before the \
             replay",
            after.len()
        );
    })
    .await;
}

/// Connections are killed under the client again and again while it applies (and applies
/// every batch twice, as a retry after a lost reply does): scripts that ran but whose reply was
/// lost run again, and count nothing twice. Then a client is dropped in the middle of a
/// many-chunk apply, and the whole batch is applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_again_after_broken_connections_count_once() {
    within(async {
        let cluster = RedisCluster::start(3, 0).await.unwrap();
        let lb = Arc::new(
            RedisLeaderboard::connect(&fast_config(&cluster))
                .await
                .unwrap(),
        );
        let quiz = quiz_id(2);
        lb.rebuild(&quiz, Epoch::FIRST, &[], &[]).await.unwrap();
        let master = cluster.master_of_key(&board_key(&quiz)).await.unwrap();
        let scripts_before = script_calls(master).await;

        let stop = Arc::new(AtomicBool::new(false));
        let killer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut admin = node(master).await;
                let mut killed = 0i64;
                // A storm of two seconds at most: then the client must get through again.
                let until = Instant::now() + Duration::from_secs(2);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    // Every client but this one (SKIPME is the default).
                    let n: Result<i64, _> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("normal")
                        .query_async(&mut admin)
                        .await;
                    match n {
                        Ok(n) => killed += n,
                        Err(e) => {
                            eprintln!("killer: {e}");
                            admin = node(master).await;
                        }
                    }
                    tokio::task::yield_now().await;
                }
                killed
            })
        };
        let log = log_of(&quiz, 60, 20);
        let mut failures = 0;
        let mut calls = 0;
        for (i, batch) in log.chunks(40).enumerate() {
            let logged = &log[..(i * 40 + batch.len())];
            failures += apply_until_done(&lb, batch, logged).await;
            failures += apply_until_done(&lb, batch, logged).await;
            calls += 2;
        }
        stop.store(true, Ordering::SeqCst);
        let killed = killer.await.unwrap();
        assert!(killed > 0, "no connection was broken");
        assert_eq!(lb.standings(&quiz, 1_000).await.unwrap(), model(&log, &[]));
        let scripts = script_calls(master).await - scripts_before;
        eprintln!(
            "{killed} connections killed; {calls} applies ran {scripts} scripts, {failures} \
             failed and were retried"
        );

        // A client dropped half-way through a batch of many chunks: some chunks went
        // through, the rest never ran. The batch again, from a new client, counts each once.
        let quiz = quiz_id(8);
        let big = log_of(&quiz, 1_000, 40);
        let expected = model(&big, &[]);
        let mut attempts = 0;
        let (partial, dropped) = loop {
            attempts += 1;
            assert!(attempts <= 20, "never caught the apply half-way");
            let client = RedisLeaderboard::connect(&fast_config(&cluster))
                .await
                .unwrap();
            client.rebuild(&quiz, Epoch::FIRST, &[], &[]).await.unwrap();
            let task = {
                let big = big.clone();
                tokio::spawn(async move { client.apply(Epoch::FIRST, &big).await })
            };
            let mut partial = Vec::new();
            while partial.is_empty() && !task.is_finished() {
                tokio::task::yield_now().await;
                partial = lb.standings(&quiz, 10_000).await.unwrap();
            }
            task.abort();
            let dropped = task.await.is_err();
            let partial = lb.standings(&quiz, 10_000).await.unwrap();
            if dropped && partial != expected {
                break (partial, dropped);
            }
        };
        assert!(dropped && !partial.is_empty() && partial != expected);
        apply_until_done(&lb, &big, &big).await;
        assert_eq!(lb.standings(&quiz, 10_000).await.unwrap(), expected);
    })
    .await;
}

/// How many scripts a node has run (EVAL and EVALSHA).
async fn script_calls(port: u16) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut node(port).await)
        .await
        .unwrap();
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// SCRIPT FLUSH on every master: every script is loaded again on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_loaded_again() {
    within(async {
        let cluster = RedisCluster::start(3, 0).await.unwrap();
        let lb = RedisLeaderboard::connect(&fast_config(&cluster))
            .await
            .unwrap();
        let quiz = quiz_id(3);
        let log = log_of(&quiz, 10, 4);
        lb.rebuild(&quiz, Epoch::FIRST, &log[..10], &[])
            .await
            .unwrap();
        let ann = UserId::parse("ann").unwrap();
        lb.record_league(&quiz, "2026-W48", &[(ann.clone(), 100)])
            .await
            .unwrap();

        cluster.on_masters(&["SCRIPT", "FLUSH"]).await.unwrap();
        for port in cluster.live_ports() {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut node(port).await)
                .await
                .unwrap();
            assert!(
                info.contains("number_of_cached_scripts:0"),
                "{port}: {info}"
            );
        }

        lb.apply(Epoch::FIRST, &log).await.unwrap();
        lb.remove_player(&quiz, Epoch::FIRST, PlayerNo(3))
            .await
            .unwrap();
        assert_eq!(lb.standings(&quiz, 100).await.unwrap(), model(&log, &[3]));
        cluster.on_masters(&["SCRIPT", "FLUSH"]).await.unwrap();
        lb.rebuild(&quiz, Epoch::FIRST, &log, &[PlayerNo(3), PlayerNo(4)])
            .await
            .unwrap();
        assert_eq!(
            lb.standings(&quiz, 100).await.unwrap(),
            model(&log, &[3, 4])
        );
        lb.record_league(&quiz, "2026-W48", &[(ann.clone(), 250)])
            .await
            .unwrap();
        assert_eq!(
            lb.league(&League::AllTime, 10).await.unwrap(),
            vec![LeagueRow {
                user: ann,
                points: 250
            }]
        );
    })
    .await;
}

/// Every key is lost (FLUSHALL): the next write is refused with NeedsRebuild and changes
/// nothing, and a rebuild from the log gives back the exact standings and what was counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_keys_need_a_rebuild_that_restores_the_standings() {
    within(async {
        let cluster = RedisCluster::start(3, 0).await.unwrap();
        let lb = RedisLeaderboard::connect(&fast_config(&cluster))
            .await
            .unwrap();
        let quiz = quiz_id(4);
        let log = log_of(&quiz, 30, 6);
        let (first, rest) = log.split_at(90);
        lb.rebuild(&quiz, Epoch::FIRST, &[], &[]).await.unwrap();
        lb.apply(Epoch::FIRST, first).await.unwrap();
        lb.remove_player(&quiz, Epoch::FIRST, PlayerNo(5))
            .await
            .unwrap();
        assert_eq!(lb.standings(&quiz, 100).await.unwrap(), model(first, &[5]));

        cluster.flush_all().await.unwrap();
        let refused = lb.apply(Epoch::FIRST, rest).await;
        assert!(
            matches!(&refused, Err(StoreError::NeedsRebuild(q)) if *q == quiz),
            "{refused:?}"
        );
        let refused = lb.remove_player(&quiz, Epoch::FIRST, PlayerNo(6)).await;
        assert!(
            matches!(refused, Err(StoreError::NeedsRebuild(_))),
            "{refused:?}"
        );
        assert!(
            lb.standings(&quiz, 100).await.unwrap().is_empty(),
            "nothing was applied"
        );

        // The owner rebuilds from its log (which holds what it was applying) and goes on.
        lb.rebuild(&quiz, Epoch::FIRST, &log, &[PlayerNo(5), PlayerNo(6)])
            .await
            .unwrap();
        let expected = model(&log, &[5, 6]);
        assert_eq!(lb.standings(&quiz, 100).await.unwrap(), expected);
        lb.apply(Epoch::FIRST, &log).await.unwrap();
        assert_eq!(lb.standings(&quiz, 100).await.unwrap(), expected);
        let late = scored(&quiz, 1, 99, 1_000, 10);
        lb.apply(Epoch::FIRST, std::slice::from_ref(&late))
            .await
            .unwrap();
        let mut all = log.clone();
        all.push(late);
        assert_eq!(
            lb.standings(&quiz, 100).await.unwrap(),
            model(&all, &[5, 6])
        );
    })
    .await;
}

/// Redis unreachable: connecting (lazily) succeeds, and each call fails as Unavailable within
/// the configured timeouts, whether the port is closed or a server accepts and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_unavailable_within_the_timeouts() {
    within(async {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // Accepts connections (the kernel's backlog) and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let quiz = quiz_id(5);
        let record = scored(&quiz, 1, 0, 100, 100);
        for addr in [closed, silent.local_addr().unwrap()] {
            let config = RedisConfig {
                nodes: vec![format!("redis://{addr}")],
                connect_timeout_ms: 300,
                response_timeout_ms: 300,
                retries: 1,
                weekly_league_weeks_kept: 8,
            };
            let started = Instant::now();
            let lb = RedisLeaderboard::connect(&config).await.unwrap();
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "connects lazily"
            );
            for _ in 0..2 {
                let started = Instant::now();
                let applied = lb.apply(Epoch::FIRST, std::slice::from_ref(&record)).await;
                assert!(
                    matches!(applied, Err(StoreError::Unavailable(_))),
                    "{addr}: {applied:?}"
                );
                let read = lb.standings(&quiz, 10).await;
                assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
                // Connecting (300 ms) and reading the slot map (300 ms), for each call.
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{addr}: took {:?}",
                    started.elapsed()
                );
            }
        }
    })
    .await;
}

/// A quiz Redis never saw needs a rebuild (from its empty log) before its first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_quiz_starts_with_a_rebuild_from_its_empty_log() {
    within(async {
        let cluster = shared_cluster().await;
        let lb = RedisLeaderboard::connect_namespaced(&config(cluster), &namespace())
            .await
            .unwrap();
        let quiz = quiz_id(6);
        let first = [scored(&quiz, 1, 0, 500, 700)];
        let refused = lb.apply(Epoch::FIRST, &first).await;
        assert!(
            matches!(refused, Err(StoreError::NeedsRebuild(_))),
            "{refused:?}"
        );
        lb.rebuild(&quiz, Epoch::FIRST, &[], &[]).await.unwrap();
        assert!(lb.standings(&quiz, 10).await.unwrap().is_empty());
        lb.apply(Epoch::FIRST, &first).await.unwrap();
        assert_eq!(lb.standings(&quiz, 10).await.unwrap(), model(&first, &[]));
        // The fence is Redis' own: a newer epoch's rebuild shuts the older writer out.
        lb.rebuild(&quiz, Epoch(3), &first, &[]).await.unwrap();
        let fenced = lb.apply(Epoch(2), &first).await;
        assert!(
            matches!(
                fenced,
                Err(StoreError::Fenced {
                    held: 2,
                    current: 3
                })
            ),
            "{fenced:?}"
        );
        let fenced = lb.fence(&quiz, Epoch(2)).await;
        assert!(
            matches!(fenced, Err(StoreError::Fenced { .. })),
            "{fenced:?}"
        );
        lb.fence(&quiz, Epoch(4)).await.unwrap();
        let fenced = lb.remove_player(&quiz, Epoch(3), PlayerNo(1)).await;
        assert!(
            matches!(
                fenced,
                Err(StoreError::Fenced {
                    held: 3,
                    current: 4
                })
            ),
            "{fenced:?}"
        );
    })
    .await;
}

/// A rebuild from a 100,000-answer log: staged in chunks, swapped in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_a_hundred_thousand_answers() {
    within(async {
        let cluster = shared_cluster().await;
        let lb = RedisLeaderboard::connect_namespaced(&config(cluster), &namespace())
            .await
            .unwrap();
        let quiz = quiz_id(7);
        let log = log_of(&quiz, 5_000, 20);
        assert_eq!(log.len(), 100_000);
        let removed: Vec<u32> = (1..=5_000).filter(|p| p % 97 == 0).collect();
        let removed_players: Vec<PlayerNo> = removed.iter().map(|p| PlayerNo(*p)).collect();
        let started = Instant::now();
        lb.rebuild(&quiz, Epoch::FIRST, &log, &removed_players)
            .await
            .unwrap();
        let took = started.elapsed();
        let expected = model(&log, &removed);
        assert_eq!(lb.standings(&quiz, 10_000).await.unwrap(), expected);
        // Everything counted is known: the whole log again adds nothing, removed players
        // stay out.
        for batch in log.chunks(5_000) {
            lb.apply(Epoch::FIRST, batch).await.unwrap();
        }
        assert_eq!(lb.standings(&quiz, 100).await.unwrap(), expected[..100]);
        eprintln!(
            "rebuild of {} answers ({} players): {took:?}",
            log.len(),
            expected.len()
        );
    })
    .await;
}
