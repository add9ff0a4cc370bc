//! The AI Service Layer against the sandbox vendor over real HTTP: both wire formats,
//! fallback, retries, Retry-After, timeouts, circuit breakers, streams, accounting and
//! the cache. Attempts are counted by the sandbox, never inferred from wall time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use digital_employee::ai::anthropic::AnthropicProvider;
use digital_employee::ai::cache::MemoryCache;
use digital_employee::ai::error::ErrorKind;
use digital_employee::ai::openai::OpenAiProvider;
use digital_employee::ai::pricing::PriceTable;
use digital_employee::ai::provider::Provider;
use digital_employee::ai::router::{AiRouter, BreakerState, CallContext, RouterConfig};
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use digital_employee::ai::types::*;
use digital_employee::config::Secret;
use digital_employee::store::{AiCallRecord, DEFAULT_TENANT_ID, DynStore};
use futures_util::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-sandbox-test";

/// A sandbox vendor on a loopback port.
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
        let app = digital_employee::ai::sandbox_server::router(engine.clone(), Some(KEY.into()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Vendor {
            base,
            engine,
            _task: task,
        }
    }

    fn faults(&self, rules: Vec<FaultRule>) {
        self.engine.apply(SandboxSetup {
            seed: Some(1),
            faults: rules,
            scripts: HashMap::new(),
        });
    }

    fn count(&self, model: &str) -> u64 {
        self.engine.stats().get(model).copied().unwrap_or(0)
    }

    fn openai(&self, key: &str) -> Arc<dyn Provider> {
        Arc::new(OpenAiProvider::new(
            "openai",
            &format!("{}/v1", self.base),
            Secret::new(key),
            None,
            digital_employee::ai::client::VendorClient::new(&Default::default(), 1).unwrap(),
        ))
    }

    fn anthropic(&self) -> Arc<dyn Provider> {
        Arc::new(AnthropicProvider::new(
            "anthropic",
            &self.base,
            Secret::new(KEY),
            digital_employee::ai::client::VendorClient::new(&Default::default(), 1).unwrap(),
        ))
    }
}

fn rule(model: &str, fault: Fault, times: Option<u32>) -> FaultRule {
    FaultRule {
        model: Some(model.into()),
        fault,
        times,
        rate: None,
    }
}

fn status(code: u16) -> Fault {
    Fault::Status {
        status: code,
        retry_after: None,
        message: None,
    }
}

fn cfg() -> RouterConfig {
    RouterConfig {
        attempt_timeout: Duration::from_secs(5),
        retries: 2,
        base_delay: Duration::from_millis(1),
        max_retry_after: Duration::from_secs(5),
        breaker_threshold: 50,
        breaker_cooldown: Duration::from_secs(30),
    }
}

fn router(providers: Vec<Arc<dyn Provider>>, cfg: RouterConfig) -> Arc<AiRouter> {
    Arc::new(AiRouter::new(
        providers,
        cfg,
        PriceTable::default(),
        None,
        None,
        HashMap::new(),
    ))
}

fn ctx() -> CallContext {
    CallContext {
        tenant_id: DEFAULT_TENANT_ID,
        key_id: None,
        task_id: None,
        employee_id: None,
    }
}

fn chain(c: &[&str]) -> Vec<String> {
    c.iter().map(|s| s.to_string()).collect()
}

fn calc_request(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![
            Message::system("You are precise."),
            Message::user("What is 6 * 7? Use the calculator."),
        ],
    );
    r.tools.push(ToolDef {
        name: "calculator".into(),
        description: Some("Evaluates arithmetic".into()),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}},
                           "required": ["expression"]}),
    });
    r
}

async fn collect(
    mut s: digital_employee::ai::provider::EventStream,
) -> (ChatResponse, Option<String>) {
    let mut acc = StreamAccumulator::default();
    let mut err = None;
    while let Some(item) = s.next().await {
        match item {
            Ok(ev) => acc.push(&ev),
            Err(e) => {
                err = Some(format!("{:?}", e.kind));
                break;
            }
        }
    }
    let resp = acc.finish().unwrap_or(ChatResponse {
        id: String::new(),
        model: String::new(),
        content: None,
        tool_calls: vec![],
        finish_reason: FinishReason::Stop,
        usage: Usage::default(),
        stop_sequence: None,
    });
    (resp, err)
}

