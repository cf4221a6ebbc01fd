//! One quiz's session: lifecycle, joins, answers, host controls, self-paced progress, the
//! replay buffer, and the effects the shell must perform.
//!
//! Answers take two steps so that the shell can make them durable before anyone is told:
//! [`Session::submit`] validates and grades (the answer becomes *pending*), the shell appends
//! the [`AnswerRecord`] to the answer log, then [`Session::commit`] counts it and returns the
//! ack, or [`Session::abort`] forgets it if the write failed.

use quiz_protocol::client::{Ack, HostOk, Resumed, Role, ServerMessage, Welcome};
use quiz_protocol::cluster::{Audience, LeaderboardUpdate};
use quiz_protocol::{
    Answer, AnswerId, ErrorCode, HostCommand, Phase, PlayerNo, Question, QuizId, QuizSettings,
    UserId,
};
use serde::{Deserialize, Serialize};

use crate::Millis;

/// Tunables of the engine. Each is a config value of the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Leaderboard changes are pushed at most this often (and only when something changed).
    /// Lower is fresher but costs a frame per phone per interval.
    pub leaderboard_interval_ms: u32,
    /// Sequenced events kept for resume; older resumes get a snapshot. ~1 KiB per event.
    pub replay_buffer: usize,
    /// Answers received this long after the deadline still count (scored as if at the
    /// deadline), for the mobile network's transit time.
    pub answer_grace_ms: u32,
    /// A correct answer faster than this gets full points.
    pub full_points_under_ms: u32,
    /// Typed answers of at least this many letters forgive a one-letter typo.
    pub typo_min_len: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            leaderboard_interval_ms: 250,
            replay_buffer: 512,
            answer_grace_ms: 300,
            full_points_under_ms: 500,
            typo_min_len: 5,
        }
    }
}

/// Everything that defines a quiz before it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct QuizSpec {
    pub id: QuizId,
    pub title: String,
    pub settings: QuizSettings,
    pub questions: Vec<Question>,
}

/// The durable progress of a quiz: what the shell persists on every phase change, and what
/// [`Session::restore`] resumes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// The current question (live mode), 0-based.
    pub question: Option<u32>,
    /// When the current question opened, or the self-paced window started.
    pub opened_at: Option<Millis>,
    /// Milliseconds the current question has spent paused, not counting a pause in progress.
    pub paused_ms: i64,
    /// When the pause in progress began.
    pub paused_at: Option<Millis>,
    /// When the phase last changed (auto-advance counts from it).
    pub phase_at: Millis,
    /// The last sequence number issued.
    pub seq: u64,
}

/// A player as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerRecord {
    pub player: PlayerNo,
    pub user: UserId,
    pub nickname: String,
    pub joined_at: Millis,
    pub kicked: bool,
    /// Self-paced: the question this player has open (or last had), and when it opened.
    pub current: Option<u32>,
    pub current_opened_at: Option<Millis>,
}

/// One accepted answer: a row of the durable answer log. Unique on (quiz, player, question).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub quiz: QuizId,
    pub player: PlayerNo,
    pub question: u32,
    pub answer_id: AnswerId,
    pub answer: Answer,
    /// Server time the answer was received.
    pub received_at: Millis,
    /// Response time used for scoring (pauses excluded, capped at the time limit).
    pub response_ms: u32,
    /// Points awarded, streak bonus included.
    pub points: u32,
    /// Fully correct (continues a streak).
    pub correct: bool,
    /// Streak after this answer.
    pub streak: u32,
}

/// What [`Session::restore`] rebuilds a session from.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedQuiz {
    pub progress: Progress,
    pub players: Vec<PlayerRecord>,
    pub answers: Vec<AnswerRecord>,
}

/// A refusal, with the code the phone sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub code: ErrorCode,
    pub message: String,
}

impl Reject {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The result of a join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub player: PlayerNo,
    /// The nickname as assigned (a suffix is added when taken).
    pub nickname: String,
    /// False when this user had joined before (joining is idempotent).
    pub new: bool,
}

