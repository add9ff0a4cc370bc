//! The gateway's other protocols over real HTTP, backed by the sandbox vendor in both of
//! its wire formats: Anthropic Messages in (`/v1/messages`, streaming event order, tools,
//! stop sequences, count_tokens, error shape), OpenAI Responses (`/v1/responses`, stored
//! per tenant, `previous_response_id`, streaming event order), embeddings and the model
//! list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{ADMIN_KEY, Backend, TestApp};
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use digital_employee::store::DEFAULT_TENANT_ID;
use serde_json::{Value, json};

const VENDOR_KEY: &str = "sk-sandbox-protocols";

/// A sandbox vendor on a loopback port, speaking both wire formats.
struct Vendor {
    base: String,
    engine: Arc<SandboxEngine>,
    _task: tokio::task::JoinHandle<()>,
}

impl Vendor {
    async fn start() -> Vendor {
        let engine = Arc::new(SandboxEngine::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app =
            digital_employee::ai::sandbox_server::router(engine.clone(), Some(VENDOR_KEY.into()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Vendor {
            base,
            engine,
            _task: task,
        }
    }

    /// `AI_PROVIDERS` naming this vendor twice: `sbopenai` (OpenAI format) and
    /// `sbclaude` (Anthropic format).
    fn providers(&self) -> String {
        json!([
            {"name": "sbopenai", "format": "openai", "base_url": format!("{}/v1", self.base),
             "api_key": VENDOR_KEY},
            {"name": "sbclaude", "format": "anthropic", "base_url": self.base,
             "api_key": VENDOR_KEY},
        ])
        .to_string()
    }

    /// Every request for `model` meets `fault` (the run's other rules are replaced).
    fn fault_always(&self, model: &str, fault: Fault) {
        self.engine.apply(SandboxSetup {
            seed: Some(1),
            faults: vec![FaultRule {
                model: Some(model.into()),
                fault,
                times: None,
                rate: None,
            }],
            scripts: HashMap::new(),
        });
    }

    fn count(&self, model: &str) -> u64 {
        self.engine.stats().get(model).copied().unwrap_or(0)
    }
}

async fn app_with(backend: Backend, vendor: &Vendor) -> Option<TestApp> {
    let providers = vendor.providers();
    let aliases = json!({
        "fast": ["sbopenai/sandbox-1"],
        "embedder": ["sbclaude/sandbox-embed", "sbopenai/text-embedding-3-small"],
    })
    .to_string();
    TestApp::spawn_with(
        backend,
        &[
            ("AI_PROVIDERS", &providers),
            ("AI_MODEL_ALIASES", &aliases),
            ("AI_SERVICE_RETRY_DELAY", "0"),
            ("AI_SERVICE_RETRY_COUNT", "0"),
            ("AI_CACHE", "off"),
        ],
    )
    .await
}

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    event: Option<String>,
    data: String,
}

fn parse_sse(body: &str) -> Vec<Sse> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut ev = Sse {
                event: None,
                data: String::new(),
            };
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    ev.event = Some(e.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    ev.data.push_str(d.trim_start());
                }
            }
            ev
        })
        .collect()
}

fn calc_tool() -> Value {
    json!({"name": "calculator", "description": "Evaluates arithmetic",
        "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}},
            "required": ["expression"]}})
}

