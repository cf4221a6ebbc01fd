//! What phones are sent: sequenced events and their rendering, the welcome snapshot, and the
//! replay of missed events on resume.
//!
//! Events are kept in structured form and rendered when sent, because a frame's `ends_in_ms`
//! is the time left at the moment it leaves, and a replayed `question` frame must say how
//! long is left now, not when it was first sent. The correct answer is only ever rendered into
//! a reveal.

use quiz_protocol::client::{
    Ack, Closed, Ended, LeaderboardFrame, PROTOCOL_VERSION, Paused, QuestionFrame, QuizInfo,
    Resumed, Reveal, Role, ServerMessage, Started, Unpaused, Welcome, You,
};
use quiz_protocol::{Phase, PlayerNo, QuestionBody};

use super::Session;
use crate::Millis;
use crate::grade;
use crate::layout::Layout;

/// A quiz-wide event, as the replay buffer keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A self-paced quiz's window opened.
    Started,
    Question(u32),
    Closed(u32),
    Reveal(u32),
    Paused {
        index: u32,
        remaining_ms: u32,
    },
    Unpaused(u32),
    Ended,
}

impl Session {
    /// The full state for a phone (`player` is `None` for a host).
    pub fn welcome(&self, player: Option<PlayerNo>, role: Role, now: Millis) -> Welcome {
        let player = player.filter(|_| role == Role::Player);
        let window_left = match self.progress.phase {
            Phase::InProgress => self.window_end().map(|end| (end - now).max(0) as u64),
            _ => None,
        };
        let mut welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            seq: self.progress.seq,
            quiz: QuizInfo {
                id: self.spec.id.to_string(),
                title: self.spec.title.clone(),
                mode: self.spec.settings.mode,
                scoring: self.spec.settings.scoring,
                question_count: self.question_count(),
                auto_advance: self.spec.settings.auto_advance,
            },
            you: self.you(player, role),
            phase: self.progress.phase,
            ends_in_ms: window_left,
            question: None,
            answered: None,
            reveal: None,
            leaderboard: LeaderboardFrame {
                v: self.board.version(),
                players: self.board.players(),
                top: Some(self.board.top()),
                you: player.and_then(|p| self.board.standing(p)),
                answered: (role == Role::Host).then(|| self.board.answered()),
            },
        };
        let own = player.and_then(|p| self.players.get(&p));
        if self.is_live() {
            let showing = matches!(
                self.progress.phase,
                Phase::Open | Phase::Paused | Phase::Closed | Phase::Reveal
            );
            let Some(index) = self.live_question().filter(|_| showing) else {
                return welcome;
            };
            let left = self.live_time_left(index, now);
            welcome.question = self.question_frame(index, self.question_seq, left);
            welcome.answered =
                own.and_then(|p| p.counted(index).map(|a| self.fresh(p.record.player, a)));
            if self.progress.phase == Phase::Reveal {
                welcome.reveal = self
                    .reveal_frame(index, Some(self.progress.seq))
                    .map(Box::new);
            }
        } else if let (Some(p), Some(no)) = (own, player) {
            let Some(index) = p.record.current else {
                return welcome;
            };
            let left = self.player_time_left(no, now);
            welcome.question = self.question_frame(index, None, left);
            welcome.answered = p.counted(index).map(|a| self.fresh(no, a));
            if welcome.answered.is_some() || p.timed_out {
                welcome.reveal = self.reveal_frame(index, None).map(Box::new);
            }
        }
        welcome
    }

    /// The events after `last_seq`, if the replay buffer still holds them all (and `last_seq`
    /// is not ahead of the quiz). `None` means: send a welcome instead.
    ///
    /// Only quiz-wide events are replayed; a self-paced player's own question and reveal
    /// frames are in their welcome.
    pub fn replay(
        &self,
        last_seq: u64,
        player: Option<PlayerNo>,
        role: Role,
        now: Millis,
    ) -> Option<(Resumed, Vec<ServerMessage>)> {
        let seq = self.progress.seq;
        if last_seq > seq {
            return None;
        }
        // A self-paced player's own questions and reveals are not quiz-wide events, so a
        // replay would miss them: such a player always gets a welcome, which holds them.
        if !self.is_live() && role == Role::Player {
            return None;
        }
        let resumed = Resumed {
            from_seq: last_seq + 1,
            to_seq: seq,
            you: self.you(player.filter(|_| role == Role::Player), role),
        };
        if last_seq == seq {
            return Some((resumed, Vec::new()));
        }
        let oldest = self.events.front()?.0;
        if oldest > last_seq + 1 {
            return None;
        }
        let events = self
            .events
            .iter()
            .filter(|(s, _)| *s > last_seq)
            .filter_map(|(s, event)| self.render(*s, event, now))
            .collect();
        Some((resumed, events))
    }

    /// The frame for a sequenced event, as of `now`.
    pub(super) fn render(&self, seq: u64, event: &Event, now: Millis) -> Option<ServerMessage> {
        Some(match *event {
            Event::Started => ServerMessage::Started(Started {
                seq,
                ends_in_ms: self.window_end().map_or(0, |end| (end - now).max(0) as u64),
            }),
            Event::Question(index) => {
                let left = self.live_time_left(index, now);
                ServerMessage::Question(self.question_frame(index, Some(seq), left)?)
            }
            Event::Closed(index) => ServerMessage::Closed(Closed { seq, index }),
            Event::Reveal(index) => {
                ServerMessage::Reveal(Box::new(self.reveal_frame(index, Some(seq))?))
            }
            Event::Paused {
                index,
                remaining_ms,
            } => ServerMessage::Paused(Paused {
                seq,
                index,
                remaining_ms,
            }),
            Event::Unpaused(index) => ServerMessage::Unpaused(Unpaused {
                seq,
                index,
                ends_in_ms: self.live_time_left(index, now),
            }),
            Event::Ended => ServerMessage::Ended(Ended {
                seq,
                top: self.board.top(),
                players: self.board.players(),
            }),
        })
    }

    /// Question `index` as phones see it: no answer in it, tiles and right items shuffled.
    pub(super) fn question_frame(
        &self,
        index: u32,
        seq: Option<u64>,
        ends_in_ms: u32,
    ) -> Option<QuestionFrame> {
        let q = self.question(index)?;
        let layout = self.layouts.get(index as usize)?;
        let mut frame = QuestionFrame {
            seq,
            index,
            count: self.question_count(),
            kind: q.body.kind(),
            level: q.level,
            topic: q.topic.clone(),
            prompt: q.prompt.clone(),
            options: None,
            tiles: None,
            left: None,
            right: None,
            time_limit_ms: q.time_limit_s.saturating_mul(1000),
            ends_in_ms,
            points: q.points,
            multiplier: q.multiplier,
        };
        match &q.body {
            QuestionBody::SingleChoice { options, .. }
            | QuestionBody::MultipleSelect { options, .. }
            | QuestionBody::Poll { options } => frame.options = Some(options.clone()),
            QuestionBody::WordOrder { answer, .. } => {
                let tiles = Layout::shown(layout.tiles(), answer);
                frame.tiles = Some(tiles.into_iter().map(String::from).collect());
            }
            QuestionBody::Matching { pairs } => {
                frame.left = Some(pairs.iter().map(|(l, _)| l.clone()).collect());
                let right = layout.right().iter().filter_map(|i| pairs.get(*i as usize));
                frame.right = Some(right.map(|(_, r)| r.clone()).collect());
            }
            QuestionBody::TrueFalse { .. } | QuestionBody::TypedAnswer { .. } => {}
        }
        Some(frame)
    }

    /// The reveal of question `index`: the answer, the explanation and how everyone answered.
    pub(super) fn reveal_frame(&self, index: u32, seq: Option<u64>) -> Option<Reveal> {
        let q = self.question(index)?;
        Some(Reveal {
            seq,
            index,
            correct: grade::correct(q, self.layouts.get(index as usize)?),
            explanation: q.explanation.clone(),
            stats: self.stats.get(index as usize)?.frame(),
        })
    }

    /// Time left on live question `index` at `now`: frozen while paused, 0 once it closed.
    fn live_time_left(&self, index: u32, now: Millis) -> u32 {
        let p = &self.progress;
        let (Some(opened), true) = (p.opened_at, p.question == Some(index)) else {
            return 0;
        };
        let limit = self.limit_ms(index);
        let used = match (p.phase, p.paused_at) {
            (Phase::Open, _) => now - opened - p.paused_ms,
            (Phase::Paused, Some(since)) => since - opened - p.paused_ms,
            _ => limit,
        };
        (limit - used).clamp(0, limit) as u32
    }

    fn you(&self, player: Option<PlayerNo>, role: Role) -> You {
        let p = player.and_then(|no| self.players.get(&no).map(|p| (no, p)));
        match (role, p) {
            (Role::Player, Some((no, p))) => You {
                role,
                nickname: p.record.nickname.clone(),
                score: p.score,
                rank: self.board.standing(no).map_or(0, |s| s.rank),
            },
            _ => You {
                role,
                nickname: String::new(),
                score: 0,
                rank: 0,
            },
        }
    }

    /// A stored ack with the player's rank as it is now.
    pub(super) fn fresh(&self, player: PlayerNo, ack: &Ack) -> Ack {
        let rank = self.board.standing(player).map_or(0, |s| s.rank);
        Ack {
            rank,
            ..ack.clone()
        }
    }
}
