//! Good peers: the Hello, requests both ways, long-lived streams, frames at the size limit,
//! keep-alive, and closing.

use std::sync::Arc;
use std::time::Duration;

use quiz_cluster::{ClusterError, Endpoint, EndpointConfig};
use quiz_protocol::PlayerNo;
use quiz_protocol::cluster::{
    Audience, ClusterMessage, DEFAULT_MAX_CLUSTER_FRAME, EdgeRequest, OwnerEvent, OwnerReply,
    encode_frame,
};
use tokio::sync::mpsc;

use crate::support::*;

const REPLY: Duration = Duration::from_secs(10);

fn event(seq: u64) -> ClusterMessage {
    ClusterMessage::Event {
        quiz: quiz(),
        event: OwnerEvent::Frame {
            audience: Audience::Everyone,
            seq: Some(seq),
            json: format!("{{\"type\":\"tick\",\"seq\":{seq}}}").into_bytes(),
        },
    }
}

/// A message whose frame is exactly `len` bytes (version byte and body).
fn message_of_len(len: usize) -> ClusterMessage {
    let msg = |n: usize| ClusterMessage::Reply {
        id: 1,
        reply: OwnerReply::Frame(vec![0x5a; n]),
    };
    let overhead = encode_frame(&msg(len)).len() - 4 - len;
    let msg = msg(len - overhead);
    assert_eq!(encode_frame(&msg).len() - 4, len);
    msg
}

#[tokio::test]
async fn hello_then_requests_both_ways_and_a_long_lived_stream() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let client = cluster.endpoint("node-2");

        let peer = client
            .connect(server.addr(), Some(&node("node-1")))
            .await
            .unwrap();
        assert_eq!(peer.node(), &node("node-1"));
        assert_eq!(peer.remote_addr(), server.addr());
        let accepted = server.next_peer().await;
        assert_eq!(accepted.node(), &node("node-2"));

        let request = ClusterMessage::Request {
            id: 7,
            quiz: quiz(),
            request: EdgeRequest::Next {
                player: PlayerNo(3),
            },
        };
        assert_eq!(peer.request(&request, REPLY).await.unwrap(), request);

        // The acceptor calls the initiator on the same connection.
        let (errors, _) = mpsc::channel(1);
        tokio::spawn(echo(peer.clone(), Arc::new(Seen::default()), errors));
        assert_eq!(accepted.request(&ring(3), REPLY).await.unwrap(), ring(3));

        // A subscription-like stream: many frames both ways, at the same time.
        let subscribe = ClusterMessage::Subscribe { quiz: quiz() };
        let (mut writer, mut reader) = peer.open(&subscribe).await.unwrap();
        assert_eq!(reader.next().await.unwrap(), Some(subscribe));
        let frames = 500;
        let sending = tokio::spawn(async move {
            for seq in 0..frames {
                writer.send(&event(seq)).await.unwrap();
            }
            writer.finish().unwrap();
        });
        for seq in 0..frames {
            assert_eq!(reader.next().await.unwrap(), Some(event(seq)));
        }
        assert_eq!(reader.next().await.unwrap(), None, "a clean end of stream");
        sending.await.unwrap();

        client.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn frames_up_to_the_limit_pass_and_one_byte_more_is_refused() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let client = cluster.endpoint("node-2");
        let peer = client.connect(server.addr(), None).await.unwrap();
        assert_eq!(peer.node(), &node("node-1"));

        let max = DEFAULT_MAX_CLUSTER_FRAME;
        let biggest = message_of_len(max);
        assert_eq!(peer.request(&biggest, REPLY).await.unwrap(), biggest);

        let almost = message_of_len(max - 1);
        let (mut writer, mut reader) = peer.open(&almost).await.unwrap();
        assert_eq!(reader.next().await.unwrap().as_ref(), Some(&almost));
        for _ in 0..3 {
            writer.send(&biggest).await.unwrap();
            assert_eq!(reader.next().await.unwrap().as_ref(), Some(&biggest));
        }
        writer.finish().unwrap();
        assert_eq!(reader.next().await.unwrap(), None);

        // Over our limit: refused before it leaves.
        let over = message_of_len(max + 1);
        let refused = peer.request(&over, REPLY).await;
        assert_eq!(refused, Err(ClusterError::Oversized { len: max + 1, max }));

        // Over the receiver's limit (a sender configured larger): the receiver refuses the
        // stream, the sender's request fails, and the connection goes on.
        let large = cluster.endpoint_with(
            "node-3",
            EndpointConfig {
                max_frame_bytes: 2 * max,
                ..cluster.config.clone()
            },
        );
        let large_peer = large.connect(server.addr(), None).await.unwrap();
        assert!(large_peer.request(&over, REPLY).await.is_err());
        assert_eq!(
            server.next_error().await,
            ClusterError::Oversized { len: max + 1, max }
        );
        assert_eq!(large_peer.request(&ring(1), REPLY).await.unwrap(), ring(1));

        large.close().await;
        client.close().await;
        server.endpoint.close().await;
    })
    .await
}

/// Short timeouts: a quiet connection would die after 400 ms without keep-alives.
fn quiet_link(keep_alive: Option<Duration>) -> EndpointConfig {
    EndpointConfig {
        idle_timeout: Duration::from_millis(400),
        keep_alive_interval: keep_alive,
        ..EndpointConfig::for_test()
    }
}

