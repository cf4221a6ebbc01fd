//! Where quizzes live, as this node knows it: the ring under its latest epoch.
//!
//! A single node (no cluster configured) owns every quiz. In a cluster, the ring comes from the
//! routers (pushed over QUIC) and from the store (polled, in case a push was missed); only a
//! higher epoch replaces the one held, so every node converges on the same placement.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use quiz_protocol::cluster::RingMember;
use quiz_protocol::ring::{DEFAULT_VNODES_PER_WEIGHT, Ring};
use quiz_protocol::{NodeId, QuizId};
use tokio::sync::watch;

/// Who owns a quiz.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This node.
    Me,
    /// Another member, and where to reach it.
    Peer(RingMember),
    /// No member: the ring is empty (or this node is not in it and knows no other).
    Nobody,
}

#[derive(Clone)]
pub(crate) struct Placement {
    me: NodeId,
    inner: Arc<RwLock<View>>,
    /// The epoch of the ring held, for those waiting for it to change.
    epochs: Arc<watch::Sender<u64>>,
}

struct View {
    /// `None` for a single node, which owns everything.
    ring: Option<Ring>,
    epoch: u64,
    members: HashMap<NodeId, RingMember>,
}

impl Placement {
    /// A node alone: it owns every quiz.
    pub(crate) fn single(me: NodeId) -> Self {
        let view = View {
            ring: None,
            epoch: 0,
            members: HashMap::new(),
        };
        Self {
            me,
            inner: Arc::new(RwLock::new(view)),
            epochs: Arc::new(watch::Sender::new(0)),
        }
    }

    /// A cluster member that knows no ring yet (it owns nothing until it learns one).
    pub(crate) fn clustered(me: NodeId) -> Self {
        let view = View {
            ring: Some(Ring::new(0, &[], DEFAULT_VNODES_PER_WEIGHT)),
            epoch: 0,
            members: HashMap::new(),
        };
        Self {
            me,
            inner: Arc::new(RwLock::new(view)),
            epochs: Arc::new(watch::Sender::new(0)),
        }
    }

    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    pub(crate) fn epoch(&self) -> u64 {
        read(&self.inner).epoch
    }

    /// Takes a ring if it is newer than the one held; returns whether it did.
    pub(crate) fn update(&self, epoch: u64, members: &[RingMember]) -> bool {
        let mut view = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if view.ring.is_none() || epoch <= view.epoch {
            return false;
        }
        let weights: Vec<(NodeId, u32)> =
            members.iter().map(|m| (m.node.clone(), m.weight)).collect();
        view.ring = Some(Ring::new(epoch, &weights, DEFAULT_VNODES_PER_WEIGHT));
        view.epoch = epoch;
        view.members = members
            .iter()
            .map(|m| (m.node.clone(), m.clone()))
            .collect();
        drop(view);
        self.epochs.send_replace(epoch);
        true
    }

    /// Waits until the ring no longer gives `quiz` to `node` (forever if it never does).
    pub(crate) async fn moved_from(&self, quiz: &QuizId, node: &NodeId) {
        let mut epochs = self.epochs.subscribe();
        loop {
            let owner = match self.owner(quiz) {
                Owner::Me => Some(self.me.clone()),
                Owner::Peer(member) => Some(member.node),
                Owner::Nobody => None,
            };
            if owner.as_ref() != Some(node) {
                return;
            }
            if epochs.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub(crate) fn owner(&self, quiz: &QuizId) -> Owner {
        let view = read(&self.inner);
        let Some(ring) = &view.ring else {
            return Owner::Me;
        };
        match ring.owner(quiz) {
            Some(node) if *node == self.me => Owner::Me,
            Some(node) => match view.members.get(node) {
                Some(member) => Owner::Peer(member.clone()),
                None => Owner::Nobody,
            },
            None => Owner::Nobody,
        }
    }

    pub(crate) fn is_mine(&self, quiz: &QuizId) -> bool {
        self.owner(quiz) == Owner::Me
    }

    /// Whether this node is a member of the ring it holds (a single node always is).
    pub(crate) fn is_member(&self) -> bool {
        let view = read(&self.inner);
        view.ring.is_none() || view.members.contains_key(&self.me)
    }
}

fn read(lock: &RwLock<View>) -> std::sync::RwLockReadGuard<'_, View> {
    // Held briefly, never across an await; a poisoned lock still holds a whole ring.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: &str) -> RingMember {
        RingMember {
            node: NodeId(n.into()),
            weight: 1,
            ws_url: format!("ws://{n}/v1/ws"),
            cluster_addr: format!("{n}:1"),
        }
    }

    #[test]
    fn a_single_node_owns_everything_and_ignores_rings() {
        let p = Placement::single(NodeId("a".into()));
        let quiz = QuizId::parse("K7M3QX").unwrap();
        assert!(p.is_mine(&quiz));
        assert!(!p.update(5, &[member("b")]));
        assert!(p.is_mine(&quiz));
    }

    #[test]
    fn only_newer_rings_are_taken_and_placement_follows_them() {
        let p = Placement::clustered(NodeId("a".into()));
        let quiz = QuizId::parse("K7M3QX").unwrap();
        assert_eq!(p.owner(&quiz), Owner::Nobody, "no ring yet");
        assert!(p.update(2, &[member("a"), member("b"), member("c")]));
        let owner = p.owner(&quiz);
        let expected = Ring::new(
            2,
            &[
                (NodeId("a".into()), 1),
                (NodeId("b".into()), 1),
                (NodeId("c".into()), 1),
            ],
            DEFAULT_VNODES_PER_WEIGHT,
        )
        .owner(&quiz)
        .cloned();
        match (&owner, expected) {
            (Owner::Me, Some(n)) => assert_eq!(n.0, "a"),
            (Owner::Peer(m), Some(n)) => assert_eq!(m.node, n),
            other => panic!("{other:?}"),
        }
        assert!(!p.update(1, &[member("a")]), "an older epoch is ignored");
        assert!(p.update(3, &[member("a")]));
        assert_eq!(p.owner(&quiz), Owner::Me);
        assert!(p.update(4, &[member("b")]));
        assert!(!p.is_member());
        assert!(matches!(p.owner(&quiz), Owner::Peer(m) if m.node.0 == "b"));
    }
}
