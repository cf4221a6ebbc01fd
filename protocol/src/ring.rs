//! Placement: which shard node owns a quiz. A consistent-hash ring (the `hashring` crate) with
//! virtual nodes, shared by the router (to hand out WebSocket URLs) and every node (to route a
//! phone's frames to the owner), so it must place a quiz the same way in every process, build
//! and platform.
//!
//! `hashring` hashes through std [`Hash`], whose output Rust does not promise to keep stable,
//! and it has no virtual nodes of its own. So every key here is a newtype whose `Hash` writes
//! only fixed bytes, fed to [`StableHasher`] (FNV-1a 64 with a final mix), and a node of weight
//! `w` gets `w × vnodes_per_weight` virtual nodes:
//!
//! ```text
//! virtual node key = node id (UTF-8 bytes) ‖ replica (u32, little-endian)
//! quiz key         = quiz code (ASCII bytes)
//! ```
//!
//! The ring is a value: a new membership is a new `Ring` under a higher epoch. Moving quizzes
//! between owners (handoff, fencing) is the node's business, not this module's.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;

use crate::ids::{NodeId, QuizId};

/// Virtual nodes per unit of weight. With 160, three equal nodes each get a third of the quizzes
/// within a few percent; memory is about 40 bytes per virtual node.
pub const DEFAULT_VNODES_PER_WEIGHT: u32 = 160;

/// The members of the cluster under one epoch, and where each quiz lives.
#[derive(Clone, Debug)]
pub struct Ring {
    epoch: u64,
    /// Members sorted by id, so the input order does not change placement.
    nodes: Vec<(NodeId, u32)>,
    /// Members with at least one virtual node (weight above zero).
    placed: usize,
    ring: HashRing<VNode, StableHasher>,
}

impl Ring {
    /// Builds the ring for `nodes` (id, weight). A node of weight 0 is a member that owns
    /// nothing (being drained). A repeated id keeps its first weight. The caller bounds the
    /// weights: the ring holds `Σ weight × vnodes_per_weight` virtual nodes.
    pub fn new(epoch: u64, nodes: &[(NodeId, u32)], vnodes_per_weight: u32) -> Ring {
        let mut members: Vec<(NodeId, u32)> = Vec::with_capacity(nodes.len());
        for (id, weight) in nodes {
            if !members.iter().any(|(m, _)| m == id) {
                members.push((id.clone(), *weight));
            }
        }
        members.sort_by(|a, b| a.0.cmp(&b.0));

        let mut vnodes = Vec::new();
        for (index, (id, weight)) in members.iter().enumerate() {
            let name: Arc<str> = Arc::from(id.0.as_str());
            let count = weight.saturating_mul(vnodes_per_weight);
            vnodes.extend((0..count).map(|replica| VNode {
                // Ids fit in u32: a ring of 2^32 members would not fit in memory anyway.
                node: index as u32,
                name: name.clone(),
                replica,
            }));
        }
        let mut ring = HashRing::with_hasher(StableHasher);
        // One sort for all of them; `add` would re-sort the whole ring on every call.
        ring.batch_add(vnodes);
        let placed = members.iter().filter(|(_, w)| *w > 0).count();
        Ring {
            epoch,
            nodes: members,
            placed,
            ring,
        }
    }

    /// The epoch this membership was published under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members and their weights, sorted by id.
    pub fn nodes(&self) -> &[(NodeId, u32)] {
        &self.nodes
    }

    /// The node that owns `quiz`, or `None` when no member has weight.
    pub fn owner(&self, quiz: &QuizId) -> Option<&NodeId> {
        let vnode = self.ring.get(&QuizKey(quiz))?;
        Some(&self.nodes[vnode.node as usize].0)
    }

