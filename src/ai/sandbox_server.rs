//! The sandbox as a real HTTP vendor: `POST /v1/chat/completions` and
//! `POST /v1/embeddings` (OpenAI format) and `POST /v1/messages` (Anthropic format),
//! streaming included, with faults applied on the wire. Admin endpoints under `/__sandbox/` load scripts and fault rules, reset, and
//! report request counts (so tests count attempts instead of timing them).
//!
//! Per-request faults: header `x-sandbox-fault` with a JSON fault or list of faults.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::sandbox::{Fault, Plan, SandboxEngine, SandboxSetup, response_to_events};
use super::types::ChatRequest;
use super::{anthropic, openai, sse};

#[derive(Clone)]
struct SbState {
    engine: Arc<SandboxEngine>,
    require_key: Option<String>,
}

/// The sandbox router. With `require_key`, requests without that key (Bearer or
/// `x-api-key`) get 401, like a vendor with a wrong key.
pub fn router(engine: Arc<SandboxEngine>, require_key: Option<String>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1/messages/count_tokens", post(anthropic_count_tokens))
        .route("/__sandbox/setup", post(setup))
        .route("/__sandbox/reset", post(reset))
        .route("/__sandbox/stats", get(stats))
        .with_state(SbState {
            engine,
            require_key,
        })
}

async fn setup(State(s): State<SbState>, body: Bytes) -> Response {
    match serde_json::from_slice::<SandboxSetup>(&body) {
        Ok(setup) => {
            s.engine.apply(setup);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(
                json!({"error": {"type": "invalid_request_error", "message": e.to_string()}}),
            ),
        )
            .into_response(),
    }
}

async fn reset(State(s): State<SbState>) -> StatusCode {
    s.engine.reset();
    StatusCode::NO_CONTENT
}

async fn stats(State(s): State<SbState>) -> axum::Json<Value> {
    let per_model = s.engine.stats();
    let total: u64 = per_model.values().sum();
    axum::Json(json!({"requests": per_model, "total": total}))
}

fn authorized(s: &SbState, headers: &HeaderMap) -> bool {
    let Some(key) = &s.require_key else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer == Some(key.as_str()) || api_key == Some(key.as_str())
}

fn header_faults(headers: &HeaderMap) -> Vec<Fault> {
    let Some(v) = headers.get("x-sandbox-fault").and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    serde_json::from_str::<Vec<Fault>>(v)
        .or_else(|_| serde_json::from_str::<Fault>(v).map(|f| vec![f]))
        .unwrap_or_default()
}

fn error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        code,
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response();
    if let Some(s) = retry_after
        && let Ok(v) = s.to_string().parse()
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Applies the pre-response faults; `Some(response)` short-circuits.
async fn pre_faults(faults: &[Fault]) -> Option<Response> {
    let delay = super::sandbox::latency_of(faults);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    for f in faults {
        match f {
            Fault::Hang => {
                // Longer than any client timeout; the connection is dropped by the client.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Fault::Status {
                status,
                retry_after,
                message,
            } => {
                let kind = match status {
                    429 => "rate_limit_error",
                    401 | 403 => "authentication_error",
                    400..=499 => "invalid_request_error",
                    _ => "api_error",
                };
                let text = message.as_deref().unwrap_or("injected fault");
                return Some(error(*status, kind, text, *retry_after));
            }
            Fault::Malformed => {
                return Some(
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        "{\"id\": \"broken\", \"choices\": [",
                    )
                        .into_response(),
                );
            }
            _ => {}
        }
    }
    None
}

fn break_after(faults: &[Fault]) -> Option<usize> {
    faults.iter().find_map(|f| match f {
        Fault::BreakStream { after_chunks } => Some(*after_chunks),
        _ => None,
    })
}

/// The pause a stream takes and after how many chunks.
fn stall_of(faults: &[Fault]) -> Option<(usize, Duration)> {
    faults.iter().find_map(|f| match f {
        Fault::StallStream { after_chunks, ms } => {
            Some((*after_chunks, Duration::from_millis(*ms)))
        }
        _ => None,
    })
}

