//! `RouterClient` against a fake router: typed replies, and every kind of error mapped to
//! `ClientError` with the server's code, message, status and `Retry-After`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use quiz_client::{ClientError, CreateQuiz, Options, QuizConnection, RouterClient};
use quiz_protocol::client::Role;
use quiz_protocol::{ErrorCode, QuestionSet, QuizId, QuizSettings};
use serde_json::{Value, json};
use support::*;

#[derive(Clone)]
struct Fake {
    edge_url: String,
    joins: Arc<AtomicU32>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let retryable = matches!(code, "rate_limited" | "unavailable" | "internal");
    let body = json!({"code": code, "message": message, "retryable": retryable});
    (status, Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .is_some_and(|v| v == "Bearer idp-token")
}

async fn dev_token(Json(body): Json<Value>) -> Json<Value> {
    let user = body["user"].as_str().unwrap_or_default();
    let role = body["role"].as_str().unwrap_or_default();
    let ttl = body["ttl_s"].as_u64().unwrap_or(3600);
    Json(json!({"token": format!("dev-{user}-{role}"), "expires_in_s": ttl}))
}

async fn put_set(Path(id): Path<String>, headers: HeaderMap, Json(set): Json<Value>) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "no valid token");
    }
    let n = set["questions"].as_array().map_or(0, Vec::len);
    if id == "broken" {
        let body = json!({
            "code": "invalid_content",
            "message": "2 problems",
            "retryable": false,
            "errors": [
                {"path": "questions[0].options", "problem": "must hold 2-6 options"},
                {"path": "questions[0].answer", "problem": "is not the index of an option"},
            ],
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    Json(json!({"id": id, "questions": n})).into_response()
}

async fn create_quiz(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "no valid token");
    }
    // Optional fields left out must not be sent as nulls.
    assert!(body.get("title").is_none());
    let reply = json!({
        "quiz_id": "K7M3QX",
        "title": "Demo",
        "question_count": body["count"].as_u64().unwrap_or(6),
        "settings": QuizSettings::default(),
    });
    (StatusCode::CREATED, Json(reply)).into_response()
}

async fn join(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let nickname = body["nickname"].as_str().unwrap_or_default().to_owned();
    if nickname == "busy" {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
        r.headers_mut().insert("retry-after", "2".parse().unwrap());
        return r;
    }
    fake.joins.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "quiz_id": id,
        "role": body["role"].as_str().unwrap_or("player"),
        "nickname": nickname,
        "session_token": "fresh",
        "ws_urls": [fake.edge_url],
        "expires_in_s": 300,
    }))
    .into_response()
}

