//! Answers: validation, grading and scoring ([`Session::submit`]), counting once durable
//! ([`Session::commit`]), and forgetting a failed write ([`Session::abort`]).
//!
//! A player has at most one answer per question. While it is pending it already blocks a
//! different answer to that question; its retries (same answer id) wait for it. Once counted,
//! a retry gets the same ack again. The answer log is the record: `commit` counts the record
//! it is given, which is what the log holds, and a player's score is the sum of the points of
//! the records counted for them.

use quiz_protocol::client::Ack;
use quiz_protocol::{Answer, AnswerId, ErrorCode, Phase, PlayerNo};

use super::{AnswerRecord, Reject, Session, Slot, Submit};
use crate::Millis;
use crate::grade;
use crate::score;

impl Session {
    /// Validates and grades an answer.
    pub fn submit(
        &mut self,
        player: PlayerNo,
        question: u32,
        answer_id: AnswerId,
        answer: Answer,
        now: Millis,
    ) -> Submit {
        self.try_submit(player, question, answer_id, answer, now)
            .unwrap_or_else(Submit::Rejected)
    }

    fn try_submit(
        &mut self,
        player: PlayerNo,
        question: u32,
        answer_id: AnswerId,
        answer: Answer,
        now: Millis,
    ) -> Result<Submit, Reject> {
        let Some(p) = self.players.get(&player) else {
            return Self::reject(ErrorCode::NotJoined, "join the quiz first");
        };
        if p.record.kicked {
            return Self::reject(ErrorCode::Kicked, "the host removed you from this quiz");
        }
        // Retries first: a retry must get its answer's outcome whatever happened since.
        if let Some(&used_for) = p.ids.get(&answer_id) {
            if used_for != question {
                return Self::reject(
                    ErrorCode::BadMessage,
                    format!("answer_id {answer_id} was already used for question {used_for}"),
                );
            }
            match p.answers.get(&question) {
                Some(Slot::Counted(ack)) => return Ok(Submit::Duplicate(self.fresh(player, ack))),
                Some(Slot::Pending(_)) => return Ok(Submit::InFlight),
                None => {}
            }
        }
        if self.progress.phase == Phase::Ended {
            return Self::reject(ErrorCode::QuizEnded, "this quiz has ended");
        }
        let Some(q) = self.question(question) else {
            return Self::reject(
                ErrorCode::UnknownQuestion,
                format!("this quiz has {} questions", self.question_count()),
            );
        };
        if p.answers.contains_key(&question) {
            return Self::reject(
                ErrorCode::AlreadyAnswered,
                "you already answered this question",
            );
        }
        let (opened_at, paused_ms) = self.answerable(player, question, now)?;
        let Some(layout) = self.layouts.get(question as usize) else {
            // Built with the questions, one each: never missing.
            return Self::reject(ErrorCode::Internal, "the question has no layout");
        };
        let grade = grade::grade(q, layout, &answer, self.config.typo_min_len)?;
        let limit = self.limit_ms(question);
        let response_ms = (now - opened_at - paused_ms).clamp(0, limit) as u32;
        let scored = score::score(
            q,
            &grade,
            response_ms,
            p.streak,
            &self.spec.settings,
            self.config.full_points_under_ms,
        );
        let record = AnswerRecord {
            quiz: self.spec.id.clone(),
            player,
            question,
            answer_id: answer_id.clone(),
            answer,
            received_at: now,
            response_ms,
            points: scored.points,
            correct: grade.correct(),
            streak: scored.streak,
        };
        if let Some(p) = self.players.get_mut(&player) {
            p.answers.insert(question, Slot::Pending(answer_id.clone()));
            p.ids.insert(answer_id, question);
        }
        Ok(Submit::Accepted(record))
    }

    /// Whether `player` may answer `question` at `now`; if so, when it opened for them and
    /// how long it has been paused.
    fn answerable(
        &self,
        player: PlayerNo,
        question: u32,
        now: Millis,
    ) -> Result<(Millis, Millis), Reject> {
        let progress = &self.progress;
        let too_late = || Self::reject(ErrorCode::TooLate, "time is up for this question");
        let not_open = || Self::reject(ErrorCode::NotOpen, "this question is not open yet");
        let (current, opened_at, paused_ms) = match progress.phase {
            Phase::Lobby => return Self::reject(ErrorCode::NotOpen, "the quiz has not started"),
            Phase::Ended => return Self::reject(ErrorCode::QuizEnded, "this quiz has ended"),
            Phase::InProgress => {
                if self.window_end().is_some_and(|end| now >= end) {
                    return Self::reject(ErrorCode::QuizEnded, "this quiz has ended");
                }
                let Some(p) = self.players.get(&player) else {
                    return Self::reject(ErrorCode::NotJoined, "join the quiz first");
                };
                let Some(current) = p.record.current else {
                    return Self::reject(ErrorCode::NotOpen, "open your first question with next");
                };
                if question == current
                    && (p.timed_out || self.player_close_at(p).is_none_or(|at| now >= at))
                {
                    return too_late();
                }
                (current, p.record.current_opened_at, 0)
            }
            Phase::Open | Phase::Paused | Phase::Closed | Phase::Reveal => {
                let Some(current) = progress.question else {
                    return not_open();
                };
                (current, progress.opened_at, progress.paused_ms)
            }
        };
        if question > current {
            return not_open();
        }
        if question < current {
            return too_late();
        }
        match progress.phase {
            Phase::Paused => Self::reject(
                ErrorCode::QuestionPaused,
                "the question is paused; send it again when it resumes",
            ),
            Phase::Closed | Phase::Reveal => too_late(),
            Phase::Open if self.close_at().is_none_or(|at| now >= at) => too_late(),
            _ => opened_at
                .map(|at| (at, paused_ms))
                .ok_or_else(|| Reject::new(ErrorCode::NotOpen, "this question is not open yet")),
        }
    }

