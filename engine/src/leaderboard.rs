//! Leaderboards: the owner's [`Leaderboard`] (scores, ranks, versions, coalesced deltas) and
//! the edge's [`LeaderboardReplica`] (a copy kept current from those deltas, so each edge can
//! tell each of its phones their own rank without asking the owner).
//!
//! Order: higher score first; on equal scores, the lower tie-break (total response time of the
//! answers that scored, in ms) first; then the lower player number (who joined first). This is
//! a total order, a pure function of the answer log and the players, and the same everywhere.
//!
//! Coalescing: every change marks the owner's board dirty, and [`Leaderboard::push`] turns
//! what changed into one [`LeaderboardUpdate`] at most once per interval. Deltas carry absolute
//! standings, not increments, so applying one twice, or on top of a full update that already
//! holds it, is harmless. Versions count pushed deltas; they start at 0 in a new or restored
//! session (a restored owner's first update to each edge is a full one, which replicas always
//! accept).

use std::collections::{BTreeSet, HashMap};

use quiz_protocol::PlayerNo;
use quiz_protocol::client::{RankScore, TopEntry};
use quiz_protocol::cluster::{LeaderboardUpdate, Standing};

use crate::Millis;
use crate::rank::RankIndex;

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
    top_n: usize,
    interval_ms: Millis,
    entries: HashMap<PlayerNo, Entry>,
    index: RankIndex<RankKey>,
    version: u64,
    answered: u32,
    /// Players whose standing changed since the last push (joined or scored).
    changed: BTreeSet<PlayerNo>,
    /// Players taken off the board since the last push.
    removed: BTreeSet<PlayerNo>,
    /// When the board first changed after the last push; `None` when there is nothing to push.
    dirty_since: Option<Millis>,
    last_push: Option<Millis>,
}

#[derive(Clone, Debug)]
struct Entry {
    score: u32,
    tiebreak: u64,
    nickname: String,
}

impl Leaderboard {
    /// An empty board showing `top_n` entries and pushing at most every `interval_ms`.
    pub fn new(top_n: usize, interval_ms: u32) -> Self {
        Self {
            top_n,
            interval_ms: Millis::from(interval_ms),
            entries: HashMap::new(),
            index: RankIndex::new(),
            version: 0,
            answered: 0,
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
            dirty_since: None,
            last_push: None,
        }
    }

    /// Puts a player on the board (a new player has 0 points and tie-break 0). A player
    /// already on it keeps their standing.
    pub fn add(
        &mut self,
        player: PlayerNo,
        nickname: &str,
        score: u32,
        tiebreak: u64,
        now: Millis,
    ) {
        if self.entries.contains_key(&player) {
            return;
        }
        let entry = Entry {
            score,
            tiebreak,
            nickname: nickname.to_owned(),
        };
        self.index.insert(Self::key(player, &entry));
        self.entries.insert(player, entry);
        self.removed.remove(&player);
        self.changed.insert(player);
        self.touch(now);
    }

    /// Adds an answer's points: the score grows by `points`, and the tie-break by
    /// `response_ms` when the answer scored. No-op for players not on the board.
    pub fn record(&mut self, player: PlayerNo, points: u32, response_ms: u32, now: Millis) {
        if points == 0 {
            return;
        }
        let Some(entry) = self.entries.get_mut(&player) else {
            return;
        };
        self.index.remove(&Self::key(player, entry));
        entry.score = entry.score.saturating_add(points);
        entry.tiebreak += u64::from(response_ms);
        self.index.insert(Self::key(player, entry));
        self.changed.insert(player);
        self.touch(now);
    }

    /// Takes a player off the board (kicked). False if they were not on it.
    pub fn remove(&mut self, player: PlayerNo, now: Millis) -> bool {
        let Some(entry) = self.entries.remove(&player) else {
            return false;
        };
        self.index.remove(&Self::key(player, &entry));
        self.changed.remove(&player);
        self.removed.insert(player);
        self.touch(now);
        true
    }

    /// Sets the count of answers in for the current question.
    pub fn set_answered(&mut self, answered: u32, now: Millis) {
        if self.answered != answered {
            self.answered = answered;
            self.touch(now);
        }
    }