async fn status(Path(id): Path<String>) -> Response {
    match id.as_str() {
        "K7M3QX" => Json(json!({
            "quiz_id": id, "title": "Demo", "mode": "live", "phase": "lobby",
            "question_count": 6, "players": 3, "created_at": 1_735_689_600_000_i64,
        }))
        .into_response(),
        "ACDEFG" => (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").into_response(),
        _ => error(StatusCode::NOT_FOUND, "unknown_quiz", "no such quiz"),
    }
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn standings(Path(id): Path<String>, Query(q): Query<Limit>) -> Json<Value> {
    let rows: Vec<Value> = (1..=q.limit.unwrap_or(10).min(3))
        .map(|r| json!({"rank": r, "nickname": format!("p{r}"), "score": 1000 - r * 100}))
        .collect();
    Json(json!({"quiz_id": id, "players": 3, "standings": rows}))
}

async fn start_router(edge_url: String) -> (String, Fake) {
    let fake = Fake {
        edge_url,
        joins: Arc::new(AtomicU32::new(0)),
    };
    let app = Router::new()
        .route("/v1/dev/token", post(dev_token))
        .route("/v1/question-sets/{id}", put(put_set))
        .route("/v1/quizzes", post(create_quiz))
        .route("/v1/quizzes/{id}", get(status))
        .route("/v1/quizzes/{id}/join", post(join))
        .route("/v1/quizzes/{id}/standings", get(standings))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (base, fake)
}

fn question_set(id: &str) -> QuestionSet {
    let json = json!({
        "id": id,
        "title": "Tiny",
        "questions": [{
            "id": "q1", "level": "A1", "topic": "vocabulary", "kind": "single_choice",
            "prompt": "Which animal says 'woof'?", "options": ["a cat", "a dog"], "answer": 1,
        }],
    });
    QuestionSet::from_json(&json.to_string()).unwrap()
}

#[tokio::test]
async fn typed_replies_for_every_endpoint() {
    within_timeout(async {
        let (base, _) = start_router("ws://unused/ws".into()).await;
        let token = RouterClient::dev_token(&base, "ana", Role::Host)
            .await
            .unwrap();
        assert_eq!(token, "dev-ana-host");

        let router = RouterClient::new(format!("{base}/"), "idp-token");
        let stored = router
            .put_question_set(&question_set("tiny"))
            .await
            .unwrap();
        assert_eq!((stored.id.as_str(), stored.questions), ("tiny", 1));

        let created = router
            .create_quiz(&CreateQuiz {
                question_set: "tiny".into(),
                count: Some(1),
                ..CreateQuiz::default()
            })
            .await
            .unwrap();
        assert_eq!(created.quiz_id, quiz_id());
        assert_eq!(created.question_count, 1);

        let ticket = router
            .join(&quiz_id(), "Ana", Some(Role::Player))
            .await
            .unwrap();
        assert_eq!(ticket.session_token, "fresh");
        assert_eq!(ticket.role, Role::Player);

        let status = router.quiz(&quiz_id()).await.unwrap();
        assert_eq!((status.players, status.question_count), (3, 6));

        let standings = router.standings(&quiz_id(), Some(2)).await.unwrap();
        assert_eq!(standings.standings.len(), 2);
        assert_eq!(standings.standings[0].rank, 1);
    })
    .await;
}

#[tokio::test]
async fn errors_carry_code_message_status_and_retry_after() {
    within_timeout(async {
        let (base, _) = start_router("ws://unused/ws".into()).await;
        let router = RouterClient::new(&base, "idp-token");

        let busy = router.join(&quiz_id(), "busy", None).await.unwrap_err();
        assert_eq!(busy.code(), Some(ErrorCode::RateLimited));
        assert_eq!(busy.status(), Some(429));
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(2)));
        assert!(busy.retryable());

        let missing = router
            .quiz(&QuizId::parse("TTTTTT").unwrap())
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Some(ErrorCode::UnknownQuiz));
        assert_eq!(missing.status(), Some(404));
        assert!(!missing.retryable());
        assert!(missing.to_string().contains("no such quiz"), "{missing}");

        let anonymous = router.with_token("wrong");
        let denied = anonymous
            .put_question_set(&question_set("tiny"))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Some(ErrorCode::Unauthorized));

        match router.put_question_set(&question_set("broken")).await {
            Err(ClientError::Api(e)) => {
                assert_eq!((e.status, e.code), (422, ErrorCode::InvalidContent));
                assert_eq!(e.errors.len(), 2);
                assert_eq!(e.errors[1].path, "questions[0].answer");
            }
            other => panic!("{other:?}"),
        }

        match router.quiz(&QuizId::parse("ACDEFG").unwrap()).await {
            Err(e @ ClientError::Status { status: 502, .. }) => {
                assert!(e.retryable());
                assert!(e.to_string().contains("bad gateway"));
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn transport_errors_are_retryable() {
    within_timeout(async {
        let dead = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let err = RouterClient::new(dead, "t")
            .quiz(&quiz_id())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
        assert!(err.retryable());
    })
    .await;
}

#[tokio::test]
async fn the_refresher_joins_again_for_a_fresh_ticket() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        edge.set_valid_tokens(&["fresh"]);
        let (base, fake) = start_router(edge.url()).await;
        let router = RouterClient::new(&base, "idp-token");
        let options =
            Options::for_test().with_refresh(router.refresher(quiz_id(), "Ana".into(), None));
        let (conn, _events) = QuizConnection::connect(edge.ticket("expired"), options)
            .await
            .unwrap();
        assert!(conn.is_connected());
        assert_eq!(fake.joins.load(Ordering::SeqCst), 1);
        assert_eq!(edge.tokens(), ["expired", "fresh"]);
    })
    .await;
}
