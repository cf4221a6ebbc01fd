//! Self-paced mode: after the host starts the quiz, each player opens their questions one by
//! one with `next`, each with its own timer, until the window closes for everyone.
//!
//! A player's question frames and reveals are theirs alone: they carry no sequence number and
//! go to that player only. A player's progress (which question, opened when) is persisted
//! with the player, so a restored session gives each player the deadline they had.

use quiz_protocol::client::ServerMessage;
use quiz_protocol::cluster::Audience;
use quiz_protocol::{ErrorCode, Phase, PlayerNo};

use super::{Effect, Reject, Session};
use crate::Millis;
use crate::score;

impl Session {
    /// Self-paced: opens the player's next question and returns its frame.
    pub fn next(&mut self, player: PlayerNo, now: Millis) -> Result<ServerMessage, Reject> {
        if self.is_live() {
            return Self::reject(
                ErrorCode::WrongMode,
                "the host moves a live quiz to the next question",
            );
        }
        let Some(p) = self.players.get(&player) else {
            return Self::reject(ErrorCode::NotJoined, "join the quiz first");
        };
        if p.record.kicked {
            return Self::reject(ErrorCode::Kicked, "the host removed you from this quiz");
        }
        match self.progress.phase {
            Phase::Ended => return Self::reject(ErrorCode::QuizEnded, "this quiz has ended"),
            Phase::InProgress if self.window_end().is_some_and(|end| now >= end) => {
                return Self::reject(ErrorCode::QuizEnded, "this quiz has ended");
            }
            Phase::InProgress => {}
            _ => return Self::reject(ErrorCode::BadCommand, "the quiz has not started yet"),
        }
        let current = p.record.current;
        if let (Some(current), Some(close_at)) = (current, self.player_close_at(p)) {
            if p.is_pending(current) {
                return Self::reject(ErrorCode::BadCommand, "your answer is still being saved");
            }
            let unanswered = !p.answers.contains_key(&current) && !p.timed_out;
            if unanswered && now < close_at {
                return Self::reject(
                    ErrorCode::BadCommand,
                    "answer this question first, or wait for its time to run out",
                );
            }
            if unanswered {
                // Its time ran out but the timer has not fired yet: take that step now.
                self.deadlines.remove(&(close_at, player));
                self.time_out(player, close_at);
            }
        }
        let index = current.map_or(0, |q| q + 1);
        if index >= self.question_count() {
            return Self::reject(ErrorCode::BadCommand, "no more questions");
        }
        let close_at = now + self.limit_ms(index) + self.grace_ms();
        let Some(p) = self.players.get_mut(&player) else {
            return Self::reject(ErrorCode::NotJoined, "join the quiz first");
        };
        p.record.current = Some(index);
        p.record.current_opened_at = Some(now);
        p.timed_out = false;
        self.effects.push_back(Effect::SavePlayer(p.record.clone()));
        self.deadlines.insert((close_at, player));
        let ends_in = self.player_time_left(player, now);
        let frame = self.question_frame(index, None, ends_in);
        frame
            .map(ServerMessage::Question)
            .ok_or_else(|| Reject::new(ErrorCode::Internal, "the question is missing"))
    }

    /// A self-paced player's question ran out at `at` with no answer (if that is still so):
    /// their streak ends and they see the answer.
    pub(super) fn time_out(&mut self, player: PlayerNo, at: Millis) {
        let Some(p) = self.players.get(&player) else {
            return;
        };
        let Some(index) = p.record.current else {
            return;
        };
        let still_due = self.progress.phase == Phase::InProgress
            && !p.record.kicked
            && !p.timed_out
            && !p.answers.contains_key(&index)
            && self.player_close_at(p) == Some(at);
        let Some(question) = self
            .spec
            .questions
            .get(index as usize)
            .filter(|_| still_due)
        else {
            return;
        };
        let streak = score::missed(question, p.streak);
        if let Some(p) = self.players.get_mut(&player) {
            p.streak = streak;
            p.timed_out = true;
        }
        self.send_own_reveal(player, index);
    }

    /// Sends a self-paced player the reveal of their question.
    pub(super) fn send_own_reveal(&mut self, player: PlayerNo, index: u32) {
        if let Some(reveal) = self.reveal_frame(index, None) {
            self.effects.push_back(Effect::Send {
                audience: Audience::Player(player),
                msg: ServerMessage::Reveal(Box::new(reveal)),
            });
        }
    }

    /// When the self-paced window closes for everyone.
    pub(super) fn window_end(&self) -> Option<Millis> {
        if self.is_live() {
            return None;
        }
        let window = Millis::from(self.spec.settings.self_paced_window_s) * 1000;
        self.progress.opened_at.map(|start| start + window)
    }

    /// When a self-paced player's current question stops taking answers (deadline + grace).
    pub(super) fn player_close_at(&self, p: &super::Player) -> Option<Millis> {
        let index = p.record.current?;
        Some(p.record.current_opened_at? + self.limit_ms(index) + self.grace_ms())
    }

    /// Time left on a self-paced player's question, never past the window's end.
    pub(super) fn player_time_left(&self, player: PlayerNo, now: Millis) -> u32 {
        let Some(p) = self.players.get(&player) else {
            return 0;
        };
        let (Some(index), Some(opened)) = (p.record.current, p.record.current_opened_at) else {
            return 0;
        };
        if p.timed_out || p.answers.contains_key(&index) {
            return 0;
        }
        let mut end = opened + self.limit_ms(index);
        if let Some(window) = self.window_end() {
            end = end.min(window);
        }
        (end - now).clamp(0, self.limit_ms(index)) as u32
    }
}
