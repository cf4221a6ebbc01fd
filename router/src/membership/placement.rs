//! One epoch's ring as the join handler uses it: the members, the consistent-hash ring built
//! from them once, and each member's WebSocket URL. A new epoch is a new [`Placement`],
//! swapped in whole (see [`super::CurrentRing`]), so a join reads one consistent epoch.

use std::collections::HashMap;

use quiz_engine::Millis;
use quiz_protocol::cluster::RingMember;
use quiz_protocol::ring::Ring;
use quiz_protocol::{NodeId, QuizId};
use serde::Serialize;

use crate::config::MAX_NODE_WEIGHT;

/// Where quizzes live under one ring epoch.
#[derive(Debug)]
pub(crate) struct Placement {
    epoch: u64,
    /// Sorted by node id.
    members: Vec<RingMember>,
    /// When the ring was published (dynamic membership); none for a fixed ring.
    updated_at: Option<Millis>,
    ring: Ring,
    urls: HashMap<NodeId, String>,
}

/// What `GET /v1/cluster/ring` answers on the admin listener.
#[derive(Serialize)]
pub(crate) struct RingView<'a> {
    /// `static` (the configured nodes) or `dynamic` (from the leases).
    mode: &'static str,
    /// 0 while no ring has been published yet.
    epoch: u64,
    updated_at: Option<Millis>,
    members: &'a [RingMember],
    /// With `?quiz=CODE`: the quiz and the members that would own it, owner first.
    #[serde(skip_serializing_if = "Option::is_none")]
    quiz: Option<QuizPlacement>,
}

/// Where one quiz goes on the ring.
#[derive(Serialize)]
pub(crate) struct QuizPlacement {
    quiz: QuizId,
    /// The owner first, then the nodes that would take it over, in order.
    nodes: Vec<NodeId>,
}

impl Placement {
    /// The ring of `members` under `epoch`, with `vnodes_per_weight` virtual nodes per unit of
    /// weight (at most [`MAX_NODE_WEIGHT`] units per member).
    pub(crate) fn new(
        epoch: u64,
        mut members: Vec<RingMember>,
        updated_at: Option<Millis>,
        vnodes_per_weight: u32,
    ) -> Placement {
        members.sort_by(|a, b| a.node.cmp(&b.node));
        // Capped again here: a ring read from the store is another process's word, and each
        // unit of weight costs `vnodes_per_weight` virtual nodes.
        let weights: Vec<(NodeId, u32)> = members
            .iter()
            .map(|m| (m.node.clone(), m.weight.min(MAX_NODE_WEIGHT)))
            .collect();
        let urls = members
            .iter()
            .map(|m| (m.node.clone(), m.ws_url.clone()))
            .collect();
        Placement {
            epoch,
            ring: Ring::new(epoch, &weights, vnodes_per_weight),
            members,
            updated_at,
            urls,
        }
    }

    /// No members yet: nothing published, or every node gone.
    pub(crate) fn empty() -> Placement {
        Placement::new(0, Vec::new(), None, 1)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn members(&self) -> &[RingMember] {
        &self.members
    }

    /// WebSocket URLs for a quiz: its owner's edge first (it saves a hop), then the fallbacks
    /// in ring order. Empty when no member has weight.
    pub(crate) fn ws_urls(&self, quiz: &QuizId) -> Vec<String> {
        self.ring
            .preference(quiz)
            .iter()
            .filter_map(|node| self.urls.get(node).cloned())
            .collect()
    }

    /// The ring as the admin endpoint shows it, with where `quiz` goes if one is asked about.
    pub(crate) fn view(&self, dynamic: bool, quiz: Option<QuizId>) -> RingView<'_> {
        RingView {
            mode: if dynamic { "dynamic" } else { "static" },
            epoch: self.epoch,
            updated_at: self.updated_at,
            members: &self.members,
            quiz: quiz.map(|quiz| QuizPlacement {
                nodes: self.ring.preference(&quiz),
                quiz,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, weight: u32) -> RingMember {
        RingMember {
            node: NodeId(name.into()),
            weight,
            ws_url: format!("ws://{name}/v1/ws"),
            cluster_addr: format!("{name}:7000"),
        }
    }

    #[test]
    fn urls_follow_the_rings_preference_whatever_the_member_order() {
        let quiz = QuizId::parse("K7M3QX").unwrap();
        let a = Placement::new(3, vec![member("n-b", 2), member("n-a", 1)], None, 16);
        let b = Placement::new(3, vec![member("n-a", 1), member("n-b", 2)], None, 16);
        let ring = Ring::new(
            3,
            &[(NodeId("n-a".into()), 1), (NodeId("n-b".into()), 2)],
            16,
        );
        let expected: Vec<String> = ring
            .preference(&quiz)
            .iter()
            .map(|n| format!("ws://{}/v1/ws", n.0))
            .collect();
        assert_eq!(a.ws_urls(&quiz), expected);
        assert_eq!(b.ws_urls(&quiz), expected);
        assert_eq!(a.members(), b.members());
        assert_eq!(a.members()[0].node.0, "n-a");
    }

    #[test]
    fn no_member_with_weight_places_nothing() {
        let quiz = QuizId::parse("K7M3QX").unwrap();
        assert!(Placement::empty().ws_urls(&quiz).is_empty());
        let drained = Placement::new(2, vec![member("n-a", 0)], Some(5), 16);
        assert!(drained.ws_urls(&quiz).is_empty());
    }
}
