//! Dynamic membership through the HTTP and admin APIs: leases written straight into the
//! store become ring epochs, joins follow the ring, routers sharing a store agree on every
//! epoch, and a restarted router adopts the stored ring. Pushes to the nodes are in `push`.

use std::collections::BTreeMap;

use quiz_protocol::QuizId;
use quiz_protocol::cluster::RingMember;
use quiz_protocol::ring::Ring;
use quiz_store::NodeLease;
use serde_json::json;

use crate::cluster::*;
use crate::support::{Harness, Reply, test_stores, within};

/// Nobody listens here; pushes to it fail, which these tests do not look at.
const NOWHERE: &str = "127.0.0.1:9";

async fn join(h: &Harness, quiz: &QuizId) -> Reply {
    let path = format!("/v1/quizzes/{quiz}/join");
    h.post(&path, Some(&h.player("pat")), &json!({"nickname": "Pat"}))
        .await
}

/// The WebSocket URLs a join must hand out under `epoch` of `members`: the ring's preference.
fn expected_urls(h: &Harness, epoch: u64, members: &[RingMember], quiz: &QuizId) -> Vec<String> {
    let weights: Vec<_> = members.iter().map(|m| (m.node.clone(), m.weight)).collect();
    Ring::new(epoch, &weights, h.config.vnodes_per_weight)
        .preference(quiz)
        .iter()
        .map(|n| {
            members
                .iter()
                .find(|m| &m.node == n)
                .unwrap()
                .ws_url
                .clone()
        })
        .collect()
}

