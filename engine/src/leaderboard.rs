//! Leaderboards: the owner's [`Leaderboard`] (scores, ranks, versions, coalesced deltas) and
//! the edge's [`LeaderboardReplica`] (a copy kept current from those deltas, so each edge can
//! tell each of its phones their own rank without asking the owner).
//!
//! Order: higher score first; on equal scores, the lower tie-break (total response time of the
//! answers that scored, in ms) first; then the lower player number (who joined first). This is
//! a total order, a pure function of the answer log and the players, and the same everywhere.

use quiz_protocol::PlayerNo;
use quiz_protocol::client::{RankScore, TopEntry};
use quiz_protocol::cluster::LeaderboardUpdate;

/// A player's position key; `Ord` is the leaderboard order (smallest ranks first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RankKey {
    pub score: u32,
    pub tiebreak: u64,
    pub player: PlayerNo,
}

impl Ord for RankKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .cmp(&self.score)
            .then(self.tiebreak.cmp(&other.tiebreak))
            .then(self.player.cmp(&other.player))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The owner's leaderboard of one quiz.
#[derive(Debug)]
pub struct Leaderboard {
    _private: (),
}

/// A delta did not follow the version the replica holds; ask the owner for a full update.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("leaderboard delta {got} does not follow version {held}")]
pub struct Gap {
    pub held: u64,
    pub got: u64,
}

/// An edge's copy of one quiz's leaderboard.
#[derive(Debug, Default)]
pub struct LeaderboardReplica {
    _private: (),
}

impl LeaderboardReplica {
    pub fn new() -> Self {
        Self::default()
    }

    /// The version held; 0 before the first full update.
    pub fn version(&self) -> u64 {
        todo!()
    }

    /// Applies a full update (always) or the delta that follows the held version. An older
    /// or equal version is ignored (`Ok`): versions only go forward.
    pub fn apply(&mut self, update: &LeaderboardUpdate) -> Result<(), Gap> {
        let _ = update;
        todo!()
    }

    /// A player's rank (1-based) and score, if they are on the board.
    pub fn standing(&self, player: PlayerNo) -> Option<RankScore> {
        let _ = player;
        todo!()
    }

    pub fn top(&self) -> &[TopEntry] {
        todo!()
    }

    pub fn players(&self) -> u32 {
        todo!()
    }

    /// Answers in for the current question, as of the held version.
    pub fn answered(&self) -> u32 {
        todo!()
    }
}
