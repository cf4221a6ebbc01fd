//! TLS on the edge without a proxy: a node whose `[listener]` has a certificate serves
//! `wss://`, the router hands that URL out, and a phone on the Rust SDK joins and answers over
//! it, trusting the cluster's own CA.

mod support;

use std::path::PathBuf;

use quiz_protocol::client::Role;
use quiz_protocol::{Answer, HostCommand};
use support::*;

/// Where this test process keeps its certificates (a fn pointer configures the node, so the
/// place cannot be captured: it is derived from the process id).
fn cert_dir() -> PathBuf {
    std::env::temp_dir().join(format!("quiz-tls-test-{}", std::process::id()))
}

/// A CA, and an edge certificate it issues for `localhost` and 127.0.0.1; returns the CA's PEM.
fn make_certificates() -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let edge_key = KeyPair::generate().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let edge = CertificateParams::new(names).unwrap();
    let edge_cert = edge.signed_by(&edge_key, &issuer).unwrap();
    let dir = cert_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("edge.pem"), edge_cert.pem()).unwrap();
    std::fs::write(dir.join("edge.key"), edge_key.serialize_pem()).unwrap();
    ca_cert.pem()
}

fn with_tls(config: &mut quiz_node::Config) {
    let dir = cert_dir();
    config.listener.tls_cert = Some(dir.join("edge.pem").display().to_string());
    config.listener.tls_key = Some(dir.join("edge.key").display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_plays_over_wss_straight_to_the_edge() {
    within(async {
        let ca = make_certificates();
        let mut options = quiz_local::LocalOptions::for_test();
        options.node_config = with_tls;
        let sys = System::start_with(options).await;
        assert!(sys.local.node(0).ws_url().starts_with("wss://"));

        // Without the CA the phone's TLS handshake fails (and it is retryable: no phone
        // data is sent in clear).
        let url = sys.local.node(0).ws_url();
        let untrusted = quiz_client::RawSocket::connect(&url, Some("t")).await;
        assert!(
            matches!(untrusted, Err(quiz_client::HandshakeError::Tls(_))),
            "{untrusted:?}"
        );

        assert_eq!(quiz_client::tls::trust_pem(&ca).unwrap(), 1);
        let quiz = sys.open_quiz().await;
        let host = Phone::join(&sys, &quiz, "host", "", Role::Host, None).await;
        let phone = Phone::join(&sys, &quiz, "pupil", "Pupil", Role::Player, None).await;
        host.until("the pupil in the lobby", |l| {
            (l.view.players == 1).then_some(())
        })
        .await;
        host.conn
            .host(HostCommand::Start, None)
            .await
            .expect("start");
        phone.until_question(0).await;
        let ack = phone
            .conn
            .answer(0, Answer::Choice(1))
            .await
            .expect("acked");
        assert_eq!(ack.question, 0);
        sys.local.shutdown().await;
        let _ = std::fs::remove_dir_all(cert_dir());
    })
    .await;
}
