//! Question sets: import (create or replace), list and read. Hosts only. Validation is the
//! protocol crate's ([`QuestionSet::from_json`]); this module only maps it onto HTTP.

use axum::Json;
use axum::extract::State;
use quiz_protocol::QuestionSet;
use quiz_store::QuestionSetSummary;
use serde::Serialize;
use serde::de::IgnoredAny;

use super::{AppState, PathId, TextBody, now_ms};
use crate::auth::Caller;
use crate::error::{ApiError, problem};

#[derive(Serialize)]
pub(crate) struct Imported {
    id: String,
    questions: usize,
}

#[derive(Serialize)]
pub(crate) struct Listing {
    question_sets: Vec<QuestionSetSummary>,
}

/// `PUT /v1/question-sets/{id}`: the body is a set in the JSON import format.
pub(crate) async fn put(
    State(app): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    TextBody(body): TextBody,
) -> Result<Json<Imported>, ApiError> {
    caller.require_host()?;
    // Malformed JSON is a bad request like on every other endpoint; content problems are 422.
    serde_json::from_str::<IgnoredAny>(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    let set = QuestionSet::from_json(&body).map_err(ApiError::InvalidContent)?;
    if set.id != id {
        return Err(ApiError::InvalidContent(vec![problem(
            "id",
            format!("is {:?} but the URL names {id:?}", set.id),
        )]));
    }
    app.stores.content.put_question_set(&set, now_ms()).await?;
    tracing::info!(set = %set.id, questions = set.questions.len(), user = %caller.user, "question set imported");
    Ok(Json(Imported {
        id: set.id,
        questions: set.questions.len(),
    }))
}

/// `GET /v1/question-sets`: summaries of every set.
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Listing>, ApiError> {
    caller.require_host()?;
    let question_sets = app.stores.content.question_sets().await?;
    Ok(Json(Listing { question_sets }))
}

/// `GET /v1/question-sets/{id}`: the whole set, answers included (hosts author them).
pub(crate) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<QuestionSet>, ApiError> {
    caller.require_host()?;
    app.stores
        .content
        .question_set(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no question set {id:?}")))
}
