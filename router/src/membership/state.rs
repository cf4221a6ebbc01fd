//! The membership rule, as a plain value: leases and `now` go in; the ring to publish, and
//! whether a stored ring is news, come out. No store, no clock, no runtime: the poll task
//! performs what this decides, and the tests below drive it directly.
//!
//! The rule: the members are the leases that have not expired (`expires_at > now`) and are
//! not draining, sorted by node id, each with its weight (capped at
//! [`MAX_NODE_WEIGHT`](crate::config::MAX_NODE_WEIGHT)), WebSocket URL and cluster address.
//! When they differ from the members of the ring held, the next epoch is proposed. A stored
//! ring is adopted when its epoch is above the one held; an epoch never goes back.

use std::collections::BTreeMap;

use quiz_engine::Millis;
use quiz_protocol::NodeId;
use quiz_protocol::cluster::RingMember;
use quiz_store::{NodeLease, RingRecord};

use crate::config::MAX_NODE_WEIGHT;

/// Where each node the ring is pushed to listens for QUIC (`host:port`), by node id.
pub(crate) type Targets = BTreeMap<NodeId, String>;

/// The ring this router holds, and the rule that moves it on.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    current: Option<RingRecord>,
}

impl Membership {
    pub(crate) fn new() -> Membership {
        Membership::default()
    }

    /// The epoch held; 0 before any ring.
    pub(crate) fn epoch(&self) -> u64 {
        self.current.as_ref().map_or(0, |r| r.epoch)
    }

    pub(crate) fn current(&self) -> Option<&RingRecord> {
        self.current.as_ref()
    }

    /// Takes `ring` if it is newer than the ring held; whether it did.
    pub(crate) fn adopt(&mut self, mut ring: RingRecord) -> bool {
        if ring.epoch <= self.epoch() {
            return false;
        }
        // Our own proposals are sorted already; a ring from elsewhere compares the same way.
        ring.members.sort_by(|a, b| a.node.cmp(&b.node));
        self.current = Some(ring);
        true
    }

    /// The ring to publish for `leases` read at `now`: the next epoch with the members the
    /// leases make, or `None` when the ring held has exactly those. With no ring held, an
    /// empty membership proposes nothing: epoch 1 is the first ring with a member.
    pub(crate) fn proposal(&self, leases: &[NodeLease], now: Millis) -> Option<RingRecord> {
        let members = members(leases, now);
        let held = self.current.as_ref().map_or(&[][..], |r| &r.members[..]);
        if members == held {
            return None;
        }
        Some(RingRecord {
            epoch: self.epoch() + 1,
            members,
            updated_at: now,
        })
    }
}

/// The ring's members according to `leases` at `now` (see the module docs).
pub(crate) fn members(leases: &[NodeLease], now: Millis) -> Vec<RingMember> {
    let mut members: Vec<RingMember> = leases
        .iter()
        .filter(|l| l.expires_at > now && !l.draining)
        .map(|l| RingMember {
            node: l.node.clone(),
            // A lease is a node's word; the cap keeps one bad lease from filling memory with
            // virtual nodes (each weight unit is `vnodes_per_weight` of them).
            weight: l.weight.min(MAX_NODE_WEIGHT),
            ws_url: l.ws_url.clone(),
            cluster_addr: l.cluster_addr.clone(),
        })
        .collect();
    members.sort_by(|a, b| a.node.cmp(&b.node));
    members.dedup_by(|a, b| a.node == b.node);
    members
}

