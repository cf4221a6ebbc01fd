//! Question sets, and the API's generic error handling (unknown routes, methods, bodies).

use quiz_router::Config;
use serde_json::json;

use crate::support::{Harness, sample_set, within};

#[tokio::test]
async fn import_list_and_read_a_question_set() {
    within(async {
        let h = Harness::start().await;
        let host = h.host("teacher");
        let reply = h
            .put_text(
                "/v1/question-sets/english-a1",
                &host,
                sample_set().to_string(),
            )
            .await;
        assert_eq!(
            reply.expect_ok(200),
            &json!({"id": "english-a1", "questions": 3, "owner": "teacher", "visibility": "private"})
        );

        let list = h.get("/v1/question-sets", Some(&host)).await;
        let sets = list.expect_ok(200)["question_sets"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0]["id"], "english-a1");
        assert_eq!(sets[0]["title"], "English A1");
        assert_eq!(sets[0]["questions"], 3);

        let one = h.get("/v1/question-sets/english-a1", Some(&host)).await;
        let body = one.expect_ok(200);
        assert_eq!(body["id"], "english-a1");
        assert_eq!(body["questions"][1]["accept"], json!(["goes"]));
        // Defaults are filled in on import.
        assert_eq!(body["questions"][0]["time_limit_s"], 20);

        // Replacing keeps one set.
        let mut smaller = sample_set();
        smaller["questions"].as_array_mut().unwrap().truncate(1);
        let reply = h
            .put_text("/v1/question-sets/english-a1", &host, smaller.to_string())
            .await;
        assert_eq!(reply.expect_ok(200)["questions"], 1);
        let list = h.get("/v1/question-sets", Some(&host)).await;
        assert_eq!(list.body["question_sets"][0]["questions"], 1);

        h.get("/v1/question-sets/nope", Some(&host))
            .await
            .expect_error(404, "not_found");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_question_sets_name_each_field() {
    within(async {
        let h = Harness::start().await;
        let host = h.host("teacher");
        let mut set = sample_set();
        set["questions"][0]["options"] = json!(["same", "same"]);
        set["questions"][0]["answer"] = json!(5);
        set["questions"][2]["time_limit_s"] = json!(1);
        let reply = h
            .put_text("/v1/question-sets/english-a1", &host, set.to_string())
            .await;
        reply.expect_error(422, "invalid_content");
        let paths: Vec<&str> = reply.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        for expected in [
            "questions[0].options",
            "questions[0].answer",
            "questions[2].time_limit_s",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(reply.body["errors"][0]["problem"].is_string());

        // Unknown fields are refused, not ignored.
        let mut set = sample_set();
        set["questions"][2]["multiplyer"] = json!(2);
        let reply = h
            .put_text("/v1/question-sets/english-a1", &host, set.to_string())
            .await;
        reply.expect_error(422, "invalid_content");
        assert_eq!(reply.body["errors"][0]["path"], "questions[2].multiplyer");

        // The id must match the URL.
        let reply = h
            .put_text(
                "/v1/question-sets/other-id",
                &host,
                sample_set().to_string(),
            )
            .await;
        reply.expect_error(422, "invalid_content");
        assert_eq!(reply.body["errors"][0]["path"], "id");

        // Not JSON at all.
        let reply = h
            .put_text("/v1/question-sets/english-a1", &host, "{nope".into())
            .await;
        reply.expect_error(400, "bad_request");

        // Nothing was stored.
        let list = h.get("/v1/question-sets", Some(&host)).await;
        assert_eq!(list.body["question_sets"], json!([]));
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    within(async {
        let mut config = Config::for_test();
        config.max_body_bytes = 2048;
        let h = Harness::with(config).await;
        let host = h.host("teacher");
        let mut set = sample_set();
        set["description"] = json!("x".repeat(4096));
        let reply = h
            .put_text("/v1/question-sets/english-a1", &host, set.to_string())
            .await;
        reply.expect_error(413, "bad_request");
        let reply = h
            .post(
                "/v1/quizzes",
                Some(&host),
                &json!({"question_set": "x".repeat(4096)}),
            )
            .await;
        reply.expect_error(413, "bad_request");
        // Under the limit is fine.
        h.put_text(
            "/v1/question-sets/english-a1",
            &host,
            sample_set().to_string(),
        )
        .await
        .expect_ok(200);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_malformed_bodies() {
    within(async {
        let h = Harness::start().await;
        let host = h.host("teacher");
        h.get("/v1/nothing-here", Some(&host))
            .await
            .expect_error(404, "not_found");
        h.get("/", None).await.expect_error(404, "not_found");

        let delete = h
            .http
            .delete(format!("{}/v1/quizzes", h.base))
            .bearer_auth(&host)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status().as_u16(), 405);
        let body: serde_json::Value = delete.json().await.unwrap();
        assert_eq!(body["code"], "bad_request");

        let malformed = h
            .http
            .post(format!("{}/v1/quizzes", h.base))
            .bearer_auth(&host)
            .header("content-type", "application/json")
            .body("{\"question_set\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(malformed.status().as_u16(), 400);
        let body: serde_json::Value = malformed.json().await.unwrap();
        assert_eq!(body["code"], "bad_request");

        // Well-formed JSON of the wrong shape is a bad request too.
        h.post("/v1/quizzes", Some(&host), &json!({"set": "english-a1"}))
            .await
            .expect_error(400, "bad_request");
        h.post("/v1/quizzes", Some(&host), &json!([1, 2]))
            .await
            .expect_error(400, "bad_request");

        assert_eq!(h.get("/healthz", None).await.text, "ok");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn question_sets_belong_to_their_owner_and_answers_stay_with_owners_and_admins() {
    within(async {
        let mut config = Config::for_test();
        config.auth.admin_users = vec!["principal".into()];
        let h = Harness::with(config).await;
        let (ann, bob, carl) = (h.host("ann"), h.host("bob"), h.host("carl"));
        let admin = h.host("principal");
        put(&h, "/v1/question-sets/english-a1", &ann)
            .await
            .expect_ok(200);

        // Private: another host can neither read it, use it, nor overwrite it.
        h.get("/v1/question-sets/english-a1", Some(&bob))
            .await
            .expect_error(404, "not_found");
        let create = json!({"question_set": "english-a1"});
        h.post("/v1/quizzes", Some(&bob), &create)
            .await
            .expect_error(404, "not_found");
        put(&h, "/v1/question-sets/english-a1", &bob)
            .await
            .expect_error(403, "forbidden");
        let listed = h.get("/v1/question-sets", Some(&bob)).await;
        assert_eq!(listed.expect_ok(200)["question_sets"], json!([]));

        // Shared with bob: bob reads it without answers and creates quizzes from it; carl
        // still sees nothing.
        put(
            &h,
            "/v1/question-sets/english-a1?visibility=shared&shared_with=bob",
            &ann,
        )
        .await
        .expect_ok(200);
        let seen = h.get("/v1/question-sets/english-a1", Some(&bob)).await;
        let body = seen.expect_ok(200).clone();
        assert_eq!(body["answers_included"], false);
        let text = body.to_string();
        for key in ["\"answer\"", "\"answers\"", "\"accept\"", "\"explanation\""] {
            assert!(!text.contains(key), "{key} leaked: {text}");
        }
        assert!(body["questions"][0]["prompt"].is_string());
        h.post("/v1/quizzes", Some(&bob), &create)
            .await
            .expect_ok(201);
        h.get("/v1/question-sets/english-a1", Some(&carl))
            .await
            .expect_error(404, "not_found");
        // Whom it is shared with is the owner's business.
        let listed = h.get("/v1/question-sets", Some(&bob)).await;
        assert_eq!(listed.body["question_sets"][0].get("shared_with"), None);

        // Public: every host, still without answers; the owner and an admin see them.
        put(&h, "/v1/question-sets/english-a1?visibility=public", &ann)
            .await
            .expect_ok(200);
        let seen = h.get("/v1/question-sets/english-a1", Some(&carl)).await;
        assert_eq!(seen.expect_ok(200)["answers_included"], false);
        for owner_or_admin in [&ann, &admin] {
            let full = h
                .get("/v1/question-sets/english-a1", Some(owner_or_admin))
                .await;
            assert_eq!(
                full.expect_ok(200)["questions"][1]["accept"],
                json!(["goes"])
            );
        }
        // An admin may replace any set; its owner stays.
        let replaced = put(&h, "/v1/question-sets/english-a1", &admin).await;
        assert_eq!(replaced.expect_ok(200)["owner"], "ann");
        // Players never read sets.
        h.get("/v1/question-sets/english-a1", Some(&h.player("pupil")))
            .await
            .expect_error(403, "forbidden");
        // Bad visibility values are named.
        put(&h, "/v1/question-sets/english-a1?visibility=everyone", &ann)
            .await
            .expect_error(400, "bad_request");
        put(&h, "/v1/question-sets/english-a1?shared_with=bob", &ann)
            .await
            .expect_error(400, "bad_request");
        h.shutdown().await;
    })
    .await;
}

async fn put(h: &Harness, path: &str, token: &str) -> crate::support::Reply {
    h.put_text(path, token, sample_set().to_string()).await
}