    /// Counts a pending answer once it is durable; returns its ack.
    ///
    /// `record` is what the answer log holds, which may be an earlier attempt of the same
    /// answer than the one pending; it is what counts. An answer already counted is not
    /// counted again: its ack comes back.
    pub fn commit(&mut self, record: &AnswerRecord, now: Millis) -> Ack {
        let index = record.question;
        let live_current = self.live_question();
        let counts_for_streak = self.question(index).is_some_and(score::counts_for_streak);
        let close_at = (self.players.get(&record.player)).and_then(|p| self.player_close_at(p));
        let closed_before = self.closed_before();
        let Some(p) = self.players.get_mut(&record.player) else {
            // Not a player of this quiz: nothing to count. The shell never gets here.
            return Ack {
                answer_id: record.answer_id.clone(),
                question: index,
                points: record.points,
                total: 0,
                rank: 0,
                streak: record.streak,
            };
        };
        match p.answers.get(&index) {
            Some(Slot::Counted(ack)) => {
                let ack = ack.clone();
                return self.fresh(record.player, &ack);
            }
            Some(Slot::Pending(other)) if *other != record.answer_id => {
                let other = other.clone();
                p.ids.remove(&other);
            }
            _ => {}
        }
        p.score = p.score.saturating_add(record.points);
        let ack = Ack {
            answer_id: record.answer_id.clone(),
            question: index,
            points: record.points,
            total: p.score,
            rank: 0,
            streak: record.streak,
        };
        p.answers.insert(index, Slot::Counted(ack.clone()));
        p.ids.insert(record.answer_id.clone(), index);
        if counts_for_streak {
            // Normally this is the player's latest question. A write that took long enough for
            // a later question to be answered or to close lands out of order: then the streak
            // is worked out again from the counted answers, as a restore would.
            let next = index.saturating_add(1);
            let latest =
                p.answers.range(next..).next().is_none() && closed_before.is_none_or(|c| c <= next);
            p.streak = if latest {
                record.streak
            } else {
                p.derived_streak(&self.spec.questions, closed_before)
            };
        }
        let waited = p.connected && !p.record.kicked;
        let own_current = p.record.current == Some(index);

        self.board
            .record(record.player, record.points, record.response_ms, now);
        if let Some(stats) = self.stats.get_mut(index as usize) {
            stats.count(&record.answer, record.correct, record.response_ms);
        }
        if self.is_live() {
            if live_current == Some(index) {
                let answered = self.stats.get(index as usize).map_or(0, |s| s.answered());
                self.board.set_answered(answered, now);
                self.waiting = self.waiting.saturating_sub(u32::from(waited));
                self.close_if_all_answered(now);
            }
        } else if own_current {
            if let Some(at) = close_at {
                self.deadlines.remove(&(at, record.player));
            }
            self.send_own_reveal(record.player, index);
        }
        let rank = self.board.standing(record.player).map_or(0, |s| s.rank);
        Ack { rank, ..ack }
    }

    /// Forgets a pending answer whose write failed; the phone may retry.
    pub fn abort(&mut self, record: &AnswerRecord) {
        let index = record.question;
        let closed_before = self.closed_before();
        let close_at = (self.players.get(&record.player)).and_then(|p| self.player_close_at(p));
        let Some(p) = self.players.get_mut(&record.player) else {
            return;
        };
        match p.answers.get(&index) {
            Some(Slot::Pending(pending)) if *pending == record.answer_id => {}
            _ => return,
        }
        p.answers.remove(&index);
        p.ids.remove(&record.answer_id);
        match closed_before {
            // Live, and the question closed while the answer was pending: it was missed after
            // all, which may end the streak (or not, if later answers rebuilt one).
            Some(closed_before) if index < closed_before => {
                p.streak = p.derived_streak(&self.spec.questions, Some(closed_before));
            }
            Some(_) => {}
            // Self-paced: its timer was waiting for this answer; let it fire (at once, if it
            // has passed).
            None => {
                if let (Some(at), true) = (close_at, p.record.current == Some(index)) {
                    self.deadlines.insert((at, record.player));
                }
            }
        }
    }
}