/// An SSE body of `frames`, cut off (connection error) after `cut` frames if given, and
/// silent for a while after some frames if `stall` says so. The cut comes a moment after
/// the last frame so the frames are on the wire first.
fn sse_body(frames: Vec<String>, cut: Option<usize>, stall: Option<(usize, Duration)>) -> Response {
    let total = frames.len();
    let broken = cut.is_some_and(|c| c < total);
    let sent = futures_util::stream::iter(
        frames.into_iter().take(cut.unwrap_or(total)).enumerate(),
    )
    .then(move |(i, f)| async move {
        if let Some((after, pause)) = stall
            && i == after
        {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, std::io::Error>(Bytes::from(f))
    });
    let tail = futures_util::stream::iter(broken.then_some(())).then(|()| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected stream break",
        ))
    });
    let body = sent.chain(tail);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn plan_for(s: &SbState, req: &ChatRequest, headers: &HeaderMap) -> Plan {
    s.engine.plan(req, header_faults(headers))
}

async fn openai_chat(State(s): State<SbState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&s, &headers) {
        return error(401, "invalid_api_key", "Incorrect API key provided", None);
    }
    let wire: openai::OaRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    let openai::InternalRequest {
        request: req,
        stream,
        include_usage,
    } = match openai::request_to_internal(wire) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    let plan = plan_for(&s, &req, &headers);
    if let Some(r) = pre_faults(&plan.faults).await {
        return r;
    }
    let created = chrono::Utc::now().timestamp();
    let resp = plan.response;
    if !stream {
        return axum::Json(openai::response_to_wire(&resp, created)).into_response();
    }
    let mut frames: Vec<String> = response_to_events(&resp)
        .iter()
        .filter(|ev| include_usage || !matches!(ev, super::types::StreamEvent::Usage(_)))
        .filter_map(|ev| openai::event_to_chunk(ev, &resp.id, &resp.model, created))
        .filter_map(|c| serde_json::to_string(&c).ok())
        .map(|d| sse::encode(None, &d))
        .collect();
    if plan.faults.contains(&Fault::Malformed) {
        frames.insert(1, sse::encode(None, "{not json"));
    }
    frames.push(sse::encode(None, "[DONE]"));
    sse_body(frames, break_after(&plan.faults), stall_of(&plan.faults))
}

async fn openai_embeddings(State(s): State<SbState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&s, &headers) {
        return error(401, "invalid_api_key", "Incorrect API key provided", None);
    }
    let wire: openai::OaEmbeddingRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    let (req, base64) = match openai::embedding_request_to_internal(wire) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    let faults = s
        .engine
        .plan_without_answer(&req.model, header_faults(&headers));
    if let Some(r) = pre_faults(&faults).await {
        return r;
    }
    axum::Json(openai::embedding_response_to_wire(
        &super::sandbox::embed(&req),
        base64,
    ))
    .into_response()
}

/// Counts like the sandbox bills: its own estimate of the prompt.
async fn anthropic_count_tokens(
    State(s): State<SbState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&s, &headers) {
        return error(401, "authentication_error", "invalid x-api-key", None);
    }
    let mut wire: anthropic::AnRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    if wire.max_tokens != 0 {
        return error(
            400,
            "invalid_request_error",
            "max_tokens: Extra inputs are not permitted",
            None,
        );
    }
    let faults = s
        .engine
        .plan_without_answer(&wire.model, header_faults(&headers));
    if let Some(r) = pre_faults(&faults).await {
        return r;
    }
    wire.max_tokens = 1;
    match anthropic::request_to_internal(wire) {
        Ok(r) => {
            axum::Json(json!({"input_tokens": r.request.estimated_input_tokens()})).into_response()
        }
        Err(e) => error(400, "invalid_request_error", &e.to_string(), None),
    }
}

async fn anthropic_messages(State(s): State<SbState>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&s, &headers) {
        return error(401, "authentication_error", "invalid x-api-key", None);
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
            None,
        );
    }
    let wire: anthropic::AnRequest = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    let anthropic::InternalRequest {
        request: req,
        stream,
    } = match anthropic::request_to_internal(wire) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request_error", &e.to_string(), None),
    };
    let plan = plan_for(&s, &req, &headers);
    if let Some(r) = pre_faults(&plan.faults).await {
        return r;
    }
    let resp = plan.response;
    if !stream {
        return axum::Json(anthropic::response_to_wire(&resp)).into_response();
    }
    let mut frames: Vec<String> = anthropic::response_to_events(&resp, 12)
        .into_iter()
        .map(|(event, data)| sse::encode(Some(event), &data.to_string()))
        .collect();
    if plan.faults.contains(&Fault::Malformed) {
        frames.insert(1, sse::encode(Some("content_block_delta"), "{not json"));
    }
    sse_body(frames, break_after(&plan.faults), stall_of(&plan.faults))
}
