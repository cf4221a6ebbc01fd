//! Question sets: import (create or replace), list and read, hosts only. Validation is the
//! protocol crate's ([`QuestionSet::from_json`]); this module maps it onto HTTP and enforces
//! who may see what: a set belongs to the host who first stored it; only the owner and admins
//! replace it or read its answers; others see it (without answers) and create quizzes from
//! it only when it is shared with them or public.

use axum::Json;
use axum::extract::State;
use quiz_protocol::QuestionSet;
use quiz_store::{QuestionSetSummary, SetAccess, StoredSet, Visibility};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AppState, PathId, QueryParams, TextBody, now_ms};
use crate::auth::Caller;
use crate::error::{ApiError, problem};

/// Most hosts one set is shared with.
const MAX_SHARED_WITH: usize = 100;

#[derive(Serialize)]
pub(crate) struct Imported {
    id: String,
    questions: usize,
    #[serde(flatten)]
    access: SetAccess,
}

#[derive(Serialize)]
pub(crate) struct Listing {
    question_sets: Vec<QuestionSetSummary>,
}

/// `?visibility=private|shared|public&shared_with=alice,bob` on an upload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessQuery {
    visibility: Option<String>,
    shared_with: Option<String>,
}

impl AccessQuery {
    fn access(&self, owner: &str) -> Result<SetAccess, ApiError> {
        let visibility = match self.visibility.as_deref() {
            None => Visibility::Private,
            Some(v) => Visibility::parse(v).ok_or_else(|| {
                ApiError::BadRequest("visibility must be private, shared or public".into())
            })?,
        };
        let shared_with: Vec<String> = self
            .shared_with
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if shared_with.len() > MAX_SHARED_WITH {
            return Err(ApiError::BadRequest(format!(
                "shared_with names at most {MAX_SHARED_WITH} users"
            )));
        }
        if let Some(bad) = shared_with
            .iter()
            .find(|u| quiz_protocol::UserId::parse(u).is_err())
        {
            return Err(ApiError::BadRequest(format!(
                "shared_with: {bad:?} is not a user id"
            )));
        }
        if visibility != Visibility::Shared && !shared_with.is_empty() {
            return Err(ApiError::BadRequest(
                "shared_with goes with visibility=shared".into(),
            ));
        }
        Ok(SetAccess {
            owner: owner.into(),
            visibility,
            shared_with,
        })
    }
}

/// `PUT /v1/question-sets/{id}`: the body is a set in the JSON import format.
pub(crate) async fn put(
    State(app): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    QueryParams(query): QueryParams<AccessQuery>,
    TextBody(body): TextBody,
) -> Result<Json<Imported>, ApiError> {
    caller.require_host()?;
    let access = query.access(caller.user.as_str())?;
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
    let stored = app
        .stores
        .content
        .put_question_set(&set, &access, caller.admin, now_ms())
        .await?;
    if !stored {
        return Err(ApiError::Forbidden(format!(
            "question set {id:?} belongs to another host; pick another id"
        )));
    }
    tracing::info!(set = %set.id, questions = set.questions.len(), user = %caller.user, visibility = access.visibility.as_str(), "question set imported");
    // An admin's write keeps the set's owner.
    let access = match app.stores.content.question_set(&id).await? {
        Some(held) => held.access,
        None => access,
    };
    Ok(Json(Imported {
        id: set.id,
        questions: set.questions.len(),
        access,
    }))
}

/// `GET /v1/question-sets`: summaries of the sets the caller may use.
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Listing>, ApiError> {
    caller.require_host()?;
    let question_sets = app
        .stores
        .content
        .question_sets()
        .await?
        .into_iter()
        .filter(|s| caller.admin || s.access.can_use(caller.user.as_str()))
        .map(|mut s| {
            // Whom a set is shared with is its owner's business.
            if !(caller.admin || s.access.owner == caller.user.as_str()) {
                s.access.shared_with.clear();
            }
            s
        })
        .collect();
    Ok(Json(Listing { question_sets }))
}

/// `GET /v1/question-sets/{id}`: the whole set with its answers for its owner and admins;
/// for hosts it is shared with (or every host, when public) the questions without answers.
pub(crate) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<Value>, ApiError> {
    caller.require_host()?;
    let stored = usable_set(&app, &caller, &id).await?;
    if caller.admin || stored.access.owner == caller.user.as_str() {
        return serde_json::to_value(&stored.set)
            .map(Json)
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    Ok(Json(without_answers(&stored.set)))
}

/// The set `id` if `caller` may use it; a set they may not see is "not found", like one that
/// does not exist (its id tells nothing).
pub(crate) async fn usable_set(
    app: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<StoredSet, ApiError> {
    app.stores
        .content
        .question_set(id)
        .await?
        .filter(|s| caller.admin || s.access.can_use(caller.user.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("no question set {id:?}")))
}

/// A set as a host who does not own it sees it: every question's prompt, kind and options,
/// with no answer key, accepted spellings or explanation. Word-order tiles and the matching
/// columns come sorted, so their order gives nothing away.
fn without_answers(set: &QuestionSet) -> Value {
    let questions: Vec<Value> = set
        .questions
        .iter()
        .map(|q| {
            let mut v = serde_json::to_value(q).unwrap_or(Value::Null);
            let Some(o) = v.as_object_mut() else {
                return v;
            };
            for key in ["answers", "accept", "reject", "alternatives", "explanation"] {
                o.remove(key);
            }
            o.remove("accents_matter");
            if let Some(Value::Array(tiles)) = o.remove("answer")
                && o.get("kind").and_then(Value::as_str) == Some("word_order")
            {
                o.insert("tiles".into(), Value::Array(sorted(tiles)));
            }
            if let Some(Value::Array(pairs)) = o.remove("pairs") {
                let (left, right): (Vec<Value>, Vec<Value>) = pairs
                    .into_iter()
                    .filter_map(|p| match p {
                        Value::Array(mut lr) if lr.len() == 2 => {
                            let r = lr.pop()?;
                            Some((lr.pop()?, r))
                        }
                        _ => None,
                    })
                    .unzip();
                o.insert("left".into(), Value::Array(left));
                o.insert("right".into(), Value::Array(sorted(right)));
            }
            v
        })
        .collect();
    serde_json::json!({
        "id": set.id,
        "title": set.title,
        "questions": questions,
        "answers_included": false,
    })
}

fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    values
}