#[tokio::test]
async fn keep_alive_holds_a_quiet_connection_past_the_idle_timeout() {
    within(async {
        let cluster = TestCluster::with_config(quiet_link(Some(Duration::from_millis(100))));
        let mut server = cluster.echo_server("node-1");
        let client = cluster.endpoint("node-2");
        let peer = client.connect(server.addr(), None).await.unwrap();
        let accepted = server.next_peer().await;

        // Four idle timeouts of silence: the connection must not end.
        let quiet = Duration::from_millis(1600);
        assert!(
            tokio::time::timeout(quiet, peer.closed()).await.is_err(),
            "the connection died while idle"
        );
        assert_eq!(peer.request(&ring(5), REPLY).await.unwrap(), ring(5));
        drop(accepted);

        client.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn without_keep_alive_the_same_quiet_connection_dies() {
    // The control for the test above: it shows the idle timeout is real.
    within(async {
        let cluster = TestCluster::with_config(quiet_link(None));
        let mut server = cluster.echo_server("node-1");
        let client = cluster.endpoint("node-2");
        let peer = client.connect(server.addr(), None).await.unwrap();
        let _accepted = server.next_peer().await;

        let why = tokio::time::timeout(Duration::from_secs(10), peer.closed())
            .await
            .expect("an idle connection without keep-alive times out");
        assert_eq!(why, ClusterError::Closed("timed out".into()));

        client.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn close_stops_accepting_and_ends_connections() {
    within(async {
        let cluster = TestCluster::new();
        let server = cluster.endpoint("node-1");
        let client = cluster.endpoint("node-2");
        let peer = client.connect(server.local_addr(), None).await.unwrap();
        let accepted = server.accept().await.unwrap();
        assert_eq!(accepted.node(), &node("node-2"));

        server.close().await;
        assert!(server.accept().await.is_none());
        assert!(matches!(
            server.connect(client.local_addr(), None).await,
            Err(ClusterError::Closed(_))
        ));
        let why = peer.closed().await;
        assert!(
            matches!(&why, ClusterError::Closed(reason) if reason.contains("endpoint closed")),
            "{why}"
        );
        assert!(peer.request(&ring(1), REPLY).await.is_err());
        client.close().await;
    })
    .await
}

#[test]
fn binding_outside_a_runtime_is_an_error_not_a_panic() {
    let cluster = TestCluster::new();
    let tls = cluster.ca.tls_for("node-1").unwrap();
    let bound = Endpoint::bind(localhost(), node("node-1"), &tls, cluster.config.clone());
    assert!(matches!(bound, Err(ClusterError::Bind(_))), "{bound:?}");
}

#[tokio::test]
async fn bind_checks_the_config_and_our_own_identity() {
    let cluster = TestCluster::new();
    let tls = cluster.ca.tls_for("node-1").unwrap();
    let other_name = Endpoint::bind(localhost(), node("node-2"), &tls, cluster.config.clone());
    assert!(matches!(other_name, Err(ClusterError::Config(_))));

    let slow_keep_alive = EndpointConfig {
        keep_alive_interval: Some(Duration::from_secs(10)),
        ..cluster.config.clone()
    };
    let bad = Endpoint::bind(localhost(), node("node-1"), &tls, slow_keep_alive);
    assert!(matches!(bad, Err(ClusterError::Config(_))));

    let no_streams = EndpointConfig {
        max_concurrent_bidi_streams: 0,
        ..cluster.config.clone()
    };
    assert!(no_streams.validate().is_err());
    assert!(EndpointConfig::default().validate().is_ok());
}

#[tokio::test]
async fn a_request_without_a_reply_ends_or_times_out() {
    within(async {
        let cluster = TestCluster::new();
        let server = cluster.endpoint("node-1");
        let client = cluster.endpoint("node-2");
        let peer = client.connect(server.local_addr(), None).await.unwrap();
        let accepted = server.accept().await.unwrap();

        let (first_ring, second_ring) = (ring(1), ring(2));
        // Finished without a reply.
        let (answered, _) = tokio::join!(peer.request(&first_ring, REPLY), async {
            let (first, writer, _reader) = accepted.accept_stream().await.unwrap().unwrap();
            assert_eq!(first, ring(1));
            writer.finish().unwrap();
        });
        assert_eq!(answered, Err(ClusterError::EndOfStream));

        // Never answered.
        let (answered, held) = tokio::join!(
            peer.request(&second_ring, Duration::from_millis(200)),
            async { accepted.accept_stream().await.unwrap().unwrap() }
        );
        assert_eq!(answered, Err(ClusterError::Timeout));
        drop(held);

        client.close().await;
        server.close().await;
    })
    .await
}

#[tokio::test]
async fn a_send_cancelled_half_way_resets_the_stream() {
    within(async {
        let cluster = TestCluster::new();
        let server = cluster.endpoint("node-1");
        let client = cluster.endpoint("node-2");
        let peer = client.connect(server.local_addr(), None).await.unwrap();
        let accepted = server.accept().await.unwrap();

        let (mut writer, _reader) = peer.open(&ring(1)).await.unwrap();
        let (_, _, mut incoming) = accepted.accept_stream().await.unwrap().unwrap();

        // Nobody reads yet, so flow control stops the second large frame part-way.
        let big = message_of_len(DEFAULT_MAX_CLUSTER_FRAME);
        let cancelled = async {
            for _ in 0..2 {
                writer.send(&big).await.unwrap();
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(300), cancelled)
                .await
                .is_err()
        );
        // Half a frame is on the stream: the writer refuses to go on, and dropping it resets.
        assert!(matches!(
            writer.send(&ring(2)).await,
            Err(ClusterError::Closed(_))
        ));
        drop(writer);

        // The reader sees at most the whole frame, then the reset: never a truncated frame.
        let end = loop {
            match incoming.next().await {
                Ok(Some(msg)) => assert_eq!(msg, big),
                other => break other,
            }
        };
        assert!(
            matches!(&end, Err(ClusterError::Closed(reason)) if reason.contains("reset")),
            "{end:?}"
        );

        client.close().await;
        server.close().await;
    })
    .await
}
