//! `POST /v1/embeddings`: OpenAI's embeddings API through the router — the same auth,
//! rate limits, fallback, retries, breakers, metrics and `ai_calls` accounting as chat
//! (input tokens priced at the model's input price). Vendors without an embeddings
//! endpoint (the Anthropic format) are skipped as bad requests; the sandbox answers
//! deterministic unit vectors of the requested dimension.

use axum::extract::State;
use axum::response::Response;

use super::Caller;
use super::chat::{Route, decorate, route, upstream};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, json_response};
use crate::ai::openai::{self, OaEmbeddingRequest};
use crate::auth::Scope;
use crate::state::AppState;

/// Create embeddings (OpenAI-compatible; `encoding_format` `float` or `base64`).
#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway", operation_id = "create_embeddings",
    request_body(content = Object, description = "An OpenAI embeddings request: model, input (string, list of strings, token ids or lists of them), dimensions?, encoding_format?"),
    responses(
        (status = 200, description = "A list of embedding objects with usage", body = Object),
        (status = 400, description = "Malformed JSON, or every vendor rejected the request", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field or unknown model", body = ErrorBody),
        (status = 429, description = "Every vendor attempt was rate limited", body = ErrorBody),
        (status = 502, description = "Every vendor attempt failed; `attempts` lists them", body = ErrorBody),
        (status = 503, description = "Every provider's circuit breaker is open", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(wire): ApiJson<OaEmbeddingRequest>,
) -> ApiResult<Response> {
    let Route { chain, ctx } = route(&state, &caller, Scope::Write, &wire.model)?;
    let (req, base64) = openai::embedding_request_to_internal(wire)
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    let routed = state.ai.embed(&chain, &req, ctx).await.map_err(upstream)?;
    let mut resp = json_response(&openai::embedding_response_to_wire(
        &routed.response,
        base64,
    ));
    decorate(
        &mut resp,
        &routed.provider,
        &routed.model,
        Some(routed.cost_nanos),
        false,
    );
    Ok(resp)
}
