//! What the dynamic-membership tests share: a test cluster CA with the router's certificate
//! on disk, a dynamic router config, leases written straight into the store, fake shard nodes
//! (real QUIC endpoints that record the rings pushed to them), reading the ring and metrics
//! over the admin listener, and an `eventually` helper with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quiz_cluster::{ClusterCa, Endpoint, EndpointConfig};
use quiz_protocol::NodeId;
use quiz_protocol::cluster::{ClusterMessage, RingMember};
use quiz_router::{ClusterConfig, Config};
use quiz_store::{NodeLease, Stores};
use tokio::sync::mpsc;

use crate::support::Harness;

/// The QUIC cluster name the tests use.
pub(crate) const CLUSTER: &str = "quiz-test";

/// A lease that stays live for the whole test.
pub(crate) const LONG_MS: i64 = 600_000;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn node(name: &str) -> NodeId {
    NodeId(name.into())
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after 20 s naming `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test cluster's CA, and a folder for the router certificates it issues.
pub(crate) struct TestCa {
    pub(crate) ca: ClusterCa,
    dir: tempfile::TempDir,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        TestCa {
            ca: ClusterCa::generate(CLUSTER).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A `[cluster]` section for `router_id`, its certificate files written out, with short
    /// intervals.
    pub(crate) fn cluster_config(&self, router_id: &str) -> ClusterConfig {
        let issued = self.ca.issue(router_id).unwrap();
        let path = |file: String| self.dir.path().join(file);
        let (ca_cert, cert, key) = (
            path("ca.pem".into()),
            path(format!("{router_id}.pem")),
            path(format!("{router_id}.key")),
        );
        std::fs::write(&ca_cert, self.ca.cert_pem()).unwrap();
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        ClusterConfig {
            name: CLUSTER.into(),
            router_id: router_id.into(),
            ca_cert,
            cert,
            key,
            bind_addr: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 25,
            push_interval_ms: 200,
            push_timeout_ms: 500,
        }
    }

    /// The test router config with dynamic membership instead of its fixed nodes.
    pub(crate) fn router_config(&self, router_id: &str) -> Config {
        Config {
            nodes: Vec::new(),
            cluster: Some(self.cluster_config(router_id)),
            ..Config::for_test()
        }
    }
}

/// A lease for `name`, live for `ttl_ms` from now.
pub(crate) fn lease(name: &str, weight: u32, cluster_addr: &str, ttl_ms: i64) -> NodeLease {
    let now = now_ms();
    NodeLease {
        node: node(name),
        ws_url: format!("ws://{name}.test:7000/v1/ws"),
        cluster_addr: cluster_addr.into(),
        weight,
        draining: false,
        renewed_at: now,
        expires_at: now + ttl_ms,
    }
}

pub(crate) async fn renew(stores: &Stores, lease: &NodeLease) {
    stores.membership.renew_lease(lease).await.unwrap();
}

/// The lease as a ring member.
pub(crate) fn member(lease: &NodeLease) -> RingMember {
    RingMember {
        node: lease.node.clone(),
        weight: lease.weight,
        ws_url: lease.ws_url.clone(),
        cluster_addr: lease.cluster_addr.clone(),
    }
}

/// The ring a router serves on its admin listener: (epoch, members).
pub(crate) async fn ring_of(h: &Harness) -> (u64, Vec<RingMember>) {
    let reply = h.admin_get("/v1/cluster/ring").await;
    let body = reply.expect_ok(200);
    let epoch = body["epoch"].as_u64().unwrap();
    let members = serde_json::from_value(body["members"].clone()).unwrap();
    (epoch, members)
}

/// Waits until `h` serves a ring with exactly `members` (in node order); returns its epoch.
pub(crate) async fn ring_with(h: &Harness, members: &[RingMember]) -> u64 {
    eventually(&format!("a ring of {members:?}"), || async {
        let (epoch, held) = ring_of(h).await;
        (held == members).then_some(epoch)
    })
    .await
}

/// One sample of a metric on `h`'s admin listener (0 when not exported yet).
pub(crate) async fn metric(h: &Harness, sample: &str) -> f64 {
    let text = h.admin_get("/metrics").await.text;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A shard node as far as ring pushes go: a real QUIC endpoint with a certificate from the
/// test CA that answers every stream by echoing its first message (the ack convention), and
/// records every `Ring` it is sent.
pub(crate) struct FakeNode {
    pub(crate) endpoint: Arc<Endpoint>,
    rings: mpsc::Receiver<(u64, Vec<RingMember>)>,
    /// Connections accepted so far.
    pub(crate) connections: Arc<AtomicUsize>,
}

impl FakeNode {
    pub(crate) fn start(ca: &TestCa, name: &str) -> FakeNode {
        FakeNode::start_at(ca, name, "127.0.0.1:0".parse().unwrap())
    }

    pub(crate) fn start_at(ca: &TestCa, name: &str, addr: SocketAddr) -> FakeNode {
        let tls = ca.ca.tls_for(name).unwrap();
        let endpoint =
            Arc::new(Endpoint::bind(addr, node(name), &tls, EndpointConfig::new(CLUSTER)).unwrap());
        let (tx, rings) = mpsc::channel(1024);
        let connections = Arc::new(AtomicUsize::new(0));
        let (ep, count) = (endpoint.clone(), connections.clone());
        tokio::spawn(async move {
            while let Some(peer) = ep.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(Ok((first, mut writer, _reader))) = peer.accept_stream().await {
                        if let ClusterMessage::Ring { epoch, members } = &first {
                            let _ = tx.try_send((*epoch, members.clone()));
                        }
                        let _ = writer.send(&first).await;
                        let _ = writer.finish();
                    }
                });
            }
        });
        FakeNode {
            endpoint,
            rings,
            connections,
        }
    }

    pub(crate) fn addr(&self) -> String {
        self.endpoint.local_addr().to_string()
    }

    /// The next ring pushed to this node (within 20 s).
    pub(crate) async fn next_ring(&mut self) -> (u64, Vec<RingMember>) {
        tokio::time::timeout(Duration::from_secs(20), self.rings.recv())
            .await
            .expect("no ring pushed within 20 s")
            .expect("fake node stopped")
    }

    /// Skips pushes until one of `epoch` arrives; returns its members.
    pub(crate) async fn ring_at(&mut self, epoch: u64) -> Vec<RingMember> {
        loop {
            let (got, members) = self.next_ring().await;
            assert!(got <= epoch, "pushed epoch {got} while waiting for {epoch}");
            if got == epoch {
                return members;
            }
        }
    }

    pub(crate) async fn stop(self) {
        self.endpoint.close().await;
    }
}
