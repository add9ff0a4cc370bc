//! `POST /v1/chat/completions`: the OpenAI-compatible gateway.
//!
//! `model` is a configured alias (a fallback chain), `provider/model`, or a bare vendor
//! model name; the call goes through the router (fallback, retries, breakers, cache,
//! accounting). Works unchanged with OpenAI SDKs: the API key is the bearer token.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::json;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, json_bytes_response};
use crate::ai::budget::Refusal;
use crate::ai::error::ErrorKind;
use crate::ai::openai::{self, OaRequest};
use crate::ai::router::{
    AttemptReport, CallContext, MODEL_NAME_RULE, RouteError, valid_model_name,
};
use crate::ai::sse;
use crate::ai::types::StreamEvent;
use crate::auth::Scope;
use crate::state::AppState;

/// Create a chat completion (OpenAI-compatible, streaming with `"stream": true`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway",
    request_body(content = Object, description = "An OpenAI Chat Completions request"),
    responses(
        (status = 200, description = "A chat.completion object, or an SSE stream of chat.completion.chunk objects ending with [DONE]", body = Object),
        (status = 400, description = "Malformed JSON, or every vendor rejected the request", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field or unknown model", body = ErrorBody),
        (status = 429, description = "Every vendor attempt was rate limited, or a budget has no room for the call (`budget_exceeded`, with the budget and its `reset_at`)", body = ErrorBody),
        (status = 502, description = "Every vendor attempt failed; `attempts` lists them", body = ErrorBody),
        (status = 503, description = "Every provider's circuit breaker is open", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(wire): ApiJson<OaRequest>,
) -> ApiResult<Response> {
    let route = route(&state, &caller, Scope::Write, &wire.model)?;
    let openai::InternalRequest {
        request: req,
        stream,
        include_usage,
    } = openai::request_to_internal(wire).map_err(|e| ApiError::validation(e.field, e.message))?;
    let Route { chain, ctx } = route;
    let created = chrono::Utc::now().timestamp();
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());

    if !stream {
        let routed = state.ai.chat(&chain, &req, ctx).await.map_err(upstream)?;
        let mut wire = openai::response_to_wire(&routed.response, created);
        wire.id = id;
        let mut resp = json_bytes_response(wire.to_json());
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
    let model = routed.model.clone();
    // Each event becomes a chunk; a clean end adds `[DONE]`; a failure after the first
    // byte (no fallback is possible any more) ends with an error chunk and no `[DONE]`.
    let frames =
        futures_util::stream::unfold((routed.events, false), move |(mut events, finished)| {
            let (id, model) = (id.clone(), model.clone());
            async move {
                if finished {
                    return None;
                }
                let (text, finished) = match events.next().await {
                    Some(Ok(StreamEvent::Usage(_))) if !include_usage => (String::new(), false),
                    Some(Ok(ev)) => (
                        openai::event_to_chunk(&ev, &id, &model, created)
                            .and_then(|c| serde_json::to_string(&c).ok())
                            .map(|d| sse::encode(None, &d))
                            .unwrap_or_default(),
                        false,
                    ),
                    Some(Err(e)) => {
                        let body = json!({"error": {
                            "type": "upstream_error",
                            "message": stream_failure(&e),
                            "request_id": super::error::current_request_id(),
                        }});
                        (sse::encode(None, &body.to_string()), true)
                    }
                    None => (sse::encode(None, "[DONE]"), true),
                };
                Some((Ok::<_, Infallible>(Bytes::from(text)), (events, finished)))
            }
        });
    let mut resp = sse_response(
        frames,
        KeepAlive::comment(state.config.ai.stream_ping_interval),
    )?;
    decorate(&mut resp, &routed.provider, &routed.model, None, false);
    Ok(resp)
}

/// Where a gateway call goes: the caller's context and the fallback chain its `model`
/// names.
pub struct Route {
    pub chain: Vec<String>,
    pub ctx: CallContext,
}

/// The checks every gateway endpoint makes before calling the router, in one place: the
/// caller holds `scope`, `model` is a well-formed name (it becomes a log field and, when
/// configured, a metric label, so it is bounded before anything else sees it) and names
/// an alias, `provider/model` or a vendor model (422 naming `model` otherwise).
pub fn route(state: &AppState, caller: &Caller, scope: Scope, model: &str) -> ApiResult<Route> {
    caller.require(scope)?;
    if !valid_model_name(model) {
        return Err(ApiError::validation("model", MODEL_NAME_RULE));
    }
    let chain = state.ai.resolve(model).ok_or_else(|| {
        ApiError::validation(
            "model",
            format!(
                "unknown model {model:?}: use an alias, provider/model, or a vendor model name"
            ),
        )
    })?;
    Ok(Route {
        chain,
        ctx: CallContext {
            tenant_id: caller.0.tenant_id,
            key_id: caller.0.key_id,
            task_id: None,
            employee_id: None,
        },
    })
}

/// What a caller is told when a stream fails after its first byte: the vendor's reason,
/// redacted.
pub fn stream_failure(e: &crate::ai::error::AiError) -> String {
    format!(
        "the vendor stream failed: {}",
        crate::ai::error::vendor_text(&e.message)
    )
}

/// An SSE response over `frames`, with the headers that keep proxies from buffering it.
pub fn sse_response<S>(frames: S, keep_alive: KeepAlive) -> ApiResult<Response>
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(keep_alive.around(frames)))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// What a gateway stream sends when the vendor has been silent for `every`, so that
/// proxies and clients with idle timeouts keep a slow stream open.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    /// Zero: never.
    pub every: Duration,
    pub frame: &'static str,
}

