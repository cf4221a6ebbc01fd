//! The quiz lifecycle: host commands, the live question cycle (open → closed → reveal → next),
//! pauses, kicks, the end, and the timers that drive them.
//!
//! A live question closes at `opened_at + paused_ms + time limit + grace`, or as soon as every
//! connected player has answered (if the quiz says so). With auto-advance, the reveal and the
//! next question follow after fixed delays counted from the last phase change. Every step is
//! taken at its scheduled time, so a late `handle_timeout` (a slow timer, a restore after a
//! crash) reaches the same state as a punctual one.

use quiz_protocol::client::HostOk;
use quiz_protocol::{ErrorCode, HostCommand, Phase};

use super::frames::Event;
use super::{Effect, Reject, Session};
use crate::Millis;
use crate::nickname;
use crate::score;

impl Session {
    /// A host command. Host rights are checked by the caller.
    pub fn host(
        &mut self,
        command: HostCommand,
        target: Option<&str>,
        now: Millis,
    ) -> Result<HostOk, Reject> {
        let phase = self.progress.phase;
        if phase == Phase::Ended {
            return Self::reject(ErrorCode::QuizEnded, "this quiz has ended");
        }
        let live_only = matches!(
            command,
            HostCommand::Next | HostCommand::Reveal | HostCommand::Pause | HostCommand::Resume
        );
        if live_only && !self.is_live() {
            return Self::reject(
                ErrorCode::WrongMode,
                "players move through a self-paced quiz themselves; only start, end and kick apply",
            );
        }
        match command {
            HostCommand::Start => self.start(now)?,
            HostCommand::Next => match phase {
                Phase::Open | Phase::Paused | Phase::Closed => self.reveal_now(now),
                Phase::Reveal => self.advance(now, now),
                _ => return Self::reject(ErrorCode::BadCommand, "start the quiz first"),
            },
            HostCommand::Reveal => match phase {
                Phase::Open | Phase::Paused | Phase::Closed => self.reveal_now(now),
                Phase::Reveal => {
                    return Self::reject(ErrorCode::BadCommand, "the answer is already revealed");
                }
                _ => return Self::reject(ErrorCode::BadCommand, "no question to reveal yet"),
            },
            HostCommand::Pause => match phase {
                Phase::Open => self.pause(now),
                Phase::Paused => {
                    return Self::reject(ErrorCode::BadCommand, "the question is already paused");
                }
                _ => return Self::reject(ErrorCode::BadCommand, "only an open question can pause"),
            },
            HostCommand::Resume => match phase {
                Phase::Paused => self.resume(now),
                _ => return Self::reject(ErrorCode::BadCommand, "the quiz is not paused"),
            },
            HostCommand::End => self.end(now, now),
            HostCommand::Kick => self.kick(target, now)?,
        }
        Ok(HostOk {
            command,
            phase: self.progress.phase,
            reference: None,
        })
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let player = self.deadlines.first().map(|(at, _)| *at);
        [
            self.phase_due(),
            player,
            self.board.next_push(),
            self.early_close_hold,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Deadlines, auto-advance and leaderboard coalescing: everything due at `now`, in the
    /// order it fell due.
    pub fn handle_timeout(&mut self, now: Millis) {
        // Each pass moves the phase forward or consumes a deadline, so this ends after a few
        // steps per question and player.
        loop {
            let phase_due = self.phase_due().filter(|at| *at <= now);
            let player_due = self.deadlines.first().copied().filter(|(at, _)| *at <= now);
            if let Some(hold) = self.early_close_hold
                && hold <= now
                && phase_due.is_none_or(|at| hold <= at)
                && player_due.is_none()
            {
                self.early_close_hold = None;
                self.close_if_all_answered(now);
                continue;
            }
            match (phase_due, player_due) {
                (Some(at), p) if p.is_none_or(|(p_at, _)| at <= p_at) => {
                    let before = self.progress.phase;
                    self.phase_step(at, now);
                    if self.progress.phase == before {
                        // Only restored progress that names no question gets here; waiting
                        // for the host beats spinning.
                        break;
                    }
                }
                (_, Some((at, player))) => {
                    self.deadlines.remove(&(at, player));
                    self.time_out(player, at);
                }
                _ => break,
            }
        }
        if let Some(update) = self.board.push(now) {
            self.effects.push_back(Effect::Leaderboard(update));
        }
    }

    /// When the current phase ends by itself, if it does.
    fn phase_due(&self) -> Option<Millis> {
        let p = &self.progress;
        let auto = self.spec.settings.auto_advance;
        match p.phase {
            Phase::Open => self.close_at(),
            Phase::Closed => auto.map(|a| p.phase_at + Millis::from(a.reveal_after_ms)),
            Phase::Reveal => auto.map(|a| p.phase_at + Millis::from(a.next_after_ms)),
            Phase::InProgress => self.window_end(),
            Phase::Lobby | Phase::Paused | Phase::Ended => None,
        }
    }

    /// Takes the step the current phase is due for, as of time `at`.
    fn phase_step(&mut self, at: Millis, now: Millis) {
        match self.progress.phase {
            Phase::Open => self.close(at, now),
            Phase::Closed => self.reveal(at, now),
            Phase::Reveal => self.advance(at, now),
            Phase::InProgress => self.end(at, now),
            _ => {}
        }
    }

    /// The current live question's deadline (time limit plus pauses), unless paused.
    pub(super) fn deadline(&self) -> Option<Millis> {
        let p = &self.progress;
        let q = p.question?;
        if p.paused_at.is_some() {
            return None;
        }
        Some(p.opened_at? + p.paused_ms + self.limit_ms(q))
    }

    /// When the current live question stops taking answers: its deadline plus the grace.
    pub(super) fn close_at(&self) -> Option<Millis> {
        self.deadline().map(|d| d + self.grace_ms())
    }

    fn start(&mut self, now: Millis) -> Result<(), Reject> {
        if self.progress.phase != Phase::Lobby {
            return Self::reject(ErrorCode::BadCommand, "the quiz has already started");
        }
        if !self.is_live() {
            self.progress.opened_at = Some(now);
            self.transition(Phase::InProgress, now, Some(Event::Started), now);
        } else if self.question_count() == 0 {
            self.end(now, now);
        } else {
            self.open(0, now, now);
        }
        Ok(())
    }

    /// Opens live question `index` at time `at`.
    fn open(&mut self, index: u32, at: Millis, now: Millis) {
        let p = &mut self.progress;
        p.question = Some(index);
        p.opened_at = Some(at);
        p.paused_ms = 0;
        p.paused_at = None;
        self.transition(Phase::Open, at, Some(Event::Question(index)), now);
        self.question_seq = Some(self.progress.seq);
        self.waiting = self.connected;
        self.board.set_answered(0, now);
    }

    /// Closes the current live question at time `at`. Players who had not answered lose
    /// their streak; a pending answer counts as given.
    fn close(&mut self, at: Millis, now: Millis) {
        let Some(index) = self.progress.question else {
            return;
        };
        self.end_pause(at);
        self.miss_unanswered(index);
        self.transition(Phase::Closed, at, Some(Event::Closed(index)), now);
    }

    /// Question `index` is over: players who gave no answer missed it.
    fn miss_unanswered(&mut self, index: u32) {
        if let Some(question) = self.spec.questions.get(index as usize) {
            for p in self.players.values_mut() {
                if !p.answers.contains_key(&index) {
                    p.streak = score::missed(question, p.streak);
                }
            }
        }
    }

    fn reveal(&mut self, at: Millis, now: Millis) {
        if let Some(index) = self.progress.question {
            self.transition(Phase::Reveal, at, Some(Event::Reveal(index)), now);
        }
    }

    /// The host's `reveal` (or `next` before the reveal): close first if still open.
    fn reveal_now(&mut self, now: Millis) {
        if matches!(self.progress.phase, Phase::Open | Phase::Paused) {
            self.close(now, now);
        }
        self.reveal(now, now);
    }

    /// After a reveal: the next question, or the end after the last.
    fn advance(&mut self, at: Millis, now: Millis) {
        let next = self.progress.question.map_or(0, |q| q + 1);
        if next < self.question_count() {
            self.open(next, at, now);
        } else {
            self.end(at, now);
        }
    }

    fn pause(&mut self, now: Millis) {
        let (Some(index), Some(deadline)) = (self.progress.question, self.deadline()) else {
            return;
        };
        let remaining = (deadline - now).clamp(0, self.limit_ms(index));
        self.progress.paused_at = Some(now);
        let event = Event::Paused {
            index,
            remaining_ms: remaining as u32,
        };
        self.transition(Phase::Paused, now, Some(event), now);
    }

    fn resume(&mut self, now: Millis) {
        let Some(index) = self.progress.question else {
            return;
        };
        self.end_pause(now);
        self.transition(Phase::Open, now, Some(Event::Unpaused(index)), now);
    }

    /// Adds a pause in progress to the paused time, as of `at`.
    fn end_pause(&mut self, at: Millis) {
        if let Some(since) = self.progress.paused_at.take() {
            self.progress.paused_ms += (at - since).max(0);
        }
    }

    pub(super) fn end(&mut self, at: Millis, now: Millis) {
        if self.progress.phase == Phase::Ended {
            return;
        }
        // Ending during a question is its end too (a restore counts it as closed).
        if let (Phase::Open | Phase::Paused, Some(index)) =
            (self.progress.phase, self.live_question())
        {
            self.miss_unanswered(index);
        }
        self.deadlines.clear();
        self.transition(Phase::Ended, at, Some(Event::Ended), now);
        self.effects.push_back(Effect::Ended);
    }

    /// Removes a player by nickname: off the leaderboard, disconnected, never to return.
    fn kick(&mut self, target: Option<&str>, now: Millis) -> Result<(), Reject> {
        let unknown = |name: &str| {
            Reject::new(
                ErrorCode::UnknownPlayer,
                format!("no player is called {name:?}"),
            )
        };
        let Some(name) = target.map(str::trim) else {
            return Err(Reject::new(
                ErrorCode::UnknownPlayer,
                "say which player to remove",
            ));
        };
        let no = *self
            .by_nickname
            .get(&nickname::key(name))
            .ok_or_else(|| unknown(name))?;
        let current = self.live_question();
        let Some(p) = self.players.get_mut(&no) else {
            return Err(unknown(name));
        };
        if p.record.kicked {
            // A retried kick: already done.
            return Ok(());
        }
        p.record.kicked = true;
        if p.connected {
            p.connected = false;
            self.connected -= 1;
            self.waiting -= u32::from(current.is_none_or(|q| p.counted(q).is_none()));
        }
        self.active -= 1;
        self.effects.push_back(Effect::SavePlayer(p.record.clone()));
        self.effects.push_back(Effect::Kicked(no));
        self.board.remove(no, now);
        self.close_if_all_answered(now);
        Ok(())
    }

    /// Closes the live question early once every connected player has answered (not while
    /// the players of a restored quiz are rejoining).
    pub(super) fn close_if_all_answered(&mut self, now: Millis) {
        let all_in = self.progress.phase == Phase::Open
            && self.spec.settings.close_when_all_answered
            && self.early_close_hold.is_none_or(|hold| now >= hold)
            && self.connected > 0
            && self.waiting == 0;
        if all_in {
            self.close(now, now);
        }
    }
}
