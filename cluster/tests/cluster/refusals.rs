//! Peers that must not get in: another CA, no client certificate, another protocol version,
//! another cluster, a node id the certificate does not name, no Hello at all. Each is refused
//! without being handed out, and the endpoint goes on serving good peers.

use std::time::Duration;

use quiz_cluster::{CLOSE_REFUSED, ClusterError, EndpointConfig};
use quiz_protocol::cluster::{ClusterMessage, encode_frame};

use crate::support::*;

/// What a raw client's connection ended with, whether it failed during the handshake or was
/// closed right after.
async fn raw_outcome(
    client: &quinn::Endpoint,
    addr: std::net::SocketAddr,
) -> quinn::ConnectionError {
    match client.connect(addr, "localhost").unwrap().await {
        Err(e) => e,
        Ok(conn) => conn.closed().await,
    }
}

/// Waits (at most 10 s) until `check` holds.
async fn eventually_true(check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never came true");
}

fn is_tls_refusal(e: &quinn::ConnectionError) -> bool {
    // A TLS alert travels as a QUIC CONNECTION_CLOSE with a crypto error code.
    matches!(
        e,
        quinn::ConnectionError::ConnectionClosed(_) | quinn::ConnectionError::TransportError(_)
    )
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");

        // An endpoint of another cluster CA (same cluster name): neither side trusts the other.
        let stranger = TestCluster::new();
        let outsider = stranger.endpoint("node-2");
        let refused = outsider.connect(server.addr(), None).await;
        assert!(
            matches!(refused, Err(ClusterError::Connect(_))),
            "{refused:?}"
        );

        // A client that trusts our CA but presents a certificate from the other one: the
        // server's client verifier refuses it.
        let foreign = stranger.ca.issue("node-3").unwrap();
        let client = raw_client(&cluster.ca.cert_pem(), Some(&foreign));
        let outcome = raw_outcome(&client, server.addr()).await;
        assert!(is_tls_refusal(&outcome), "{outcome}");

        still_serves(&cluster, &mut server, "node-4").await;
        outsider.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");

        let client = raw_client(&cluster.ca.cert_pem(), None);
        for _ in 0..20 {
            let outcome = raw_outcome(&client, server.addr()).await;
            assert!(is_tls_refusal(&outcome), "{outcome}");
        }
        // Every refusal is counted for the metrics (and logged at a bounded rate).
        let refused = &cluster.config.refused_handshakes;
        eventually_true(|| refused.load(std::sync::atomic::Ordering::Relaxed) == 20).await;

        still_serves(&cluster, &mut server, "node-2").await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn a_hello_in_another_protocol_version_is_refused() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");

        let issued = cluster.ca.issue("node-2").unwrap();
        let client = raw_client(&cluster.ca.cert_pem(), Some(&issued));
        let conn = client
            .connect(server.addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        let mut hello = encode_frame(&ClusterMessage::Hello {
            node: node("node-2"),
            cluster: cluster.config.cluster.clone(),
        });
        hello[4] = 9; // the version byte
        assert!(raw_exchange(&conn, &hello).await.is_err());
        let (code, reason) = close_of(&conn).await;
        assert_eq!(code, CLOSE_REFUSED.into_inner());
        assert!(reason.contains("version 9"), "{reason}");

        still_serves(&cluster, &mut server, "node-3").await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn a_peer_of_another_cluster_is_refused() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");

        let elsewhere = cluster.endpoint_with(
            "node-2",
            EndpointConfig {
                cluster: "elsewhere".into(),
                ..cluster.config.clone()
            },
        );
        match elsewhere.connect(server.addr(), None).await {
            Err(ClusterError::Handshake(reason)) => {
                assert!(reason.contains("cluster \"elsewhere\""), "{reason}")
            }
            other => panic!("expected a refused handshake, got {other:?}"),
        }

        still_serves(&cluster, &mut server, "node-3").await;
        elsewhere.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn a_node_id_must_match_the_certificate() {
    within(async {
        let cluster = TestCluster::new();
        let mut server = cluster.echo_server("node-1");
        let refuses = |claim: ClusterMessage, why: &'static str| {
            let cluster = &cluster;
            let addr = server.addr();
            async move {
                let issued = cluster.ca.issue("node-2").unwrap();
                let client = raw_client(&cluster.ca.cert_pem(), Some(&issued));
                let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
                assert!(raw_exchange(&conn, &encode_frame(&claim)).await.is_err());
                let (code, reason) = close_of(&conn).await;
                assert_eq!(code, CLOSE_REFUSED.into_inner());
                assert!(reason.contains(why), "{reason}");
            }
        };
        let hello = |name: &str| ClusterMessage::Hello {
            node: node(name),
            cluster: "test".into(),
        };
        // A certificate for node-2 claiming to be node-5, or to be the server itself.
        refuses(hello("node-5"), "not valid for \"node-5\"").await;
        refuses(hello("node-1"), "our own node id").await;
        // Something other than a Hello first.
        refuses(ring(1), "not a Hello").await;

        // A client that expects another node than the one it reaches: the server's
        // certificate does not name it.
        let client = cluster.endpoint("node-3");
        let wrong = client.connect(server.addr(), Some(&node("node-7"))).await;
        assert!(matches!(wrong, Err(ClusterError::Connect(_))), "{wrong:?}");

        still_serves(&cluster, &mut server, "node-4").await;
        client.close().await;
        server.endpoint.close().await;
    })
    .await
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout_without_blocking_others() {
    within(async {
        let cluster = TestCluster::with_config(EndpointConfig {
            handshake_timeout: Duration::from_secs(3),
            ..EndpointConfig::for_test()
        });
        let mut server = cluster.echo_server("node-1");

        let issued = cluster.ca.issue("node-2").unwrap();
        let client = raw_client(&cluster.ca.cert_pem(), Some(&issued));
        let silent = client
            .connect(server.addr(), "localhost")
            .unwrap()
            .await
            .unwrap();

        // A good peer gets in while the silent one is still waiting.
        still_serves(&cluster, &mut server, "node-3").await;
        assert!(silent.close_reason().is_none());

        let (code, reason) = close_of(&silent).await;
        assert_eq!(code, CLOSE_REFUSED.into_inner());
        assert!(reason.contains("no Hello in time"), "{reason}");
        server.endpoint.close().await;
    })
    .await
}
