//! A quiz played by many phones and a host bot, and the checks every multi-process test makes
//! at the end: nothing acknowledged lost, nothing counted twice, every phone told the truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_client::{AnswerError, RequestError};
use quiz_protocol::client::Ack;
use quiz_protocol::{Answer, HostCommand, Phase, PlayerNo, QuizId};
use quiz_store::{StandingRow, Stores};

use super::Phone;

/// Every ack a phone got, by (phone, question).
pub type Acks = Arc<Mutex<HashMap<(usize, u32), Ack>>>;

/// Phone `i`'s nickname.
pub fn nickname(i: usize) -> String {
    format!("Pupil-{i}")
}

/// Checks the end of a quiz played by `phones` (phone `i` named [`nickname`]`(i)`):
/// 1. every acknowledged answer is in the log once, with the points it was acked for;
/// 2. the Redis leaderboard equals the one computed from the log;
/// 3. every phone was last told its score and rank from the log, after the end.
///
/// Returns how many answers were in the log.
pub async fn check_outcome(stores: &Stores, quiz: &QuizId, phones: &[Phone], acks: &Acks) -> usize {
    // 1. Every acknowledged answer is in the log, once, with the points it was acked for.
    let log = stores.answers.answers(quiz).await.unwrap();
    let players = stores.quizzes.players(quiz).await.unwrap();
    let by_nick: HashMap<&str, PlayerNo> = players
        .iter()
        .map(|p| (p.nickname.as_str(), p.player))
        .collect();
    let acks = acks.lock().unwrap().clone();
    for ((i, q), ack) in &acks {
        let player = by_nick[nickname(*i).as_str()];
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
    let want: Vec<(PlayerNo, u32, u64)> = StandingRow::from_log(&log)
        .into_iter()
        .map(|r| (r.player, r.score, r.tiebreak))
        .collect();
    let mut got = Vec::new();
    for _ in 0..200 {
        got = stores
            .leaderboards
            .standings(quiz, 1000)
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
        let player = by_nick[nickname(i).as_str()];
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
    log.len()
}

/// A phone answers every question it sees open, once, and keeps what it was acked.
pub async fn play(i: usize, phone: Phone, questions: u32, think: Duration, acks: Acks) {
    let mut next = 0;
    while next < questions {
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
pub async fn drive_host(host: &Phone) {
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
