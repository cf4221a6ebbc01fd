//! A quiz as a host configures it, and the public names of its phases and host commands.

use serde::{Deserialize, Serialize};

/// How a quiz moves from question to question.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The host (or auto-advance) moves everyone through the questions together.
    #[default]
    Live,
    /// Each player moves at their own pace until the quiz's deadline.
    SelfPaced,
}

/// How a correct answer is scored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// `round(points × (1 − (t/T)/2))`, full points under 0.5 s.
    #[default]
    Speed,
    /// Full points for a correct answer, whatever the time.
    Accuracy,
}

/// Automatic pacing of a live quiz. With it, a question closes at its deadline, is revealed
/// `reveal_after_ms` later, and the next question opens `next_after_ms` after the reveal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoAdvance {
    #[serde(default = "default_reveal_after_ms")]
    pub reveal_after_ms: u32,
    #[serde(default = "default_next_after_ms")]
    pub next_after_ms: u32,
}

fn default_reveal_after_ms() -> u32 {
    2_000
}
fn default_next_after_ms() -> u32 {
    5_000
}

/// Longest self-paced window a host may set: one week.
pub const MAX_SELF_PACED_WINDOW_S: u32 = 7 * 24 * 3600;
/// Most players one quiz may be configured for.
pub const MAX_PLAYERS_LIMIT: u32 = 100_000;

/// The settings a host chooses when creating a quiz. Every field has a default.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuizSettings {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub scoring: Scoring,
    /// +100 per consecutive fully correct answer after the first, capped at +500.
    #[serde(default = "yes")]
    pub streak_bonus: bool,
    /// Live mode only; `null` means the host drives every step.
    #[serde(default)]
    pub auto_advance: Option<AutoAdvance>,
    /// Close a live question early once every connected player has answered.
    #[serde(default = "yes")]
    pub close_when_all_answered: bool,
    /// Self-paced mode: seconds from `start` until the quiz ends for everyone.
    #[serde(default = "default_self_paced_window_s")]
    pub self_paced_window_s: u32,
    /// Most players that may join. Each costs a few hundred bytes on the owner.
    #[serde(default = "default_max_players")]
    pub max_players: u32,
    /// How many leaderboard entries phones see.
    #[serde(default = "default_top_n")]
    pub top_n: u8,
}

fn yes() -> bool {
    true
}
fn default_self_paced_window_s() -> u32 {
    24 * 3600
}
fn default_max_players() -> u32 {
    50_000
}
fn default_top_n() -> u8 {
    5
}

impl Default for QuizSettings {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            scoring: Scoring::default(),
            streak_bonus: true,
            auto_advance: None,
            close_when_all_answered: true,
            self_paced_window_s: default_self_paced_window_s(),
            max_players: default_max_players(),
            top_n: default_top_n(),
        }
    }
}

impl QuizSettings {
    /// Problems with the settings, as (field, problem).
    pub fn validate(&self) -> Result<(), Vec<crate::ContentError>> {
        let mut errors = Vec::new();
        let mut err = |path: &str, problem: &str| {
            errors.push(crate::ContentError {
                path: path.into(),
                problem: problem.into(),
            })
        };
        if !(60..=MAX_SELF_PACED_WINDOW_S).contains(&self.self_paced_window_s) {
            err("self_paced_window_s", "must be 60 seconds to one week");
        }
        if !(1..=MAX_PLAYERS_LIMIT).contains(&self.max_players) {
            err("max_players", "must be 1-100000");
        }
        if !(1..=20).contains(&self.top_n) {
            err("top_n", "must be 1-20");
        }
        if let Some(a) = self.auto_advance {
            if self.mode == Mode::SelfPaced {
                err("auto_advance", "applies to live quizzes only");
            }
            if a.reveal_after_ms > 60_000 || a.next_after_ms > 300_000 {
                err("auto_advance", "delays must be at most 60 s and 300 s");
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Where a quiz is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Players are joining; no question yet.
    Lobby,
    /// A question is open for answers.
    Open,
    /// A question is paused by the host; its clock is stopped.
    Paused,
    /// Time is up; the answer is not shown yet.
    Closed,
    /// The answer, explanation and statistics are shown.
    Reveal,
    /// Self-paced mode: players are working through the questions.
    InProgress,
    /// The quiz is over; standings are final.
    Ended,
}

/// What a host can tell a quiz to do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCommand {
    /// Lobby → first question (live) or the self-paced window opens.
    Start,
    /// Reveal → next question, or ended after the last one. From open or closed, it closes
    /// and reveals first.
    Next,
    /// Open or closed → reveal.
    Reveal,
    /// Open → paused (the clock stops).
    Pause,
    /// Paused → open, with the time that was left.
    Resume,
    /// Any phase → ended.
    End,
    /// Remove a player (by nickname); they cannot join again and leave the leaderboard.
    Kick,
}