/// Who the ring is pushed to: every node with a live lease, draining ones included (a
/// draining node still serves phones on its edge, and routes their frames by the ring).
pub(crate) fn targets(leases: &[NodeLease], now: Millis) -> Targets {
    leases
        .iter()
        .filter(|l| l.expires_at > now)
        .map(|l| (l.node.clone(), l.cluster_addr.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn lease(name: &str, weight: u32, expires_at: Millis) -> NodeLease {
        NodeLease {
            node: NodeId(name.into()),
            ws_url: format!("ws://{name}/v1/ws"),
            cluster_addr: format!("{name}:7000"),
            weight,
            draining: false,
            renewed_at: expires_at - 3_000,
            expires_at,
        }
    }

    fn names(ring: &RingRecord) -> Vec<(&str, u32)> {
        ring.members
            .iter()
            .map(|m| (m.node.0.as_str(), m.weight))
            .collect()
    }

    #[test]
    fn live_leases_make_the_first_ring_sorted_by_node() {
        let m = Membership::new();
        assert_eq!(m.proposal(&[], NOW), None, "no member, no ring");
        let leases = [lease("n-c", 1, NOW + 1), lease("n-a", 2, NOW + 5_000)];
        let first = m.proposal(&leases, NOW).unwrap();
        assert_eq!((first.epoch, first.updated_at), (1, NOW));
        assert_eq!(names(&first), [("n-a", 2), ("n-c", 1)]);
        assert_eq!(first.members[0].ws_url, "ws://n-a/v1/ws");
        assert_eq!(first.members[0].cluster_addr, "n-a:7000");
    }

    #[test]
    fn expired_and_draining_leases_are_left_out_and_weights_capped() {
        let draining = NodeLease {
            draining: true,
            ..lease("n-d", 1, NOW + 5_000)
        };
        let leases = [
            lease("n-a", 1, NOW + 5_000),
            lease("n-b", 1, NOW), // expires right now: gone
            lease("n-c", u32::MAX, NOW + 5_000),
            draining,
        ];
        let ring = Membership::new().proposal(&leases, NOW).unwrap();
        assert_eq!(names(&ring), [("n-a", 1), ("n-c", MAX_NODE_WEIGHT)]);
        // The draining node still gets the ring; the expired one does not.
        let targets: Vec<String> = targets(&leases, NOW).into_keys().map(|n| n.0).collect();
        assert_eq!(targets, ["n-a", "n-c", "n-d"]);
    }

    #[test]
    fn renewals_change_nothing_but_a_changed_member_is_a_new_epoch() {
        let mut m = Membership::new();
        let leases = vec![lease("n-a", 1, NOW + 5_000), lease("n-b", 1, NOW + 5_000)];
        assert!(m.adopt(m.proposal(&leases, NOW).unwrap()));
        // Renewed leases (later expiry), read later: the same members.
        let renewed = vec![lease("n-a", 1, NOW + 9_000), lease("n-b", 1, NOW + 9_000)];
        assert_eq!(m.proposal(&renewed, NOW + 4_000), None);

        let heavier = vec![lease("n-a", 3, NOW + 9_000), lease("n-b", 1, NOW + 9_000)];
        let next = m.proposal(&heavier, NOW + 4_000).unwrap();
        assert_eq!(
            (next.epoch, names(&next)),
            (2, vec![("n-a", 3), ("n-b", 1)])
        );
        let moved = vec![
            NodeLease {
                cluster_addr: "10.0.0.2:7000".into(),
                ..lease("n-a", 1, NOW + 9_000)
            },
            lease("n-b", 1, NOW + 9_000),
        ];
        assert_eq!(m.proposal(&moved, NOW).unwrap().epoch, 2);

        // Every node gone: an empty ring is the next epoch too.
        assert!(m.adopt(next));
        let empty = m.proposal(&[], NOW + 20_000).unwrap();
        assert_eq!((empty.epoch, empty.members.len()), (3, 0));
        assert!(m.adopt(empty));
        assert_eq!(m.proposal(&[], NOW + 30_000), None);
    }

    #[test]
    fn only_newer_rings_are_adopted() {
        let mut m = Membership::new();
        let ring = |epoch, name: &str| RingRecord {
            epoch,
            members: members(&[lease(name, 1, NOW + 1)], NOW),
            updated_at: NOW,
        };
        assert!(m.adopt(ring(4, "n-a")));
        assert!(!m.adopt(ring(4, "n-b")));
        assert!(!m.adopt(ring(2, "n-b")));
        assert_eq!(
            (m.epoch(), names(m.current().unwrap())),
            (4, vec![("n-a", 1)])
        );
        // The next proposal builds on the adopted epoch.
        let next = m.proposal(&[lease("n-b", 1, NOW + 1)], NOW).unwrap();
        assert_eq!(next.epoch, 5);
        // A stored ring's members are compared in node order, however they were stored.
        let mut unsorted = ring(6, "n-b");
        unsorted
            .members
            .extend(members(&[lease("n-a", 1, NOW + 1)], NOW));
        assert!(m.adopt(unsorted));
        let both = [lease("n-a", 1, NOW + 1), lease("n-b", 1, NOW + 1)];
        assert_eq!(m.proposal(&both, NOW), None);
    }
}
