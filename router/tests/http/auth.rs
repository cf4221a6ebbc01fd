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