/// The result of [`Session::submit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submit {
    /// Graded and pending: append it to the answer log, then [`Session::commit`] it.
    Accepted(AnswerRecord),
    /// This answer id was already counted: here is the same ack again.
    Duplicate(Ack),
    /// This answer id is pending (being written): wait for its commit.
    InFlight,
    Rejected(Reject),
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Persist the quiz's progress (it changed phase).
    SaveProgress(Progress),
    /// Persist a player (new, kicked, or self-paced progress).
    SavePlayer(PlayerRecord),
    /// Deliver a frame. Sequenced frames (`msg.seq()` is set) are already in the replay buffer.
    Send {
        audience: Audience,
        msg: ServerMessage,
    },
    /// Push a leaderboard version to every edge.
    Leaderboard(LeaderboardUpdate),
    /// Close this player's connections (code 4003).
    Kicked(PlayerNo),
    /// The quiz ended: persist final standings; the session may be unloaded after a grace.
    Ended,
}

/// One live quiz.
#[derive(Debug)]
pub struct Session {
    _private: (),
}

impl Session {
    /// A new quiz in the lobby.
    pub fn new(spec: QuizSpec, config: EngineConfig, now: Millis) -> Session {
        let _ = (spec, config, now);
        todo!()
    }

    /// Rebuilds a session from durable state. Deadlines keep their original times; call
    /// [`Session::handle_timeout`] afterwards to process any that passed while it was down.
    pub fn restore(spec: QuizSpec, config: EngineConfig, saved: SavedQuiz) -> Session {
        let _ = (spec, config, saved);
        todo!()
    }

    pub fn id(&self) -> &QuizId {
        todo!()
    }

    pub fn phase(&self) -> Phase {
        todo!()
    }

    pub fn progress(&self) -> Progress {
        todo!()
    }

    /// Adds a player, or finds the one this user already is.
    pub fn join(&mut self, user: &UserId, nickname: &str, now: Millis) -> Result<Joined, Reject> {
        let _ = (user, nickname, now);
        todo!()
    }

    /// The full state for a phone (`player` is `None` for a host).
    pub fn welcome(&self, player: Option<PlayerNo>, role: Role, now: Millis) -> Welcome {
        let _ = (player, role, now);
        todo!()
    }

    /// The events after `last_seq`, if the replay buffer still holds them all (and `last_seq`
    /// is not ahead of the quiz). `None` means: send a welcome instead.
    pub fn replay(
        &self,
        last_seq: u64,
        player: Option<PlayerNo>,
        role: Role,
        now: Millis,
    ) -> Option<(Resumed, Vec<ServerMessage>)> {
        let _ = (last_seq, player, role, now);
        todo!()
    }

    /// Validates and grades an answer.
    pub fn submit(
        &mut self,
        player: PlayerNo,
        question: u32,
        answer_id: AnswerId,
        answer: Answer,
        now: Millis,
    ) -> Submit {
        let _ = (player, question, answer_id, answer, now);
        todo!()
    }

    /// Counts a pending answer once it is durable; returns its ack.
    pub fn commit(&mut self, record: &AnswerRecord, now: Millis) -> Ack {
        let _ = (record, now);
        todo!()
    }

    /// Forgets a pending answer whose write failed; the phone may retry.
    pub fn abort(&mut self, record: &AnswerRecord) {
        let _ = record;
        todo!()
    }

    /// A host command. Host rights are checked by the caller.
    pub fn host(
        &mut self,
        command: HostCommand,
        target: Option<&str>,
        now: Millis,
    ) -> Result<HostOk, Reject> {
        let _ = (command, target, now);
        todo!()
    }

    /// Self-paced: opens the player's next question and returns its frame.
    pub fn next(&mut self, player: PlayerNo, now: Millis) -> Result<ServerMessage, Reject> {
        let _ = (player, now);
        todo!()
    }

    /// The shell's count of a player's open connections went to zero or above it.
    pub fn set_connected(&mut self, player: PlayerNo, connected: bool, now: Millis) {
        let _ = (player, connected, now);
        todo!()
    }

    /// The whole leaderboard at its current version, for an edge that just subscribed.
    pub fn leaderboard_full(&self) -> LeaderboardUpdate {
        todo!()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        todo!()
    }

    /// Deadlines, auto-advance and leaderboard coalescing.
    pub fn handle_timeout(&mut self, now: Millis) {
        let _ = now;
        todo!()
    }

    /// The next effect to perform, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        todo!()
    }
}
