//! Bad frames from an authenticated peer, written raw: truncated, oversized, garbage, another
//! version. Each fails its own stream with the matching error, the connection stays usable,
//! and the endpoint serves the next peer.

use quinn::{ReadError, ReadToEndError};
use quiz_cluster::ClusterError;
use quiz_protocol::cluster::{
    CLUSTER_VERSION, ClusterMessage, DEFAULT_MAX_CLUSTER_FRAME, encode_frame,
};

use crate::support::*;

/// A stream the server gave up on is reset towards us.
fn was_reset(read: Result<Vec<u8>, ReadToEndError>) -> bool {
    matches!(read, Err(ReadToEndError::Read(ReadError::Reset(_))))
}

/// The raw connection still carries a good request (the echo answers with the same frame).
async fn connection_still_works(conn: &quinn::Connection) {
    let frame = encode_frame(&ring(2));
    assert_eq!(raw_exchange(conn, &frame).await.unwrap(), frame);
}

#[tokio::test]
async fn a_stream_that_ends_mid_frame_is_truncated() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let conn = raw_peer(&cluster, "node-2", server.addr()).await;
        assert_eq!(server.next_peer().await.node(), &node("node-2"));

        let frame = encode_frame(&ring(1));
        // Cut in the body, and cut in the header.
        for cut in [frame.len() - 3, 2] {
            assert!(was_reset(raw_exchange(&conn, &frame[..cut]).await));
            assert_eq!(server.next_error().await, ClusterError::Truncated);
        }

        connection_still_works(&conn).await;
        still_serves(&cluster, &mut server, "node-3").await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn an_oversized_header_is_refused_before_its_body() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let conn = raw_peer(&cluster, "node-2", server.addr()).await;
        assert_eq!(server.next_peer().await.node(), &node("node-2"));

        let max = DEFAULT_MAX_CLUSTER_FRAME;
        for len in [max + 1, u32::MAX as usize] {
            // Only the header, and the stream left open: a reader that waited for the body
            // would never answer.
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&(len as u32).to_be_bytes()).await.unwrap();
            assert_eq!(
                server.next_error().await,
                ClusterError::Oversized { len, max }
            );
            assert!(was_reset(recv.read_to_end(1024).await));
            // And we are told to stop sending.
            assert!(send.stopped().await.unwrap().is_some());
        }

        connection_still_works(&conn).await;
        still_serves(&cluster, &mut server, "node-3").await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn garbage_after_a_valid_header_is_malformed() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let conn = raw_peer(&cluster, "node-2", server.addr()).await;
        assert_eq!(server.next_peer().await.node(), &node("node-2"));

        let garbage: [&[u8]; 3] = [
            &[0, 0, 0, 5, CLUSTER_VERSION, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 1, CLUSTER_VERSION],
            &[0, 0, 0, 0],
        ];
        for bytes in garbage {
            assert!(was_reset(raw_exchange(&conn, bytes).await));
            let error = server.next_error().await;
            assert!(matches!(error, ClusterError::Malformed(_)), "{error}");
        }

        connection_still_works(&conn).await;
        still_serves(&cluster, &mut server, "node-3").await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn another_version_in_the_middle_of_a_stream_fails_that_stream() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let conn = raw_peer(&cluster, "node-2", server.addr()).await;
        assert_eq!(server.next_peer().await.node(), &node("node-2"));

        let subscribe = encode_frame(&ClusterMessage::Subscribe { quiz: quiz() });
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&subscribe).await.unwrap();
        let mut echoed = vec![0; subscribe.len()];
        recv.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, subscribe);

        let mut next = encode_frame(&ring(1));
        next[4] = CLUSTER_VERSION + 1;
        send.write_all(&next).await.unwrap();
        assert_eq!(
            server.next_error().await,
            ClusterError::Version(CLUSTER_VERSION + 1)
        );
        assert!(send.stopped().await.unwrap().is_some());

        connection_still_works(&conn).await;
        still_serves(&cluster, &mut server, "node-3").await;
        server.endpoint.close().await;
    })
    .await
}
