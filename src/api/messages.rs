//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API
//! in front of the router, so a Claude-protocol client can use any configured vendor.
//!
//! The request is translated to the neutral chat request (`ai::anthropic`), routed like
//! `/v1/chat/completions` (same auth, rate limits, cache, accounting, fallback), and the
//! answer translated back; streams are re-encoded event by event
//! (`ai::anthropic::StreamEncoder`). Errors on these paths take Anthropic's shape
//! (`{"type":"error","error":{"type","message"},"request_id"}`), rewritten from ours by
//! [`in_anthropic_shape`] (in the API's guard) so every failure — auth, rate limit,
//! validation, upstream — gets it. `anthropic-version` is accepted and not required.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::Caller;
use super::chat::{KeepAlive, Route, decorate, route, sse_response, stream_failure, upstream};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, json_response};
use crate::ai::anthropic::{self, AnRequest, StreamEncoder};
use crate::ai::sse;
use crate::ai::types::StreamEvent;
use crate::auth::Scope;
use crate::state::AppState;

/// Create a message (Anthropic Messages API; streaming with `"stream": true`).
#[utoipa::path(post, path = "/v1/messages", tag = "gateway", operation_id = "create_message",
    request_body(content = Object, description = "An Anthropic Messages request"),
    params(("anthropic-version" = Option<String>, Header, description = "Accepted, not required")),
    responses(
        (status = 200, description = "A message object, or an SSE stream of typed events (message_start, content_block_start/delta/stop, message_delta, message_stop, ping)", body = Object),
        (status = 400, description = "Invalid request (Anthropic error shape: invalid_request_error)", body = Object),
        (status = 401, description = "Missing or invalid key (authentication_error)", body = Object),
        (status = 403, description = "Key lacks the write scope (permission_error)", body = Object),
        (status = 413, description = "Body too large (request_too_large)", body = Object),
        (status = 429, description = "Rate limited (rate_limit_error), or a budget has no room for the call (budget_exceeded, with the budget and its reset_at)", body = Object),
        (status = 502, description = "Every vendor attempt failed (api_error)", body = Object),
        (status = 503, description = "Every provider's circuit breaker is open (overloaded_error)", body = Object),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(wire): ApiJson<AnRequest>,
) -> ApiResult<Response> {
    let Route { chain, ctx } = route(&state, &caller, Scope::Write, &wire.model)?;
    let anthropic::InternalRequest {
        request: req,
        stream,
    } = anthropic::request_to_internal(wire)
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());

    if !stream {
        let routed = state.ai.chat(&chain, &req, ctx).await.map_err(upstream)?;
        let mut wire = anthropic::response_to_wire(&routed.response);
        wire.id = id;
        let mut resp = json_response(&wire);
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
    let encoder = StreamEncoder::new(req.estimated_input_tokens());
    // Each neutral event becomes zero or more typed events; a clean end closes the
    // message; a failure after the first byte ends with an `error` event.
    let frames = futures_util::stream::unfold(
        (routed.events, encoder, false),
        move |(mut events, mut encoder, finished)| {
            let id = id.clone();
            async move {
                if finished {
                    return None;
                }
                let (wire, finished) = match events.next().await {
                    Some(Ok(StreamEvent::Start { model, .. })) => {
                        (encoder.push(&StreamEvent::Start { id, model }), false)
                    }
                    Some(Ok(ev)) => (encoder.push(&ev), false),
                    Some(Err(e)) => (
                        vec![(
                            "error",
                            anthropic::error_event("api_error", &stream_failure(&e)),
                        )],
                        true,
                    ),
                    None => (encoder.finish(), true),
                };
                let text: String = wire
                    .iter()
                    .map(|(event, data)| sse::encode(Some(event), &data.to_string()))
                    .collect();
                Some((
                    Ok::<_, Infallible>(Bytes::from(text)),
                    (events, encoder, finished),
                ))
            }
        },
    );
    let mut resp = sse_response(
        frames,
        KeepAlive::ping(state.config.ai.stream_ping_interval),
    )?;
    decorate(&mut resp, &routed.provider, &routed.model, None, false);
    Ok(resp)
}

/// Count the tokens of a Messages request: the vendor's count where the vendor has a
/// counting endpoint (the Anthropic format), else an estimate (about four characters a
/// token).
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "gateway", operation_id = "count_message_tokens",
    request_body(content = Object, description = "An Anthropic Messages request; max_tokens may be left out"),
    responses(
        (status = 200, description = "`{\"input_tokens\": N}`: the vendor's count (Anthropic format) or an estimate", body = Object),
        (status = 400, description = "Invalid request (Anthropic error shape)", body = Object),
        (status = 401, description = "Missing or invalid key", body = Object),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn count_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut wire): ApiJson<AnRequest>,
) -> ApiResult<Json<Value>> {
    let Route { chain, .. } = route(&state, &caller, Scope::Read, &wire.model)?;
    // Counting needs no answer limit.
    wire.max_tokens = wire.max_tokens.max(1);
    let req = anthropic::request_to_internal(wire)
        .map_err(|e| ApiError::validation(e.field, e.message))?
        .request;
    let n = match state.ai.count_tokens(&chain, &req).await {
        Some(n) => n,
        None => req.estimated_input_tokens(),
    };
    Ok(Json(json!({"input_tokens": n})))
}

/// Whether `path` is served in Anthropic's error shape.
pub fn anthropic_path(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Largest error body rewritten; ours are far smaller.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Rewrites our error body of a response on a Messages path into Anthropic's shape:
/// `{"type":"error","error":{"type","message"},"request_id"}`. A validation error's
/// field leads its message; 415 and 422 become 400, the status Anthropic uses for every
/// invalid request. Headers (`Retry-After`, `X-Request-Id`, rate-limit headers) stay.
pub async fn in_anthropic_shape(resp: Response) -> Response {
    let status = resp.status();
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let ours: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text = |p: &str| ours.pointer(p).and_then(Value::as_str);
    let message = match (text("/error/field"), text("/error/message")) {
        (Some(field), Some(m)) => format!("{field}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let status = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
            StatusCode::BAD_REQUEST
        }
        s => s,
    };
    // A budget refusal keeps its type and its budget (with the reset time): the SDKs
    // map errors by status, so the type is free to say why.
    let error = match (text("/error/type"), ours.pointer("/error/budget")) {
        (Some("budget_exceeded"), Some(budget)) => {
            json!({"type": "budget_exceeded", "message": message, "budget": budget})
        }
        _ => json!({"type": error_type(status), "message": message}),
    };
    let body = json!({
        "type": "error",
        "error": error,
        "request_id": text("/error/request_id").unwrap_or_default(),
    });
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (parts, Json(body)).into_response()
}
