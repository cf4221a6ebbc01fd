//! `wss://`: TLS to an edge that serves it itself (`[listener] tls_cert` on the node), with
//! the platform's usual public roots (webpki-roots) and any private CA the app trusts with
//! [`trust_pem`] (a cluster with its own certificates, tests).

use std::sync::{Arc, RwLock};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

static EXTRA_ROOTS: RwLock<Vec<CertificateDer<'static>>> = RwLock::new(Vec::new());

/// Trusts the CA certificates of `pem` (one or more) for `wss://` from now on, besides the
/// public roots. For a router URL over `https://` with a private CA, configure the
/// `reqwest::Client` given to [`crate::RouterClient::with_http`] the same way.
pub fn trust_pem(pem: &str) -> Result<usize, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    let n = certs.len();
    EXTRA_ROOTS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .extend(certs);
    Ok(n)
}

/// A connector with the public roots and the trusted extra ones.
pub(crate) fn connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in EXTRA_ROOTS.read().unwrap_or_else(|p| p.into_inner()).iter() {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