    /// Forgets pending changes without pushing them: for a board rebuilt on restore, which
    /// edges receive as a full update.
    pub fn settle(&mut self) {
        self.changed.clear();
        self.removed.clear();
        self.dirty_since = None;
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Moves the version counter up to at least `base`. A rebuilt owner counts from a base
    /// above anything its predecessor reached, so that phones, which ignore versions that go
    /// backwards, accept its frames.
    pub fn start_versions_at(&mut self, base: u64) {
        self.version = self.version.max(base);
    }

    /// Players on the board.
    pub fn players(&self) -> u32 {
        self.entries.len() as u32
    }

    pub fn answered(&self) -> u32 {
        self.answered
    }

    pub fn contains(&self, player: PlayerNo) -> bool {
        self.entries.contains_key(&player)
    }

    /// A player's 1-based rank and score, if they are on the board.
    pub fn standing(&self, player: PlayerNo) -> Option<RankScore> {
        let entry = self.entries.get(&player)?;
        let rank = self.index.rank(&Self::key(player, entry))?;
        Some(RankScore {
            rank: rank as u32,
            score: entry.score,
        })
    }

    /// The first N rows, as phones show them.
    pub fn top(&self) -> Vec<TopEntry> {
        self.index
            .iter()
            .take(self.top_n)
            .filter_map(|k| {
                let entry = self.entries.get(&k.player)?;
                Some(TopEntry(entry.nickname.clone(), entry.score))
            })
            .collect()
    }

    /// Every player's key, in leaderboard order.
    pub fn ranked(&self) -> impl Iterator<Item = &RankKey> + '_ {
        self.index.iter()
    }

    /// Whether there is something to push.
    pub fn is_dirty(&self) -> bool {
        self.dirty_since.is_some()
    }

    /// When the next update is due: the first change after a push, but no sooner than one
    /// interval after that push. `None` when nothing changed.
    pub fn next_push(&self) -> Option<Millis> {
        let since = self.dirty_since?;
        Some(match self.last_push {
            Some(last) => since.max(last + self.interval_ms),
            None => since,
        })
    }

    /// The next delta, if one is due at `now`.
    pub fn push(&mut self, now: Millis) -> Option<LeaderboardUpdate> {
        if self.next_push()? > now {
            return None;
        }
        self.version += 1;
        let changes = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|p| self.standing_of(p))
            .collect();
        let removed = std::mem::take(&mut self.removed).into_iter().collect();
        self.dirty_since = None;
        self.last_push = Some(now);
        Some(self.update(false, changes, removed))
    }

    /// The whole board at the current version, for an edge that is starting over.
    pub fn full(&self) -> LeaderboardUpdate {
        let mut parts = self.full_parts(usize::MAX);
        parts.swap_remove(0)
    }

    /// The whole board at the current version in parts of at most `per_part` players (at
    /// least one part): the first `full`, the others `continues`. A part of
    /// [`FULL_PART_PLAYERS`] players fits a cluster frame with room to spare.
    pub fn full_parts(&self, per_part: usize) -> Vec<LeaderboardUpdate> {
        let standings: Vec<Standing> = self
            .index
            .iter()
            .map(|k| Standing {
                player: k.player,
                score: k.score,
                tiebreak: k.tiebreak,
            })
            .collect();
        let mut parts: Vec<LeaderboardUpdate> = standings
            .chunks(per_part.max(1))
            .map(|chunk| self.update(false, chunk.to_vec(), Vec::new()))
            .collect();
        if parts.is_empty() {
            parts.push(self.update(false, Vec::new(), Vec::new()));
        }
        let last = parts.len() - 1;
        for (i, part) in parts.iter_mut().enumerate() {
            part.full = i == 0;
            part.continues = i > 0;
            part.more = i < last;
        }
        parts
    }

    fn update(
        &self,
        full: bool,
        changes: Vec<Standing>,
        removed: Vec<PlayerNo>,
    ) -> LeaderboardUpdate {
        LeaderboardUpdate {
            version: self.version,
            full,
            continues: false,
            more: false,
            players: self.players(),
            answered: self.answered,
            top: self.top(),
            changes,
            removed,
        }
    }

    fn standing_of(&self, player: PlayerNo) -> Option<Standing> {
        self.entries.get(&player).map(|e| Standing {
            player,
            score: e.score,
            tiebreak: e.tiebreak,
        })
    }

    fn touch(&mut self, now: Millis) {
        self.dirty_since.get_or_insert(now);
    }

    fn key(player: PlayerNo, entry: &Entry) -> RankKey {
        RankKey {
            score: entry.score,
            tiebreak: entry.tiebreak,
            player,
        }
    }
}

