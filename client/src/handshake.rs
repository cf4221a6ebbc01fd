//! Opening a WebSocket to an edge: TCP connect, the HTTP/1.1 upgrade, and reading the
//! router's JSON error body when the edge refuses.
//!
//! `fastwebsockets::handshake::client` would do the upgrade, but on a refusal it keeps only
//! the status code, and the SDK must tell `token_expired` (refresh the ticket) from
//! `unauthorized` (give up) — both are 401. So the request is sent here on a hyper 1
//! connection, and the connection future is polled in the caller's task (no extra task per
//! handshake). `wss://` goes through rustls first ([`crate::tls`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Role, WebSocket};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use quiz_protocol::ErrorCode;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};

use crate::router::parse_retry_after;

/// A WebSocket after a successful upgrade.
pub(crate) type Ws = WebSocket<TokioIo<Upgraded>>;

/// Largest refusal body read; the router's error bodies are a few hundred bytes.
const MAX_REFUSAL_BODY: usize = 8 * 1024;

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("invalid WebSocket URL {0:?}")]
    InvalidUrl(String),
    /// The TLS handshake failed (untrusted certificate, wrong name...).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The edge answered the upgrade with an HTTP error.
    #[error("upgrade refused with {status}: {message}")]
    Refused {
        status: u16,
        /// The `code` of the JSON error body, if it had one.
        code: Option<ErrorCode>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 101 without the `Upgrade: websocket` / `Connection: upgrade` headers.
    #[error("the server did not switch to WebSocket")]
    NotWebSocket,
    #[error("timed out")]
    Timeout,
}

/// What to do after a failed handshake.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    /// Worth another try, perhaps at another URL.
    Retry,
    /// The session token expired: get a new ticket, then retry.
    Refresh,
    /// Trying again will not help.
    Final,
}

impl HandshakeError {
    pub(crate) fn verdict(&self) -> Verdict {
        match self {
            HandshakeError::Io(_)
            | HandshakeError::Http(_)
            | HandshakeError::Timeout
            | HandshakeError::NotWebSocket => Verdict::Retry,
            HandshakeError::Tls(_) => Verdict::Retry,
            HandshakeError::InvalidUrl(_) => Verdict::Final,
            HandshakeError::Refused { status, code, .. } => match (status, code) {
                (_, Some(ErrorCode::TokenExpired)) => Verdict::Refresh,
                (_, Some(code)) if code.retryable() => Verdict::Retry,
                (408 | 429 | 500..=599, _) => Verdict::Retry,
                _ => Verdict::Final,
            },
        }
    }
}

#[derive(Deserialize)]
struct RefusalBody {
    code: Option<ErrorCode>,
    #[serde(default)]
    message: String,
}

/// Where to connect and what to ask for.
#[derive(Debug)]
struct Target {
    /// `wss://`
    tls: bool,
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str, token: Option<&str>) -> Result<Target, HandshakeError> {
        let invalid = || HandshakeError::InvalidUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("ws" | "http") => (false, 80),
            Some("wss" | "https") => (true, 443),
            _ => return Err(invalid()),
        };
        let authority = uri.authority().ok_or_else(invalid)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(token) = token {
            path_and_query.push(if uri.query().is_some() { '&' } else { '?' });
            path_and_query.push_str("token=");
            path_and_query.push_str(&crate::router::encode_path(token));
        }
        Ok(Target {
            tls,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }
}

/// Opens a WebSocket to `url`, appending `?token=` when a token is given. `local` binds the
/// source address (a load generator spreads sockets over 127.0.0.x to get more ports).
pub(crate) async fn open(
    url: &str,
    token: Option<&str>,
    local: Option<IpAddr>,
) -> Result<Ws, HandshakeError> {
    let target = Target::parse(url, token)?;
    let stream = tcp_connect(&target, local).await?;
    // Small JSON frames must not wait for Nagle.
    stream.set_nodelay(true)?;
    if !target.tls {
        return upgrade(stream, &target).await;
    }
    let name = rustls_pki_types::ServerName::try_from(target.host.clone())
        .map_err(|_| HandshakeError::InvalidUrl(url.to_owned()))?;
    let connector = crate::tls::connector().map_err(HandshakeError::Tls)?;
    let secured = connector
        .connect(name, stream)
        .await
        .map_err(|e| HandshakeError::Tls(e.to_string()))?;
    upgrade(secured, &target).await
}

