//! Hostile clients at the connection level, against a real router and node: sockets that
//! never send a request, and a slowloris feeding headers a byte at a time. A class plays
//! through both: every phone joins and every answer is acknowledged.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quiz_protocol::client::Role;
use quiz_protocol::{Answer, HostCommand};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const PHONES: usize = 100;

async fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    socket.connect(to).await.ok()
}

/// Opens `count` sockets from `from` to `to` that never send a byte, and holds them (the
/// client's end: the server may have closed its own) until `stop`.
fn hold_idle(
    from: IpAddr,
    to: SocketAddr,
    count: usize,
    stop: CancellationToken,
) -> Arc<AtomicUsize> {
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    tokio::spawn(async move {
        let mut held = Vec::with_capacity(count);
        while held.len() < count && !stop.is_cancelled() {
            if let Some(s) = connect_from(from, to).await {
                held.push(s);
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        stop.cancelled().await;
    });
    opened
}

/// Keeps `count` sockets from `from` to `to` feeding a request head one byte every 100 ms
/// (a slowloris), reopening each one the server closes, until `stop`.
fn slowloris(
    from: IpAddr,
    to: SocketAddr,
    count: usize,
    stop: CancellationToken,
) -> Arc<AtomicUsize> {
    let opened = Arc::new(AtomicUsize::new(0));
    for _ in 0..count {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            let head: &[u8] = b"POST /v1/quizzes/ABCDEF/join HTTP/1.1\r\nhost: router\r\nx-slow: ";
            while !stop.is_cancelled() {
                let Some(mut s) = connect_from(from, to).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let bytes = head.iter().chain(std::iter::repeat(&b'a'));
                for byte in bytes {
                    if stop.is_cancelled() || s.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    opened
}

/// A class of `PHONES` joins `quiz` through the router, answers the first question, and every
/// answer is acknowledged.
async fn a_class_plays(sys: &System) {
    let quiz = sys.open_quiz().await;
    let host = Phone::join(sys, &quiz, "host", "", Role::Host, None).await;
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let name = format!("Pupil {i}");
        phones
            .push(Phone::join(sys, &quiz, &format!("pupil-{i}"), &name, Role::Player, None).await);
    }
    host.until("the whole class in the lobby", |l| {
        (l.view.players == PHONES as u32).then_some(())
    })
    .await;
    host.conn
        .host(HostCommand::Start, None)
        .await
        .expect("start");
    let mut answers = Vec::new();
    for phone in phones {
        answers.push(tokio::spawn(async move {
            phone.until_question(0).await;
            phone.conn.answer(0, Answer::Choice(1)).await
        }));
    }
    let mut acked = 0;
    for a in answers {
        let ack = a.await.expect("phone task").expect("answer acknowledged");
        assert_eq!(ack.question, 0);
        acked += 1;
    }
    assert_eq!(acked, PHONES);
}

fn metric(text: &str, name: &str) -> f64 {
    quiz_local::processes::metric_value(text, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_sockets_on_the_edge_do_not_stop_a_class() {
    within(async {
        let sys = System::start().await;
        let edge = sys.local.node(0).ws_addr();
        let stop = CancellationToken::new();
        let attacker = IpAddr::from([127, 0, 0, 2]);
        let opened = hold_idle(attacker, edge, 5_000, stop.clone());
        eventually("5,000 idle sockets opened", Duration::from_secs(60), || {
            (opened.load(Ordering::Relaxed) >= 5_000).then_some(())
        })
        .await;
        a_class_plays(&sys).await;
        // The operator's port answers too.
        let health = format!("http://{}/healthz", sys.local.node(0).admin_addr());
        assert_eq!(
            reqwest::get(health).await.unwrap().text().await.unwrap(),
            "ok"
        );
        let metrics = sys.node_metrics().await;
        let handshaking = metric(&metrics, "quiz_node_listener_handshaking");
        assert!(handshaking <= 256.0, "{handshaking} idle sockets held");
        let turned_away = metric(
            &metrics,
            "quiz_node_listener_refused_total{reason=\"per_ip\"}",
        ) + metric(
            &metrics,
            "quiz_node_listener_closed_total{reason=\"evicted\"}",
        );
        assert!(
            turned_away >= 4_000.0,
            "{turned_away} idle sockets turned away"
        );
        stop.cancel();
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_on_the_router_does_not_stop_joins() {
    within(async {
        let sys = System::start().await;
        let router = sys.local.router().http_addr();
        let stop = CancellationToken::new();
        let attacker = IpAddr::from([127, 0, 0, 3]);
        // Fewer than one address's share of handshakes (256): none is evicted, each waits
        // for the header timeout.
        let opened = slowloris(attacker, router, 200, stop.clone());
        eventually("the slowloris connected", Duration::from_secs(60), || {
            (opened.load(Ordering::Relaxed) >= 200).then_some(())
        })
        .await;
        a_class_plays(&sys).await;
        // The router closes the slow sockets at its header timeout (they come back).
        let admin = format!("http://{}/metrics", sys.local.router().admin_addr());
        let metric_name = "quiz_router_listener_closed_total{reason=\"header_timeout\"}";
        let mut timed_out = 0.0;
        for _ in 0..600 {
            let metrics = reqwest::get(&admin).await.unwrap().text().await.unwrap();
            timed_out = metric(&metrics, metric_name);
            if timed_out >= 150.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(timed_out >= 150.0, "{timed_out} slow sockets closed");
        stop.cancel();
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_control_routes_only_with_the_admin_token() {
    within(async {
        let sys = System::start().await;
        let admin = sys.local.node(0).admin_addr();
        let drain = format!("http://{admin}/admin/drain");
        let client = reqwest::Client::new();
        for token in [
            None,
            Some("wrong"),
            Some("local-admin-token-local-admin-token-012"),
        ] {
            let mut request = client.post(&drain);
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{token:?}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["code"], "unauthorized");
        }
        // Metrics and health stay open to the operator's network.
        let health = client
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let response = client
            .post(&drain)
            .bearer_auth(quiz_local::DEV_ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        sys.local.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrades_get_the_json_error_body() {
    within(async {
        let sys = System::start().await;
        let url = format!("http://{}/v1/ws?token=x", sys.local.node(0).ws_addr());
        let client = reqwest::Client::new();
        // A GET that is no upgrade, and another method.
        let plain = client.get(&url).send().await.unwrap();
        let post = client.post(&url).send().await.unwrap();
        for (response, status) in [(plain, 400), (post, 405)] {
            assert_eq!(response.status(), status);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["code"], "bad_request", "{body}");
            assert_eq!(body["retryable"], false);
        }
        sys.local.shutdown().await;
    })
    .await;
}
