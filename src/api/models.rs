//! `GET /v1/models` and `GET /v1/models/{id}`: the models a caller can name — the
//! configured aliases and the price table's models of every configured provider — in
//! OpenAI's list shape, or in Anthropic's when the request carries `anthropic-version`
//! (so both vendors' SDKs can list them).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::ai::router::ModelInfo;
use crate::auth::Scope;
use crate::state::AppState;

/// Models have no creation time of their own; this fixed one (the Unix epoch) keeps the
/// list stable across replicas and restarts.
const CREATED: i64 = 0;

fn anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

fn openai_model(m: &ModelInfo) -> Value {
    json!({"id": m.id, "object": "model", "created": CREATED, "owned_by": m.owned_by})
}

fn anthropic_model(m: &ModelInfo) -> Value {
    json!({"type": "model", "id": m.id, "display_name": m.id,
        "created_at": "1970-01-01T00:00:00Z"})
}

/// List the models a caller can name.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", operation_id = "list_models",
    params(("anthropic-version" = Option<String>, Header, description = "When present, the list is in Anthropic's shape")),
    responses(
        (status = 200, description = "`{\"object\":\"list\",\"data\":[{id, object, created, owned_by}]}` (OpenAI), or Anthropic's `{data, has_more, first_id, last_id}`", body = Object),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let models = state.ai.models();
    if anthropic(&headers) {
        return Ok(Json(json!({
            "data": models.iter().map(anthropic_model).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": models.first().map(|m| m.id.clone()),
            "last_id": models.last().map(|m| m.id.clone()),
        })));
    }
    Ok(Json(json!({
        "object": "list",
        "data": models.iter().map(openai_model).collect::<Vec<_>>(),
    })))
}

/// One model a caller can name.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "gateway", operation_id = "get_model",
    params(("id" = String, Path, description = "A model id from the list (may contain `/`, sent URL-encoded)"),
        ("anthropic-version" = Option<String>, Header, description = "When present, the model is in Anthropic's shape")),
    responses(
        (status = 200, description = "The model", body = Object),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "Not a listed model", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let m = state
        .ai
        .models()
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no model {id:?}")))?;
    Ok(Json(if anthropic(&headers) {
        anthropic_model(&m)
    } else {
        openai_model(&m)
    }))
}