async fn tcp_connect(target: &Target, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((target.host.as_str(), target.port)).await? {
        match connect_from(addr, local).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the host name has no address")))
}

async fn connect_from(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

async fn upgrade<S>(stream: S, target: &Target) -> Result<Ws, HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let mut conn = pin!(conn.with_upgrades());
    let mut conn_done = false;
    let request = Request::builder()
        .method("GET")
        .uri(target.path_and_query.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|_| HandshakeError::InvalidUrl(target.path_and_query.clone()))?;
    let mut response = drive(conn.as_mut(), &mut conn_done, sender.send_request(request)).await?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let retry_after = parse_retry_after(
            response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
        );
        let body = Limited::new(response.into_body(), MAX_REFUSAL_BODY).collect();
        let body = drive(conn.as_mut(), &mut conn_done, body)
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let parsed = serde_json::from_slice::<RefusalBody>(&body).ok();
        return Err(HandshakeError::Refused {
            status: status.as_u16(),
            code: parsed.as_ref().and_then(|b| b.code),
            message: parsed.map_or_else(
                || String::from_utf8_lossy(&body).chars().take(200).collect(),
                |b| b.message,
            ),
            retry_after,
        });
    }
    let header_is = |name: hyper::header::HeaderName, want: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    };
    if !header_is(hyper::header::UPGRADE, "websocket")
        || !header_is(hyper::header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotWebSocket);
    }
    let upgraded = drive(
        conn.as_mut(),
        &mut conn_done,
        hyper::upgrade::on(&mut response),
    )
    .await?;
    Ok(WebSocket::after_handshake(
        TokioIo::new(upgraded),
        Role::Client,
    ))
}

/// Runs `fut` while also polling hyper's connection future, which does the actual I/O.
/// `done` remembers across calls that the connection future finished (it hands the socket
/// to the upgrade when it sees the 101), so it is never polled again after that.
async fn drive<C, F>(mut conn: Pin<&mut C>, done: &mut bool, fut: F) -> F::Output
where
    C: Future,
    F: Future,
{
    let mut fut = pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = conn.as_mut(), if !*done => *done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_appended_to_the_query() {
        let t = Target::parse("ws://127.0.0.1:9000/ws", Some("a.b-c")).unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 9000);
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.path_and_query, "/ws?token=a.b-c");
        let t = Target::parse("ws://edge/ws?x=1", Some("t/+")).unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.path_and_query, "/ws?x=1&token=t%2F%2B");
        let t = Target::parse("ws://[::1]:1", None).unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.path_and_query, "/");
    }

    #[test]
    fn bad_urls_are_refused() {
        let t = Target::parse("wss://edge/ws", None).unwrap();
        assert!(t.tls && t.port == 443);
        assert!(matches!(
            Target::parse("ftp://edge/", None),
            Err(HandshakeError::InvalidUrl(_))
        ));
        assert!(matches!(
            Target::parse("not a url", None),
            Err(HandshakeError::InvalidUrl(_))
        ));
    }

    #[test]
    fn verdicts() {
        let refused = |status, code| HandshakeError::Refused {
            status,
            code,
            message: String::new(),
            retry_after: None,
        };
        assert_eq!(
            refused(401, Some(ErrorCode::TokenExpired)).verdict(),
            Verdict::Refresh
        );
        assert_eq!(
            refused(401, Some(ErrorCode::Unauthorized)).verdict(),
            Verdict::Final
        );
        assert_eq!(refused(404, None).verdict(), Verdict::Final);
        assert_eq!(refused(503, None).verdict(), Verdict::Retry);
        assert_eq!(
            refused(429, Some(ErrorCode::RateLimited)).verdict(),
            Verdict::Retry
        );
        assert_eq!(HandshakeError::Timeout.verdict(), Verdict::Retry);
    }
}
