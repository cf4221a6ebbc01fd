//! One quiz's session: lifecycle, joins, answers, host controls, self-paced progress, the
//! replay buffer, and the effects the shell must perform.
//!
//! Answers take two steps so that the shell can make them durable before anyone is told:
//! [`Session::submit`] validates and grades (the answer becomes *pending*), the shell appends
//! the [`AnswerRecord`] to the answer log, then [`Session::commit`] counts it and returns the
//! ack, or [`Session::abort`] forgets it if the write failed.
//!
//! Time only comes in as `now`. Timed steps (a question closing, auto-advance, a self-paced
//! player's timer, the end of the self-paced window) happen at their scheduled time when
//! [`Session::handle_timeout`] runs, however late it runs, so the same inputs give the same
//! state whatever the timer jitter. Frames are rendered when they are sent, so `ends_in_ms` is
//! the time left at that moment, for replays too.
//!
//! The pieces, by file: the lifecycle and host commands (`lifecycle.rs`), answers
//! (`answers.rs`), self-paced progress (`self_paced.rs`), what phones are sent (`frames.rs`,
//! `stats.rs`), and rebuilding from durable state (`restore.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use quiz_protocol::client::{Ack, ServerMessage};
use quiz_protocol::cluster::{Audience, LeaderboardUpdate};
use quiz_protocol::{
    Answer, AnswerId, ErrorCode, Mode, Phase, PlayerNo, Question, QuizId, QuizSettings, UserId,
};
use serde::{Deserialize, Serialize};

use crate::Millis;
use crate::layout::Layout;
use crate::leaderboard::Leaderboard;
use crate::nickname;

mod answers;
mod frames;
mod lifecycle;
mod restore;
mod self_paced;
mod stats;
#[cfg(test)]
mod tests;

use frames::Event;
use stats::QuestionStats;

/// Tunables of the engine. Each is a config value of the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// After a quiz is loaded from the store (a node restart, a failover, a handoff), a live
    /// question does not close early for this long: its phones are still reconnecting, and
    /// the first ones back must not cut the others short by all having answered.
    pub rejoin_grace_ms: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            leaderboard_interval_ms: 250,
            replay_buffer: 512,
            answer_grace_ms: 300,
            full_points_under_ms: 500,
            typo_min_len: 5,
            rejoin_grace_ms: 5_000,
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

impl Progress {
    /// The progress of a quiz just created: in the lobby, nothing sent yet.
    pub fn lobby(now: Millis) -> Progress {
        Progress {
            phase: Phase::Lobby,
            question: None,
            opened_at: None,
            paused_ms: 0,
            paused_at: None,
            phase_at: now,
            seq: 0,
        }
    }
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
    spec: QuizSpec,
    config: EngineConfig,
    /// How each question is shown (tile and right-column order), by index.
    layouts: Vec<Layout>,
    /// How everyone answered each question, by index.
    stats: Vec<QuestionStats>,
    /// Phase, current question, its timing, and the last sequence number.
    progress: Progress,
    /// The seq of the current live question's `question` event.
    question_seq: Option<u64>,
    /// The replay buffer: the last sequenced events, oldest first.
    events: VecDeque<(u64, Event)>,
    players: BTreeMap<PlayerNo, Player>,
    by_user: HashMap<UserId, PlayerNo>,
    /// Every nickname given out (kicked players' too), by [`nickname::key`].
    by_nickname: HashMap<String, PlayerNo>,
    /// Players not kicked.
    active: u32,
    /// Connected players not kicked.
    connected: u32,
    /// Connected players not kicked who have not answered the current live question: the
    /// question closes early when this reaches 0.
    waiting: u32,
    /// Self-paced: when each player's question closes (deadline + grace). Entries may be stale
    /// (the player answered); they are checked when they fire.
    deadlines: BTreeSet<(Millis, PlayerNo)>,
    /// No early close before this (set while restored phones rejoin); checked again then.
    early_close_hold: Option<Millis>,
    board: Leaderboard,
    effects: VecDeque<Effect>,
}

/// A player's state in the session.
#[derive(Debug)]
struct Player {
    record: PlayerRecord,
    connected: bool,
    score: u32,
    /// Consecutive fully correct answers, as of the last answer or missed question.
    streak: u32,
    /// Answers by question index.
    answers: BTreeMap<u32, Slot>,
    /// The question each answer id was used for: answer ids are scoped per player.
    ids: HashMap<AnswerId, u32>,
    /// Self-paced: the current question ran out unanswered (and was revealed).
    timed_out: bool,
}

