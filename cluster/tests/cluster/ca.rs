//! The cluster CA: generating, issuing, saving and loading, and the mistakes loading catches.

use quiz_cluster::{ClusterCa, ClusterTls, TlsError};

use crate::support::node;

#[test]
fn a_generated_ca_issues_certificates_for_a_name() {
    let ca = ClusterCa::generate("prod").unwrap();
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(ca.key_pem().contains("PRIVATE KEY"));

    let issued = ca.issue("node-1").unwrap();
    let tls = ClusterTls::from_pem(&ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
    assert!(tls.is_valid_for(&node("node-1")));
    assert!(!tls.is_valid_for(&node("node-2")));
    assert!(ca.tls_for("router").unwrap().is_valid_for(&node("router")));

    // The identity is a DNS name: anything else is refused at issue time.
    assert!(matches!(ca.issue("not a name"), Err(TlsError::Config(_))));
    assert!(matches!(ca.issue(""), Err(TlsError::Config(_))));
}

#[test]
fn a_ca_survives_a_pem_round_trip() {
    let ca = ClusterCa::generate("prod").unwrap();
    let loaded = ClusterCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.key_pem(), ca.key_pem());

    // What the loaded CA issues is trusted under the original certificate.
    let issued = loaded.issue("node-2").unwrap();
    let tls = ClusterTls::from_pem(&ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
    assert!(tls.is_valid_for(&node("node-2")));
}

#[test]
fn loading_refuses_mismatched_or_foreign_material() {
    let ca = ClusterCa::generate("prod").unwrap();
    let other = ClusterCa::generate("prod").unwrap();

    // A CA key that is not the certificate's.
    assert!(matches!(
        ClusterCa::from_pem(&ca.cert_pem(), &other.key_pem()),
        Err(TlsError::Config(_))
    ));
    // A node certificate from another CA.
    let foreign = other.issue("node-1").unwrap();
    assert!(matches!(
        ClusterTls::from_pem(&ca.cert_pem(), &foreign.cert_pem, &foreign.key_pem),
        Err(TlsError::Config(_))
    ));
    // A key that is not the certificate's.
    let a = ca.issue("node-1").unwrap();
    let b = ca.issue("node-1").unwrap();
    assert!(matches!(
        ClusterTls::from_pem(&ca.cert_pem(), &a.cert_pem, &b.key_pem),
        Err(TlsError::Config(_))
    ));
    // Not PEM at all, or no certificate in it.
    assert!(ClusterTls::from_pem("junk", &a.cert_pem, &a.key_pem).is_err());
    assert_eq!(
        ClusterTls::from_pem(&ca.cert_pem(), "", &a.key_pem).unwrap_err(),
        TlsError::NoCertificate("certificate")
    );
    assert!(ClusterTls::from_pem(&ca.cert_pem(), &a.cert_pem, "junk").is_err());
    assert!(ClusterCa::from_pem("junk", &ca.key_pem()).is_err());
}

#[test]
fn pem_files_load_the_same_trust() {
    let ca = ClusterCa::generate("prod").unwrap();
    let issued = ca.issue("node-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("node-1.pem"),
        dir.path().join("node-1.key"),
    );
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    std::fs::write(&cert_path, &issued.cert_pem).unwrap();
    std::fs::write(&key_path, &issued.key_pem).unwrap();

    let tls = ClusterTls::from_pem_files(&ca_path, &cert_path, &key_path).unwrap();
    assert!(tls.is_valid_for(&node("node-1")));

    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        ClusterTls::from_pem_files(&missing, &cert_path, &key_path),
        Err(TlsError::Io { .. })
    ));
}
