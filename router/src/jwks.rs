//! The identity provider's signing keys from its JWKS URL (Firebase Auth, Auth0, Cognito,
//! Keycloak and the like publish one): RS256 and ES256 keys by `kid`, cached, fetched again
//! when they are older than `jwks_refresh_s` or when a token names a `kid` the cache does not
//! hold (a key rotation), but at most once per `jwks_min_refetch_s`, so tokens with made-up
//! `kid`s cannot turn the router into a client flooding the provider. Fetches are bounded in
//! time and size. A failed fetch keeps the keys already held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS document read, in bytes (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Keys from a JWKS URL.
pub(crate) struct Jwks {
    url: String,
    http: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    held: tokio::sync::RwLock<Held>,
    /// One fetch at a time; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

/// Why no key could be found for a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyLookup {
    /// The provider's keys hold no such `kid` (after a fetch, if one was allowed).
    #[error("no signing key {0:?} at the identity provider")]
    Unknown(String),
    /// No keys could be fetched at all.
    #[error("the identity provider's keys cannot be fetched: {0}")]
    Unavailable(String),
}

impl Jwks {
    pub(crate) fn new(url: &str, refresh: Duration, min_refetch: Duration) -> Jwks {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Jwks {
            url: url.to_owned(),
            http,
            refresh,
            min_refetch,
            held: tokio::sync::RwLock::new(Held::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key named `kid`.
    pub(crate) async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), KeyLookup> {
        {
            let held = self.held.read().await;
            let fresh = held.fetched.is_some_and(|at| at.elapsed() < self.refresh);
            if let Some(key) = held.keys.get(kid)
                && fresh
            {
                return Ok(key.clone());
            }
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let allowed = {
            let held = self.held.read().await;
            if let Some(key) = held.keys.get(kid)
                && held.fetched.is_some_and(|at| at.elapsed() < self.refresh)
            {
                return Ok(key.clone());
            }
            held.tried.is_none_or(|at| at.elapsed() >= self.min_refetch)
        };
        if allowed {
            let fetched = self.fetch().await;
            let mut held = self.held.write().await;
            held.tried = Some(Instant::now());
            match fetched {
                Ok(keys) => {
                    tracing::info!(url = %self.url, keys = keys.len(), "identity provider keys fetched");
                    held.keys = keys;
                    held.fetched = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "fetching the identity provider's keys failed");
                    if held.keys.is_empty() {
                        return Err(KeyLookup::Unavailable(e));
                    }
                }
            }
        }
        let held = self.held.read().await;
        match held.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None if held.keys.is_empty() => Err(KeyLookup::Unavailable(
                "no keys fetched yet; retrying shortly".into(),
            )),
            None => Err(KeyLookup::Unknown(kid.to_owned())),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let mut response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok(usable_keys(&set))
    }
}

/// The RS256 and ES256 (P-256) signing keys of a set that have a `kid`; others are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, (Algorithm, DecodingKey)> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (algorithm, key));
        }
    }
    keys
}