/// One answer of a player.
#[derive(Debug)]
enum Slot {
    /// Graded, being written to the answer log under this id.
    Pending(AnswerId),
    /// In the log and counted; the ack it got (its rank is refreshed when sent again).
    Counted(Ack),
}

impl Player {
    fn new(record: PlayerRecord) -> Player {
        Player {
            record,
            connected: false,
            score: 0,
            streak: 0,
            answers: BTreeMap::new(),
            ids: HashMap::new(),
            timed_out: false,
        }
    }

    fn counted(&self, question: u32) -> Option<&Ack> {
        match self.answers.get(&question) {
            Some(Slot::Counted(ack)) => Some(ack),
            _ => None,
        }
    }

    fn is_pending(&self, question: u32) -> bool {
        matches!(self.answers.get(&question), Some(Slot::Pending(_)))
    }
}

impl Session {
    /// A new quiz in the lobby.
    pub fn new(spec: QuizSpec, config: EngineConfig, now: Millis) -> Session {
        let layouts = spec
            .questions
            .iter()
            .zip(0u32..)
            .map(|(q, i)| Layout::new(&spec.id, i, &q.body))
            .collect();
        let stats = spec.questions.iter().map(QuestionStats::new).collect();
        let board = Leaderboard::new(
            usize::from(spec.settings.top_n),
            config.leaderboard_interval_ms,
        );
        Session {
            layouts,
            stats,
            progress: Progress::lobby(now),
            question_seq: None,
            events: VecDeque::new(),
            players: BTreeMap::new(),
            by_user: HashMap::new(),
            by_nickname: HashMap::new(),
            active: 0,
            connected: 0,
            waiting: 0,
            deadlines: BTreeSet::new(),
            early_close_hold: None,
            board,
            effects: VecDeque::new(),
            spec,
            config,
        }
    }

    pub fn id(&self) -> &QuizId {
        &self.spec.id
    }