async fn post_messages(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .header("x-api-key", ADMIN_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A tool-use round trip, a stop sequence and a stream through one provider.
async fn messages_through(app: &TestApp, model: &str) {
    // 1. The model asks for the tool.
    let ask = json!({"role": "user", "content": "What is 6 * 7? Use the calculator."});
    let r = post_messages(
        app,
        &json!({"model": model, "max_tokens": 200, "system": "You are exact.",
            "messages": [ask], "tools": [calc_tool()], "tool_choice": {"type": "any"}}),
    )
    .await;
    assert_eq!(r.status(), 200, "{model}");
    assert!(
        r.headers()["x-de-model"]
            .to_str()
            .unwrap()
            .ends_with("sandbox-1")
    );
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["type"], "message");
    assert_eq!(first["role"], "assistant");
    assert!(first["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(first["stop_reason"], "tool_use", "{first}");
    let tool_use = first["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(tool_use["name"], "calculator");
    assert_eq!(tool_use["input"]["expression"], "6 * 7");
    assert!(first["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // 2. The tool result goes back; the model answers from it.
    let r = post_messages(
        app,
        &json!({"model": model, "max_tokens": 200, "messages": [
            ask,
            {"role": "assistant", "content": first["content"]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "42"}]}
        ], "tools": [calc_tool()]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["stop_reason"], "end_turn");
    assert!(
        second["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("42"),
        "{second}"
    );

    // 3. A stop sequence ends the answer where it appears.
    let r = post_messages(
        app,
        &json!({"model": model, "max_tokens": 200, "stop_sequences": ["STOP"],
            "messages": [{"role": "user", "content": "say this then STOP and more"}]}),
    )
    .await;
    let stopped: Value = r.json().await.unwrap();
    let text = stopped["content"][0]["text"].as_str().unwrap();
    assert!(text.ends_with("say this then "), "{text}");
    if model.starts_with("sbclaude/") {
        // Only the Anthropic format says which sequence stopped it.
        assert_eq!(stopped["stop_reason"], "stop_sequence");
        assert_eq!(stopped["stop_sequence"], "STOP");
    } else {
        assert_eq!(stopped["stop_reason"], "end_turn");
    }

    // 4. Streamed: every event type, in the API's order.
    let r = post_messages(
        app,
        &json!({"model": model, "max_tokens": 200, "stream": true,
            "messages": [ask], "tools": [calc_tool()], "tool_choice": {"type": "any"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&r.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let datas: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    for (k, d) in kinds.iter().zip(&datas) {
        assert_eq!(d["type"], *k, "the event name is the data's type");
    }
    assert_eq!(
        &kinds[..3],
        ["message_start", "ping", "content_block_start"]
    );
    assert_eq!(datas[2]["content_block"]["type"], "tool_use");
    let n = kinds.len();
    assert_eq!(
        &kinds[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(kinds[3..n - 3].iter().all(|k| *k == "content_block_delta"));
    let json_text: String = datas[3..n - 3]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    let input: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(input["expression"], "6 * 7");
    assert_eq!(datas[n - 2]["delta"]["stop_reason"], "tool_use");
    assert!(datas[n - 2]["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(datas[n - 2]["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_served_by_either_vendor_format() {
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    messages_through(&app, "sbopenai/sandbox-1").await;
    let openai_calls = vendor.count("sandbox-1");
    assert_eq!(openai_calls, 4, "one vendor call per request");
    messages_through(&app, "sbclaude/sandbox-1").await;
    assert_eq!(vendor.count("sandbox-1"), 8);
    // The in-process sandbox and an alias serve it too; bearer auth works as well.
    for model in ["sandbox-1", "fast"] {
        let r = app
            .client
            .post(app.url("/v1/messages"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"model": model, "max_tokens": 50,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["content"][0]["type"], "text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_errors_take_anthropics_shape() {
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    let shape = |v: &Value, kind: &str| {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(v["request_id"].as_str().is_some_and(|m| !m.is_empty()));
    };
    // No key.
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    shape(&r.json().await.unwrap(), "authentication_error");
    // Missing max_tokens, unknown model, an image block, malformed JSON: 400.
    let ok_msgs = json!([{"role": "user", "content": "hi"}]);
    for (body, needle) in [
        (
            json!({"model": "sandbox-1", "messages": ok_msgs}),
            "max_tokens",
        ),
        (
            json!({"model": "nobody-knows", "max_tokens": 5, "messages": ok_msgs}),
            "model",
        ),
        (
            json!({"model": "sandbox-1", "max_tokens": 5, "messages": [{"role": "user",
                "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
            "image",
        ),
    ] {
        let r = post_messages(&app, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        shape(&v, "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let r = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    shape(&r.json().await.unwrap(), "invalid_request_error");
    // Every vendor failing: the upstream status in Anthropic's shape.
    vendor.fault_always(
        "sandbox-fails",
        Fault::Status {
            status: 500,
            retry_after: None,
            message: None,
        },
    );
    let r = post_messages(
        &app,
        &json!({"model": "sbclaude/sandbox-fails", "max_tokens": 5, "messages": ok_msgs}),
    )
    .await;
    assert_eq!(r.status(), 502);
    shape(&r.json().await.unwrap(), "api_error");
    // Other paths keep our shape.
    let r = app.get("/v1/responses/resp_nothing").send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_ends_with_an_error_event() {
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    vendor.fault_always("sandbox-brittle", Fault::BreakStream { after_chunks: 3 });
    let long = "word ".repeat(50);
    let r = post_messages(
        &app,
        &json!({"model": "sbopenai/sandbox-brittle", "max_tokens": 500, "stream": true,
            "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = parse_sse(&r.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        !events
            .iter()
            .any(|e| e.event.as_deref() == Some("message_stop"))
    );

    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sbopenai/sandbox-brittle", "input": long, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    let events = parse_sse(&r.text().await.unwrap());
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("response.failed")
    );
    assert!(
        !events
            .iter()
            .any(|e| e.event.as_deref() == Some("response.completed"))
    );
}

/// A vendor that falls silent mid-stream: the Messages stream sends `ping` events in the
/// silence, the OpenAI protocols SSE comments; the answer is whole either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_are_kept_alive() {
    let vendor = Vendor::start().await;
    let providers = vendor.providers();
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("AI_PROVIDERS", &providers),
            ("AI_CACHE", "off"),
            ("AI_STREAM_PING_INTERVAL", "0.1"),
        ],
    )
    .await
    .unwrap();
    // Far longer than the ping interval, so a ping is due however busy the host.
    vendor.fault_always(
        "sandbox-slow",
        Fault::StallStream {
            after_chunks: 3,
            ms: 1500,
        },
    );
    let long = "word ".repeat(50);
    let r = post_messages(
        &app,
        &json!({"model": "sbopenai/sandbox-slow", "max_tokens": 500, "stream": true,
            "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let events = parse_sse(&r.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    let first_delta = kinds
        .iter()
        .position(|k| *k == "content_block_delta")
        .unwrap_or_else(|| panic!("{kinds:?}"));
    let last_delta = kinds
        .iter()
        .rposition(|k| *k == "content_block_delta")
        .unwrap();
    assert!(
        kinds[first_delta..last_delta].contains(&"ping"),
        "a ping between the deltas: {kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");
    for e in events.iter().filter(|e| e.event.as_deref() == Some("ping")) {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v, json!({"type": "ping"}));
    }

    let r = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "sbopenai/sandbox-slow", "stream": true,
                "messages": [{"role": "user", "content": long}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let frames: Vec<&str> = body.split("\n\n").filter(|f| !f.is_empty()).collect();
    let comment = frames
        .iter()
        .position(|f| *f == ": keep-alive")
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        comment > 1
            && frames[comment + 1..]
                .iter()
                .any(|f| f.starts_with("data: {")),
        "the keep-alive comes between chunks: {body}"
    );
    assert_eq!(frames.last(), Some(&"data: [DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_asks_anthropic_format_vendors_and_estimates_for_others() {
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    let count = |model: &'static str, content: String| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(app.url("/v1/messages/count_tokens"))
                .header("x-api-key", ADMIN_KEY)
                .json(
                    &json!({"model": model, "system": "Be brief.", "tools": [calc_tool()],
                    "messages": [{"role": "user", "content": content}]}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["input_tokens"].as_u64().unwrap()
        }
    };
    for model in ["sbclaude/sandbox-1", "sbopenai/sandbox-1"] {
        let short = count(model, "hello".into()).await;
        let long = count(model, "hello ".repeat(400)).await;
        assert!(short >= 1 && long > short + 500, "{model}: {short} {long}");
    }
    // The Anthropic-format vendor was asked (its counting endpoint, two requests); the
    // OpenAI format has none, so the gateway estimated. The sandbox counts as the
    // gateway estimates, so both agree.
    assert_eq!(vendor.count("sandbox-1"), 2);
    assert_eq!(
        count("sbclaude/sandbox-1", "same".into()).await,
        count("sbopenai/sandbox-1", "same".into()).await
    );
    assert_eq!(vendor.count("sandbox-1"), 3);
    // A vendor that cannot count (a bad key here) leaves the estimate.
    let providers = json!([{"name": "sbclaude", "format": "anthropic", "base_url": vendor.base,
        "api_key": "wrong"}])
    .to_string();
    let other = TestApp::spawn_with(Backend::Sqlite, &[("AI_PROVIDERS", &providers)])
        .await
        .unwrap();
    let r = other
        .client
        .post(other.url("/v1/messages/count_tokens"))
        .header("x-api-key", ADMIN_KEY)
        .json(
            &json!({"model": "sbclaude/sandbox-1", "system": "Be brief.", "tools": [calc_tool()],
            "messages": [{"role": "user", "content": "same"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["input_tokens"].as_u64().unwrap(),
        count("sbopenai/sandbox-1", "same".into()).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_aliases_and_configured_vendor_models() {
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    let v: Value = app
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let find = |id: &str| data.iter().find(|m| m["id"] == id).cloned();
    assert_eq!(find("fast").unwrap()["owned_by"], "digital-employee");
    assert_eq!(find("sandbox-1").unwrap()["owned_by"], "sandbox");
    assert_eq!(find("sandbox-1").unwrap()["object"], "model");
    assert!(find("gpt-4o").is_none(), "no openai provider is configured");
    let one: Value = app
        .get("/v1/models/fast")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "fast");
    let r = app.get("/v1/models/none-such").send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
    // Anthropic's shape for Anthropic clients.
    let v: Value = app
        .get("/v1/models")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["first_id"], v["data"][0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_deterministic_unit_vectors_accounted_and_priced() {
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    let embed = |body: Value| {
        let app = &app;
        async move {
            let r = app.post_json("/v1/embeddings", &body).send().await.unwrap();
            assert_eq!(r.status(), 200, "{body}");
            let cost: f64 = r.headers()["x-de-cost-usd"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (r.json::<Value>().await.unwrap(), cost)
        }
    };
    // Over the wire (the alias skips the Anthropic-format vendor, which has none).
    let (v, cost) = embed(
        json!({"model": "embedder", "input": ["a cat", "a dog", "a cat"],
        "dimensions": 64}),
    )
    .await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let vecs: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            serde_json::from_value(d["embedding"].clone()).unwrap()
        })
        .collect();
    assert_eq!(vecs.len(), 3);
    for v in &vecs {
        assert_eq!(v.len(), 64);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert_eq!(vecs[0], vecs[2], "equal inputs embed equally");
    assert_ne!(vecs[0], vecs[1]);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(cost > 0.0, "priced at the model's input price");
    assert_eq!(vendor.count("text-embedding-3-small"), 1);

    // In process, base64 as the OpenAI SDK asks by default: little-endian f32s.
    let (v, _) = embed(json!({"model": "sandbox-embed", "input": "hello",
        "encoding_format": "base64"}))
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 1536 * 4, "default dimensions");
    // Token-id input works too.
    let (v, _) = embed(json!({"model": "sandbox-embed", "input": [[1, 2, 3], [4]],
        "dimensions": 8}))
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // Up to 2048 inputs in a request (as the API description says), texts or token lists.
    let (v, _) = embed(
        json!({"model": "sandbox-embed", "input": vec![[7, 8]; 2048],
        "dimensions": 4}),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2048);

    for body in [
        json!({"model": "sandbox-embed", "input": "x", "dimensions": 100000}),
        json!({"model": "sandbox-embed", "input": vec!["x"; 2049], "dimensions": 4}),
    ] {
        let r = app.post_json("/v1/embeddings", &body).send().await.unwrap();
        common::assert_error(r, 422, "validation_error").await;
    }

    // Every call is in ai_calls with its cost.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = app
            .store
            .list_ai_calls(DEFAULT_TENANT_ID, None, 100)
            .await
            .unwrap();
        let ok: Vec<_> = calls.iter().filter(|c| c.status == "ok").collect();
        if ok.len() >= 3 {
            let wire = ok
                .iter()
                .find(|c| c.model == "text-embedding-3-small")
                .unwrap();
            assert!(wire.cost_nanos > 0 && wire.input_tokens > 0);
            assert_eq!(wire.output_tokens, 0);
            break;
        }
        assert!(Instant::now() < deadline, "ai_calls not written: {calls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn responses_are_stored_and_continued(backend: Backend) {
    let vendor = Vendor::start().await;
    let Some(app) = app_with(backend, &vendor).await else {
        return;
    };
    let tools = json!([{"type": "function", "name": "calculator", "description": "arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
            "required": ["expression"]}}]);
    // 1. A function call.
    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sbclaude/sandbox-1", "instructions": "Be exact.",
                "input": "What is 6 * 7? Use the calculator.", "tools": tools}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"));
    let call = &first["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "calculator");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["expression"], "6 * 7");
    assert!(first["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // 2. Stored: GET gives the same object.
    let got: Value = app
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, first);

    // 3. The output goes back with previous_response_id only.
    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sbopenai/sandbox-1", "previous_response_id": id, "tools": tools,
                "input": [{"type": "function_call_output", "call_id": call["call_id"],
                    "output": "42"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["previous_response_id"], id);
    let msg = &second["output"][0];
    assert_eq!(msg["type"], "message");
    let text = msg["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("42"), "{text}");

    // 4. Streamed: the documented sequence, and the stored object is the final one.
    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sandbox-1", "input": "Tell me a story", "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = parse_sse(&r.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let datas: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let n = kinds.len();
    assert_eq!(
        &kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert!(
        kinds[4..n - 4]
            .iter()
            .all(|k| *k == "response.output_text.delta")
    );
    assert_eq!(
        &kinds[n - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (k, d)) in kinds.iter().zip(&datas).enumerate() {
        assert_eq!(d["type"], *k);
        assert_eq!(d["sequence_number"], i);
    }
    let streamed: String = datas[4..n - 4]
        .iter()
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, datas[n - 4]["text"]);
    let done = &datas[n - 1]["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], streamed);
    let sid = done["id"].as_str().unwrap();
    let got: Value = app
        .get(&format!("/v1/responses/{sid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&got, done);

    // 5. store: false is not kept; another tenant cannot see ours; delete.
    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sandbox-1", "input": "hi", "store": false}),
        )
        .send()
        .await
        .unwrap();
    let unstored: Value = r.json().await.unwrap();
    assert_eq!(unstored["store"], false);
    let r = app
        .get(&format!(
            "/v1/responses/{}",
            unstored["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;
    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sandbox-1", "input": "hi",
                "previous_response_id": unstored["id"]}),
        )
        .send()
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;

    let other_key = other_tenant_key(&app).await;
    let r = app
        .client
        .get(app.url(&format!("/v1/responses/{id}")))
        .header("x-api-key", &other_key)
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;

    let r = app
        .delete(&format!("/v1/responses/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;
}

/// A write key of a new tenant.
async fn other_tenant_key(app: &TestApp) -> String {
    let t: Value = app
        .post_json(
            "/v1/tenants",
            &json!({"name": format!("other-{}", uuid::Uuid::now_v7().simple())}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let k: Value = app
        .post_json(
            "/v1/keys",
            &json!({"name": "other", "scope": "write", "tenant_id": t["id"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    k["secret"].as_str().unwrap().to_string()
}

async fn expired_responses_are_gone_and_purged(backend: Backend) {
    let Some(db) = common::TestDb::new(backend).await else {
        return;
    };
    let store = db.migrated_store().await;
    let now = chrono::Utc::now();
    let row = |id: &str, expires: chrono::DateTime<chrono::Utc>| {
        digital_employee::store::StoredResponse {
            id: id.into(),
            tenant_id: DEFAULT_TENANT_ID,
            body: json!({"id": id}),
            conversation: json!([]),
            created_at: now - chrono::Duration::days(2),
            expires_at: expires,
        }
    };
    store
        .insert_response(&row("resp_old", now - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    store
        .insert_response(&row("resp_new", now + chrono::Duration::days(1)))
        .await
        .unwrap();
    assert!(
        store
            .get_response(DEFAULT_TENANT_ID, "resp_old", now)
            .await
            .is_err(),
        "expired reads as missing"
    );
    let got = store
        .get_response(DEFAULT_TENANT_ID, "resp_new", now)
        .await
        .unwrap();
    assert_eq!(got.body, json!({"id": "resp_new"}));
    assert_eq!(store.purge_expired_responses(now, 100).await.unwrap(), 1);
    assert_eq!(store.purge_expired_responses(now, 100).await.unwrap(), 0);
    assert!(
        store
            .get_response(DEFAULT_TENANT_ID, "resp_new", now)
            .await
            .is_ok()
    );
    store.close().await;
}

/// A reasoning model's reasoning tokens travel through every protocol that has a field for
/// them, are recorded apart in `ai_calls` and the usage report, and cost the reasoning
/// price (the sandbox's reasoning model: input $1, output $2, reasoning $3 a million).
async fn reasoning_tokens_are_recorded_and_priced_apart(backend: Backend) {
    let vendor = Vendor::start().await;
    let Some(app) = app_with(backend, &vendor).await else {
        return;
    };
    let ask = json!([{"role": "user", "content": "Think about the number seven."}]);
    // Chat Completions over the OpenAI wire.
    let r = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "sbopenai/sandbox-reasoning", "messages": ask}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let chat: Value = r.json().await.unwrap();
    let u = &chat["usage"];
    let reasoning = u["completion_tokens_details"]["reasoning_tokens"]
        .as_i64()
        .unwrap();
    let output = u["completion_tokens"].as_i64().unwrap();
    assert!(reasoning > 0 && reasoning < output, "{u}");
    // Streamed, the final usage chunk says the same.
    let r = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "sbopenai/sandbox-reasoning", "messages": ask, "stream": true,
                "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let chunks = parse_sse(&r.text().await.unwrap());
    let usage_chunk = chunks
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(
        usage_chunk["usage"]["completion_tokens_details"]["reasoning_tokens"],
        reasoning
    );
    // The Responses protocol.
    let r = app
        .post_json(
            "/v1/responses",
            &json!({"model": "sbopenai/sandbox-reasoning", "input": "Think about the number seven."}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp: Value = r.json().await.unwrap();
    assert_eq!(
        resp["usage"]["output_tokens_details"]["reasoning_tokens"],
        reasoning
    );
    // The Anthropic wire has no reasoning count: its thinking is plain output.
    let r = app
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "sbclaude/sandbox-reasoning", "messages": ask}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let claude: Value = r.json().await.unwrap();
    assert_eq!(
        claude["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );
    assert_eq!(claude["usage"]["completion_tokens"], output);

    // Recorded: four calls, three with reasoning, each priced at its split.
    let calls = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls = app
                .store
                .list_ai_calls(DEFAULT_TENANT_ID, None, 100)
                .await
                .unwrap();
            if calls
                .iter()
                .filter(|c| c.model == "sandbox-reasoning")
                .count()
                >= 4
            {
                break calls;
            }
            assert!(Instant::now() < deadline, "ai_calls not written: {calls:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut expected_reasoning = 0;
    for c in calls.iter().filter(|c| c.model == "sandbox-reasoning") {
        let r = if c.provider == "sbopenai" {
            reasoning
        } else {
            0
        };
        assert_eq!(c.reasoning_tokens, r, "{c:?}");
        assert_eq!(c.output_tokens, output, "{c:?}");
        assert_eq!(
            c.cost_nanos,
            c.input_tokens * 1000 + (c.output_tokens - r) * 2000 + r * 3000,
            "{c:?}"
        );
        expected_reasoning += r;
    }
    assert_eq!(expected_reasoning, 3 * reasoning);
    let report: Value = app
        .get("/v1/usage?group_by=model")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let line = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "sandbox-reasoning")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(line["reasoning_tokens"], expected_reasoning, "{report:#}");
}

backend_tests!(
    responses_are_stored_and_continued,
    expired_responses_are_gone_and_purged,
    reasoning_tokens_are_recorded_and_priced_apart
);

/// The answer's content under each protocol, for a JSON-schema response format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_is_schema_valid_through_either_vendor_format() {
    use digital_employee::runtime::schema::validate;
    let vendor = Vendor::start().await;
    let app = app_with(Backend::Sqlite, &vendor).await.unwrap();
    let object = json!({"type": "object", "properties": {
        "city": {"type": "string"}, "temperature": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
        "required": ["city", "temperature", "tags"], "additionalProperties": false});
    let list = json!({"type": "array", "items": {"type": "integer"}, "minItems": 3});
    for model in ["sbopenai/sandbox-1", "sbclaude/sandbox-1", "sandbox-1"] {
        for schema in [&object, &list] {
            let format = json!({"type": "json_schema",
                "json_schema": {"name": "weather", "schema": schema, "strict": true}});
            // Chat completions, plain and streamed.
            let body = json!({"model": model, "response_format": format,
                "messages": [{"role": "user", "content": "Weather in Oslo?"}]});
            let r = app
                .post_json("/v1/chat/completions", &body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{model}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "stop", "{model} {v}");
            let text = v["choices"][0]["message"]["content"].as_str().unwrap();
            let answer: Value = serde_json::from_str(text).unwrap();
            validate(schema, &answer).unwrap_or_else(|e| panic!("{model}: {e}: {answer}"));
            assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");

            let mut streamed = body.clone();
            streamed["stream"] = json!(true);
            let r = app
                .post_json("/v1/chat/completions", &streamed)
                .send()
                .await
                .unwrap();
            let mut text = String::new();
            let mut finish = None;
            for ev in parse_sse(&r.text().await.unwrap()) {
                if ev.data == "[DONE]" {
                    continue;
                }
                let chunk: Value = serde_json::from_str(&ev.data).unwrap();
                if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(c);
                }
                assert!(chunk["choices"][0]["delta"]["tool_calls"].is_null());
                if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
                    finish = Some(f.to_string());
                }
            }
            assert_eq!(finish.as_deref(), Some("stop"));
            let answer: Value = serde_json::from_str(&text).unwrap();
            validate(schema, &answer).unwrap_or_else(|e| panic!("{model} streamed: {e}"));
        }
        // Responses' text.format and Messages' output_config.
        let r = app
            .post_json(
                "/v1/responses",
                &json!({"model": model, "input": "Weather?", "text": {"format":
                    {"type": "json_schema", "name": "weather", "schema": object}}}),
            )
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let answer: Value =
            serde_json::from_str(v["output"][0]["content"][0]["text"].as_str().unwrap()).unwrap();
        validate(&object, &answer).unwrap();
        let r = post_messages(
            &app,
            &json!({"model": model, "max_tokens": 300,
                "output_config": {"format": {"type": "json_schema", "schema": object}},
                "messages": [{"role": "user", "content": "Weather?"}]}),
        )
        .await;
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["stop_reason"], "end_turn", "{v}");
        let answer: Value =
            serde_json::from_str(v["content"][0]["text"].as_str().unwrap()).unwrap();
        validate(&object, &answer).unwrap();
    }
}
