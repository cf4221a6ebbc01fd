//! The quiz engine: a pure, deterministic state machine for one quiz.
//!
//! Events and the current time go in; effects come out. There is no I/O, no clock and no
//! runtime here: the node's shell feeds [`Session`] the events it receives, performs the
//! [`Effect`]s it polls (persist, broadcast, push a leaderboard), and asks
//! [`Session::poll_timeout`] when to call [`Session::handle_timeout`] next. This is the shape of
//! quinn-proto's `Connection`, and it is what makes the engine testable without sleeps.
//!
//! - [`grade`]: is an answer right, and how right (normalisation, typos, partial credit).
//! - [`layout`]: the shuffled order phones show tiles and matching items in.
//! - [`score`]: points from correctness, time and streak.
//! - [`rank`]: an order-statistic index, for "your rank" in O(√n).
//! - [`leaderboard`]: scores, the tie-break rule, versions, coalesced deltas, edge replicas.
//! - [`nickname`]: nickname rules.
//! - [`session`]: the quiz lifecycle, answers, host controls, self-paced mode, replay.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod grade;
pub mod layout;
pub mod leaderboard;
pub mod nickname;
pub mod rank;
pub mod score;
pub mod session;

pub use leaderboard::{Leaderboard, LeaderboardReplica, RankKey};
pub use session::{
    AnswerRecord, Effect, EngineConfig, Joined, PlayerRecord, Progress, QuizSpec, Reject,
    SavedQuiz, Session, Submit,
};

/// Wall-clock time in milliseconds since the Unix epoch, supplied by the shell. Wall clock
/// (not monotonic) because deadlines are persisted and must survive a restart.
pub type Millis = i64;
