//! The admin listener (metrics, health) and shutdown.

use quiz_router::Config;
use serde_json::json;

use crate::support::{Harness, within};

#[tokio::test]
async fn health_on_both_listeners() {
    within(async {
        let h = Harness::start().await;
        let public = h.get("/healthz", None).await;
        assert_eq!((public.status.as_u16(), public.text.as_str()), (200, "ok"));
        let admin = h.admin_get("/healthz").await;
        assert_eq!((admin.status.as_u16(), admin.text.as_str()), (200, "ok"));
        // Metrics are not on the public listener.
        h.get("/metrics", None).await.expect_error(404, "not_found");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_count_requests_joins_and_refusals_without_ids() {
    within(async {
        let mut config = Config::for_test();
        config.limits.joins_per_ip_per_minute = 1;
        config.limits.join_burst = 2;
        let h = Harness::with(config).await;
        let id = h.quiz_by("teacher").await;
        let body = json!({"nickname": "Pat"});
        let path = format!("/v1/quizzes/{id}/join");
        h.post(&path, Some(&h.player("pat")), &body).await.expect_ok(200);
        h.post("/v1/quizzes/AAAAAA/join", Some(&h.player("pat")), &body)
            .await
            .expect_error(404, "unknown_quiz");
        h.post(&path, Some(&h.player("pat")), &body)
            .await
            .expect_error(429, "rate_limited");
        h.get("/no/such/route", None).await;

        let reply = h.admin_get("/metrics").await;
        assert_eq!(reply.status.as_u16(), 200);
        let text = reply.text;
        for line in [
            r#"quiz_router_http_requests_total{route="/v1/quizzes/{id}/join",status="2xx"} 1"#,
            r#"quiz_router_http_requests_total{route="/v1/quizzes/{id}/join",status="4xx"} 2"#,
            r#"quiz_router_http_requests_total{route="/v1/quizzes",status="2xx"} 1"#,
            r#"quiz_router_http_requests_total{route="unmatched",status="4xx"} 1"#,
            r#"quiz_router_joins_total{outcome="ok"} 1"#,
            r#"quiz_router_joins_total{outcome="unknown_quiz"} 1"#,
            r#"quiz_router_joins_total{outcome="rate_limited"} 1"#,
            r#"quiz_router_rate_limited_total{limit="join"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(
            text.contains(r#"quiz_router_http_request_duration_seconds_bucket{route="/v1/quizzes/{id}/join",le="0.005"}"#),
            "{text}"
        );
        // Neither the quiz code nor a user id is a label.
        assert!(!text.contains(id.as_str()), "{text}");
        assert!(!text.contains("AAAAAA"), "{text}");
        assert!(!text.contains("pat"), "{text}");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_both_listeners() {
    within(async {
        let h = Harness::start().await;
        let (base, admin) = (h.base.clone(), h.admin.clone());
        let client = reqwest::Client::new();
        assert!(client.get(format!("{base}/healthz")).send().await.is_ok());
        h.shutdown().await;
        // A fresh client, so no pooled connection hides the closed listener.
        let client = reqwest::Client::new();
        assert!(client.get(format!("{base}/healthz")).send().await.is_err());
        assert!(client.get(format!("{admin}/healthz")).send().await.is_err());
    })
    .await;
}