    pub fn phase(&self) -> Phase {
        self.progress.phase
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The quiz's definition.
    pub fn spec(&self) -> &QuizSpec {
        &self.spec
    }

    /// How question `index` is shown to phones.
    pub fn layout(&self, index: u32) -> Option<&Layout> {
        self.layouts.get(index as usize)
    }

    /// A player as persisted, if they joined.
    pub fn player(&self, player: PlayerNo) -> Option<&PlayerRecord> {
        self.players.get(&player).map(|p| &p.record)
    }

    /// A player's score: always the sum of the points of their counted answers.
    pub fn score(&self, player: PlayerNo) -> Option<u32> {
        self.players.get(&player).map(|p| p.score)
    }

    /// A player's current streak of fully correct answers.
    pub fn streak(&self, player: PlayerNo) -> Option<u32> {
        self.players.get(&player).map(|p| p.streak)
    }

    /// The owner's leaderboard (scores, ranks, top N).
    pub fn leaderboard(&self) -> &Leaderboard {
        &self.board
    }

    /// After [`Session::restore`]: leaderboard versions continue from at least `base`. The
    /// shell passes the wall clock in ms: versions grow by at most one per push interval, so
    /// the clock is always ahead of any version an earlier incarnation reached.
    pub fn start_leaderboard_versions_at(&mut self, base: u64) {
        self.board.start_versions_at(base);
    }

    /// Adds a player, or finds the one this user already is.
    ///
    /// A join comes over a connection, so the player counts as connected until
    /// [`Session::set_connected`] says otherwise. A user who joined before gets the same player
    /// and nickname (also after the quiz ended, so they can see the final standings); a new
    /// player is refused once the quiz ended or is full.
    pub fn join(&mut self, user: &UserId, nickname: &str, now: Millis) -> Result<Joined, Reject> {
        if let Some(&no) = self.by_user.get(user) {
            let (kicked, name) = match self.players.get(&no) {
                Some(p) => (p.record.kicked, p.record.nickname.clone()),
                None => (false, String::new()),
            };
            if kicked {
                return Err(Reject::new(
                    ErrorCode::Kicked,
                    "the host removed you from this quiz",
                ));
            }
            self.set_connected(no, true, now);
            return Ok(Joined {
                player: no,
                nickname: name,
                new: false,
            });
        }
        if self.progress.phase == Phase::Ended {
            return Err(Reject::new(ErrorCode::QuizEnded, "this quiz has ended"));
        }
        if self.active >= self.spec.settings.max_players {
            return Err(Reject::new(ErrorCode::QuizFull, "this quiz is full"));
        }
        let wanted = nickname::clean(nickname)?;
        let name = nickname::unique(&wanted, |c| {
            self.by_nickname.contains_key(&nickname::key(c))
        });
        let no = PlayerNo(
            self.players
                .keys()
                .next_back()
                .map_or(1, |p| p.0.saturating_add(1)),
        );
        let record = PlayerRecord {
            player: no,
            user: user.clone(),
            nickname: name.clone(),
            joined_at: now,
            kicked: false,
            current: None,
            current_opened_at: None,
        };
        self.effects.push_back(Effect::SavePlayer(record.clone()));
        let mut player = Player::new(record);
        player.connected = true;
        self.players.insert(no, player);
        self.by_user.insert(user.clone(), no);
        self.by_nickname.insert(nickname::key(&name), no);
        self.active += 1;
        self.connected += 1;
        self.waiting += 1;
        self.board.add(no, &name, 0, 0, now);
        Ok(Joined {
            player: no,
            nickname: name,
            new: true,
        })
    }

    /// The shell's count of a player's open connections went to zero or above it.
    pub fn set_connected(&mut self, player: PlayerNo, connected: bool, now: Millis) {
        let current = self.live_question();
        let Some(p) = self.players.get_mut(&player) else {
            return;
        };
        if p.record.kicked || p.connected == connected {
            return;
        }
        p.connected = connected;
        let waits = current.is_none_or(|q| p.counted(q).is_none());
        if connected {
            self.connected += 1;
            self.waiting += u32::from(waits);
        } else {
            self.connected -= 1;
            self.waiting -= u32::from(waits);
            // Only a leaving player can complete "everyone connected has answered". A
            // returning one who had answered does not close the question: after a failover
            // phones reconnect one by one, and the first back must not cut the rest short.
            self.close_if_all_answered(now);
        }
    }

    /// The whole leaderboard at its current version, for an edge that just subscribed.
    pub fn leaderboard_full(&self) -> LeaderboardUpdate {
        self.board.full()
    }

    /// The same in parts that each fit a cluster frame, whatever the quiz's size.
    pub fn leaderboard_full_parts(&self) -> Vec<LeaderboardUpdate> {
        self.board.full_parts(crate::leaderboard::FULL_PART_PLAYERS)
    }

    /// The next effect to perform, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn question(&self, index: u32) -> Option<&Question> {
        self.spec.questions.get(index as usize)
    }

    fn question_count(&self) -> u32 {
        self.spec.questions.len() as u32
    }

    fn limit_ms(&self, index: u32) -> Millis {
        self.question(index)
            .map_or(0, |q| Millis::from(q.time_limit_s) * 1000)
    }

    fn grace_ms(&self) -> Millis {
        Millis::from(self.config.answer_grace_ms)
    }

    fn is_live(&self) -> bool {
        self.spec.settings.mode == Mode::Live
    }

    /// Live mode: the question opened last (answered counts and "who has not answered yet"
    /// refer to it), from the first question's opening on.
    fn live_question(&self) -> Option<u32> {
        self.progress.question.filter(|_| self.is_live())
    }

    /// Moves to `phase` at time `at`, records `event` (if any) under the next sequence number,
    /// asks the shell to persist the progress, and sends the event to everyone.
    fn transition(&mut self, phase: Phase, at: Millis, event: Option<Event>, now: Millis) {
        self.progress.phase = phase;
        self.progress.phase_at = at;
        let sent = event.map(|event| {
            self.progress.seq += 1;
            let seq = self.progress.seq;
            if self.config.replay_buffer > 0 {
                if self.events.len() == self.config.replay_buffer {
                    self.events.pop_front();
                }
                self.events.push_back((seq, event.clone()));
            }
            self.render(seq, &event, now)
        });
        self.effects
            .push_back(Effect::SaveProgress(self.progress.clone()));
        if let Some(msg) = sent.flatten() {
            self.effects.push_back(Effect::Send {
                audience: Audience::Everyone,
                msg,
            });
        }
    }

    fn reject<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Reject> {
        Err(Reject::new(code, message))
    }
}
