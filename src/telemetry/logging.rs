//! JSON-lines logging.
//!
//! Each line is one JSON object: `timestamp` (RFC 3339, UTC), `level`, `message`,
//! `target`, then the fields of the enclosing spans, then `request_id` on every line
//! logged while serving a request ([`REQUEST`]), then the event's own fields. The log
//! analyzer reads exactly these names. A name appears once: an event's field wins over a span's,
//! an inner span's over an outer's, and a field may not take one of the line's own keys.
//! Lines are written straight from the fields into a reused buffer, without an
//! intermediate JSON value.
//!
//! Every string value is passed through the redactor (`auth::redact`) before the line is
//! written: e-mail addresses, card numbers, SSNs, credentials, configured patterns and the
//! values of configured secrets never reach the output, whatever a caller logs.

use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global JSON logger on stdout (buffered: [`super::log_sink`]). `level` is
/// a tracing filter such as `info`; noisy dependencies are held at `warn` unless the
/// filter names them.
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
        .with(JsonLayer::new(super::log_sink::Buffered::stdout()))
        .with(otel)
        .try_init();
    // A panicking thread's last lines are written before the panic's own report.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            super::log_sink::flush();
            previous(info);
        }));
    });
}

tokio::task_local! {
    /// The request being served: set by the API's request middleware around the
    /// request's future, so every line logged while serving it carries its
    /// `request_id` (without a span per request, see [`JsonLayer`]) and every error
    /// built for it can name it.
    pub static REQUEST: RequestScope;
}

/// A request's id, and the id as log lines print it (redacted, as every logged string).
pub struct RequestScope {
    id: String,
    logged: String,
}

impl RequestScope {
    /// An id the caller sent: redacted for the log lines like any text from outside.
    pub fn new(id: String) -> Self {
        let logged = redacted(id.clone(), false);
        Self { id, logged }
    }

    /// An id the service minted (a UUID), which has nothing to redact.
    pub fn minted(id: String) -> Self {
        Self {
            logged: id.clone(),
            id,
        }
    }

    /// The id as the caller sent it or as it was minted.
    pub fn id(&self) -> &str {
        &self.id
    }
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

/// Fields recorded on a span, kept in its extensions: names as `tracing` gives them,
/// string values already redacted (the redactor is fixed once the process has read it).
struct SpanFields(Vec<(&'static str, FieldValue)>);

/// One field's value, as the line will print it.
enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl FieldValue {
    fn write(&self, out: &mut Vec<u8>) {
        // Writing JSON scalars into a Vec cannot fail.
        let _ = match self {
            FieldValue::Str(s) => serde_json::to_writer(&mut *out, s.as_str()),
            FieldValue::I64(n) => serde_json::to_writer(&mut *out, n),
            FieldValue::U64(n) => serde_json::to_writer(&mut *out, n),
            FieldValue::F64(n) => serde_json::to_writer(&mut *out, n),
            FieldValue::Bool(b) => serde_json::to_writer(&mut *out, b),
        };
    }
}

/// Collects fields; a name recorded twice keeps its last value. With `keep_dotted` false,
/// trace-only (dotted) names are dropped as they come.
struct Collect<'a> {
    fields: &'a mut Vec<(&'static str, FieldValue)>,
    keep_dotted: bool,
}

impl Collect<'_> {
    fn put(&mut self, name: &'static str, value: FieldValue) {
        if !self.keep_dotted && !log_field(name) {
            return;
        }
        let value = match value {
            FieldValue::Str(text) => FieldValue::Str(redacted(text, true)),
            other => other,
        };
        match self.fields.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
    }
}

/// How many strings each thread remembers as clean ([`CLEAN`]), and the longest.
const CLEAN_KEPT: usize = 8;
const CLEAN_MAX_LEN: usize = 128;

thread_local! {
    /// Short strings this thread's lines carried lately that the redactor left as they
    /// were, and where the next one goes: an access log repeats its method, path and
    /// message line after line, and a repeat skips the redactor's scan (the redactor is
    /// fixed for the process's life). Only strings with nothing to redact are kept.
    static CLEAN: std::cell::RefCell<(Vec<String>, usize)> =
        const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// `text` with whatever the process-wide redactor finds replaced. With `remember`, a
/// short text with nothing to redact is remembered ([`CLEAN`]); a text seen once per
/// request, such as a request id, is redacted without, so as not to push those out.
fn redacted(text: String, remember: bool) -> String {
    let short = remember && text.len() <= CLEAN_MAX_LEN;
    if short
        && CLEAN
            .try_with(|c| c.borrow().0.contains(&text))
            .unwrap_or(false)
    {
        return text;
    }
    let (clean, n) = crate::auth::redact::global().redact_cow(&text);
    if n == 0 {
        if short {
            let _ = CLEAN.try_with(|c| {
                let (kept, next) = &mut *c.borrow_mut();
                if kept.len() < CLEAN_KEPT {
                    kept.push(text.clone());
                } else {
                    kept[*next] = text.clone();
                    *next = (*next + 1) % CLEAN_KEPT;
                }
            });
        }
        return text;
    }
    clean.into_owned()
}

impl Visit for Collect<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), FieldValue::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), FieldValue::Str(value.to_owned()));
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
        self.put(field.name(), FieldValue::Str(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), FieldValue::Str(format!("{value:?}")));
    }
}

