//! Accounting of a stream its client drops mid-way, on SQLite and PostgreSQL: the vendor
//! (the sandbox over HTTP) sends the start of an answer and then nothing more; the
//! client reads the first chunks of `/v1/chat/completions` or `/v1/messages` and hangs
//! up. The call is still recorded, as an `abandoned` error with the tokens it used and
//! their cost, and reported by `/v1/usage`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::vendor::Vendor;
use common::{Backend, TestApp};
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxSetup};
use digital_employee::store::{AiCallRecord, DEFAULT_TENANT_ID};
use futures_util::StreamExt;
use serde_json::{Value, json};

backend_tests!(a_stream_the_client_drops_is_recorded_with_what_it_used);

/// Streams `body` to `path`, reads until `marker` has arrived, then drops the connection.
async fn read_then_hang_up(app: &TestApp, path: &str, body: Value, key: &str) {
    let r = app.post_json(path, &body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let mut chunks = r.bytes_stream();
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until some text has come: a `"key":"…"` with at least one character (the first
    // chunk of a chat completion carries an empty `"content":""`).
    let opening = format!("\"{key}\":\"");
    let has_text = |got: &str| {
        got.match_indices(&opening)
            .any(|(i, m)| got[i + m.len()..].chars().next().is_some_and(|c| c != '"'))
    };
    while !has_text(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, chunks.next())
            .await
            .unwrap_or_else(|_| panic!("{path}: no text in {key:?} within 20s; got {got}"))
            .unwrap_or_else(|| panic!("{path}: the stream ended early: {got}"))
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(chunks);
}

/// The one `ai_calls` row of `model`, once written (records are written in batches).
async fn row_of(app: &TestApp, model: &str) -> AiCallRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<AiCallRecord> = app
            .store
            .list_ai_calls(DEFAULT_TENANT_ID, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.model == model)
            .collect();
        if let [row] = rows.as_slice() {
            return row.clone();
        }
        assert!(rows.len() < 2, "one row per call: {rows:?}");
        assert!(Instant::now() < deadline, "no record of the {model} call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_stream_the_client_drops_is_recorded_with_what_it_used(backend: Backend) {
    let vendor = Vendor::start().await;
    let prices = json!({
        "vendor/stalls-openai": {"input": 1.0, "output": 2.0},
        "vendor/stalls-anthropic": {"input": 1.0, "output": 2.0},
    })
    .to_string();
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            ("AI_PROVIDERS", &vendor.providers),
            ("AI_PRICES", &prices),
            ("AI_CACHE", "off"),
        ],
    )
    .await
    else {
        return;
    };
    let messages = json!([{"role": "user", "content": "Tell me a long story about streams"}]);
    // Start and some text, then silence.
    let stall = |model: &str| FaultRule {
        model: Some(model.into()),
        fault: Fault::StallStream {
            after_chunks: 2,
            ms: 3_600_000,
        },
        times: None,
        rate: None,
    };
    vendor.engine.apply(SandboxSetup {
        faults: vec![stall("stalls-openai"), stall("stalls-anthropic")],
        ..Default::default()
    });
    read_then_hang_up(
        &app,
        "/v1/chat/completions",
        json!({"model": "vendor/stalls-openai", "stream": true, "messages": messages}),
        "content",
    )
    .await;
    read_then_hang_up(
        &app,
        "/v1/messages",
        json!({"model": "vendor/stalls-anthropic", "stream": true, "max_tokens": 100,
               "messages": messages}),
        "text",
    )
    .await;

    for model in ["stalls-openai", "stalls-anthropic"] {
        let row = row_of(&app, model).await;
        assert_eq!(row.status, "error", "{row:?}");
        assert_eq!(row.error_kind.as_deref(), Some("abandoned"), "{row:?}");
        assert!(row.streamed);
        assert!(row.input_tokens > 0, "the prompt was used: {row:?}");
        assert!(row.output_tokens > 0, "the text sent was used: {row:?}");
        assert!(row.cost_nanos > 0, "and costs: {row:?}");
    }
    // `/v1/usage` reports them.
    let v = app.get_json("/v1/usage?group_by=model").await;
    for model in ["stalls-openai", "stalls-anthropic"] {
        let g = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == model)
            .unwrap_or_else(|| panic!("no usage of {model}: {v}"));
        assert_eq!(g["errors"], 1, "{g}");
        assert!(g["output_tokens"].as_i64().unwrap() > 0, "{g}");
        assert!(g["cost_nanos"].as_i64().unwrap() > 0, "{g}");
    }
}
