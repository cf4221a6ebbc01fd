//! What the transport tests share: a test CA and endpoints on 127.0.0.1:0, an echo server
//! that records what it accepted, a raw quinn client for speaking wrong bytes, and an
//! `eventually` helper with a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quiz_cluster::{ClusterCa, ClusterError, Endpoint, EndpointConfig, Issued, Peer};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::{ClusterMessage, encode_frame};
use quiz_protocol::ids::QuizId;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

/// Every test runs under this.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `test` under [`TEST_TIMEOUT`].
pub(crate) async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// Polls `cond` until it holds, or panics after 10 s.
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn node(name: &str) -> NodeId {
    NodeId(name.to_string())
}

pub(crate) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) fn quiz() -> QuizId {
    QuizId::parse("K7M3QX").unwrap()
}

pub(crate) fn ring(epoch: u64) -> ClusterMessage {
    ClusterMessage::Ring {
        epoch,
        members: vec![quiz_protocol::cluster::RingMember {
            node: node("node-1"),
            weight: 1,
            ws_url: "ws://127.0.0.1:7001/v1/ws".into(),
            cluster_addr: "127.0.0.1:7101".into(),
        }],
    }
}

/// A test cluster: one CA and the endpoint settings every member uses.
pub(crate) struct TestCluster {
    pub(crate) ca: ClusterCa,
    pub(crate) config: EndpointConfig,
}

impl TestCluster {
    pub(crate) fn new() -> Self {
        TestCluster::with_config(EndpointConfig::for_test())
    }

    pub(crate) fn with_config(config: EndpointConfig) -> Self {
        TestCluster {
            ca: ClusterCa::generate("test").unwrap(),
            config,
        }
    }

    /// An endpoint named `name`, on 127.0.0.1:0.
    pub(crate) fn endpoint(&self, name: &str) -> Endpoint {
        self.endpoint_with(name, self.config.clone())
    }

    pub(crate) fn endpoint_with(&self, name: &str, config: EndpointConfig) -> Endpoint {
        let tls = self.ca.tls_for(name).unwrap();
        Endpoint::bind(localhost(), node(name), &tls, config).unwrap()
    }

    /// An endpoint serving [`echo`] to every peer.
    pub(crate) fn echo_server(&self, name: &str) -> EchoServer {
        EchoServer::spawn(self.endpoint(name))
    }
}

/// What an echo server saw of one peer, for assertions.
#[derive(Default)]
pub(crate) struct Seen {
    /// Streams being served now, and the most ever served at once.
    pub(crate) live: AtomicUsize,
    pub(crate) max_live: AtomicUsize,
}

/// An endpoint that accepts every peer and echoes every stream: the first message back as
/// the reply, then each later frame, until the peer finishes. Streams are held while open.
pub(crate) struct EchoServer {
    pub(crate) endpoint: Arc<Endpoint>,
    /// Per peer node id.
    seen: Arc<Mutex<HashMap<NodeId, Arc<Seen>>>>,
    /// Peers in the order they were accepted.
    pub(crate) peers: mpsc::Receiver<Peer>,
    /// Every error a stream produced (from `accept_stream` or a later frame).
    pub(crate) errors: mpsc::Receiver<ClusterError>,
}

impl EchoServer {
    fn spawn(endpoint: Endpoint) -> Self {
        let endpoint = Arc::new(endpoint);
        let seen: Arc<Mutex<HashMap<NodeId, Arc<Seen>>>> = Arc::default();
        let (peers_tx, peers) = mpsc::channel(64);
        let (errors_tx, errors) = mpsc::channel(64);
        let (ep, s) = (endpoint.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(peer) = ep.accept().await {
                let _ = peers_tx.send(peer.clone()).await;
                let seen = s
                    .lock()
                    .unwrap()
                    .entry(peer.node().clone())
                    .or_default()
                    .clone();
                tokio::spawn(echo(peer, seen, errors_tx.clone()));
            }
        });
        EchoServer {
            endpoint,
            seen,
            peers,
            errors,
        }
    }

    /// What the server saw of the peer `name` (so far, and from now on).
    pub(crate) fn seen_of(&self, name: &str) -> Arc<Seen> {
        self.seen
            .lock()
            .unwrap()
            .entry(node(name))
            .or_default()
            .clone()
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    pub(crate) async fn next_peer(&mut self) -> Peer {
        self.peers.recv().await.expect("echo server stopped")
    }

    pub(crate) async fn next_error(&mut self) -> ClusterError {
        self.errors.recv().await.expect("echo server stopped")
    }
}

/// Echoes every stream `peer` opens (see [`EchoServer`]).
pub(crate) async fn echo(peer: Peer, seen: Arc<Seen>, errors: mpsc::Sender<ClusterError>) {
    while let Some(stream) = peer.accept_stream().await {
        let (first, mut writer, mut reader) = match stream {
            Ok(stream) => stream,
            Err(e) => {
                let _ = errors.send(e).await;
                continue;
            }
        };
        let (seen, errors) = (seen.clone(), errors.clone());
        tokio::spawn(async move {
            let live = seen.live.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_live.fetch_max(live, Ordering::SeqCst);
            let mut next = Some(first);
            while let Some(msg) = next {
                if writer.send(&msg).await.is_err() {
                    break;
                }
                next = match reader.next().await {
                    Ok(next) => next,
                    Err(e) => {
                        let _ = errors.send(e).await;
                        None
                    }
                };
            }
            let _ = writer.finish();
            drop(reader);
            seen.live.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A bare quinn client that trusts `ca_pem` and presents `identity` (or no certificate):
/// for speaking bytes a real endpoint never sends.
pub(crate) fn raw_client(ca_pem: &str, identity: Option<&Issued>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![quiz_cluster::ALPN.to_vec()];
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    endpoint
}

/// A raw client with a good certificate for `name` that has done a good Hello with `addr`.
pub(crate) async fn raw_peer(
    cluster: &TestCluster,
    name: &str,
    addr: SocketAddr,
) -> quinn::Connection {
    let issued = cluster.ca.issue(name).unwrap();
    let client = raw_client(&cluster.ca.cert_pem(), Some(&issued));
    let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
    let hello = ClusterMessage::Hello {
        node: node(name),
        cluster: cluster.config.cluster.clone(),
    };
    let reply = raw_exchange(&conn, &encode_frame(&hello)).await.unwrap();
    assert!(matches!(
        quiz_protocol::cluster::decode_frame::<ClusterMessage>(&reply, 1 << 20),
        Ok(Some((ClusterMessage::Hello { .. }, _)))
    ));
    conn
}

/// Opens a stream, writes `bytes`, finishes, and reads everything the peer sends back.
pub(crate) async fn raw_exchange(
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<Vec<u8>, quinn::ReadToEndError> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(4 << 20).await
}

/// The application close a raw connection ended with: (code, reason).
pub(crate) async fn close_of(conn: &quinn::Connection) -> (u64, String) {
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other}"),
    }
}

/// Checks that `server` still serves: a fresh, good peer connects and gets a reply.
pub(crate) async fn still_serves(cluster: &TestCluster, server: &mut EchoServer, name: &str) {
    let client = cluster.endpoint(name);
    let peer = client
        .connect(server.addr(), Some(server.endpoint.node()))
        .await
        .unwrap();
    let reply = peer
        .request(&ring(9), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, ring(9));
    assert_eq!(server.next_peer().await.node(), &node(name));
    client.close().await;
}
