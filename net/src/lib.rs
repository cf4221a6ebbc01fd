//! The public TCP listeners of the router (its HTTP API) and of every edge (phones'
//! WebSockets): HTTP/1.1 served by hyper, with admission that a hostile client cannot starve.
//!
//! Every connection is counted from `accept` ([`gate`]): in all, per address, and apart while
//! it has not yet sent a whole request. Each phase has a deadline: the first request's headers
//! within `header_timeout`, the next request on a kept-alive connection within
//! `idle_timeout`; a request being handled is left to the handler's own timeout, and an
//! upgraded WebSocket to its owner's pings. The listener also keeps file descriptors back for
//! everything else the process opens (its admin port, the store's pool, peers), so a full
//! public port never stops the rest of the process.
//!
//! What the listener does not do: authenticate, rate-limit requests, or parse WebSocket
//! frames. Those are the application's (router `limit`, edge `conn`).

mod gate;
pub mod quiet;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use quiz_protocol::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use gate::{Gate, Refusal, Slot};

/// The limits of one listener. Each is a config value of the binary that serves it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections in all, counted from accept (a WebSocket until it closes). Each costs
    /// a file descriptor and, once a phone, about 8 KiB.
    pub max_connections: usize,
    /// Open connections from one IP address. A classroom behind one NAT address needs one
    /// per phone.
    pub max_connections_per_ip: usize,
    /// Connections that have not yet sent a whole request. At the cap the oldest is closed to
    /// make room, so idle sockets cannot hold the door shut.
    pub max_handshaking: usize,
    /// The same, for one address.
    pub max_handshaking_per_ip: usize,
    /// From accept to the first request's last header byte.
    pub header_timeout: Duration,
    /// From a response to the next request's last header byte on a kept-alive connection.
    pub idle_timeout: Duration,
    /// File descriptors kept back from this listener for the rest of the process: the
    /// listener accepts at most (the process's open-file limit − this) connections.
    pub reserved_fds: usize,
}

impl Default for Limits {
    fn default() -> Self {
        ListenerConfig::default().limits()
    }
}

/// The listener's metrics, registered in the serving binary's registry.
#[derive(Clone)]
pub struct Metrics {
    /// Connections open on the listener (from accept to close).
    pub open: IntGauge,
    /// Of those, connections that have not sent a whole request yet.
    pub handshaking: IntGauge,
    /// Connections refused at accept, by reason: `full`, `per_ip`, `busy` (handshakes all
    /// young).
    pub refused: IntCounterVec,
    /// Connections the listener closed, by reason: `header_timeout`, `idle_timeout`,
    /// `evicted` (the oldest handshake, to make room), `tls_handshake` (failed).
    pub closed: IntCounterVec,
    /// Failed accepts (out of file descriptors and the like).
    pub accept_errors: prometheus::IntCounter,
}

impl Metrics {
    /// Registers the listener's metrics (names prefixed `listener_`) in `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let m = Metrics {
            open: IntGauge::new("listener_connections", "Open connections, from accept")?,
            handshaking: IntGauge::new(
                "listener_handshaking",
                "Open connections that have not sent a whole request",
            )?,
            refused: IntCounterVec::new(
                Opts::new("listener_refused_total", "Connections refused at accept"),
                &["reason"],
            )?,
            closed: IntCounterVec::new(
                Opts::new(
                    "listener_closed_total",
                    "Connections closed by the listener's limits",
                ),
                &["reason"],
            )?,
            accept_errors: prometheus::IntCounter::new(
                "listener_accept_errors_total",
                "Failed accepts",
            )?,
        };
        registry.register(Box::new(m.open.clone()))?;
        registry.register(Box::new(m.handshaking.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.closed.clone()))?;
        registry.register(Box::new(m.accept_errors.clone()))?;
        Ok(m)
    }
}