/// Players per part of a full board ([`Leaderboard::full_parts`]): a standing takes at most
/// 19 bytes in a cluster frame, so a part stays under 400 KiB, far inside the 1 MiB frame
/// limit, however big the quiz.
pub const FULL_PART_PLAYERS: usize = 20_000;

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
    version: u64,
    /// Whether a full update has been applied; deltas mean nothing before one.
    synced: bool,
    players: u32,
    answered: u32,
    top: Vec<TopEntry>,
    keys: HashMap<PlayerNo, RankKey>,
    index: RankIndex<RankKey>,
}

impl LeaderboardReplica {
    pub fn new() -> Self {
        Self::default()
    }

    /// The version held; 0 before the first full update.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies a full update (always) or the delta that follows the held version. An older
    /// or equal version is ignored (`Ok`): versions only go forward.
    ///
    /// A full update is applied whatever its version, because an owner rebuilt after a
    /// failover counts versions from 0 again and must be able to resynchronise its edges.
    pub fn apply(&mut self, update: &LeaderboardUpdate) -> Result<(), Gap> {
        if update.full {
            self.keys.clear();
            self.index.clear();
            self.synced = true;
        } else if update.continues {
            // More players of the full board just applied.
            if !self.synced || update.version != self.version {
                return Err(Gap {
                    held: self.version,
                    got: update.version,
                });
            }
        } else if !self.synced {
            return Err(Gap {
                held: self.version,
                got: update.version,
            });
        } else if update.version <= self.version {
            return Ok(());
        } else if update.version != self.version + 1 {
            return Err(Gap {
                held: self.version,
                got: update.version,
            });
        }
        for s in &update.changes {
            let key = RankKey {
                score: s.score,
                tiebreak: s.tiebreak,
                player: s.player,
            };
            if let Some(old) = self.keys.insert(s.player, key) {
                self.index.remove(&old);
            }
            self.index.insert(key);
        }
        for player in &update.removed {
            if let Some(old) = self.keys.remove(player) {
                self.index.remove(&old);
            }
        }
        self.version = update.version;
        self.players = update.players;
        self.answered = update.answered;
        self.top.clone_from(&update.top);
        Ok(())
    }

    /// A player's rank (1-based) and score, if they are on the board.
    pub fn standing(&self, player: PlayerNo) -> Option<RankScore> {
        let key = self.keys.get(&player)?;
        let rank = self.index.rank(key)?;
        Some(RankScore {
            rank: rank as u32,
            score: key.score,
        })
    }

    pub fn top(&self) -> &[TopEntry] {
        &self.top
    }

    pub fn players(&self) -> u32 {
        self.players
    }

