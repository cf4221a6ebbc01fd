//! Joining: session tokens, placement, roles, nicknames, ended and unknown quizzes, and the
//! two per-address rate limits.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use quiz_protocol::client::Role;
use quiz_protocol::ring::Ring;
use quiz_protocol::session::{SESSION_AUDIENCE, SESSION_ISSUER, SessionClaims};
use quiz_protocol::{NodeId, QuizId};
use quiz_router::Config;
use serde_json::{Value, json};

use crate::support::{Harness, Reply, now_s, within};

/// The test config with the production rate limits.
fn with_default_limits() -> Config {
    Config {
        limits: quiz_router::LimitsConfig::default(),
        ..Config::for_test()
    }
}

async fn join(h: &Harness, quiz: &str, token: &str, body: Value) -> Reply {
    h.post(&format!("/v1/quizzes/{quiz}/join"), Some(token), &body)
        .await
}

fn decode_session(h: &Harness, token: &str) -> SessionClaims {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[SESSION_AUDIENCE]);
    validation.set_issuer(&[SESSION_ISSUER]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let key = DecodingKey::from_secret(h.config.session.secret.as_bytes());
    jsonwebtoken::decode::<SessionClaims>(token, &key, &validation)
        .expect("a valid session token")
        .claims
}

#[tokio::test]
async fn a_player_joins_and_gets_a_session_token_and_urls() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let reply = join(
            &h,
            id.as_str(),
            &h.player("pat"),
            json!({"nickname": "  Pat "}),
        )
        .await;
        let body = reply.expect_ok(200);
        assert_eq!(body["quiz_id"], id.as_str());
        assert_eq!(body["role"], "player");
        assert_eq!(body["nickname"], "Pat");
        assert_eq!(body["expires_in_s"], h.config.session.ttl_s);

        let claims = decode_session(&h, body["session_token"].as_str().unwrap());
        assert_eq!(claims.sub, "pat");
        assert_eq!(claims.quiz, id.as_str());
        assert_eq!(claims.role, Role::Player);
        assert_eq!(claims.nick, "Pat");
        assert_eq!(claims.aud, SESSION_AUDIENCE);
        assert_eq!(claims.iss, SESSION_ISSUER);
        assert_eq!(claims.exp - claims.iat, h.config.session.ttl_s);
        assert!(claims.iat.abs_diff(now_s()) < 60);

        // The owner's edge first, then every other node once, as the ring orders them.
        let nodes: Vec<(NodeId, u32)> = h
            .config
            .nodes
            .iter()
            .map(|n| (NodeId(n.id.clone()), n.weight))
            .collect();
        let ring = Ring::new(1, &nodes, h.config.vnodes_per_weight);
        let expected: Vec<String> = ring
            .preference(&id)
            .iter()
            .map(|node| {
                let n = h.config.nodes.iter().find(|n| n.id == node.0).unwrap();
                n.ws_url.clone()
            })
            .collect();
        assert_eq!(expected.len(), 3);
        assert_eq!(body["ws_urls"], json!(expected));
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn codes_are_read_leniently() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let lower = id.as_str().to_lowercase();
        let typed = format!("{}-{}", &lower[..3], &lower[3..]);
        let reply = join(&h, &typed, &h.player("pat"), json!({"nickname": "Pat"})).await;
        assert_eq!(reply.expect_ok(200)["quiz_id"], id.as_str());
        let spaced = format!("{}%20{}", &lower[..3], &lower[3..]);
        let reply = join(&h, &spaced, &h.player("pat"), json!({"nickname": "Pat"})).await;
        assert_eq!(reply.expect_ok(200)["quiz_id"], id.as_str());
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_ill_formed_and_ended_quizzes() {
    within(async {
        let h = Harness::start().await;
        let token = h.player("pat");
        let body = json!({"nickname": "Pat"});
        join(&h, "AAAAAA", &token, body.clone())
            .await
            .expect_error(404, "unknown_quiz");
        join(&h, "B0B0B0", &token, body.clone())
            .await
            .expect_error(400, "bad_request");
        join(&h, "TOOLONGCODE", &token, body.clone())
            .await
            .expect_error(400, "bad_request");

        let id = h.quiz_by("teacher").await;
        h.end_quiz(&id).await;
        let reply = join(&h, id.as_str(), &token, body).await;
        reply.expect_error(410, "quiz_ended");
        assert!(!reply.body["retryable"].as_bool().unwrap());
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn only_the_creator_with_a_host_token_may_host() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let as_host = json!({"nickname": "", "role": "host"});

        let reply = join(&h, id.as_str(), &h.host("teacher"), as_host.clone()).await;
        let body = reply.expect_ok(200);
        assert_eq!(body["role"], "host");
        assert_eq!(body["nickname"], "");
        let claims = decode_session(&h, body["session_token"].as_str().unwrap());
        assert_eq!(claims.role, Role::Host);
        assert_eq!(claims.nick, "");

        // A host may also give a nickname, and may leave the field out.
        let reply = join(&h, id.as_str(), &h.host("teacher"), json!({"role": "host"})).await;
        assert_eq!(reply.expect_ok(200)["role"], "host");
        let reply = join(
            &h,
            id.as_str(),
            &h.host("teacher"),
            json!({"role": "host", "nickname": "Ms T"}),
        )
        .await;
        assert_eq!(reply.expect_ok(200)["nickname"], "Ms T");

        // Another host.
        join(&h, id.as_str(), &h.host("other-teacher"), as_host.clone())
            .await
            .expect_error(403, "forbidden");
        // The creator, but with a player's token.
        join(&h, id.as_str(), &h.player("teacher"), as_host)
            .await
            .expect_error(403, "forbidden");
        // The creator may join as a player, with a nickname.
        let reply = join(
            &h,
            id.as_str(),
            &h.host("teacher"),
            json!({"nickname": "Tee"}),
        )
        .await;
        assert_eq!(reply.expect_ok(200)["role"], "player");
        h.shutdown().await;
    })
    .await;
}

fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='m' => (c as u8 + 13) as char,
            'n'..='z' => (c as u8 - 13) as char,
            _ => c,
        })
        .collect()
}

#[tokio::test]
async fn nicknames_follow_the_rules() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let token = h.player("pat");
        for bad in ["", "   ", "abcdefghijklmnopqrstu", "tab\there"] {
            join(&h, id.as_str(), &token, json!({"nickname": bad}))
                .await
                .expect_error(422, "nickname_invalid");
        }
        // Missing entirely: a player needs one.
        join(&h, id.as_str(), &token, json!({}))
            .await
            .expect_error(422, "nickname_invalid");
        // A word on the list (ROT13 here to keep the source clean).
        join(&h, id.as_str(), &token, json!({"nickname": rot13("fuvg")}))
            .await
            .expect_error(422, "nickname_not_allowed");
        let reply = join(&h, id.as_str(), &token, json!({"nickname": "Zoë 🦊"})).await;
        assert_eq!(reply.expect_ok(200)["nickname"], "Zoë 🦊");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn join_needs_a_valid_token_and_body() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let path = format!("/v1/quizzes/{id}/join");
        h.post(&path, None, &json!({"nickname": "Pat"}))
            .await
            .expect_error(401, "unauthorized");
        let mut expired = h.claims("pat", None);
        expired["exp"] = json!(now_s() - 3600);
        h.post(&path, Some(&h.sign(&expired)), &json!({"nickname": "Pat"}))
            .await
            .expect_error(401, "token_expired");
        h.post(
            &path,
            Some(&h.player("pat")),
            &json!({"nickname": "Pat", "role": "judge"}),
        )
        .await
        .expect_error(400, "bad_request");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn joins_are_rate_limited_per_address() {
    within(async {
        let mut config = Config::for_test();
        config.limits.joins_per_ip_per_minute = 1;
        config.limits.join_burst = 3;
        let h = Harness::with(config).await;
        let id = h.quiz_by("teacher").await;
        let body = json!({"nickname": "Pat"});
        for user in ["a", "b", "c"] {
            join(&h, id.as_str(), &h.player(user), body.clone())
                .await
                .expect_ok(200);
        }
        let reply = join(&h, id.as_str(), &h.player("d"), body.clone()).await;
        reply.expect_error(429, "rate_limited");
        assert!(reply.body["retryable"].as_bool().unwrap());
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "retry after {retry}");
        // Bad tokens are limited too: the limit comes first.
        join(&h, id.as_str(), "garbage", body)
            .await
            .expect_error(429, "rate_limited");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn failed_lookups_are_limited_separately() {
    within(async {
        let mut config = Config::for_test();
        config.limits.failed_joins_per_ip_per_minute = 1;
        config.limits.failed_join_burst = 2;
        let h = Harness::with(config).await;
        let id = h.quiz_by("teacher").await;
        let token = h.player("pat");
        let body = json!({"nickname": "Pat"});
        // Successful joins do not use up the failure budget.
        for _ in 0..5 {
            join(&h, id.as_str(), &token, body.clone())
                .await
                .expect_ok(200);
        }
        join(&h, "AAAAAA", &token, body.clone())
            .await
            .expect_error(404, "unknown_quiz");
        join(&h, "B0B0B0", &token, body.clone())
            .await
            .expect_error(400, "bad_request");
        // The budget is spent: even a real code is refused for now, from this address.
        let reply = join(&h, id.as_str(), &token, body.clone()).await;
        reply.expect_error(429, "rate_limited");
        assert!(reply.headers.contains_key("retry-after"));
        // Guessing through the read endpoint is limited by the same budget.
        h.get(&format!("/v1/quizzes/{id}"), Some(&token))
            .await
            .expect_error(429, "rate_limited");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    within(async {
        let mut config = Config::for_test();
        config.limits.joins_per_ip_per_minute = 1;
        config.limits.join_burst = 1;
        config.trust_forwarded_for = true;
        let h = Harness::with(config).await;
        let id = h.quiz_by("teacher").await;
        let send = |ip: &'static str| {
            h.http
                .post(format!("{}/v1/quizzes/{id}/join", h.base))
                .bearer_auth(h.player("pat"))
                .header("x-forwarded-for", ip)
                .json(&json!({"nickname": "Pat"}))
                .send()
        };
        assert_eq!(send("198.51.100.1").await.unwrap().status().as_u16(), 200);
        assert_eq!(send("198.51.100.1").await.unwrap().status().as_u16(), 429);
        assert_eq!(
            send("198.51.100.2, 10.0.0.1")
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn quiz_ids_in_replies_are_canonical() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let reply = join(
            &h,
            &id.as_str().to_lowercase(),
            &h.player("p"),
            json!({"nickname": "P"}),
        )
        .await;
        let got = reply.expect_ok(200)["quiz_id"].as_str().unwrap().to_owned();
        assert_eq!(QuizId::parse(&got).unwrap(), id);
        assert_eq!(got, id.as_str());
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_class_behind_one_address_joins_at_once_with_the_default_limits() {
    within(async {
        let h = Harness::with(with_default_limits()).await;
        let id = h.quiz_by("teacher").await;
        // Two hundred pupils on one school's NAT address (every test request comes from
        // 127.0.0.1), all in the same second.
        let joins = (0..200).map(|i| {
            let token = h.player(&format!("pupil-{i}"));
            let body = json!({"nickname": format!("Pupil {i}")});
            let h = &h;
            let id = id.clone();
            async move { join(h, id.as_str(), &token, body).await }
        });
        for reply in futures_util::future::join_all(joins).await {
            reply.expect_ok(200);
        }
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_pupil_who_mistypes_locks_out_only_themself() {
    within(async {
        let h = Harness::with(with_default_limits()).await;
        let id = h.quiz_by("teacher").await;
        let body = json!({"nickname": "Pat"});
        let clumsy = h.player("clumsy");
        for _ in 0..10 {
            join(&h, "AAAAAA", &clumsy, body.clone())
                .await
                .expect_error(404, "unknown_quiz");
        }
        // The pupil's own budget is spent, the address's is not.
        join(&h, id.as_str(), &clumsy, body.clone())
            .await
            .expect_error(429, "rate_limited");
        join(&h, id.as_str(), &h.player("careful"), body)
            .await
            .expect_ok(200);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_code_guesser_with_many_accounts_is_stopped_by_address() {
    within(async {
        let h = Harness::with(with_default_limits()).await;
        let id = h.quiz_by("teacher").await;
        let body = json!({"nickname": "Guess"});
        let mut refused_at = None;
        for i in 0..100 {
            // A fresh account for every guess: only the address's budget can stop it.
            let guess = format!("G{:05}", i);
            let reply = join(&h, &guess, &h.player(&format!("guesser-{i}")), body.clone()).await;
            if reply.status == 429 {
                refused_at = Some(i);
                break;
            }
            assert!(matches!(reply.status.as_u16(), 400 | 404), "{reply:?}");
        }
        assert_eq!(
            refused_at,
            Some(30),
            "the burst of failed lookups per address"
        );
        // And a right code from that address is refused too, so a 429 tells nothing.
        join(&h, id.as_str(), &h.player("guesser-x"), body)
            .await
            .expect_error(429, "rate_limited");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn one_user_is_limited_in_joins() {
    within(async {
        let h = Harness::with(with_default_limits()).await;
        let id = h.quiz_by("teacher").await;
        let token = h.player("restless");
        let body = json!({"nickname": "Restless"});
        for _ in 0..10 {
            join(&h, id.as_str(), &token, body.clone())
                .await
                .expect_ok(200);
        }
        join(&h, id.as_str(), &token, body)
            .await
            .expect_error(429, "rate_limited");
        h.shutdown().await;
    })
    .await;
}
