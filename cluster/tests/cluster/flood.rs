//! A peer that opens streams faster than they are served runs into the stream limit (QUIC
//! stream credit), not into our memory; other peers are not slowed down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quiz_cluster::{ClusterError, EndpointConfig, Peer};
use quiz_protocol::cluster::ClusterMessage;

use crate::support::*;

/// Below 8 on purpose: quinn announces new stream credit in steps of an eighth of the limit,
/// so with a larger limit a freed stream (the Hello's) may not be re-announced and the flood
/// stops a little short of the limit. Below 8, every freed stream is announced and the flood
/// reaches the limit exactly.
const LIMIT: u32 = 7;
/// Streams the flooder tries to open: many times the limit.
const FLOOD: usize = 10 * LIMIT as usize;

fn small_limits() -> EndpointConfig {
    EndpointConfig {
        max_concurrent_bidi_streams: LIMIT,
        max_pending_streams: 4,
        ..EndpointConfig::for_test()
    }
}

/// Opens up to [`FLOOD`] subscription streams on `peer` and holds them all, never finishing.
fn flood(peer: Peer, opened: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..FLOOD {
            let stream = peer
                .open(&ClusterMessage::Subscribe { quiz: quiz() })
                .await
                .unwrap();
            held.push(stream);
            opened.fetch_add(1, Ordering::SeqCst);
        }
        std::future::pending::<()>().await;
    })
}

#[tokio::test]
async fn a_stream_flood_stops_at_the_limit_and_others_are_still_served() {
    within(async {
        let cluster = TestCluster::with_config(small_limits());
        let mut server = cluster.echo_server("node-1");
        let flooder = cluster.endpoint("node-2");
        let peer = flooder.connect(server.addr(), None).await.unwrap();
        assert_eq!(server.next_peer().await.node(), &node("node-2"));

        let opened = Arc::new(AtomicUsize::new(0));
        let flooding = flood(peer.clone(), opened.clone());
        let limit = LIMIT as usize;
        let seen = server.seen_of("node-2");
        eventually(
            "the server holds as many streams as the limit allows",
            || seen.live.load(Ordering::SeqCst) == limit && opened.load(Ordering::SeqCst) == limit,
        )
        .await;

        // Another peer is served meanwhile.
        still_serves(&cluster, &mut server, "node-3").await;

        // The flooder is stuck at the limit: not one stream more was opened or served, and
        // its own next request waits for credit that does not come.
        assert_eq!(opened.load(Ordering::SeqCst), limit);
        assert_eq!(seen.max_live.load(Ordering::SeqCst), limit);
        assert_eq!(
            peer.request(&ring(1), Duration::from_millis(300)).await,
            Err(ClusterError::Timeout)
        );

        // Letting go of the streams gives the credit back.
        flooding.abort();
        let _ = flooding.await;
        eventually("the held streams end", || {
            seen.live.load(Ordering::SeqCst) == 0
        })
        .await;
        assert_eq!(
            peer.request(&ring(2), Duration::from_secs(5))
                .await
                .unwrap(),
            ring(2)
        );
        assert!(seen.max_live.load(Ordering::SeqCst) <= limit);

        flooder.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn streams_nobody_accepts_wait_in_quinn_up_to_the_limit() {
    within(async {
        let cluster = TestCluster::with_config(small_limits());
        let server = cluster.endpoint("node-1");
        let flooder = cluster.endpoint("node-2");
        let peer = flooder.connect(server.local_addr(), None).await.unwrap();
        // Accepted, but nobody calls `accept_stream` on it yet.
        let idle = server.accept().await.unwrap();

        let opened = Arc::new(AtomicUsize::new(0));
        let flooding = flood(peer.clone(), opened.clone());
        let limit = LIMIT as usize;
        eventually("the flooder reaches the limit", || {
            opened.load(Ordering::SeqCst) == limit
        })
        .await;

        // The endpoint still completes handshakes.
        let other = cluster.endpoint("node-3");
        other.connect(server.local_addr(), None).await.unwrap();
        assert_eq!(server.accept().await.unwrap().node(), &node("node-3"));
        assert_eq!(opened.load(Ordering::SeqCst), limit);

        // Nothing was lost while waiting: every stream comes out, first message intact.
        let mut accepted = Vec::new();
        for _ in 0..limit {
            let (first, writer, reader) = idle.accept_stream().await.unwrap().unwrap();
            assert_eq!(first, ClusterMessage::Subscribe { quiz: quiz() });
            accepted.push((writer, reader));
        }
        assert_eq!(opened.load(Ordering::SeqCst), limit);

        flooding.abort();
        other.close().await;
        flooder.close().await;
        server.close().await;
    })
    .await
}
