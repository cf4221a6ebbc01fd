//! The listener against real sockets: what a hostile client can hold open, and what a real
//! client still gets while it does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use quiz_net::{Limits, Metrics, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(limits: Limits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/who",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        app,
        limits,
        metrics.clone(),
        None,
        stop.clone(),
    ));
    Server {
        addr,
        metrics,
        stop,
    }
}

fn short() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// A socket to `to` from the loopback address `from`.
async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nhost: x\r\n\r\n";

/// Sends one request and reads the whole response (the server closes after it).
async fn request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /who HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    );
    read.await.expect("a response in time").unwrap();
    response
}

/// Sends one request on a connection that stays open, and reads its response's first bytes.
async fn request_kept_alive(stream: &mut TcpStream) -> String {
    stream.write_all(GET).await.unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Whether the server has closed `stream` (reads end-of-file or a reset) within 10 s.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_socket_that_sends_nothing_or_half_a_request_is_closed() {
    let server = start(short()).await;
    let mut silent = connect(ip(1), server.addr).await;
    let mut half = connect(ip(1), server.addr).await;
    half.write_all(b"GET /who HTTP/1.1\r\nhost:").await.unwrap();
    assert!(closed_by_server(&mut silent).await);
    assert!(closed_by_server(&mut half).await);
    let closed = &server.metrics.closed;
    assert_eq!(closed.with_label_values(&["header_timeout"]).get(), 2);
}

#[tokio::test]
async fn a_slowloris_feeding_one_byte_at_a_time_is_closed() {
    let server = start(short()).await;
    let mut slow = connect(ip(1), server.addr).await;
    let head =
        b"GET /who HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cut || closed_by_server(&mut slow).await);
    let closed = &server.metrics.closed;
    assert_eq!(closed.with_label_values(&["header_timeout"]).get(), 1);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle() {
    let server = start(short()).await;
    let mut client = connect(ip(1), server.addr).await;
    let response = request_kept_alive(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(closed_by_server(&mut client).await);
    let closed = &server.metrics.closed;
    assert_eq!(closed.with_label_values(&["idle_timeout"]).get(), 1);
}

#[tokio::test]
async fn idle_sockets_from_one_address_do_not_lock_out_anyone() {
    // Timeouts longer than the test: only the caps keep the door open.
    let server = start(Limits {
        max_handshaking: 64,
        max_handshaking_per_ip: 16,
        header_timeout: Duration::from_secs(600),
        ..Limits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(connect(ip(2), server.addr).await);
    }
    // Handshakes younger than a second are never closed to make room (a storm of real
    // clients looks like this too): once they are older, newcomers take their places.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Another address, and the attacker's own address, still get answers.
    for from in [ip(1), ip(3), ip(2)] {
        let mut client = connect(from, server.addr).await;
        let response = request(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&from.to_string()), "{response}");
    }
    assert!(server.metrics.handshaking.get() <= 16);
    let evicted = server.metrics.closed.with_label_values(&["evicted"]).get();
    let refused = server.metrics.refused.with_label_values(&["per_ip"]).get();
    assert!(
        evicted + refused >= 480,
        "{evicted} evicted, {refused} refused"
    );
}

#[tokio::test]
async fn past_the_caps_a_client_gets_the_json_error_with_its_status() {
    let server = start(Limits {
        max_connections: 3,
        max_connections_per_ip: 2,
        ..Limits::default()
    })
    .await;
    // Two kept-alive connections that have each sent a request hold the address's two
    // places: a client that sent a request is never evicted.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(ip(1), server.addr).await;
        assert!(request_kept_alive(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = connect(ip(1), server.addr).await;
    let response = request(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(response.contains("Retry-After: 5"), "{response}");
    assert!(response.contains(r#""code":"rate_limited""#), "{response}");

    let mut other = connect(ip(2), server.addr).await;
    assert!(
        request_kept_alive(&mut other)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut fourth = connect(ip(3), server.addr).await;
    let response = request(&mut fourth).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains(r#""retryable":true"#), "{response}");
    let refused = &server.metrics.refused;
    assert_eq!(refused.with_label_values(&["per_ip"]).get(), 1);
    assert_eq!(refused.with_label_values(&["full"]).get(), 1);
}

#[tokio::test]
async fn with_a_certificate_the_listener_serves_tls_and_refuses_plain_text() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("quiz-net-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let config = quiz_net::ListenerConfig {
        tls_cert: Some(dir.join("cert.pem").display().to_string()),
        tls_key: Some(dir.join("key.pem").display().to_string()),
        ..quiz_net::ListenerConfig::default()
    };
    let tls = config.tls().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/who", get(|| async { "over tls" }));
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let stop = CancellationToken::new();
    let limits = short();
    tokio::spawn(serve(
        listener,
        app,
        limits,
        metrics.clone(),
        tls,
        stop.clone(),
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = connect(ip(1), addr).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut secured = connector.connect(name, tcp).await.unwrap();
    secured
        .write_all(b"GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = secured.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("over tls"), "{response}");

    // Plain HTTP on the TLS port gets no answer, only a close.
    let mut plain = connect(ip(1), addr).await;
    plain.write_all(GET).await.unwrap();
    assert!(closed_by_server(&mut plain).await);
    assert_eq!(
        metrics.closed.with_label_values(&["tls_handshake"]).get(),
        1
    );
    stop.cancel();
}
