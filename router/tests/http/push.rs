//! Ring pushes to the nodes over QUIC: every node with a live lease gets the ring on every
//! new epoch and again every push interval, over one connection, and a node that is down
//! holds up no one else and gets the ring once it is back.

use std::sync::atomic::Ordering;

use quiz_store::NodeLease;

use crate::cluster::*;
use crate::support::{Harness, test_stores, within};

#[tokio::test]
async fn nodes_get_the_ring_on_every_epoch_and_periodically() {
    within(async {
        let ca = TestCa::new();
        let (stores, dir) = test_stores().await;
        let mut one = FakeNode::start(&ca, "node-1");
        let l1 = lease("node-1", 1, &one.addr(), LONG_MS);
        renew(&stores, &l1).await;
        let h = Harness::with_stores(ca.router_config("router-1"), stores.clone()).await;

        assert_eq!(one.ring_at(1).await, vec![member(&l1)]);

        // A second node joins: both get epoch 2.
        let mut two = FakeNode::start(&ca, "node-2");
        let l2 = lease("node-2", 2, &two.addr(), LONG_MS);
        renew(&stores, &l2).await;
        let both = vec![member(&l1), member(&l2)];
        assert_eq!(one.ring_at(2).await, both);
        assert_eq!(two.ring_at(2).await, both);

        // A draining node keeps getting the ring (its edge still routes by it), though it is
        // no longer a member.
        renew(
            &stores,
            &NodeLease {
                draining: true,
                ..l2.clone()
            },
        )
        .await;
        assert_eq!(two.ring_at(3).await, vec![member(&l1)]);
        assert_eq!(one.ring_at(3).await, vec![member(&l1)]);

        // No change: the same ring again, every push interval, on the same connection.
        for _ in 0..3 {
            assert_eq!(one.next_ring().await, (3, vec![member(&l1)]));
        }
        assert_eq!(one.connections.load(Ordering::SeqCst), 1);
        assert!(metric(&h, r#"quiz_router_ring_pushes_total{result="ok"}"#).await >= 7.0);

        h.shutdown().await;
        one.stop().await;
        two.stop().await;
        drop(dir);
    })
    .await;
}

#[tokio::test]
async fn a_node_that_is_down_holds_up_no_one_and_gets_the_ring_when_back() {
    within(async {
        let ca = TestCa::new();
        let (stores, dir) = test_stores().await;
        let mut one = FakeNode::start(&ca, "node-1");
        let mut three = FakeNode::start(&ca, "node-3");
        // node-2's address swallows every packet: a push to it waits for its timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let down_addr = silent.local_addr().unwrap();
        let leases = [
            lease("node-1", 1, &one.addr(), LONG_MS),
            lease("node-2", 1, &down_addr.to_string(), LONG_MS),
            lease("node-3", 1, &three.addr(), LONG_MS),
        ];
        for l in &leases {
            renew(&stores, l).await;
        }
        let members: Vec<_> = leases.iter().map(member).collect();
        let h = Harness::with_stores(ca.router_config("router-1"), stores.clone()).await;

        assert_eq!(one.ring_at(1).await, members);
        assert_eq!(three.ring_at(1).await, members);
        // The periodic pushes go on to the others while node-2 fails.
        for _ in 0..3 {
            assert_eq!(one.next_ring().await.0, 1);
            assert_eq!(three.next_ring().await.0, 1);
        }
        let failed = r#"quiz_router_ring_pushes_total{result="failed"}"#;
        eventually("a failed push to node-2 is counted", || async {
            (metric(&h, failed).await >= 1.0).then_some(())
        })
        .await;

        // node-2 comes up at its address: the next push reaches it.
        drop(silent);
        let mut two = FakeNode::start_at(&ca, "node-2", down_addr);
        assert_eq!(two.ring_at(1).await, members);

        h.shutdown().await;
        for node in [one, two, three] {
            node.stop().await;
        }
        drop(dir);
    })
    .await;
}
