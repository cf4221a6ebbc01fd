//! Identity tokens: every way a token can be wrong, the three key kinds, roles, dev tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use quiz_router::Config;
use serde_json::{Value, json};

use crate::support::{Harness, hs256, now_s, within};

const RS256_PRIVATE: &str = include_str!("fixtures/rs256_private.pem");
const RS256_PUBLIC: &str = include_str!("fixtures/rs256_public.pem");

/// Asks a host-only endpoint, so both authentication and the role show.
async fn list_sets(h: &Harness, token: &str) -> crate::support::Reply {
    h.get("/v1/question-sets", Some(token)).await
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_401() {
    within(async {
        let h = Harness::start().await;
        h.get("/v1/question-sets", None)
            .await
            .expect_error(401, "unauthorized");
        let basic = h
            .http
            .get(format!("{}/v1/question-sets", h.base))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status().as_u16(), 401);
        list_sets(&h, "not.a.jwt")
            .await
            .expect_error(401, "unauthorized");
        list_sets(&h, "garbage")
            .await
            .expect_error(401, "unauthorized");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_signature_is_401() {
    within(async {
        let h = Harness::start().await;
        let forged = hs256(
            b"some-other-secret-some-other-secret",
            &h.claims("eve", Some("host")),
        );
        let reply = list_sets(&h, &forged).await;
        reply.expect_error(401, "unauthorized");
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .contains("signature"),
            "{reply:?}"
        );
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn expired_token_is_token_expired() {
    within(async {
        let h = Harness::start().await;
        let mut claims = h.claims("ann", Some("host"));
        claims["exp"] = json!(now_s() - 120);
        let reply = list_sets(&h, &h.sign(&claims)).await;
        reply.expect_error(401, "token_expired");
        assert!(!reply.body["retryable"].as_bool().unwrap());
        // Within the leeway (5 s) it still passes.
        claims["exp"] = json!(now_s() - 1);
        list_sets(&h, &h.sign(&claims)).await.expect_ok(200);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_audience_or_issuer_is_named() {
    within(async {
        let h = Harness::start().await;
        let mut claims = h.claims("ann", Some("host"));
        claims["aud"] = json!("another-app");
        let reply = list_sets(&h, &h.sign(&claims)).await;
        reply.expect_error(401, "unauthorized");
        assert!(
            reply.body["message"].as_str().unwrap().contains("audience"),
            "{reply:?}"
        );

        let mut claims = h.claims("ann", Some("host"));
        claims["iss"] = json!("https://evil.example.com");
        let reply = list_sets(&h, &h.sign(&claims)).await;
        reply.expect_error(401, "unauthorized");
        assert!(
            reply.body["message"].as_str().unwrap().contains("issuer"),
            "{reply:?}"
        );
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn required_claims_are_required() {
    within(async {
        let h = Harness::start().await;
        for claim in ["exp", "sub", "iss", "aud"] {
            let mut claims = h.claims("ann", Some("host"));
            claims.as_object_mut().unwrap().remove(claim);
            let reply = list_sets(&h, &h.sign(&claims)).await;
            reply.expect_error(401, "unauthorized");
        }
        // A sub that is not a user id.
        let mut claims = h.claims("ann", Some("host"));
        claims["sub"] = json!("");
        list_sets(&h, &h.sign(&claims))
            .await
            .expect_error(401, "unauthorized");
        // A role that is neither host nor player.
        let claims = h.claims("ann", Some("admin"));
        list_sets(&h, &h.sign(&claims))
            .await
            .expect_error(401, "unauthorized");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_without_role_is_a_player() {
    within(async {
        let h = Harness::start().await;
        let token = h.sign(&h.claims("pat", None));
        list_sets(&h, &token).await.expect_error(403, "forbidden");
        let quiz = h.quiz_by("teacher").await;
        let reply = h
            .post(
                &format!("/v1/quizzes/{quiz}/join"),
                Some(&token),
                &json!({"nickname": "Pat"}),
            )
            .await;
        assert_eq!(reply.expect_ok(200)["role"], "player");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn players_cannot_call_host_endpoints() {
    within(async {
        let h = Harness::start().await;
        let player = h.player("pat");
        list_sets(&h, &player).await.expect_error(403, "forbidden");
        h.get("/v1/question-sets/english-a1", Some(&player))
            .await
            .expect_error(403, "forbidden");
        h.put_text(
            "/v1/question-sets/english-a1",
            &player,
            crate::support::sample_set().to_string(),
        )
        .await
        .expect_error(403, "forbidden");
        h.post(
            "/v1/quizzes",
            Some(&player),
            &json!({"question_set": "english-a1"}),
        )
        .await
        .expect_error(403, "forbidden");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dev_tokens_work_when_enabled() {
    within(async {
        let h = Harness::start().await;
        let reply = h
            .post(
                "/v1/dev/token",
                None,
                &json!({"user": "teacher", "role": "host", "ttl_s": 120}),
            )
            .await;
        let body = reply.expect_ok(200);
        assert_eq!(body["expires_in_s"], 120);
        let token = body["token"].as_str().unwrap();
        list_sets(&h, token).await.expect_ok(200);
        // Default role: player.
        let reply = h.post("/v1/dev/token", None, &json!({"user": "kid"})).await;
        let token = reply.expect_ok(200)["token"].as_str().unwrap().to_owned();
        list_sets(&h, &token).await.expect_error(403, "forbidden");
        // Bad requests.
        h.post("/v1/dev/token", None, &json!({"user": ""}))
            .await
            .expect_error(400, "bad_request");
        h.post("/v1/dev/token", None, &json!({"user": "a", "ttl_s": 0}))
            .await
            .expect_error(400, "bad_request");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dev_token_route_is_absent_when_disabled() {
    within(async {
        let mut config = Config::for_test();
        config.auth.dev_tokens = false;
        let h = Harness::with(config).await;
        h.post(
            "/v1/dev/token",
            None,
            &json!({"user": "teacher", "role": "host"}),
        )
        .await
        .expect_error(404, "not_found");
        // Tokens from the identity provider still work.
        list_sets(&h, &h.host("teacher")).await.expect_ok(200);
        h.shutdown().await;
    })
    .await;
}

fn rs256_config() -> Config {
    let mut config = Config::for_test();
    config.auth.hs256_secret = None;
    config.auth.dev_tokens = false;
    config.auth.rs256_public_key_pem = Some(RS256_PUBLIC.into());
    config
}

fn sign_with(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

#[tokio::test]
async fn rs256_tokens_are_checked_with_the_public_key() {
    within(async {
        let h = Harness::with(rs256_config()).await;
        let key = EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap();
        let good = sign_with(Algorithm::RS256, &key, &h.claims("teacher", Some("host")));
        list_sets(&h, &good).await.expect_ok(200);

        // Another algorithm is refused, whatever it is signed with...
        let hs = hs256(
            b"0123456789abcdef0123456789abcdef",
            &h.claims("teacher", Some("host")),
        );
        let reply = list_sets(&h, &hs).await;
        reply.expect_error(401, "unauthorized");
        assert!(
            reply.body["message"].as_str().unwrap().contains("RS256"),
            "{reply:?}"
        );
        // ...even the classic confusion: HS256 keyed with the RSA public key itself.
        let confused = hs256(RS256_PUBLIC.as_bytes(), &h.claims("teacher", Some("host")));
        list_sets(&h, &confused)
            .await
            .expect_error(401, "unauthorized");

        let mut expired = h.claims("teacher", Some("host"));
        expired["exp"] = json!(now_s() - 600);
        let reply = list_sets(&h, &sign_with(Algorithm::RS256, &key, &expired)).await;
        reply.expect_error(401, "token_expired");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn es256_tokens_are_checked_with_the_public_key() {
    within(async {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut config = Config::for_test();
        config.auth.hs256_secret = None;
        config.auth.dev_tokens = false;
        config.auth.es256_public_key_pem = Some(pair.public_key_pem());
        let h = Harness::with(config).await;

        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let good = sign_with(Algorithm::ES256, &key, &h.claims("teacher", Some("host")));
        list_sets(&h, &good).await.expect_ok(200);

        // A token from another P-256 key: bad signature.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let forged = sign_with(Algorithm::ES256, &other, &h.claims("teacher", Some("host")));
        list_sets(&h, &forged)
            .await
            .expect_error(401, "unauthorized");

        // RS256 and HS256 are refused.
        let rsa = EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap();
        let rs = sign_with(Algorithm::RS256, &rsa, &h.claims("teacher", Some("host")));
        let reply = list_sets(&h, &rs).await;
        reply.expect_error(401, "unauthorized");
        assert!(
            reply.body["message"].as_str().unwrap().contains("ES256"),
            "{reply:?}"
        );
        let hs = hs256(
            b"0123456789abcdef0123456789abcdef",
            &h.claims("t", Some("host")),
        );
        list_sets(&h, &hs).await.expect_error(401, "unauthorized");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_config_is_refused_before_binding() {
    within(async {
        let mut config = Config::for_test();
        config.auth.rs256_public_key_pem = Some(RS256_PUBLIC.into());
        let err = quiz_router::start(
            config,
            crate::support::memory_stores().await,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("only one of"), "{err}");
    })
    .await;
}

/// A local identity provider's JWKS endpoint whose keys the test rotates, counting fetches.
struct JwksServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

impl JwksServer {
    async fn start() -> JwksServer {
        use axum::http::StatusCode;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let body = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let served = b.lock().unwrap().clone();
                async move {
                    match served {
                        Some(json) => (StatusCode::OK, json),
                        None => (StatusCode::INTERNAL_SERVER_ERROR, "down".to_string()),
                    }
                }
            }),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
                .unwrap();
        });
        JwksServer {
            url,
            body,
            fetches,
            stop,
        }
    }

    /// Serves exactly these keys (or an HTTP 500 with none).
    fn serve(&self, keys: &[(&str, &rcgen::KeyPair)]) {
        let json = (!keys.is_empty()).then(|| {
            let keys: Vec<Value> = keys
                .iter()
                .map(|(kid, pair)| es256_jwk(kid, pair))
                .collect();
            json!({ "keys": keys }).to_string()
        });
        *self.body.lock().unwrap() = json;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The public JWK of a P-256 key pair.
fn es256_jwk(kid: &str, pair: &rcgen::KeyPair) -> Value {
    use base64::Engine;
    let raw = pair.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    })
}

fn es256_token(h: &Harness, kid: &str, pair: &rcgen::KeyPair) -> String {
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &h.claims("teacher", Some("host")), &key).unwrap()
}

#[tokio::test]
async fn keys_come_from_the_providers_jwks_and_follow_its_rotation() {
    within(async {
        let jwks = JwksServer::start().await;
        let first = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let second = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut config = Config::for_test();
        config.auth.hs256_secret = None;
        config.auth.dev_tokens = false;
        config.auth.jwks_url = Some(jwks.url.clone());
        config.auth.jwks_min_refetch_s = 0;
        let h = Harness::with(config).await;

        // The provider is down and nothing is cached: retryable, not the caller's fault.
        let reply = list_sets(&h, &es256_token(&h, "k1", &first)).await;
        reply.expect_error(503, "unavailable");

        jwks.serve(&[("k1", &first)]);
        list_sets(&h, &es256_token(&h, "k1", &first))
            .await
            .expect_ok(200);
        let fetched = jwks.fetches();
        // Cached: the next tokens cost no fetch.
        for _ in 0..5 {
            list_sets(&h, &es256_token(&h, "k1", &first))
                .await
                .expect_ok(200);
        }
        assert_eq!(jwks.fetches(), fetched);
        // A token naming k1 but signed with another key fails.
        let forged = es256_token(&h, "k1", &second);
        list_sets(&h, &forged)
            .await
            .expect_error(401, "unauthorized");

        // The provider rotates to k2: a token naming k2 makes the router fetch again.
        jwks.serve(&[("k2", &second)]);
        list_sets(&h, &es256_token(&h, "k2", &second))
            .await
            .expect_ok(200);
        assert_eq!(jwks.fetches(), fetched + 1);
        // k1 is gone from the provider, so from the router.
        list_sets(&h, &es256_token(&h, "k1", &first))
            .await
            .expect_error(401, "unauthorized");
        // A token without a kid, or with HS256, is refused.
        let hs = hs256(
            b"0123456789abcdef0123456789abcdef",
            &h.claims("teacher", Some("host")),
        );
        list_sets(&h, &hs).await.expect_error(401, "unauthorized");

        // The provider goes down: the keys already held keep working.
        jwks.serve(&[]);
        list_sets(&h, &es256_token(&h, "k2", &second))
            .await
            .expect_ok(200);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_kids_do_not_make_the_router_flood_the_provider() {
    within(async {
        let jwks = JwksServer::start().await;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        jwks.serve(&[("k1", &pair)]);
        let mut config = Config::for_test();
        config.auth.hs256_secret = None;
        config.auth.dev_tokens = false;
        config.auth.jwks_url = Some(jwks.url.clone());
        let h = Harness::with(config).await;
        list_sets(&h, &es256_token(&h, "k1", &pair))
            .await
            .expect_ok(200);
        for i in 0..50 {
            let made_up = es256_token(&h, &format!("made-up-{i}"), &pair);
            list_sets(&h, &made_up)
                .await
                .expect_error(401, "unauthorized");
        }
        // One fetch for the first token; the made-up kids wait for jwks_min_refetch_s (10 s).
        assert!(jwks.fetches() <= 2, "{} fetches", jwks.fetches());
        h.shutdown().await;
    })
    .await;
}
