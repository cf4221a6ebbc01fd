//! Rebuilding a session from durable state after its owner died or the quiz moved: the
//! progress (phase, question, timings, sequence number), the players, and the answer log.
//!
//! Everything the session derives is derived again the same way: scores are sums of logged
//! points, tie-breaks sums of the response times that scored, streaks the last logged streak
//! unless a later question was missed, statistics recounted. So the rebuilt leaderboard is the
//! one the old owner had. What is not durable starts empty: the replay buffer (resuming phones
//! get a welcome), pending answers (their phones retry), and connections (phones reconnect).

use std::collections::BTreeMap;

use quiz_protocol::client::Ack;
use quiz_protocol::{Phase, PlayerNo, Question};

use super::{AnswerRecord, EngineConfig, Player, QuizSpec, SavedQuiz, Session, Slot};
use crate::Millis;
use crate::nickname;
use crate::score;

impl Session {
    /// Rebuilds a session from durable state. Deadlines keep their original times; call
    /// [`Session::handle_timeout`] afterwards to process any that passed while it was down.
    pub fn restore(spec: QuizSpec, config: EngineConfig, saved: SavedQuiz) -> Session {
        let SavedQuiz {
            progress,
            mut players,
            mut answers,
        } = saved;
        let mut s = Session::new(spec, config, progress.phase_at);
        s.progress = progress;
        s.question_seq = s.progress.question.map(|_| s.progress.seq);

        players.sort_by_key(|r| r.player);
        for record in players {
            let no = record.player;
            if s.players.contains_key(&no) {
                continue;
            }
            s.by_user.insert(record.user.clone(), no);
            s.by_nickname.insert(nickname::key(&record.nickname), no);
            s.active += u32::from(!record.kicked);
            s.players.insert(no, Player::new(record));
        }

        answers.sort_by_key(|a| (a.player, a.question));
        let mut tiebreaks: BTreeMap<PlayerNo, u64> = BTreeMap::new();
        for record in &answers {
            if s.count_restored(record) && record.points > 0 {
                *tiebreaks.entry(record.player).or_default() += u64::from(record.response_ms);
            }
        }

        let closed_before = s.closed_before();
        let questions = &s.spec.questions;
        for p in s.players.values_mut() {
            p.streak = p.derived_streak(questions, closed_before);
        }

        let at = s.progress.phase_at;
        for (no, p) in s.players.iter().filter(|(_, p)| !p.record.kicked) {
            let tiebreak = tiebreaks.get(no).copied().unwrap_or(0);
            s.board.add(*no, &p.record.nickname, p.score, tiebreak, at);
        }
        if let Some(stats) = s.live_question().and_then(|q| s.stats.get(q as usize)) {
            s.board.set_answered(stats.answered(), at);
        }
        s.board.settle();

        if s.progress.phase == Phase::InProgress {
            let due: Vec<_> = s
                .players
                .iter()
                .filter(|(_, p)| !p.record.kicked)
                .filter(|(_, p)| {
                    p.record
                        .current
                        .is_some_and(|q| !p.answers.contains_key(&q))
                })
                .filter_map(|(no, p)| Some((s.player_close_at(p)?, *no)))
                .collect();
            s.deadlines.extend(due);
        }
        s
    }

    /// Starts the rejoin grace of a restored session at `now`: for
    /// [`EngineConfig::rejoin_grace_ms`], a live question does not close early, since its
    /// phones are still reconnecting (a question whose time is up still closes).
    pub fn begin_rejoin_grace(&mut self, now: Millis) {
        if self.config.rejoin_grace_ms > 0 {
            self.early_close_hold = Some(now + Millis::from(self.config.rejoin_grace_ms));
        }
    }

    /// Counts one logged answer; false if it was not counted (unknown player, or a second
    /// row for the same question).
    fn count_restored(&mut self, record: &AnswerRecord) -> bool {
        let Some(p) = self.players.get_mut(&record.player) else {
            return false;
        };
        if p.answers.contains_key(&record.question) {
            return false;
        }
        p.score = p.score.saturating_add(record.points);
        let ack = Ack {
            answer_id: record.answer_id.clone(),
            question: record.question,
            points: record.points,
            total: p.score,
            rank: 0,
            streak: record.streak,
        };
        p.answers.insert(record.question, Slot::Counted(ack));
        p.ids.insert(record.answer_id.clone(), record.question);
        if let Some(stats) = self.stats.get_mut(record.question as usize) {
            stats.count(&record.answer, record.correct, record.response_ms);
        }
        true
    }

    /// Live mode: the questions before this index have closed (so a player who did not answer
    /// one missed it). `None` in self-paced mode, where it depends on the player.
    pub(super) fn closed_before(&self) -> Option<u32> {
        if !self.is_live() {
            return None;
        }
        let current = self.progress.question;
        Some(match self.progress.phase {
            Phase::Lobby => 0,
            Phase::Open | Phase::Paused | Phase::InProgress => current.unwrap_or(0),
            Phase::Closed | Phase::Reveal | Phase::Ended => {
                current.map_or(0, |q| q.saturating_add(1))
            }
        })
    }
}

impl Player {
    /// The streak from the answers counted for this player: the streak of the last one that
    /// counts for streaks, unless a later streak question closed unanswered. Questions before
    /// `closed_before` have closed (self-paced: before the player's current one).
    pub(super) fn derived_streak(&self, questions: &[Question], closed_before: Option<u32>) -> u32 {
        let closed_before = closed_before.unwrap_or_else(|| self.record.current.unwrap_or(0));
        let mut streak = 0;
        for (index, question) in (0u32..).zip(questions) {
            match self.answers.get(&index) {
                Some(Slot::Counted(ack)) if score::counts_for_streak(question) => {
                    streak = ack.streak;
                }
                Some(_) => {}
                None if index < closed_before => streak = score::missed(question, streak),
                None => {}
            }
        }
        streak
    }
}