/// The keys every line has; fields of the same name never replace them.
const LINE_KEYS: [&str; 6] = [
    "timestamp",
    "level",
    "message",
    "target",
    "trace_id",
    "span_id",
];

/// Writes `"key":` (with the separating comma) into `out`.
fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
}

thread_local! {
    /// Each thread's line buffer, reused from line to line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
        let mut fields = Vec::new();
        attrs.record(&mut Collect {
            fields: &mut fields,
            keep_dotted: false,
        });
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
            values.record(&mut Collect {
                fields,
                keep_dotted: false,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut own = Vec::with_capacity(8);
        event.record(&mut Collect {
            fields: &mut own,
            keep_dotted: true,
        });
        // Read before any span's extensions are borrowed below (the trace layer locks them).
        let ids = super::traces::current_ids();
        let write_line = |out: &mut Vec<u8>| {
            out.clear();
            out.extend_from_slice(b"{\"timestamp\":\"");
            crate::store::timestamp::push_rfc3339_micros(out, &chrono::Utc::now());
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(meta.level().as_str().as_bytes());
            out.push(b'"');
            key(out, "message");
            match own.iter().find(|(k, _)| *k == "message") {
                Some((_, value)) => value.write(out),
                None => out.extend_from_slice(b"\"\""),
            }
            key(out, "target");
            let _ = serde_json::to_writer(&mut *out, meta.target());
            // The event's own fields win over its spans', an inner span's over an outer's.
            let mut written: Vec<&'static str> = Vec::with_capacity(16);
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    let ext = span.extensions();
                    let Some(SpanFields(fields)) = ext.get::<SpanFields>() else {
                        continue;
                    };
                    for (name, value) in fields {
                        if LINE_KEYS.contains(name)
                            || written.contains(name)
                            || own.iter().any(|(k, _)| k == name)
                        {
                            continue;
                        }
                        written.push(name);
                        key(out, name);
                        value.write(out);
                    }
                }
            }
            // The request being served, as if from an outermost span: a span's or the
            // event's own `request_id` wins.
            if !written.contains(&"request_id") && !own.iter().any(|(k, _)| *k == "request_id") {
                let _ = REQUEST.try_with(|r| {
                    key(out, "request_id");
                    let _ = serde_json::to_writer(&mut *out, r.logged.as_str());
                });
            }
            if let Some((trace_id, span_id)) = &ids {
                key(out, "trace_id");
                let _ = serde_json::to_writer(&mut *out, trace_id);
                key(out, "span_id");
                let _ = serde_json::to_writer(&mut *out, span_id);
            }
            for (name, value) in &own {
                if LINE_KEYS.contains(name) {
                    continue;
                }
                key(out, name);
                value.write(out);
            }
            out.extend_from_slice(b"}\n");
            // One write per line so concurrent lines never interleave.
            let _ = self.make_writer.make_writer_for(meta).write_all(out);
        };
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut buf) => {
                write_line(&mut buf);
                // A rare huge line does not keep its buffer for the thread's lifetime.
                if buf.capacity() > 64 * 1024 {
                    *buf = Vec::new();
                }
            }
            // A line logged while this thread writes one (from inside the writer).
            Err(_) => write_line(&mut Vec::new()),
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    /// A shared byte vector as an output (also the log sink's tests').
    #[derive(Clone, Default)]
    pub(crate) struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        /// What has been written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap_or_default()
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn repeated_strings_are_redacted_alike() {
        let secret = "key de_0123456789ab_s3cr3tValue here";
        for _ in 0..3 {
            assert_eq!(
                redacted("/v1/chat/completions".into(), true),
                "/v1/chat/completions"
            );
            let out = redacted(secret.into(), true);
            assert!(!out.contains("s3cr3tValue"), "{out}");
        }
        // More clean strings than are kept, then the first again: still itself.
        for i in 0..2 * CLEAN_KEPT {
            assert_eq!(
                redacted(format!("/v1/tasks/{i}"), true),
                format!("/v1/tasks/{i}")
            );
        }
        assert_eq!(redacted("/v1/tasks/0".into(), true), "/v1/tasks/0");
        let kept = CLEAN.with(|c| c.borrow().0.clone());
        assert!(kept.len() <= CLEAN_KEPT);
        assert!(kept.iter().all(|k| !k.contains("s3cr3t")), "{kept:?}");
    }

    #[test]
    fn keys_are_written_as_json_strings() {
        let mut out = Vec::new();
        key(&mut out, "request_id");
        key(&mut out, "http.status");
        key(&mut out, "odd\"name\\");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#","request_id":,"http.status":,"odd\"name\\":"#
        );
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
    fn each_name_once_with_the_nearest_value() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("outer", who = "outer", only_outer = 1u64);
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", who = "inner", step = 1u64);
            let _i = inner.enter();
            inner.record("step", 2u64);
            tracing::info!(
                step = 3u64,
                level = "mine",
                quote = "a \"b\"\n\tc\u{1}",
                "m"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["who"], "inner", "{text}");
        assert_eq!(line["only_outer"], 1, "{text}");
        assert_eq!(line["step"], 3, "{text}");
        assert_eq!(line["level"], "INFO", "{text}");
        assert_eq!(line["quote"], "a \"b\"\n\tc\u{1}", "{text}");
        assert_eq!(line["message"], "m");
        for name in ["who", "step", "level", "message"] {
            assert_eq!(
                text.matches(&format!("\"{name}\":")).count(),
                1,
                "{name} in {text}"
            );
        }
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