/// The tool loop over one provider, streaming and not: both give the same answers.
async fn wire_round_trip(provider: Arc<dyn Provider>) {
    let mut req = calc_request("sandbox-1");
    let first = provider.chat(&req).await.unwrap();
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.tool_calls.len(), 1);
    let call = first.tool_calls[0].clone();
    assert_eq!(call.name, "calculator");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args["expression"], "6 * 7");
    assert!(first.usage.input_tokens > 0 && first.usage.output_tokens > 0);

    let (streamed, err) = collect(provider.chat_stream(&req).await.unwrap()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(streamed.tool_calls, first.tool_calls);
    assert_eq!(streamed.usage, first.usage);

    req.messages.push(Message {
        role: Role::Assistant,
        content: None,
        tool_calls: vec![call.clone()],
        tool_call_id: None,
    });
    req.messages.push(Message::tool_result(&call.id, "42"));
    let answer = provider.chat(&req).await.unwrap();
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert!(answer.content.as_deref().unwrap().contains("42"));
    let (streamed, err) = collect(provider.chat_stream(&req).await.unwrap()).await;
    assert!(err.is_none());
    assert_eq!(streamed.content, answer.content);
    assert_eq!(streamed.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn openai_wire_format_round_trips_tools_and_streams() {
    let v = Vendor::start().await;
    wire_round_trip(v.openai(KEY)).await;
    assert_eq!(v.count("sandbox-1"), 4);
}

#[tokio::test]
async fn anthropic_wire_format_round_trips_tools_and_streams() {
    let v = Vendor::start().await;
    wire_round_trip(v.anthropic()).await;
    assert_eq!(v.count("sandbox-1"), 4);
}

#[tokio::test]
async fn falls_back_to_the_second_provider_when_the_first_returns_500s() {
    let v = Vendor::start().await;
    v.faults(vec![rule("m1", status(500), None)]);
    let r = router(vec![v.openai(KEY), v.anthropic()], cfg());
    let out = r
        .chat(
            &chain(&["openai/m1", "anthropic/m2"]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out.provider, "anthropic");
    assert_eq!(out.model, "m2");
    assert_eq!(v.count("m1"), 3, "one attempt plus two retries");
    assert_eq!(v.count("m2"), 1);
    assert_eq!(out.failed_attempts.len(), 3);
    assert!(out.failed_attempts.iter().all(|a| a.status == Some(500)));
}

#[tokio::test]
async fn retries_transient_failures_then_succeeds() {
    let v = Vendor::start().await;
    v.faults(vec![rule("m", status(503), Some(2))]);
    let r = router(vec![v.openai(KEY)], cfg());
    let out = r
        .chat(&chain(&["openai/m"]), &calc_request("x"), ctx())
        .await
        .unwrap();
    assert_eq!(v.count("m"), 3);
    assert_eq!(out.failed_attempts.len(), 2);

    // Exhausted: every attempt listed with provider, model, status and reason.
    v.faults(vec![rule("n", status(502), None)]);
    let err = r
        .chat(&chain(&["openai/n"]), &calc_request("x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(v.count("n"), 3);
    assert_eq!(err.attempts.len(), 3);
    assert!(
        err.attempts
            .iter()
            .all(|a| a.provider == "openai" && a.model == "n" && a.status == Some(502))
    );
}

#[tokio::test]
async fn client_errors_move_on_without_retrying() {
    let v = Vendor::start().await;
    v.faults(vec![rule("bad", status(400), None)]);
    let r = router(vec![v.openai("wrong-key"), v.anthropic()], cfg());
    // Wrong key at the first provider: 401, no retry, next candidate.
    let out = r
        .chat(
            &chain(&["openai/m1", "anthropic/m2"]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out.failed_attempts.len(), 1);
    assert_eq!(out.failed_attempts[0].kind, ErrorKind::Auth);
    assert_eq!(v.count("m1"), 0, "refused before it reached the model");
    // A bad request is not retried either.
    let r = router(vec![v.openai(KEY), v.anthropic()], cfg());
    let out = r
        .chat(
            &chain(&["openai/bad", "anthropic/m2"]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(v.count("bad"), 1);
    assert_eq!(out.failed_attempts[0].kind, ErrorKind::BadRequest);
}

#[tokio::test]
async fn retry_after_is_honoured_and_capped() {
    let v = Vendor::start().await;
    v.faults(vec![rule(
        "slow",
        Fault::Status {
            status: 429,
            retry_after: Some(1),
            message: None,
        },
        Some(1),
    )]);
    let r = router(vec![v.openai(KEY)], cfg());
    let t = Instant::now();
    r.chat(&chain(&["openai/slow"]), &calc_request("x"), ctx())
        .await
        .unwrap();
    assert_eq!(v.count("slow"), 2);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "waited the Retry-After"
    );

    // A Retry-After longer than the cap moves to the next candidate at once.
    v.faults(vec![rule(
        "capped",
        Fault::Status {
            status: 429,
            retry_after: Some(3600),
            message: None,
        },
        None,
    )]);
    let r = router(vec![v.openai(KEY), v.anthropic()], cfg());
    let out = r
        .chat(
            &chain(&["openai/capped", "anthropic/m2"]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(v.count("capped"), 1);
    assert_eq!(out.provider, "anthropic");
}

#[tokio::test]
async fn a_hanging_vendor_times_out_and_the_next_answers() {
    let v = Vendor::start().await;
    v.faults(vec![rule("hang", Fault::Hang, None)]);
    let mut c = cfg();
    // Long enough for the answering vendor on a busy machine; only the hanging one
    // reaches it.
    c.attempt_timeout = Duration::from_secs(3);
    c.retries = 1;
    let r = router(vec![v.openai(KEY), v.anthropic()], c);
    let out = r
        .chat(
            &chain(&["openai/hang", "anthropic/m2"]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(v.count("hang"), 2);
    assert!(
        out.failed_attempts
            .iter()
            .all(|a| a.kind == ErrorKind::Timeout)
    );
    assert_eq!(out.model, "m2");
}

#[tokio::test]
async fn context_length_errors_move_to_a_larger_window() {
    let v = Vendor::start().await;
    v.faults(vec![rule(
        "sandbox-1",
        Fault::Status {
            status: 400,
            retry_after: None,
            message: Some("{\"error\":{\"code\":\"context_length_exceeded\"}}".into()),
        },
        None,
    )]);
    let r = router(vec![v.openai(KEY), v.anthropic()], cfg());
    let out = r
        .chat(
            &chain(&[
                "openai/sandbox-1",
                "anthropic/sandbox-1",
                "anthropic/sandbox-large",
            ]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out.model, "sandbox-large");
    assert_eq!(v.count("sandbox-1"), 1, "the same-size window was skipped");
    assert_eq!(out.failed_attempts[1].kind, ErrorKind::ContextLength);
}

#[tokio::test]
async fn the_breaker_opens_and_skips_for_its_cooldown() {
    let v = Vendor::start().await;
    v.faults(vec![rule("m1", status(500), Some(2))]);
    let mut c = cfg();
    c.retries = 0;
    c.breaker_threshold = 2;
    // Far longer than the test: the breaker cannot half-open on its own meanwhile.
    c.breaker_cooldown = Duration::from_secs(3600);
    let r = router(vec![v.openai(KEY), v.anthropic()], c);
    let ch = chain(&["openai/m1", "anthropic/m2"]);
    r.chat(&ch, &calc_request("x"), ctx()).await.unwrap();
    assert_eq!(
        r.breaker_state("openai"),
        Some(BreakerState::Closed),
        "one fault is under the threshold"
    );
    r.chat(&ch, &calc_request("x"), ctx()).await.unwrap();
    assert_eq!(r.breaker_state("openai"), Some(BreakerState::Open));
    for _ in 0..3 {
        let out = r.chat(&ch, &calc_request("x"), ctx()).await.unwrap();
        assert_eq!(out.failed_attempts[0].kind, ErrorKind::CircuitOpen);
        assert_eq!(out.provider, "anthropic");
    }
    assert_eq!(v.count("m1"), 2, "skipped while open");
    assert_eq!(r.breaker_state("anthropic"), Some(BreakerState::Closed));
}

#[tokio::test]
async fn the_breaker_recovers_through_a_successful_probe() {
    let v = Vendor::start().await;
    v.faults(vec![rule("m1", status(500), Some(2))]);
    let mut c = cfg();
    c.retries = 0;
    c.breaker_threshold = 2;
    // No cooldown: once open, the next call is the probe (the timing of the cooldown
    // itself is covered by the unit tests in src/ai/router.rs).
    c.breaker_cooldown = Duration::ZERO;
    let r = router(vec![v.openai(KEY), v.anthropic()], c);
    let ch = chain(&["openai/m1", "anthropic/m2"]);
    for _ in 0..2 {
        let out = r.chat(&ch, &calc_request("x"), ctx()).await.unwrap();
        assert_eq!(out.provider, "anthropic");
    }
    assert_eq!(r.breaker_state("openai"), Some(BreakerState::HalfOpen));
    let out = r.chat(&ch, &calc_request("x"), ctx()).await.unwrap();
    assert_eq!(out.provider, "openai", "the probe succeeded");
    assert!(out.failed_attempts.is_empty());
    assert_eq!(r.breaker_state("openai"), Some(BreakerState::Closed));
    assert_eq!(v.count("m1"), 3);
}

#[tokio::test]
async fn streams_fall_back_before_the_first_byte_and_fail_loudly_after() {
    let v = Vendor::start().await;
    v.faults(vec![
        rule("down", status(503), None),
        rule("breaks", Fault::BreakStream { after_chunks: 3 }, None),
    ]);
    let mut c = cfg();
    c.retries = 0;
    let r = router(vec![v.openai(KEY), v.anthropic()], c);
    let s = r
        .chat_stream(
            &chain(&["openai/down", "anthropic/m2"]),
            &calc_request("x"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(s.provider, "anthropic");
    let (resp, err) = collect(s.events).await;
    assert!(err.is_none());
    assert_eq!(resp.tool_calls.len(), 1);

    for p in ["openai", "anthropic"] {
        let s = r
            .chat_stream(
                &chain(&[&format!("{p}/breaks"), "anthropic/m2"]),
                &calc_request("x"),
                ctx(),
            )
            .await
            .unwrap();
        assert_eq!(s.provider, p, "no fallback once streaming started");
        let (_, err) = collect(s.events).await;
        assert_eq!(err.as_deref(), Some("StreamBroken"), "{p}");
    }
}

async fn wait_calls(store: &DynStore, n: usize) -> Vec<AiCallRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store
            .list_ai_calls(DEFAULT_TENANT_ID, None, 1000)
            .await
            .unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} ai_calls rows",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One tenant's cached answer is never served to another tenant.
#[tokio::test]
async fn the_result_cache_is_per_tenant() {
    let v = Vendor::start().await;
    let r = Arc::new(AiRouter::new(
        vec![v.openai(KEY)],
        cfg(),
        PriceTable::default(),
        Some(Arc::new(MemoryCache::new(100, Duration::from_secs(60)))),
        None,
        HashMap::new(),
    ));
    let mut req = calc_request("the same question");
    req.temperature = Some(0.0);
    let ctx = |tenant| CallContext {
        tenant_id: tenant,
        key_id: None,
        task_id: None,
        employee_id: None,
    };
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let models = chain(&["openai/sandbox-1"]);
    assert!(!r.chat(&models, &req, ctx(a)).await.unwrap().cache_hit);
    assert!(r.chat(&models, &req, ctx(a)).await.unwrap().cache_hit);
    assert!(
        !r.chat(&models, &req, ctx(b)).await.unwrap().cache_hit,
        "tenant B got tenant A's cached answer"
    );
    assert!(r.chat(&models, &req, ctx(b)).await.unwrap().cache_hit);
    assert_eq!(v.count("sandbox-1"), 2, "one vendor call per tenant");
}

async fn accounting_and_cache(backend: common::Backend) {
    let v = Vendor::start().await;
    let db = common::TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let (writer, tx) = digital_employee::ai::accounting::Writer::new(store.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(stop.clone()));
    v.faults(vec![rule("sandbox-1", status(500), Some(1))]);
    let r = Arc::new(AiRouter::new(
        vec![v.openai(KEY)],
        cfg(),
        PriceTable::default(),
        Some(Arc::new(MemoryCache::new(100, Duration::from_secs(60)))),
        Some(tx),
        HashMap::new(),
    ));
    let mut req = calc_request("x");
    req.temperature = Some(0.0);
    let task = uuid::Uuid::now_v7();
    let employee = uuid::Uuid::now_v7();
    let tctx = CallContext {
        tenant_id: DEFAULT_TENANT_ID,
        key_id: None,
        task_id: Some(task),
        employee_id: Some(employee),
    };
    let out = r
        .chat(&chain(&["openai/sandbox-1"]), &req, tctx)
        .await
        .unwrap();
    assert!(!out.cache_hit);
    let expected_cost = PriceTable::default()
        .cost("openai", "sandbox-1", &out.response.usage)
        .unwrap();
    assert!(expected_cost > 0);
    assert_eq!(out.cost_nanos, expected_cost);

    let hit = r
        .chat(&chain(&["openai/sandbox-1"]), &req, tctx)
        .await
        .unwrap();
    assert!(hit.cache_hit);
    assert_eq!(hit.response, out.response);
    assert_eq!(v.count("sandbox-1"), 2, "the hit never reached the vendor");

    let rows = wait_calls(&store, 3).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.task_id == Some(task)));
    assert!(rows.iter().all(|r| r.employee_id == Some(employee)));
    assert_eq!(rows[0].status, "error");
    assert_eq!(rows[0].http_status, Some(500));
    let ok = &rows[1];
    assert_eq!(ok.status, "ok");
    assert_eq!(ok.input_tokens as u64, out.response.usage.input_tokens);
    assert_eq!(ok.output_tokens as u64, out.response.usage.output_tokens);
    assert_eq!(ok.cost_nanos, expected_cost);
    assert!(ok.latency_us > 0);
    let cached = &rows[2];
    assert!(cached.cache_hit);
    assert_eq!(
        (cached.input_tokens, cached.output_tokens, cached.cost_nanos),
        (0, 0, 0)
    );
    stop.cancel();
    writer_task.await.unwrap();
}

mod sqlite {
    #[tokio::test]
    async fn usage_cost_and_cache_are_recorded_exactly() {
        super::accounting_and_cache(super::common::Backend::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test]
    async fn usage_cost_and_cache_are_recorded_exactly() {
        if super::common::postgres_url().is_none() {
            return;
        }
        super::accounting_and_cache(super::common::Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------- the gateway endpoint

async fn gateway_app(v: &Vendor) -> common::TestApp {
    let openai = format!("{}/v1", v.base);
    common::TestApp::spawn_with(
        common::Backend::Sqlite,
        &[
            ("OPENAI_BASE_URL", openai.as_str()),
            ("OPENAI_API_KEY", KEY),
            ("ANTHROPIC_BASE_URL", v.base.as_str()),
            ("ANTHROPIC_API_KEY", KEY),
            ("AI_SERVICE_RETRY_DELAY", "0.001"),
            ("AI_BREAKER_THRESHOLD", "1000"),
            (
                "AI_MODEL_ALIASES",
                r#"{"resilient":["openai/down","anthropic/claude-sonnet-4"]}"#,
            ),
        ],
    )
    .await
    .unwrap()
}

/// A vendor's error text names the operator's organisation and project; a tenant sees
/// the reason without them.
#[tokio::test]
async fn vendor_error_text_reaches_tenants_without_account_identifiers() {
    let v = Vendor::start().await;
    v.faults(vec![rule(
        "quota",
        Fault::Status {
            status: 400,
            retry_after: None,
            message: Some(
                "Quota exceeded for organization org-Zx81KqPbY3dW in project proj_aB12cD34eF; \
                 billing contact finance@operator.example"
                    .into(),
            ),
        },
        None,
    )]);
    let app = gateway_app(&v).await;
    let body = json!({"model": "openai/quota", "messages": [{"role": "user", "content": "x"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    let err = common::assert_error(r, 400, "upstream_error").await;
    let text = err.to_string();
    for leaked in [
        "org-Zx81KqPbY3dW",
        "proj_aB12cD34eF",
        "finance@operator.example",
    ] {
        assert!(
            !text.contains(leaked),
            "{leaked} reached the tenant: {text}"
        );
    }
    assert!(
        err["error"]["attempts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Quota exceeded"),
        "{text}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn gateway_serves_openai_format_with_fallback_and_streaming() {
    let v = Vendor::start().await;
    v.faults(vec![rule("down", status(503), None)]);
    let app = gateway_app(&v).await;
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello gateway"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-de-model"], "openai/gpt-4o-mini");
    let v1: Value = r.json().await.unwrap();
    assert_eq!(v1["object"], "chat.completion");
    assert!(
        v1["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Hello gateway")
    );
    assert!(v1["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // An alias is a fallback chain: the first candidate is down.
    let body = json!({"model": "resilient", "messages": [{"role": "user", "content": "hi"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-de-model"], "anthropic/claude-sonnet-4");

    // Streaming with usage, ending in [DONE].
    let body = json!({"model": "claude-sonnet-4", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "stream please"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let mut content = String::new();
    let mut usage = None;
    for d in &datas[..datas.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if c["usage"].is_object() {
            usage = Some(c["usage"].clone());
        }
    }
    assert!(content.contains("stream please"));
    assert!(usage.unwrap()["completion_tokens"].as_u64().unwrap() > 0);

    // Every candidate failing: 502 listing the attempts.
    let body = json!({"model": "openai/down", "messages": [{"role": "user", "content": "x"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    let err = common::assert_error(r, 502, "upstream_error").await;
    assert_eq!(err["error"]["attempts"].as_array().unwrap().len(), 4);

    // Unknown model and bad messages are the caller's fault.
    let body = json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    let err = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(err["error"]["field"], "model");
    let body = json!({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    let err = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(err["error"]["field"], "messages[0].role");

    // Its metrics are counted exactly in tests/metric_deltas.rs.
}

#[tokio::test]
async fn gateway_stream_failure_after_first_byte_is_reported() {
    let v = Vendor::start().await;
    v.faults(vec![rule(
        "breaks",
        Fault::BreakStream { after_chunks: 2 },
        None,
    )]);
    let app = gateway_app(&v).await;
    let body = json!({"model": "openai/breaks", "stream": true,
                      "messages": [{"role": "user", "content": "a long answer please"}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("upstream_error"), "{text}");
    assert!(!text.contains("[DONE]"), "never a silent success");
}

#[tokio::test]
async fn gateway_tool_calls_round_trip() {
    let v = Vendor::start().await;
    let app = gateway_app(&v).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                       "required": ["city"]}}}]);
    let body = json!({"model": "gpt-4o", "tools": tools,
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let v1: Value = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["choices"][0]["finish_reason"], "tool_calls");
    let call = &v1["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["unit"], "c");
    let body = json!({"model": "gpt-4o", "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}]});
    let v2: Value = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["choices"][0]["finish_reason"], "stop");
    assert!(
        v2["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("18C and sunny")
    );
}

/// Two routers (two replicas) on one Redis share cache hits.
#[tokio::test]
async fn redis_result_cache_is_shared_between_replicas() {
    let url = match std::env::var("TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("REQUIRE_BACKEND_TESTS").as_deref() != Ok("1"),
                "REQUIRE_BACKEND_TESTS=1 but TEST_REDIS_URL is not set"
            );
            return;
        }
    };
    let v = Vendor::start().await;
    let replica = |cache: Arc<dyn digital_employee::ai::cache::ResultCache>| {
        Arc::new(AiRouter::new(
            vec![v.openai(KEY)],
            cfg(),
            PriceTable::default(),
            Some(cache),
            None,
            HashMap::new(),
        ))
    };
    let ttl = Duration::from_secs(60);
    let a = replica(Arc::new(
        digital_employee::ai::cache::RedisCache::connect(&url, ttl)
            .await
            .unwrap(),
    ));
    let b = replica(Arc::new(
        digital_employee::ai::cache::RedisCache::connect(&url, ttl)
            .await
            .unwrap(),
    ));
    // A model name of its own keeps this run's keys apart from any earlier run's.
    let model = format!("openai/m-{}", uuid::Uuid::now_v7().simple());
    let mut req = calc_request("x");
    req.cache = Some(true);
    let first = a.chat(&chain(&[&model]), &req, ctx()).await.unwrap();
    assert!(!first.cache_hit);
    let second = b.chat(&chain(&[&model]), &req, ctx()).await.unwrap();
    assert!(second.cache_hit, "replica B hit what replica A stored");
    assert_eq!(second.response, first.response);
    assert_eq!(v.engine.stats().values().sum::<u64>(), 1);
}
