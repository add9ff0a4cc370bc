//! JSON-lines logging.
//!
//! Each line is one JSON object: `timestamp` (RFC 3339, UTC), `level`, `message`,
//! `target`, then the fields of the enclosing spans (so `request_id` appears on every
//! line logged while serving a request), then the event's own fields. The log analyzer
//! reads exactly these names.
//!
//! Every string value is passed through the redactor (`auth::redact`) before the line is
//! written: e-mail addresses, card numbers, SSNs, credentials, configured patterns and the
//! values of configured secrets never reach the output, whatever a caller logs.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global JSON logger on stdout. `level` is a tracing filter such as
/// `info`; noisy dependencies are held at `warn` unless the filter names them.
/// Calling it twice is harmless (the first logger stays).
pub fn init(level: &str) {
    init_with_traces(level, None);
}

/// [`init`], and with a tracer the spans the log filter lets through go to it as well
/// (the crate's are at `info`: a `LOG_LEVEL` of `warn` or `error` leaves no trace).
/// Events never do: log text stays with the redacting logger.
///
/// One filter for both layers, on purpose: with a per-layer filter on each, spans opened
/// while a new database connection was being established were never closed for the
/// trace layer (they stayed open as long as the connection lived).
pub fn init_with_traces(level: &str, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    let directives = format!("warn,digital_employee={level},{level}");
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_context_activation(false)
            // Spans only: log events carry free text, which stays with the redacting
            // logger.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(JsonLayer::new(std::io::stdout))
        .with(otel)
        .try_init();
}

/// Span fields that are trace attributes only.
fn log_field(name: &str) -> bool {
    !name.contains('.')
}

/// A `tracing` layer that writes one JSON object per event.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, outermost first.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().into(), Value::from(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        fields.retain(|k, _| log_field(k));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
            fields.retain(|k, _| log_field(k));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("message".into(), Value::from(""));
        line.insert("target".into(), Value::from(meta.target()));
        // Read before any span's extensions are borrowed below (the trace layer locks them).
        let ids = super::traces::current_ids();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (k, v) in fields {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if let Some((trace_id, span_id)) = ids {
            line.insert("trace_id".into(), Value::from(trace_id));
            line.insert("span_id".into(), Value::from(span_id));
        }
        event.record(&mut JsonVisitor(&mut line));
        let redactor = crate::auth::redact::global();
        for (key, value) in line.iter_mut() {
            if matches!(
                key.as_str(),
                "timestamp" | "level" | "target" | "trace_id" | "span_id"
            ) {
                continue;
            }
            if let Value::String(text) = value {
                let (clean, n) = redactor.redact_cow(text);
                if n > 0 {
                    *text = clean.into_owned();
                }
            }
        }
        let mut bytes = match serde_json::to_vec(&Value::Object(line)) {
            Ok(b) => b,
            Err(_) => return,
        };
        bytes.push(b'\n');
        // One write per line so concurrent lines never interleave.
        let _ = self.make_writer.make_writer().write_all(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn lines_carry_span_and_event_fields() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "req-1", method = "GET");
            let _g = span.enter();
            tracing::info!(
                status_code = 200u64,
                response_time = 0.25,
                "request completed"
            );
            tracing::warn!("second line");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "request completed");
        assert_eq!(first["request_id"], "req-1");
        assert_eq!(first["method"], "GET");
        assert_eq!(first["status_code"], 200);
        assert_eq!(first["response_time"], 0.25);
        assert!(chrono::DateTime::parse_from_rfc3339(first["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["level"], "WARN");
        assert!(
            first.get("trace_id").is_none(),
            "no trace ids while tracing is off"
        );
        assert_eq!(lines[1]["request_id"], "req-1");
    }

    #[test]
    fn dotted_span_fields_stay_out_of_log_lines() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "chat",
                request_id = "r",
                gen_ai.request.model = "m",
                otel.kind = "client",
                gen_ai.usage.input_tokens = tracing::field::Empty
            );
            span.record("gen_ai.usage.input_tokens", 3u64);
            let _g = span.enter();
            tracing::info!("x");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["request_id"], "r");
        assert!(line.get("gen_ai.request.model").is_none(), "{text}");
        assert!(line.get("otel.kind").is_none(), "{text}");
        assert!(line.get("gen_ai.usage.input_tokens").is_none(), "{text}");
    }

    #[test]
    fn string_values_are_redacted() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", caller = "ada@example.com");
            let _g = span.enter();
            tracing::info!(
                card = "4111 1111 1111 1111",
                order = "order 1234567890123",
                "sent to bob@example.org with Bearer abc.def"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        for gone in ["ada@example.com", "bob@example.org", "4111 1111", "abc.def"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(text.contains("order 1234567890123"), "{text}");
        assert!(text.contains("[REDACTED_EMAIL]"));
    }
}
