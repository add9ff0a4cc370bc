//! `POST /v1/responses`, `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`: the
//! OpenAI Responses API in front of the router, so any configured vendor serves it.
//!
//! A request is translated to the neutral chat request (`ai::responses`) and routed like
//! `/v1/chat/completions` (same auth, rate limits, cache, accounting, fallback). Unless
//! it says `"store": false` (or `RESPONSES_RETENTION_DAYS` is 0), the answer is stored
//! for the caller's tenant with the conversation so far, so `GET` finds it and a later
//! request continues it with `previous_response_id`; rows expire after the retention
//! period.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Caller;
use super::chat::{KeepAlive, Route, decorate, route, sse_response, stream_failure, upstream};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, json_response};
use crate::ai::responses::{self, Echo, RsRequest, StreamEncoder};
use crate::ai::sse;
use crate::ai::types::{ChatResponse, Message};
use crate::auth::Scope;
use crate::state::AppState;
use crate::store::{StoreError, StoredResponse};

/// Create a response (OpenAI Responses API; streaming with `"stream": true`).
#[utoipa::path(post, path = "/v1/responses", tag = "gateway", operation_id = "create_response",
    request_body(content = Object, description = "An OpenAI Responses request: model, input (string or items: messages, function_call, function_call_output), instructions?, tools? (function), tool_choice?, previous_response_id?, max_output_tokens?, text.format?, store?, stream?"),
    responses(
        (status = 200, description = "A response object, or an SSE stream of response.* events ending with response.completed", body = Object),
        (status = 400, description = "Malformed JSON, or every vendor rejected the request", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field, unknown model, or a previous_response_id that is not stored", body = ErrorBody),
        (status = 429, description = "Every vendor attempt was rate limited", body = ErrorBody),
        (status = 502, description = "Every vendor attempt failed; `attempts` lists them", body = ErrorBody),
        (status = 503, description = "Every provider's circuit breaker is open, or the database is unavailable", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(wire): ApiJson<RsRequest>,
) -> ApiResult<Response> {
    let Route { chain, ctx } = route(&state, &caller, Scope::Write, &wire.model)?;
    let converted = responses::request_to_internal(&wire)
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    let tenant = caller.0.tenant_id;
    let retention = state.config.ai.responses_retention_days;
    let store = wire.store.unwrap_or(true) && retention > 0;

    // The conversation so far: the stored one this continues, then the new input.
    let mut conversation: Vec<Message> = match &wire.previous_response_id {
        Some(prev) => previous(&state, tenant, prev).await?,
        None => Vec::new(),
    };
    conversation.extend(converted.input);
    let mut req = converted.request;
    req.messages.extend(conversation.iter().cloned());

    let id = format!("resp_{}", Uuid::now_v7().simple());
    let echo = Echo::new(id, Utc::now().timestamp(), &wire, store);
    let saver = Saver {
        state: state.clone(),
        tenant,
        retention_days: retention,
        conversation,
        enabled: store,
    };

    if !wire.stream.unwrap_or(false) {
        let routed = state.ai.chat(&chain, &req, ctx).await.map_err(upstream)?;
        let object = echo.completed(&routed.response);
        saver.save(&object, &routed.response).await;
        let mut resp = json_response(&object);
        decorate(
            &mut resp,
            &routed.provider,
            &routed.model,
            Some(routed.cost_nanos),
            routed.cache_hit,
        );
        return Ok(resp);
    }

    let routed = state
        .ai
        .chat_stream(&chain, &req, ctx)
        .await
        .map_err(upstream)?;
    let encoder = StreamEncoder::new(echo);
    // Each neutral event becomes zero or more response events; a clean end sends
    // `response.completed` and stores the response; a failure after the first byte ends
    // with `response.failed`.
    let frames = futures_util::stream::unfold(
        (routed.events, encoder, Some(saver)),
        |(mut events, mut encoder, mut saver)| async move {
            let pending = saver.take()?;
            let wire = match events.next().await {
                Some(Ok(ev)) => {
                    saver = Some(pending);
                    encoder.push(&ev)
                }
                Some(Err(e)) => encoder.fail(&stream_failure(&e)),
                None => {
                    let (tail, done) = encoder.finish();
                    if let Some((resp, object)) = done {
                        pending.save(&object, &resp).await;
                    }
                    tail
                }
            };
            let text: String = wire
                .iter()
                .map(|(event, data)| sse::encode(Some(event), &data.to_string()))
                .collect();
            Some((
                Ok::<_, Infallible>(Bytes::from(text)),
                (events, encoder, saver),
            ))
        },
    );
    let mut resp = sse_response(
        frames,
        KeepAlive::comment(state.config.ai.stream_ping_interval),
    )?;
    decorate(&mut resp, &routed.provider, &routed.model, None, false);
    Ok(resp)
}

/// The stored conversation `id` continues (422 naming `previous_response_id` when there
/// is none for this tenant, or it expired).
async fn previous(state: &AppState, tenant: Uuid, id: &str) -> ApiResult<Vec<Message>> {
    let stored = state
        .store
        .get_response(tenant, id, Utc::now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::validation(
                "previous_response_id",
                format!("no stored response {id:?} (never stored, deleted or expired)"),
            ),
            e => e.into(),
        })?;
    serde_json::from_value(stored.conversation)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored conversation of {id}: {e}")))
}

/// Stores a finished response with its conversation, when the request asked for it.
struct Saver {
    state: AppState,
    tenant: Uuid,
    retention_days: u32,
    /// Up to and including the request's input.
    conversation: Vec<Message>,
    enabled: bool,
}

impl Saver {
    /// A failure is logged, not returned: the caller has the answer (and was billed for
    /// it); only a later `GET` or `previous_response_id` will miss it.
    async fn save(self, object: &Value, resp: &ChatResponse) {
        if !self.enabled {
            return;
        }
        let mut conversation = self.conversation;
        conversation.push(responses::answer_message(resp));
        let now = Utc::now();
        let id = object["id"].as_str().unwrap_or_default().to_string();
        let row = StoredResponse {
            id: id.clone(),
            tenant_id: self.tenant,
            body: object.clone(),
            conversation: serde_json::to_value(&conversation).unwrap_or(Value::Null),
            created_at: now,
            expires_at: now + chrono::Duration::days(i64::from(self.retention_days)),
        };
        if let Err(e) = self.state.store.insert_response(&row).await {
            tracing::error!(error = %e, response_id = %id, "storing a response failed");
        }
    }
}

/// Fetch a stored response.
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "gateway", operation_id = "get_response",
    params(("id" = String, Path, description = "The response id (resp_…)")),
    responses(
        (status = 200, description = "The response object as it was served", body = Object),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such response in this tenant (or it expired)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let stored = state
        .store
        .get_response(caller.0.tenant_id, &id, Utc::now())
        .await?;
    Ok(Json(stored.body))
}

/// Delete a stored response.
#[utoipa::path(delete, path = "/v1/responses/{id}", tag = "gateway", operation_id = "delete_response",
    params(("id" = String, Path, description = "The response id (resp_…)")),
    responses(
        (status = 200, description = "`{id, object: \"response.deleted\", deleted: true}`", body = Object),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such response in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Write)?;
    state.store.delete_response(caller.0.tenant_id, &id).await?;
    Ok(Json(
        json!({"id": id, "object": "response.deleted", "deleted": true}),
    ))
}