impl KeepAlive {
    /// An SSE comment line, which SSE clients skip (the OpenAI protocols).
    pub fn comment(every: Duration) -> Self {
        Self {
            every,
            frame: ": keep-alive\n\n",
        }
    }

    /// Anthropic's `ping` event.
    pub fn ping(every: Duration) -> Self {
        Self {
            every,
            frame: "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        }
    }

    /// `frames`, with the keep-alive frame inserted whenever `every` passes without one.
    /// A frame is never split: the keep-alive comes only between frames.
    fn around<S>(
        self,
        frames: S,
    ) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static
    where
        S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    {
        let frames = Box::pin(frames);
        futures_util::stream::unfold(frames, move |mut frames| async move {
            if self.every.is_zero() {
                return frames.next().await.map(|f| (f, frames));
            }
            // `next` is cancel-safe: a frame that arrives after the timeout is kept for
            // the next call.
            match tokio::time::timeout(self.every, frames.next()).await {
                Ok(Some(f)) => Some((f, frames)),
                Ok(None) => None,
                Err(_) => Some((Ok(Bytes::from_static(self.frame.as_bytes())), frames)),
            }
        })
    }
}

const X_DE_MODEL: HeaderName = HeaderName::from_static("x-de-model");
const X_DE_COST_USD: HeaderName = HeaderName::from_static("x-de-cost-usd");
const X_DE_CACHE: HeaderName = HeaderName::from_static("x-de-cache");

/// The gateway's response headers: `X-De-Model` (the candidate that answered),
/// `X-De-Cost-Usd` (when known) and `X-De-Cache: hit`.
pub fn decorate(
    resp: &mut Response,
    provider: &str,
    model: &str,
    cost: Option<i64>,
    cache_hit: bool,
) {
    let h = resp.headers_mut();
    // Each value is built once and moved into the header, not copied from a `&str`.
    let mut name = String::with_capacity(provider.len() + 1 + model.len());
    name.push_str(provider);
    name.push('/');
    name.push_str(model);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(name)) {
        h.insert(X_DE_MODEL, v);
    }
    if let Some(c) = cost
        && let Ok(v) =
            HeaderValue::from_maybe_shared(bytes::Bytes::from(crate::ai::pricing::usd_text(c)))
    {
        h.insert(X_DE_COST_USD, v);
    }
    if cache_hit {
        h.insert(X_DE_CACHE, HeaderValue::from_static("hit"));
    }
}

/// Maps "every candidate failed" to the status that says most about why.
pub fn upstream(e: RouteError) -> ApiError {
    match e.refusal {
        Some(Refusal::Exceeded(b)) => return ApiError::BudgetExceeded(Box::new(b)),
        Some(Refusal::Unchecked(why)) => {
            tracing::warn!(error = %why, "cannot check the budgets");
            return ApiError::Unavailable(
                "the budgets cannot be checked: database unavailable".into(),
            );
        }
        None => {}
    }
    let all =
        |pred: fn(&AttemptReport) -> bool| !e.attempts.is_empty() && e.attempts.iter().all(pred);
    let status = if all(|a| matches!(a.kind, ErrorKind::BadRequest | ErrorKind::ContextLength)) {
        StatusCode::BAD_REQUEST
    } else if all(|a| a.kind == ErrorKind::RateLimited) {
        StatusCode::TOO_MANY_REQUESTS
    } else if all(|a| a.kind == ErrorKind::CircuitOpen) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    ApiError::Upstream {
        status,
        message: e.to_string(),
        attempts: e.attempts,
    }
}
