//! Traces end to end: two `serve` processes on one PostgreSQL database export to an
//! OTLP/HTTP receiver started here, which decodes the real protobuf. A task submitted on
//! replica A (workers off) runs on replica B (a tool call, a vendor fallback); the spans
//! of both carry the caller's trace id. A third process exports to a closed port and
//! serves as usual.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Value, json};

use common::{Backend, TestDb, process};

const KEY: &str = "traces-admin-key-0123456789";
/// The caller's trace: every span of the task must carry it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// Text only the prompt holds: it must reach no exported span.
const PROMPT_MARK: &str = "zebra-quartz-prompt-mark";

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    parent: String,
    attrs: HashMap<String, String>,
    events: Vec<(String, HashMap<String, String>)>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| text(&Some(v.clone())))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

fn map(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

async fn otlp(
    State(r): State<Receiver>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    r.raw.lock().unwrap().extend_from_slice(&body);
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut out = r.spans.lock().unwrap();
    for rs in req.resource_spans {
        let res = map(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        let service = res.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Got {
                    service: service.clone(),
                    name: s.name.clone(),
                    trace_id: hex::encode(&s.trace_id),
                    parent: hex::encode(&s.parent_span_id),
                    attrs: map(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), map(&e.attributes)))
                        .collect(),
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn start_receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(otlp))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

/// The sandbox vendor over HTTP, remembering the `traceparent` of each request.
async fn start_vendor() -> (String, Arc<Mutex<Vec<String>>>) {
    let engine = Arc::new(SandboxEngine::default());
    engine.apply(SandboxSetup {
        seed: Some(1),
        faults: vec![FaultRule {
            model: Some("flaky".into()),
            fault: Fault::Status {
                status: 503,
                retry_after: None,
                message: None,
            },
            times: None,
            rate: None,
        }],
        scripts: HashMap::new(),
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let app = digital_employee::ai::sandbox_server::router(engine, Some("sk-v".into())).layer(
        axum::middleware::from_fn(move |req: Request, next: Next| {
            let seen = seen2.clone();
            async move {
                if let Some(tp) = req.headers().get("traceparent") {
                    seen.lock().unwrap().push(tp.to_str().unwrap().to_string());
                }
                next.run(req).await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let providers =
        json!([{"name": "vendor", "format": "openai", "base_url": base, "api_key": "sk-v"}]);
    (providers.to_string(), seen)
}

struct Server {
    api: String,
    metrics: String,
    process: process::Server,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        let mut all = vec![
            ("API_KEY_WHITELIST", KEY),
            ("EGRESS_ALLOW_CIDRS", "127.0.0.1/32"),
            ("AI_SERVICE_RETRY_COUNT", "1"),
            ("AI_SERVICE_RETRY_DELAY", "0"),
            ("AI_CACHE", "off"),
            ("TASK_POLL_INTERVAL", "0.1"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ];
        // Later entries win: the caller's settings over these.
        all.extend_from_slice(env);
        let process = process::Server::start(&process::temp_dir(), &all);
        Server {
            api: format!("http://{}", process.api),
            metrics: format!("http://{}/metrics", process.metrics),
            process,
        }
    }

    /// The JSON log lines written since the last call.
    fn lines(&self) -> Vec<Value> {
        self.process
            .remaining_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

async fn poll<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_employee(http: &reqwest::Client, api: &str) {
    let r = http
        .post(format!("{api}/v1/employees"))
        .header("x-api-key", KEY)
        .json(&json!({"name": "calc", "role": "a careful accountant",
                      "allowed_tools": ["calculator"],
                      "model_policy": ["vendor/flaky", "vendor/steady"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

async fn wait_succeeded(http: &reqwest::Client, api: &str, id: &str) {
    poll("the task to succeed", Duration::from_secs(60), || async {
        let v: Value = http
            .get(format!("{api}/v1/tasks/{id}"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(v["status"], "failed", "{v}");
        v["status"] == "succeeded"
    })
    .await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_submit_on_one_replica_to_the_run_on_another() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    db.migrated_store().await;
    let (otlp_url, received) = start_receiver().await;
    let (providers, vendor_seen) = start_vendor().await;
    let common = [
        ("DATABASE_URL", db.url.as_str()),
        ("AI_PROVIDERS", providers.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url.as_str()),
    ];
    let mut env_a = common.to_vec();
    env_a.extend([
        ("OTEL_SERVICE_NAME", "replica-a"),
        ("WORKERS_ENABLED", "off"),
    ]);
    let a = Server::start(&env_a);
    let mut env_b = common.to_vec();
    env_b.extend([("OTEL_SERVICE_NAME", "replica-b")]);
    let b = Server::start(&env_b);
    let http = reqwest::Client::new();

    create_employee(&http, &a.api).await;
    let r = http
        .post(format!("{}/v1/tasks", a.api))
        .header("x-api-key", KEY)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"employee": "calc",
                      "input": format!("What is 2 + 3 * 4? {PROMPT_MARK}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The answer names the server span, in the caller's trace.
    let returned = r.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(
        returned.starts_with(&format!("00-{TRACE_ID}-")),
        "{returned}"
    );
    assert!(!returned.contains(CALLER_SPAN));
    let task: Value = r.json().await.unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    wait_succeeded(&http, &a.api, &id).await;

    let wanted = |spans: &[Got]| {
        let has = |svc: &str, prefix: &str| {
            spans
                .iter()
                .any(|s| s.service == svc && s.name.starts_with(prefix))
        };
        has("replica-a", "POST /v1/tasks")
            && has("replica-a", "submit_task")
            && has("replica-b", "invoke_agent")
            && has("replica-b", "chat")
            && has("replica-b", "execute_tool")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wanted(&received.spans.lock().unwrap()) {
        if Instant::now() > deadline {
            let got: Vec<(String, String)> = received
                .spans
                .lock()
                .unwrap()
                .iter()
                .map(|s| (s.service.clone(), s.name.clone()))
                .collect();
            panic!("timed out waiting for the spans of both replicas; got {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = received.spans.lock().unwrap().clone();
    let ours: Vec<&Got> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let by = |svc: &str, prefix: &str| -> Vec<&Got> {
        ours.iter()
            .copied()
            .filter(|s| s.service == svc && s.name.starts_with(prefix))
            .collect()
    };

    // One trace across both replicas, from the caller's span down.
    let server = by("replica-a", "POST /v1/tasks");
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(server[0].parent, CALLER_SPAN);
    assert_eq!(server[0].attrs["http.route"], "/v1/tasks");
    assert_eq!(server[0].attrs["http.response.status_code"], "202");
    assert_eq!(by("replica-a", "submit_task").len(), 1);
    let agents = by("replica-b", "invoke_agent");
    assert_eq!(agents.len(), 1, "{spans:#?}");
    assert_eq!(agents[0].name, "invoke_agent calc");
    assert_eq!(agents[0].attrs["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(agents[0].attrs["gen_ai.agent.name"], "calc");

    // Two model calls (the tool call, then the answer), each falling back from `flaky`.
    let chats = by("replica-b", "chat");
    assert_eq!(chats.len(), 2, "{chats:#?}");
    for c in &chats {
        assert_eq!(c.name, "chat flaky");
        assert_eq!(c.attrs["gen_ai.operation.name"], "chat");
        assert_eq!(c.attrs["gen_ai.system"], "vendor");
        assert_eq!(c.attrs["gen_ai.request.model"], "flaky");
        assert_eq!(c.attrs["gen_ai.response.model"], "steady");
        assert!(c.attrs["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
        assert!(
            c.attrs["gen_ai.usage.output_tokens"]
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert!(c.attrs.contains_key("gen_ai.response.finish_reasons"));
        let names: Vec<&str> = c.events.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"gen_ai.retry"), "{names:?}");
        assert!(names.contains(&"gen_ai.fallback"), "{names:?}");
        let fb = &c
            .events
            .iter()
            .find(|(n, _)| n == "gen_ai.fallback")
            .unwrap()
            .1;
        assert_eq!(fb["gen_ai.request.model"], "steady");
    }
    let finish: Vec<&str> = chats
        .iter()
        .map(|c| c.attrs["gen_ai.response.finish_reasons"].as_str())
        .collect();
    assert!(
        finish.contains(&"tool_calls") && finish.contains(&"stop"),
        "{finish:?}"
    );
    let tools = by("replica-b", "execute_tool");
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "execute_tool calculator");
    assert_eq!(tools[0].attrs["gen_ai.tool.name"], "calculator");
    assert_eq!(tools[0].attrs["tool.outcome"], "ok");

    // No prompt or completion text without OTEL_GENAI_CAPTURE_CONTENT.
    let raw = received.raw.lock().unwrap().clone();
    assert!(
        !raw.windows(PROMPT_MARK.len())
            .any(|w| w == PROMPT_MARK.as_bytes()),
        "the prompt reached the collector"
    );
    assert!(
        chats
            .iter()
            .all(|c| !c.attrs.contains_key("gen_ai.input.messages"))
    );

    // The vendor was asked inside the trace.
    let seen = vendor_seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(
        seen.iter()
            .all(|t| t.starts_with(&format!("00-{TRACE_ID}-"))),
        "{seen:?}"
    );

    // Log lines of the run carry the trace.
    let lines = b.lines();
    assert!(
        lines
            .iter()
            .any(|l| l["trace_id"] == TRACE_ID && l["span_id"].is_string()),
        "no log line of replica B carries the trace id"
    );
    drop(a);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_changes_nothing_for_the_caller() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    db.migrated_store().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let endpoint = format!("http://{closed}");
    let (providers, _) = start_vendor().await;
    let s = Server::start(&[
        ("DATABASE_URL", db.url.as_str()),
        ("AI_PROVIDERS", providers.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
    ]);
    let http = reqwest::Client::new();
    create_employee(&http, &s.api).await;
    let r = http
        .post(format!("{}/v1/tasks", s.api))
        .header("x-api-key", KEY)
        .json(&json!({"employee": "calc", "input": "What is 2 + 3 * 4?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers().contains_key("traceparent"));
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_succeeded(&http, &s.api, &id).await;
    // The lost batches are counted.
    poll(
        "failed exports to be counted",
        Duration::from_secs(30),
        || async {
            let text = http
                .get(&s.metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric(&text, "otel_spans_dropped_total{reason=\"export_failed\"}") > 0.0
        },
    )
    .await;
}