#[tokio::test]
async fn live_leases_become_ring_epoch_1_and_joins_follow_it() {
    within(async {
        let ca = TestCa::new();
        let (stores, dir) = test_stores().await;
        let leases = [
            lease("node-1", 1, NOWHERE, LONG_MS),
            lease("node-2", 2, NOWHERE, LONG_MS),
            lease("node-3", 1, NOWHERE, LONG_MS),
        ];
        for l in &leases {
            renew(&stores, l).await;
        }
        let h = Harness::with_stores(ca.router_config("router-1"), stores.clone()).await;
        let members: Vec<RingMember> = leases.iter().map(member).collect();
        assert_eq!(ring_with(&h, &members).await, 1);
        let stored = stores.membership.ring().await.unwrap().unwrap();
        assert_eq!((stored.epoch, &stored.members), (1, &members));
        let view = h.admin_get("/v1/cluster/ring").await;
        assert_eq!(view.body["mode"], "dynamic");
        assert_eq!(view.body["updated_at"], stored.updated_at);

        // Joins hand out the owner's edge first, then the rest in ring order.
        for n in 0..5 {
            let quiz = h.quiz_by(&format!("teacher-{n}")).await;
            let reply = join(&h, &quiz).await;
            let urls = expected_urls(&h, 1, &members, &quiz);
            assert_eq!(urls.len(), 3);
            assert_eq!(reply.expect_ok(200)["ws_urls"], json!(urls));
        }
        assert_eq!(metric(&h, "quiz_router_ring_epoch").await, 1.0);
        assert_eq!(metric(&h, "quiz_router_ring_members").await, 3.0);
        assert!(metric(&h, r#"quiz_router_ring_polls_total{result="ok"}"#).await >= 1.0);
        h.shutdown().await;
        drop(dir);
    })
    .await;
}

#[tokio::test]
async fn expiry_draining_new_nodes_and_weights_move_the_ring_on() {
    within(async {
        let ca = TestCa::new();
        let (stores, dir) = test_stores().await;
        let one = lease("node-1", 1, NOWHERE, LONG_MS);
        let two = lease("node-2", 1, NOWHERE, LONG_MS);
        renew(&stores, &one).await;
        renew(&stores, &two).await;
        let h = Harness::with_stores(ca.router_config("router-1"), stores.clone()).await;
        assert_eq!(ring_with(&h, &[member(&one), member(&two)]).await, 1);

        // node-2 stops renewing: its lease runs out.
        let expired = NodeLease {
            expires_at: now_ms() - 1,
            ..two.clone()
        };
        renew(&stores, &expired).await;
        assert_eq!(ring_with(&h, &[member(&one)]).await, 2);

        // A new node joins, heavier.
        let three = lease("node-3", 3, NOWHERE, LONG_MS);
        renew(&stores, &three).await;
        assert_eq!(ring_with(&h, &[member(&one), member(&three)]).await, 3);

        // node-1 drains: out of the ring, though its lease lives on.
        let draining = NodeLease {
            draining: true,
            ..one.clone()
        };
        renew(&stores, &draining).await;
        assert_eq!(ring_with(&h, &[member(&three)]).await, 4);
        let quiz = h.quiz_by("teacher").await;
        let reply = join(&h, &quiz).await;
        assert_eq!(reply.expect_ok(200)["ws_urls"], json!([three.ws_url]));

        // A weight change is a new ring too; plain renewals are not.
        let lighter = NodeLease {
            weight: 2,
            ..lease("node-3", 1, NOWHERE, LONG_MS)
        };
        renew(&stores, &lighter).await;
        assert_eq!(ring_with(&h, &[member(&lighter)]).await, 5);
        renew(&stores, &lease("node-3", 2, NOWHERE, LONG_MS)).await;

        // A lease that runs out by itself, with no further write.
        let brief = lease("node-4", 1, NOWHERE, 3_000);
        renew(&stores, &brief).await;
        assert_eq!(ring_with(&h, &[member(&lighter), member(&brief)]).await, 6);
        assert_eq!(ring_with(&h, &[member(&lighter)]).await, 7);
        let (epoch, _) = ring_of(&h).await;
        assert_eq!(epoch, 7, "renewals of unchanged members publish nothing");

        let members = [member(&lighter)];
        let quiz = h.quiz_by("teacher-2").await;
        let reply = join(&h, &quiz).await;
        assert_eq!(
            reply.expect_ok(200)["ws_urls"],
            json!(expected_urls(&h, 7, &members, &quiz))
        );
        h.shutdown().await;
        drop(dir);
    })
    .await;
}

/// Records every (epoch, members) two routers serve, and fails on an epoch seen with two
/// different memberships.
#[derive(Default)]
struct History(BTreeMap<u64, Vec<RingMember>>);

impl History {
    fn see(&mut self, router: &str, epoch: u64, members: Vec<RingMember>) {
        let seen = self.0.entry(epoch).or_insert_with(|| members.clone());
        assert_eq!(
            seen, &members,
            "{router} serves epoch {epoch} with other members than seen before"
        );
    }
}

/// Waits until both routers serve a ring of `members` under one epoch, recording every ring
/// either serves meanwhile; returns the epoch.
async fn converged(a: &Harness, b: &Harness, members: &[RingMember], history: &mut History) -> u64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ea, ma) = ring_of(a).await;
        let (eb, mb) = ring_of(b).await;
        let agreed = ea == eb && ma == members && mb == members;
        history.see("router-a", ea, ma);
        history.see("router-b", eb, mb);
        if agreed {
            return ea;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the routers never agreed on a ring of {members:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn routers_sharing_a_store_agree_and_a_restarted_router_adopts_the_ring() {
    within(async {
        let ca = TestCa::new();
        let (stores, dir) = test_stores().await;
        let a = Harness::with_stores(ca.router_config("router-a"), stores.clone()).await;
        let b = Harness::with_stores(ca.router_config("router-b"), stores.clone()).await;
        let mut history = History::default();

        // Every change is seen by both routers, which race to publish the next epoch.
        let leases = [
            lease("node-1", 1, NOWHERE, LONG_MS),
            lease("node-2", 2, NOWHERE, LONG_MS),
            lease("node-3", 1, NOWHERE, LONG_MS),
        ];
        let mut members = Vec::new();
        let mut epoch = 0;
        for l in &leases {
            renew(&stores, l).await;
            members.push(member(l));
            let agreed = converged(&a, &b, &members, &mut history).await;
            assert!(agreed > epoch, "epoch {agreed} after {epoch}");
            epoch = agreed;
        }
        renew(
            &stores,
            &NodeLease {
                expires_at: now_ms() - 1,
                ..leases[1].clone()
            },
        )
        .await;
        members.remove(1);
        epoch = {
            let agreed = converged(&a, &b, &members, &mut history).await;
            assert!(agreed > epoch);
            agreed
        };
        let stored = stores.membership.ring().await.unwrap().unwrap();
        assert_eq!((stored.epoch, &stored.members), (epoch, &members));
        a.shutdown().await;

        // A router started on the same store serves the stored ring from the start, and
        // publishes nothing new while the leases stay as they are.
        let c = Harness::with_stores(ca.router_config("router-c"), stores.clone()).await;
        assert_eq!(ring_of(&c).await, (epoch, members.clone()));
        let polls = r#"quiz_router_ring_polls_total{result="ok"}"#;
        eventually("router-c polls the leases five times", || async {
            (metric(&c, polls).await >= 5.0).then_some(())
        })
        .await;
        assert_eq!(ring_of(&c).await, (epoch, members.clone()));
        assert_eq!(ring_of(&b).await, (epoch, members.clone()));
        assert_eq!(
            stores.membership.ring().await.unwrap().unwrap().epoch,
            epoch
        );
        b.shutdown().await;
        c.shutdown().await;
        drop(dir);
    })
    .await;
}

#[tokio::test]
async fn joins_are_a_retryable_503_while_no_node_is_live() {
    within(async {
        let ca = TestCa::new();
        let (stores, dir) = test_stores().await;
        let h = Harness::with_stores(ca.router_config("router-1"), stores.clone()).await;
        let quiz = h.quiz_by("teacher").await;

        // Nothing published yet.
        assert_eq!(ring_of(&h).await, (0, Vec::new()));
        let reply = join(&h, &quiz).await;
        reply.expect_error(503, "unavailable");
        assert_eq!(reply.body["retryable"], true);
        assert_eq!(reply.body["message"], "no node is serving; retry");

        // A node comes: joins go to it.
        let one = lease("node-1", 1, NOWHERE, LONG_MS);
        renew(&stores, &one).await;
        assert_eq!(ring_with(&h, &[member(&one)]).await, 1);
        let reply = join(&h, &quiz).await;
        assert_eq!(reply.expect_ok(200)["ws_urls"], json!([one.ws_url]));

        // It goes again: an empty ring, and joins wait for a node.
        renew(
            &stores,
            &NodeLease {
                expires_at: now_ms() - 1,
                ..one
            },
        )
        .await;
        assert_eq!(ring_with(&h, &[]).await, 2);
        join(&h, &quiz).await.expect_error(503, "unavailable");
        assert_eq!(
            metric(&h, r#"quiz_router_joins_total{outcome="unavailable"}"#).await,
            2.0
        );
        assert_eq!(metric(&h, "quiz_router_ring_members").await, 0.0);
        h.shutdown().await;
        drop(dir);
    })
    .await;
}

#[tokio::test]
async fn a_fixed_ring_is_served_as_epoch_1() {
    within(async {
        let h = Harness::start().await;
        let reply = h.admin_get("/v1/cluster/ring").await;
        let body = reply.expect_ok(200);
        assert_eq!(body["mode"], "static");
        assert_eq!(body["epoch"], 1);
        let nodes: Vec<(&str, &str)> = body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["node"].as_str().unwrap(), m["ws_url"].as_str().unwrap()))
            .collect();
        let expected: Vec<(&str, &str)> = h
            .config
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.ws_url.as_str()))
            .collect();
        assert_eq!(nodes, expected);
        // Where one quiz goes: its owner first, then every other node as a fallback.
        let code = "K7M3QX";
        let weights: Vec<_> = h
            .config
            .nodes
            .iter()
            .map(|n| (node(&n.id), n.weight))
            .collect();
        let ring = Ring::new(1, &weights, h.config.vnodes_per_weight);
        let quiz = QuizId::parse(code).unwrap();
        let reply = h.admin_get(&format!("/v1/cluster/ring?quiz={code}")).await;
        let body = reply.expect_ok(200);
        assert_eq!(body["quiz"]["quiz"], code);
        let nodes: Vec<&str> = body["quiz"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0], ring.owner(&quiz).unwrap().0);
        h.admin_get("/v1/cluster/ring?quiz=not-a-code")
            .await
            .expect_error(400, "bad_request");
        assert_eq!(metric(&h, "quiz_router_ring_epoch").await, 1.0);
        assert_eq!(metric(&h, "quiz_router_ring_members").await, 3.0);
        // The ring is for operators: not on the public listener.
        h.get("/v1/cluster/ring", None)
            .await
            .expect_error(404, "not_found");
        h.shutdown().await;
    })
    .await;
}