/// Refusals answered with an HTTP response at once; past this many in flight, a refused
/// connection is just closed (each answer holds a descriptor for up to a second).
const MAX_REFUSING: usize = 64;
/// How long a refused client gets to send its request before the refusal is written.
const REFUSE_WAIT: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` under `limits` until `shutdown` is cancelled; then stops
/// accepting and lets each connection finish its request in flight. Handlers can extract
/// `ConnectInfo<SocketAddr>`. Upgraded connections outlive this function (their owner stops
/// them), and stay counted until they close. With `tls`, every connection is TLS (https,
/// wss); its handshake counts against `header_timeout` like a request head.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Metrics,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let limits = headroom(limits);
    let gate = Gate::new(limits, metrics);
    let tasks = TaskTracker::new();
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut accept_errors = quiet::Every::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: the client waits in the backlog.
                gate.metrics().accept_errors.inc();
                if let Some(suppressed) = accept_errors.tick() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small frames and JSON responses should not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        match gate.admit(peer.ip()) {
            Ok(slot) => {
                let app = app.clone();
                let stop = shutdown.clone();
                let tls = tls.clone();
                tasks.spawn(connection(stream, peer, slot, app, tls, stop));
            }
            Err(why) => {
                if refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                    let refusing = refusing.clone();
                    tasks.spawn(async move {
                        refuse(stream, why).await;
                        refusing.fetch_sub(1, Ordering::AcqRel);
                    });
                } else {
                    refusing.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Lowers `max_connections` to what the process's open-file limit leaves after
/// `reserved_fds`, saying so.
fn headroom(mut limits: Limits) -> Limits {
    let Some(open_files) = open_file_limit() else {
        return limits;
    };
    let room = open_files.saturating_sub(limits.reserved_fds).max(1);
    if limits.max_connections > room {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files,
            reserved_fds = limits.reserved_fds,
            "the open-file limit leaves room for fewer connections; accepting at most {room}"
        );
        limits.max_connections = room;
    }
    limits
}

/// The soft limit on open files of this process (`/proc/self/limits`, Linux).
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One connection: its TLS handshake if any, then hyper serves it while the slot's deadline
/// and eviction are watched.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let counted = Counted {
        inner: stream,
        _slot: slot.clone(),
    };
    let Some(acceptor) = tls else {
        return serve_http(TokioIo::new(counted), peer, slot, app, shutdown).await;
    };
    let deadline = slot.deadline().map_or_else(Instant::now, |(d, _)| d);
    let secured = tokio::select! {
        secured = acceptor.accept(counted) => secured,
        _ = slot.evicted() => return,
        _ = tokio::time::sleep_until(deadline.into()) => {
            slot.metrics().closed.with_label_values(&["header_timeout"]).inc();
            return;
        }
    };
    match secured {
        Ok(stream) => serve_http(TokioIo::new(stream), peer, slot, app, shutdown).await,
        Err(e) => {
            slot.metrics()
                .closed
                .with_label_values(&["tls_handshake"])
                .inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
    }
}

/// HTTP/1.1 on an accepted (and perhaps secured) connection.
async fn serve_http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    slot: Arc<Slot>,
    app: Router,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_slot = slot.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        service_slot.request_started();
        request.extensions_mut().insert(ConnectInfo(peer));
        let slot = service_slot.clone();
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await?;
            slot.request_done(response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let metrics = slot.metrics().clone();
    let mut draining = false;
    loop {
        // Phases change inside the service; the deadline is looked at again at least every
        // second.
        let now = Instant::now();
        let wake = slot
            .deadline()
            .map_or(now + Duration::from_secs(1), |(d, _)| {
                d.min(now + Duration::from_secs(1))
            });
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = slot.evicted() => {
                tracing::debug!(%peer, "oldest handshake closed to make room");
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some((deadline, why)) = slot.deadline()
                    && deadline <= Instant::now()
                {
                    metrics.closed.with_label_values(&[why]).inc();
                    tracing::debug!(%peer, reason = why, "connection timed out");
                    return;
                }
            }
        }
    }
}

/// Answers a refused connection with the JSON error every client error has, once the client
/// has sent its request (or a second has passed), so the answer is not lost to a reset.
async fn refuse(mut stream: TcpStream, why: Refusal) {
    let (status, code, message, retry_after) = match why {
        Refusal::Full => (
            "503 Service Unavailable",
            ErrorCode::Unavailable,
            "this server is full; try another",
            "",
        ),
        Refusal::Busy => (
            "503 Service Unavailable",
            ErrorCode::Unavailable,
            "too many connections being opened; retry",
            "Retry-After: 1\r\n",
        ),
        Refusal::PerIp => (
            "429 Too Many Requests",
            ErrorCode::RateLimited,
            "too many connections from this address",
            "Retry-After: 5\r\n",
        ),
    };
    let body = serde_json::json!({
        "code": code,
        "message": message,
        "retryable": code.retryable(),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{retry_after}\r\n{body}",
        body.len()
    );
    let mut head = [0u8; 4096];
    let mut seen = 0;
    let _ = tokio::time::timeout(REFUSE_WAIT, async {
        while seen < head.len() {
            match stream.read(&mut head[seen..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
            if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(REFUSE_WAIT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The accepted socket, holding its slot for as long as it is open (also once upgraded).
struct Counted {
    inner: TcpStream,
    _slot: Arc<Slot>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The `[listener]` table of a binary's config file: [`Limits`] in the units of a config file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Open connections in all, counted from accept (a phone's WebSocket until it closes).
    /// Each costs a file descriptor and a few KiB (about 8 KiB for a phone). Default 18000.
    pub max_connections: usize,
    /// Open connections from one IP address. A classroom or a school behind one NAT address
    /// needs one per phone. Default 10000.
    pub max_connections_per_ip: usize,
    /// Connections that have not yet sent a whole request. At the cap the oldest is closed to
    /// make room (a real client sends its request within milliseconds of connecting).
    /// Default 1024.
    pub max_handshaking: usize,
    /// The same, for one IP address. Default 256.
    pub max_handshaking_per_ip: usize,
    /// From accept to the last header byte of the first request, in milliseconds; slower
    /// clients are closed. Default 10000.
    pub header_timeout_ms: u64,
    /// From a response to the last header byte of the next request on a kept-alive
    /// connection, in milliseconds. Default 30000.
    pub idle_timeout_ms: u64,
    /// File descriptors kept back for the rest of the process (admin port, store pool,
    /// peers, logs): the listener holds at most the open-file limit minus this. Default 256.
    pub reserved_fds: usize,
    /// Serve TLS (https, wss) with this certificate chain, a PEM file, leaf first. Set with
    /// `tls_key`. Default none: plain TCP (TLS left to an ingress or proxy in front).
    pub tls_cert: Option<String>,
    /// The private key of `tls_cert`, a PEM file (PKCS#8, PKCS#1 or SEC1). Default none.
    pub tls_key: Option<String>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 18_000,
            max_connections_per_ip: 10_000,
            max_handshaking: 1024,
            max_handshaking_per_ip: 256,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            reserved_fds: 256,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ListenerConfig {
    /// The TLS server configuration of `tls_cert` and `tls_key`, or `None` without them.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => return Err("listener.tls_cert and listener.tls_key go together".into()),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("listener.tls_cert {cert}: {e}"))?;
        if chain.is_empty() {
            return Err(format!("listener.tls_cert {cert}: no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("listener.tls_key {key}: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("listener.tls_cert and tls_key: {e}"))?;
        // WebSockets and this API are HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// Calls `bad(field, problem)` for each value out of range; fields are named
    /// `listener.…`.
    pub fn check(&self, mut bad: impl FnMut(&str, &str)) {
        if !(1..=1_000_000).contains(&self.max_connections) {
            bad("listener.max_connections", "must be 1-1000000");
        }
        if !(1..=self.max_connections.max(1)).contains(&self.max_connections_per_ip) {
            bad(
                "listener.max_connections_per_ip",
                "must be 1 up to listener.max_connections",
            );
        }
        if !(1..=100_000).contains(&self.max_handshaking) {
            bad("listener.max_handshaking", "must be 1-100000");
        }
        if !(1..=self.max_handshaking.max(1)).contains(&self.max_handshaking_per_ip) {
            bad(
                "listener.max_handshaking_per_ip",
                "must be 1 up to listener.max_handshaking",
            );
        }
        if !(100..=600_000).contains(&self.header_timeout_ms) {
            bad("listener.header_timeout_ms", "must be 100-600000");
        }
        if !(100..=3_600_000).contains(&self.idle_timeout_ms) {
            bad("listener.idle_timeout_ms", "must be 100-3600000");
        }
        if self.reserved_fds > 100_000 {
            bad("listener.reserved_fds", "must be at most 100000");
        }
        if let Err(e) = self.tls() {
            bad("listener.tls_cert", &e);
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_handshaking: self.max_handshaking,
            max_handshaking_per_ip: self.max_handshaking_per_ip,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            reserved_fds: self.reserved_fds,
        }
    }
}
