//! The GenAI spans of the router (OpenTelemetry semantic conventions): one `chat` or
//! `embeddings` span per routed call, covering its retries and fallbacks (recorded as
//! the span's events), with the provider that answered, the model asked for and the
//! model that answered, token usage and finish reasons. Prompt and completion text
//! only with content capture on, redacted (see `telemetry::traces`).

use tracing::Span;
use tracing::field::Empty;

use super::router::{Routed, RoutedEmbedding, RoutedStream};
use super::types::{ChatRequest, ChatResponse};
use crate::telemetry::traces::{self, KeyValue};

/// A `chat` or `embeddings` span over `candidates` (the first is the model asked for).
pub(super) fn start(operation: &'static str, candidates: &[String]) -> Span {
    let model = candidates
        .first()
        .map(|c| c.split_once('/').map_or(c.as_str(), |(_, m)| m))
        .unwrap_or_default();
    tracing::info_span!(
        "gen_ai",
        otel.name = %format!("{operation} {model}"),
        otel.kind = "client",
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
        gen_ai.system = Empty,
        gen_ai.provider.name = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.cache_hit = Empty,
        gen_ai.failed_attempts = Empty,
    )
}

/// The prompt, when content capture is on.
pub(super) fn prompt(span: &Span, req: &ChatRequest) {
    traces::record_content(span, "gen_ai.input.messages", || {
        serde_json::to_string(&req.messages).unwrap_or_default()
    });
}

fn provider(span: &Span, provider: &str, response_model: &str) {
    span.record("gen_ai.system", provider);
    span.record("gen_ai.provider.name", provider);
    span.record("gen_ai.response.model", response_model);
}

fn answer(span: &Span, r: &ChatResponse) {
    span.record("gen_ai.response.id", r.id.as_str());
    span.record("gen_ai.usage.input_tokens", r.usage.input_tokens);
    span.record("gen_ai.usage.output_tokens", r.usage.output_tokens);
    let reason = serde_json::to_value(r.finish_reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    traces::set_attribute(
        span,
        "gen_ai.response.finish_reasons",
        opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(reason)].into()),
    );
    traces::record_content(span, "gen_ai.output.messages", || {
        serde_json::json!([{
            "role": "assistant",
            "content": r.content,
            "tool_calls": r.tool_calls,
        }])
        .to_string()
    });
}

/// What a chat call returned.
pub(super) fn chat_done<E>(span: &Span, out: &Result<Routed, E>) {
    match out {
        Ok(r) => {
            provider(span, &r.provider, &r.response.model);
            span.record("gen_ai.cache_hit", r.cache_hit);
            span.record("gen_ai.failed_attempts", r.failed_attempts.len() as u64);
            answer(span, &r.response);
        }
        Err(_) => traces::set_error(span, "all_candidates_failed"),
    }
}

/// A stream's start (usage and finish come with its end, in the accounting).
pub(super) fn stream_started<E>(span: &Span, out: &Result<RoutedStream, E>) {
    match out {
        Ok(r) => {
            provider(span, &r.provider, &r.model);
            span.record("gen_ai.failed_attempts", r.failed_attempts.len() as u64);
        }
        Err(_) => traces::set_error(span, "all_candidates_failed"),
    }
}

/// What an embeddings call returned.
pub(super) fn embed_done<E>(span: &Span, out: &Result<RoutedEmbedding, E>) {
    match out {
        Ok(r) => {
            provider(span, &r.provider, &r.response.model);
            span.record("gen_ai.usage.input_tokens", r.response.usage.input_tokens);
        }
        Err(_) => traces::set_error(span, "all_candidates_failed"),
    }
}

/// A failed attempt that will be retried on the same candidate.
pub(super) fn retry(provider: &str, model: &str, attempt: u32, error: &str) {
    traces::add_event(&Span::current(), "gen_ai.retry", || {
        vec![
            KeyValue::new("gen_ai.provider.name", provider.to_string()),
            KeyValue::new("gen_ai.request.model", model.to_string()),
            KeyValue::new("retry.attempt", i64::from(attempt)),
            KeyValue::new("error.type", error.to_string()),
        ]
    });
}

/// The call moves on to the next candidate after `failed` attempts.
pub(super) fn fallback(provider: &str, model: &str, failed: usize) {
    traces::add_event(&Span::current(), "gen_ai.fallback", || {
        vec![
            KeyValue::new("gen_ai.provider.name", provider.to_string()),
            KeyValue::new("gen_ai.request.model", model.to_string()),
            KeyValue::new("gen_ai.failed_attempts", failed as i64),
        ]
    });
}
