//! Traces: the crate's `tracing` spans exported over OTLP/HTTP (protobuf), and the W3C
//! trace context carried in and out.
//!
//! Off unless an endpoint is configured ([`crate::config::TracingConfig`]): then no
//! OpenTelemetry layer is installed, the GenAI spans are not even built ([`enabled`] is
//! false), no `traceparent` is read, returned, sent or stored, and the cost is one relaxed
//! atomic load per would-be span.
//!
//! When on, finished spans go to a bounded queue drained by the SDK's batch processor
//! on its own thread; the exports themselves run on the service's runtime. A span that
//! finds the queue full is dropped at once (a request never waits for the collector) and
//! counted in `otel_spans_dropped_total{reason="queue_full"}`; a batch the collector
//! does not take is counted under `reason="export_failed"`.
//!
//! Span names and attributes follow the OpenTelemetry semantic conventions: the HTTP
//! server span, and the GenAI ones (`invoke_agent`, `chat`, `execute_tool`,
//! `embeddings`). Only spans of this crate are exported, never log events (their text
//! is for the redacting logger only); prompts and completions are recorded only when
//! [`capture_content`] is on, and then through the redactor ([`record_content`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use opentelemetry::KeyValue;

use crate::config::{Sampling, TracingConfig};
use crate::telemetry::metrics as m;

static ENABLED: AtomicBool = AtomicBool::new(false);
static CAPTURE_CONTENT: AtomicBool = AtomicBool::new(false);

/// The W3C header carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported (an endpoint is configured and the exporter started).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether prompts and completions are recorded on `chat` spans.
#[inline]
pub fn capture_content() -> bool {
    CAPTURE_CONTENT.load(Ordering::Relaxed)
}

/// The running exporter; [`Tracing::shutdown`] flushes what is queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Starts the exporter when `cfg` names an endpoint; `None` (and tracing stays off)
    /// otherwise. Must run inside the Tokio runtime that will carry the exports.
    pub fn start(cfg: &TracingConfig) -> anyhow::Result<Option<(Tracing, SdkTracer)>> {
        let Some(endpoint) = &cfg.endpoint else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the OTLP HTTP client: {e}"))?;
        let headers: HashMap<String, String> = cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect();
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http)
            .with_endpoint(endpoint.clone())
            .with_timeout(cfg.timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the OTLP exporter: {e}"))?;
        let pending = Arc::new(AtomicUsize::new(0));
        let exporter = CountingExporter {
            inner: Arc::new(otlp),
            pending: pending.clone(),
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| anyhow::anyhow!("tracing must start inside the runtime"))?,
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size as usize)
            .with_max_export_batch_size(cfg.max_export_batch_size as usize)
            .with_scheduled_delay(cfg.schedule_delay)
            .build();
        let processor = BoundedProcessor {
            inner: BatchSpanProcessor::new(exporter, batch),
            pending,
            capacity: cfg.max_queue_size as usize,
        };
        let mut resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes(
                cfg.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        resource = resource.with_service_name(cfg.service_name.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(cfg.sampler))
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("digital-employee");
        ENABLED.store(true, Ordering::Relaxed);
        CAPTURE_CONTENT.store(cfg.capture_content, Ordering::Relaxed);
        Ok(Some((Tracing { provider }, tracer)))
    }

    /// Exports what is queued (bounded by the export timeout) and stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The batch thread waits for its last export, which runs on this runtime: block
        // a blocking-pool thread, not a worker.
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(10)) {
                tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
            }
        })
        .await;
    }
}

fn sampler(s: Sampling) -> Sampler {
    match s {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        Sampling::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Sampling::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// The SDK's batch processor behind a gate that keeps at most `capacity` spans between
/// their end and their export. The SDK drops spans silently when its queue is full; the
/// gate drops them first, so every drop is counted (the SDK's queue, of the same size,
/// then never fills).
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Unsampled spans are not queued by the SDK either.
        if !span.span_context.is_sampled() {
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(m::OTEL_SPANS_DROPPED_TOTAL, "reason" => "queue_full").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, run on the service's runtime (the batch thread has none), with
/// what it sent or lost counted.
#[derive(Debug)]
struct CountingExporter {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    pending: Arc<AtomicUsize>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        // These spans have left the queue: room for as many new ones.
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
        let inner = self.inner.clone();
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(OTelSdkError::InternalFailure(format!(
                "export task ended: {e}"
            ))),
        };
        match &result {
            Ok(()) => metrics::counter!(m::OTEL_SPANS_EXPORTED_TOTAL).increment(n as u64),
            Err(e) => {
                metrics::counter!(m::OTEL_SPANS_DROPPED_TOTAL, "reason" => "export_failed")
                    .increment(n as u64);
                tracing::debug!(error = %e, spans = n, "trace export failed");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // Called while building the provider, before any export shares the exporter.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), when tracing is on
/// and the span is part of a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// The `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes the trace context in `traceparent` the parent of `span` (which must not have
/// been entered yet). A malformed or absent value leaves `span` a root; returns whether
/// it was used.
pub fn set_parent(span: &tracing::Span, traceparent: &str) -> bool {
    if !enabled() || traceparent.len() > 128 {
        return false;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// `req` with the current span's `traceparent`, so the vendor, webhook receiver or MCP
/// server can continue the trace.
pub fn propagate(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match current_traceparent() {
        Some(tp) => req.header(TRACEPARENT, tp),
        None => req,
    }
}

/// The trace and span ids (hex) of the current span, for log lines.
pub fn current_ids() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Adds an event to `span` (retries, fallbacks); `attributes` is only built when tracing
/// is on.
pub fn add_event(
    span: &tracing::Span,
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) {
    if enabled() {
        span.add_event(name, attributes());
    }
}

/// Sets an attribute on `span` outside its `tracing` fields, so it reaches the trace
/// and never a log line.
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// Records prompt or completion text under `key` when content capture is on, after the
/// redactor has removed e-mail addresses, card numbers, credentials and the configured
/// patterns.
pub fn record_content(span: &tracing::Span, key: &'static str, text: impl FnOnce() -> String) {
    if enabled() && capture_content() {
        let text = text();
        let (clean, _) = crate::auth::redact::redact(&text);
        span.set_attribute(key, clean);
    }
}

/// Marks `span` failed with `error.type` (a short class, never a message with data in it).
pub fn set_error(span: &tracing::Span, error_type: &str) {
    if enabled() {
        span.set_attribute("error.type", error_type.to_string());
        span.set_status(opentelemetry::trace::Status::error(error_type.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_follows_the_setting() {
        assert!(matches!(
            sampler(Sampling::ParentBasedTraceIdRatio(0.5)),
            Sampler::ParentBased(_)
        ));
        assert!(matches!(
            sampler(Sampling::TraceIdRatio(0.1)),
            Sampler::TraceIdRatioBased(r) if (r - 0.1).abs() < f64::EPSILON
        ));
    }

    #[test]
    fn nothing_is_propagated_while_tracing_is_off() {
        // Tracing is never started in unit tests.
        let span = tracing::info_span!("x");
        assert!(traceparent_of(&span).is_none());
        assert!(!set_parent(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(current_ids().is_none());
    }
}