    /// Answers in for the current question, as of the held version.
    pub fn answered(&self) -> u32 {
        self.answered
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(n: u32) -> PlayerNo {
        PlayerNo(n)
    }

    fn board() -> Leaderboard {
        Leaderboard::new(3, 250)
    }

    fn names(top: &[TopEntry]) -> Vec<&str> {
        top.iter().map(|t| t.0.as_str()).collect()
    }

    #[test]
    fn order_is_score_then_tiebreak_then_join_order() {
        let mut b = board();
        for (n, name) in [(1, "Ana"), (2, "Bo"), (3, "Cy"), (4, "Di")] {
            b.add(p(n), name, 0, 0, 0);
        }
        assert_eq!(
            names(&b.top()),
            ["Ana", "Bo", "Cy"],
            "join order among equals"
        );
        b.record(p(3), 900, 4_000, 1);
        b.record(p(2), 900, 3_000, 1);
        b.record(p(4), 950, 9_000, 1);
        assert_eq!(names(&b.top()), ["Di", "Bo", "Cy"]);
        assert_eq!(
            b.standing(p(2)),
            Some(RankScore {
                rank: 2,
                score: 900
            })
        );
        assert_eq!(b.standing(p(1)), Some(RankScore { rank: 4, score: 0 }));
        // A zero-point answer changes nothing, not even the tie-break.
        b.record(p(1), 0, 100, 2);
        assert_eq!(b.full().changes.last().map(|s| s.tiebreak), Some(0));
        assert_eq!(b.standing(p(9)), None);
    }

    #[test]
    fn updates_are_coalesced_and_only_sent_when_something_changed() {
        let mut b = board();
        assert_eq!(b.next_push(), None);
        b.add(p(1), "Ana", 0, 0, 1_000);
        assert_eq!(
            b.next_push(),
            Some(1_000),
            "the first change goes out at once"
        );
        let first = b.push(1_000).unwrap();
        assert_eq!((first.version, first.full, first.players), (1, false, 1));
        assert_eq!(first.changes.len(), 1);
        assert_eq!(b.next_push(), None);
        assert_eq!(b.push(5_000), None);
        b.record(p(1), 500, 2_000, 1_010);
        b.add(p(2), "Bo", 0, 0, 1_020);
        b.record(p(1), 400, 2_000, 1_030);
        assert_eq!(
            b.next_push(),
            Some(1_250),
            "one interval after the last push"
        );
        assert_eq!(b.push(1_249), None);
        let second = b.push(1_250).unwrap();
        assert_eq!(second.version, 2);
        assert_eq!(
            second.changes,
            vec![
                Standing {
                    player: p(1),
                    score: 900,
                    tiebreak: 4_000
                },
                Standing {
                    player: p(2),
                    score: 0,
                    tiebreak: 0
                },
            ]
        );
        b.set_answered(1, 2_000);
        let third = b.push(2_000).unwrap();
        assert_eq!((third.version, third.answered), (3, 1));
        assert!(third.changes.is_empty());
        b.set_answered(1, 3_000);
        assert_eq!(b.next_push(), None, "the same count is no change");
    }

    #[test]
    fn removed_players_leave_the_board() {
        let mut b = board();
        b.add(p(1), "Ana", 0, 0, 0);
        b.add(p(2), "Bo", 0, 0, 0);
        b.push(0);
        b.record(p(2), 100, 10, 300);
        assert!(b.remove(p(2), 300));
        assert!(!b.remove(p(2), 300));
        let u = b.push(300).unwrap();
        assert_eq!(u.removed, vec![p(2)]);
        assert!(u.changes.is_empty());
        assert_eq!(u.players, 1);
        assert_eq!(names(&u.top), ["Ana"]);
        assert_eq!(b.standing(p(2)), None);
    }

    #[test]
    fn replica_follows_deltas_and_detects_gaps() {
        let mut b = board();
        let mut r = LeaderboardReplica::new();
        b.add(p(1), "Ana", 0, 0, 0);
        let d1 = b.push(0).unwrap();
        assert_eq!(
            r.apply(&d1),
            Err(Gap { held: 0, got: 1 }),
            "a delta needs a full first"
        );
        r.apply(&b.full()).unwrap();
        assert_eq!(r.version(), 1);
        b.add(p(2), "Bo", 0, 0, 300);
        b.record(p(2), 700, 5, 300);
        let d2 = b.push(300).unwrap();
        b.record(p(1), 800, 5, 600);
        let d3 = b.push(600).unwrap();
        assert_eq!(r.apply(&d3), Err(Gap { held: 1, got: 3 }));
        r.apply(&d2).unwrap();
        r.apply(&d2).unwrap();
        r.apply(&d1).unwrap();
        assert_eq!(r.version(), 2, "older versions are ignored");
        assert_eq!(
            r.standing(p(2)),
            Some(RankScore {
                rank: 1,
                score: 700
            })
        );
        r.apply(&d3).unwrap();
        assert_eq!(
            r.standing(p(1)),
            Some(RankScore {
                rank: 1,
                score: 800
            })
        );
        assert_eq!(
            r.standing(p(2)),
            Some(RankScore {
                rank: 2,
                score: 700
            })
        );
        assert_eq!(names(r.top()), ["Ana", "Bo"]);
        assert_eq!(r.players(), 2);
        // An owner rebuilt elsewhere starts again at version 0 with a full update.
        let mut rebuilt = board();
        rebuilt.add(p(1), "Ana", 800, 5, 0);
        rebuilt.settle();
        r.apply(&rebuilt.full()).unwrap();
        assert_eq!((r.version(), r.players()), (0, 1));
        assert_eq!(r.standing(p(2)), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Join,
        Score(u8, u16, u16),
        Kick(u8),
        Answered(u8),
        Push(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Join),
            5 => (any::<u8>(), 0..3u16, any::<u16>()).prop_map(|(p, s, t)| Op::Score(p, s * 250, t)),
            1 => any::<u8>().prop_map(Op::Kick),
            1 => any::<u8>().prop_map(Op::Answered),
            2 => (0..600u16).prop_map(Op::Push),
        ]
    }

    /// A subscribing edge gets the whole board: for the largest quiz allowed it used to be
    /// one frame over the cluster's 1 MiB limit, so an edge could never subscribe to it.
    #[test]
    fn a_full_board_of_the_largest_quiz_fits_cluster_frames_and_rebuilds_a_replica() {
        use quiz_protocol::cluster::{ClusterMessage, DEFAULT_MAX_CLUSTER_FRAME, OwnerEvent};
        use quiz_protocol::quiz::MAX_PLAYERS_LIMIT;
        let mut b = Leaderboard::new(5, 250);
        for n in 1..=MAX_PLAYERS_LIMIT {
            b.add(p(n), &format!("player {n}"), 0, 0, 0);
            // Big scores and tie-breaks, as after a long quiz: the widest encodings.
            b.record(p(n), 100_000 + n * 7, 4_000_000 + n, 1);
        }
        let parts = b.full_parts(FULL_PART_PLAYERS);
        assert!(parts.len() > 1, "a board this big comes in parts");
        let quiz = quiz_protocol::QuizId::parse("K7M3QX").unwrap();
        let mut replica = LeaderboardReplica::new();
        for part in &parts {
            let frame = quiz_protocol::cluster::encode_frame(&ClusterMessage::Event {
                quiz: quiz.clone(),
                event: OwnerEvent::Leaderboard(part.clone()),
            });
            assert!(
                frame.len() <= DEFAULT_MAX_CLUSTER_FRAME,
                "a part of {} bytes",
                frame.len()
            );
            replica.apply(part).unwrap();
        }
        assert!(parts.last().is_some_and(|p| !p.more));
        assert!(parts[..parts.len() - 1].iter().all(|p| p.more));
        assert_eq!(replica.players(), MAX_PLAYERS_LIMIT);
        for n in [1, 2, 777, 50_000, MAX_PLAYERS_LIMIT] {
            assert_eq!(replica.standing(p(n)), b.standing(p(n)), "player {n}");
        }
        // A continuation that does not follow a full board is a gap, not a silent mix.
        let mut fresh = LeaderboardReplica::new();
        assert!(fresh.apply(&parts[1]).is_err());
    }

    proptest! {
        /// Ranks are exactly 1..=n, a higher score never ranks below a lower one, and a replica
        /// that saw every delta agrees with the owner on every standing.
        #[test]
        fn ranks_are_a_total_order_and_replicas_agree(ops in prop::collection::vec(op(), 1..200)) {
            let mut b = Leaderboard::new(5, 250);
            let mut r = LeaderboardReplica::new();
            r.apply(&b.full()).unwrap();
            let (mut now, mut joined) = (0i64, 0u32);
            for op in ops {
                match op {
                    Op::Join => {
                        joined += 1;
                        b.add(p(joined), &format!("p{joined}"), 0, 0, now);
                    }
                    Op::Score(who, points, t) if joined > 0 => {
                        b.record(p(u32::from(who) % joined + 1), u32::from(points), u32::from(t), now);
                    }
                    Op::Kick(who) if joined > 0 => {
                        b.remove(p(u32::from(who) % joined + 1), now);
                    }
                    Op::Answered(n) => b.set_answered(u32::from(n), now),
                    Op::Push(dt) => {
                        now += i64::from(dt);
                        if let Some(u) = b.push(now) {
                            r.apply(&u).unwrap();
                        }
                    }
                    _ => {}
                }
            }
            let full = b.full();
            let mut ranks = Vec::new();
            for s in &full.changes {
                let owner = b.standing(s.player).unwrap();
                ranks.push(owner.rank);
                prop_assert_eq!(owner.score, s.score);
            }
            prop_assert_eq!(ranks, (1..=full.changes.len() as u32).collect::<Vec<_>>());
            for w in full.changes.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            // Flush what is left, then compare the replica with the owner.
            if let Some(u) = b.push(now + 1_000) {
                r.apply(&u).unwrap();
            }
            for s in &full.changes {
                prop_assert_eq!(r.standing(s.player), b.standing(s.player));
            }
            prop_assert_eq!(r.players(), b.players());
            prop_assert_eq!(r.top(), &b.top()[..]);
            for n in 1..=joined {
                prop_assert_eq!(r.standing(p(n)), b.standing(p(n)));
            }
        }
    }
}