    /// Every member with weight, the owner first, then the others in the order met walking the
    /// ring clockwise from the quiz: where to go next when the owner is unreachable. When the
    /// owner leaves the ring, the second entry becomes the owner. Costs a walk over every
    /// virtual node (`hashring` copies the ring for it): call it per join, not per message.
    pub fn preference(&self, quiz: &QuizId) -> Vec<NodeId> {
        let Some(walk) = self.ring.get_with_replicas(&QuizKey(quiz), self.ring.len()) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::with_capacity(self.placed);
        for vnode in walk {
            let index = vnode.node as usize;
            if !seen[index] {
                seen[index] = true;
                out.push(self.nodes[index].0.clone());
                if out.len() == self.placed {
                    break;
                }
            }
        }
        out
    }
}

/// One virtual node: replica `replica` of member `node`.
#[derive(Clone, Debug)]
struct VNode {
    /// Index into [`Ring::nodes`].
    node: u32,
    /// The member's id, shared by its replicas; only its bytes are hashed.
    name: Arc<str>,
    replica: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // `write_u32` would use native endianness; fix it.
        state.write(self.name.as_bytes());
        state.write(&self.replica.to_le_bytes());
    }
}

/// A quiz as a ring key: only the code's bytes are hashed (`str`'s `Hash` adds a terminator).
struct QuizKey<'a>(&'a QuizId);

impl Hash for QuizKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_str().as_bytes());
    }
}

/// Builds [`Fnv1a`] hashers: the same output in every process, build and platform.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StableHasher;

impl BuildHasher for StableHasher {
    type Hasher = Fnv1a;

    fn build_hasher(&self) -> Fnv1a {
        Fnv1a::default()
    }
}

