//! The cluster's trust: one CA per cluster, and a certificate per process (a node id such as
//! `node-1`, or `router`) that it signed. [`ClusterCa`] generates the CA and issues
//! certificates (`quizctl ca`, local clusters, tests); [`ClusterTls`] loads a process's
//! CA, certificate and key and turns them into the rustls configurations both QUIC roles use.
//!
//! Both sides authenticate: a server accepts only client certificates from the CA
//! (`WebPkiClientVerifier`), a client trusts only the CA. Which node a certificate belongs to
//! is checked after TLS, against the node named in the Hello (see `handshake`). Transport
//! settings (streams, timeouts) are not here: they belong to `EndpointConfig`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quiz_protocol::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};

use crate::error::TlsError;

/// The ALPN protocol every cluster connection negotiates; a peer without it is refused by TLS.
pub const ALPN: &[u8] = b"quiz-cluster/1";

/// How long a generated CA is valid, in years (from January 1st of last year).
pub const CA_VALIDITY_YEARS: i32 = 10;
/// How long an issued node or router certificate is valid, in years (from January 1st of last
/// year). Reissue before then; the CA does not need to change.
pub const CERT_VALIDITY_YEARS: i32 = 2;

/// The cluster's trust as one process holds it: the CA certificate(s), and this process's
/// certificate chain and key signed by the CA, ready-made into QUIC server and client
/// configurations (TLS 1.3 only, ALPN [`ALPN`], ring).
#[derive(Clone)]
pub struct ClusterTls {
    chain: Vec<CertificateDer<'static>>,
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
}

impl ClusterTls {
    /// Loads PEM files: the CA certificate (a bundle of several is allowed, for rotation),
    /// this process's certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(ca_cert: &Path, cert: &Path, key: &Path) -> Result<ClusterTls, TlsError> {
        ClusterTls::from_pem(&read(ca_cert)?, &read(cert)?, &read(key)?)
    }

    /// Parses PEM text, checks that the certificate was signed by the CA and that the key
    /// matches it, and builds the TLS configurations. Every mistake is caught here, at load
    /// time, not at the first connection.
    pub fn from_pem(ca_cert: &str, cert: &str, key: &str) -> Result<ClusterTls, TlsError> {
        let ca = certs("CA", ca_cert)?;
        let chain = certs("certificate", cert)?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::Pem {
            what: "key",
            message: e.to_string(),
        })?;
        let provider = provider();

        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| TlsError::Config(format!("unusable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // The most common deployment mistake (a certificate from another cluster's CA) is
        // caught here rather than at the first connection.
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(TlsError::NoCertificate("certificate"))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                TlsError::Config(format!("certificate not valid under the cluster CA: {e}"))
            })?;

        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        server.alpn_protocols = vec![ALPN.to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)
            .map_err(config_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];

        Ok(ClusterTls {
            chain,
            server: Arc::new(QuicServerConfig::try_from(server).map_err(config_error)?),
            client: Arc::new(QuicClientConfig::try_from(client).map_err(config_error)?),
        })
    }

    /// Whether this process's own certificate is valid for `name` (its node id or `router`).
    pub fn is_valid_for(&self, name: &NodeId) -> bool {
        check_identity(&self.chain, name).is_ok()
    }

    pub(crate) fn server_crypto(&self) -> Arc<QuicServerConfig> {
        self.server.clone()
    }

    pub(crate) fn client_crypto(&self) -> Arc<QuicClientConfig> {
        self.client.clone()
    }
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A cluster CA that can issue certificates: for `quizctl ca`, local clusters and tests.
/// Keys are ECDSA P-256.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClusterCa {
    /// A new self-signed CA for the cluster `cluster_name` (it names the CA's subject only),
    /// valid [`CA_VALIDITY_YEARS`]. It may sign end certificates, not other CAs.
    pub fn generate(cluster_name: &str) -> Result<ClusterCa, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("{cluster_name} quiz cluster CA"),
        );
        dn.push(DnType::OrganizationName, "quiz cluster");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_YEARS);
        let key = KeyPair::generate().map_err(generate_error)?;
        let cert = params.self_signed(&key).map_err(generate_error)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA saved with [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem).
    /// Refuses a key that does not belong to the certificate (a certificate it issues would
    /// not verify).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem {
            what: "CA key",
            message: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| TlsError::Pem {
            what: "CA certificate",
            message: e.to_string(),
        })?;
        let ca = ClusterCa {
            cert_pem: cert_pem.to_string(),
            issuer,
        };
        let probe = ca.issue("probe")?;
        ClusterTls::from_pem(&ca.cert_pem, &probe.cert_pem, &probe.key_pem).map_err(|_| {
            TlsError::Config("the CA key does not belong to the CA certificate".into())
        })?;
        Ok(ca)
    }

    /// The CA certificate, PEM: every process of the cluster needs it.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's private key, PEM (PKCS#8): keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `name` (a node id such as `node-1`, or `router`), valid for the DNS
    /// name `name`, `localhost` and `127.0.0.1`, for both TLS roles, for
    /// [`CERT_VALIDITY_YEARS`]. `name` must be a DNS name: it is the identity peers check
    /// against the Hello.
    pub fn issue(&self, name: &str) -> Result<Issued, TlsError> {
        if !matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_))) {
            return Err(TlsError::Config(format!("{name:?} is not a DNS name")));
        }
        let mut params = CertificateParams::new(vec![
            name.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .map_err(generate_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, CERT_VALIDITY_YEARS);
        let key = KeyPair::generate().map_err(generate_error)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `name` and loads it with this CA: the whole trust of one
    /// process, in memory.
    pub fn tls_for(&self, name: &str) -> Result<ClusterTls, TlsError> {
        let issued = self.issue(name)?;
        ClusterTls::from_pem(&self.cert_pem, &issued.cert_pem, &issued.key_pem)
    }
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Checks that the peer's end certificate (first of `chain`, already verified against the CA
/// by TLS) is valid for the DNS name `node`: a node cannot claim another node's id.
pub(crate) fn check_identity(
    chain: &[CertificateDer<'static>],
    node: &NodeId,
) -> Result<(), String> {
    let leaf = chain.first().ok_or("no peer certificate")?;
    let name = ServerName::try_from(node.0.as_str())
        .map_err(|_| format!("node id {:?} is not a DNS name", node.0))?;
    let parsed = ParsedCertificate::try_from(leaf).map_err(|e| e.to_string())?;
    rustls::client::verify_server_name(&parsed, &name)
        .map_err(|_| format!("the peer's certificate is not valid for {:?}", node.0))
}

/// The one crypto provider of the cluster: ring, chosen explicitly so that another crate
/// enabling aws-lc-rs in the same build changes nothing here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Valid from January 1st of last year (generous to clocks that lag) for `years` after.
fn set_validity(params: &mut CertificateParams, years: i32) {
    const SECS_PER_YEAR: u64 = 31_556_952; // the mean Gregorian year
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let this_year = 1970 + i32::try_from(secs / SECS_PER_YEAR).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(this_year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(this_year + years, 1, 1);
}

fn generate_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn config_error(e: impl fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}