/// FNV-1a 64 over the bytes written, finished with the MurmurHash3 64-bit mix. FNV-1a alone
/// leaves the last bytes of a short key mostly in the low bits, while the ring orders keys by
/// their high bits first; the mix spreads every input bit over the whole output.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(FNV_OFFSET)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ids::QUIZ_ID_LEN;

    fn node(id: &str) -> NodeId {
        NodeId(id.to_owned())
    }

    fn three() -> Ring {
        let nodes = [
            (node("node-1"), 1),
            (node("node-2"), 1),
            (node("node-3"), 1),
        ];
        Ring::new(1, &nodes, DEFAULT_VNODES_PER_WEIGHT)
    }

    /// Deterministic quiz codes (xorshift64), so a failure reproduces.
    fn codes(n: usize, mut seed: u64) -> Vec<QuizId> {
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 32) as u32
        };
        (0..n)
            .map(|_| {
                let mut r = [0u32; QUIZ_ID_LEN];
                r.iter_mut().for_each(|x| *x = next());
                QuizId::from_random(r)
            })
            .collect()
    }

    fn shares(ring: &Ring, codes: &[QuizId]) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for c in codes {
            let owner = ring.owner(c).expect("ring has members");
            *out.entry(owner.0.clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn hasher_output_is_pinned() {
        // The hash itself is part of the cluster's contract: every build must agree.
        assert_eq!(
            StableHasher.hash_one(QuizKey(&QuizId::parse("K7M3QX").unwrap())),
            0x0c6c_9612_acca_1888
        );
    }

    #[test]
    fn placement_is_pinned_across_builds() {
        // Computed once and written down: a change here re-homes live quizzes across a
        // rolling upgrade, so it must be deliberate.
        let expected = [
            ("K7M3QX", "node-3"),
            ("ACDEFG", "node-3"),
            ("HJKMNP", "node-3"),
            ("QRTWXY", "node-3"),
            ("346794", "node-3"),
            ("AAAAAA", "node-2"),
            ("999999", "node-2"),
            ("WX4TQA", "node-1"),
        ];
        let ring = three();
        for (code, owner) in expected {
            let id = QuizId::parse(code).unwrap();
            assert_eq!(ring.owner(&id).unwrap().0, owner, "owner of {code}");
        }
        let names = |code: &str| -> Vec<String> {
            let pref = ring.preference(&QuizId::parse(code).unwrap());
            pref.into_iter().map(|n| n.0).collect()
        };
        assert_eq!(names("K7M3QX"), ["node-3", "node-1", "node-2"]);
        assert_eq!(names("QRTWXY"), ["node-3", "node-2", "node-1"]);
        assert_eq!(names("AAAAAA"), ["node-2", "node-3", "node-1"]);
    }

    #[test]
    fn input_order_does_not_matter() {
        let a = three();
        let nodes = [
            (node("node-3"), 1),
            (node("node-1"), 1),
            (node("node-2"), 1),
        ];
        let b = Ring::new(1, &nodes, DEFAULT_VNODES_PER_WEIGHT);
        for c in codes(500, 7) {
            assert_eq!(a.owner(&c), b.owner(&c));
            assert_eq!(a.preference(&c), b.preference(&c));
        }
    }

    #[test]
    fn three_equal_nodes_share_evenly() {
        let codes = codes(30_000, 0x9e37_79b9_7f4a_7c15);
        let shares = shares(&three(), &codes);
        assert_eq!(shares.len(), 3);
        for (node, n) in &shares {
            assert!(
                (9_000..=11_000).contains(n),
                "{node} got {n} of 30000: {shares:?}"
            );
        }
    }

    #[test]
    fn a_fourth_node_takes_about_a_quarter_and_only_moves_keys_to_itself() {
        let codes = codes(30_000, 42);
        let before = three();
        let nodes = [
            (node("node-1"), 1),
            (node("node-2"), 1),
            (node("node-3"), 1),
            (node("node-4"), 1),
        ];
        let after = Ring::new(2, &nodes, DEFAULT_VNODES_PER_WEIGHT);
        let mut moved = 0;
        for c in &codes {
            let (old, new) = (before.owner(c).unwrap(), after.owner(c).unwrap());
            if old != new {
                assert_eq!(new.0, "node-4", "{c} moved from {old} to {new}");
                moved += 1;
            }
        }
        assert!((5_400..=9_600).contains(&moved), "{moved} of 30000 moved");
    }

    #[test]
    fn weights_skew_placement_proportionally() {
        let codes = codes(30_000, 1234);
        let nodes = [(node("a"), 1), (node("b"), 1), (node("c"), 2)];
        let shares = shares(&Ring::new(1, &nodes, DEFAULT_VNODES_PER_WEIGHT), &codes);
        let (a, b, c) = (shares["a"], shares["b"], shares["c"]);
        assert!((6_000..=9_000).contains(&a), "{shares:?}");
        assert!((6_000..=9_000).contains(&b), "{shares:?}");
        assert!((13_500..=16_500).contains(&c), "{shares:?}");
    }

    #[test]
    fn zero_weight_members_own_nothing() {
        let nodes = [(node("a"), 1), (node("b"), 0)];
        let ring = Ring::new(3, &nodes, DEFAULT_VNODES_PER_WEIGHT);
        assert_eq!(ring.nodes().len(), 2);
        assert_eq!(ring.epoch(), 3);
        for c in codes(100, 5) {
            assert_eq!(ring.owner(&c).unwrap().0, "a");
            assert_eq!(ring.preference(&c), vec![node("a")]);
        }
    }

    #[test]
    fn preference_starts_with_the_owner_and_lists_each_member_once() {
        let ring = three();
        for c in codes(1_000, 99) {
            let pref = ring.preference(&c);
            assert_eq!(pref.len(), 3);
            assert_eq!(&pref[0], ring.owner(&c).unwrap());
            let mut sorted = pref.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{pref:?}");
        }
    }

    #[test]
    fn when_the_owner_leaves_the_second_preference_takes_over() {
        let ring = three();
        for c in codes(1_000, 3) {
            let pref = ring.preference(&c);
            let rest: Vec<_> = ring
                .nodes()
                .iter()
                .filter(|(id, _)| *id != pref[0])
                .cloned()
                .collect();
            let smaller = Ring::new(2, &rest, DEFAULT_VNODES_PER_WEIGHT);
            assert_eq!(smaller.owner(&c), Some(&pref[1]), "{c}");
        }
    }

    #[test]
    fn an_empty_ring_places_nothing() {
        let ring = Ring::new(1, &[], DEFAULT_VNODES_PER_WEIGHT);
        let id = QuizId::parse("K7M3QX").unwrap();
        assert_eq!(ring.owner(&id), None);
        assert!(ring.preference(&id).is_empty());
    }
}
