//! Metric counts, exactly. The Prometheus recorder is process-global, so a count read in
//! a binary where other scenarios run at the same time can be moved by any of them. Here
//! every scenario holds one lock for its whole run, so between its two readings of
//! `/metrics` only its own app did anything, and each scenario asserts exact deltas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp, TestDb, test_config};
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use digital_employee::app::App;
use digital_employee::store::{DEFAULT_TENANT_ID, NewTask, TaskEmployee, now};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

backend_tests!(
    a_task_counts_its_claim_tool_call_end_and_duration_once,
    a_rescued_task_is_counted_once,
    each_retry_is_counted,
    a_webhook_given_up_is_counted_once,
);

static ALONE: Mutex<()> = Mutex::const_new(());

/// Runs the rest of the scenario with no other scenario of this binary running.
async fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().await
}

/// The sum of every series of metric `name` (all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `after - before` of one series.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    common::metric(after, series) - common::metric(before, series)
}

/// The scrape once each of `series` has grown since `before`. A worker counts a task's
/// end after the store has recorded it, which the API may show first; the caller then
/// checks that everything was counted exactly once.
async fn counted(app: &TestApp, before: &str, series: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = app.metrics().await;
        if series.iter().all(|s| delta(before, &now, s) >= 1.0) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "never counted: {series:?}\n{now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sandbox vendor over HTTP.
struct Vendor {
    base: String,
    engine: Arc<SandboxEngine>,
    _task: tokio::task::JoinHandle<()>,
}

impl Vendor {
    async fn start(faults: Vec<FaultRule>) -> Vendor {
        let engine = Arc::new(SandboxEngine::default());
        engine.apply(SandboxSetup {
            seed: Some(1),
            faults,
            scripts: HashMap::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router =
            digital_employee::ai::sandbox_server::router(engine.clone(), Some("sk-v".into()));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Vendor {
            base,
            engine,
            _task: task,
        }
    }

    fn providers(&self) -> String {
        json!([{"name": "vendor", "format": "openai", "base_url": format!("{}/v1", self.base),
                "api_key": "sk-v"}])
        .to_string()
    }

    fn count(&self, model: &str) -> u64 {
        self.engine.stats().get(model).copied().unwrap_or(0)
    }
}

fn always(model: &str, fault: Fault) -> FaultRule {
    FaultRule {
        model: Some(model.into()),
        fault,
        times: None,
        rate: None,
    }
}

fn status_500() -> Fault {
    Fault::Status {
        status: 500,
        retry_after: None,
        message: None,
    }
}

async fn a_task_counts_its_claim_tool_call_end_and_duration_once(backend: Backend) {
    let _alone = alone().await;
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "calc", "role": "r", "allowed_tools": ["calculator"]}),
    )
    .await;
    let before = app.metrics().await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "calc", "input": "What is 2 + 3 * 4?"}),
        )
        .await,
    );
    wait_status(&app, &id, "succeeded").await;
    let after = counted(
        &app,
        &before,
        &[
            "tasks_total{status=\"succeeded\"}",
            "task_duration_seconds_count",
        ],
    )
    .await;
    for (series, want) in [
        ("tasks_total{status=\"succeeded\"}", 1.0),
        ("tasks_total{status=\"failed\"}", 0.0),
        ("tasks_claimed_total", 1.0),
        ("tool_calls_total{tool=\"calculator\",outcome=\"ok\"}", 1.0),
        ("task_duration_seconds_count", 1.0),
        ("tasks_retried_total", 0.0),
    ] {
        assert_eq!(delta(&before, &after, series), want, "{series}\n{after}");
    }
    app.stop().await.unwrap();
}

async fn a_rescued_task_is_counted_once(backend: Backend) {
    let _alone = alone().await;
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.migrated_store().await;
    let emp = store
        .create_employee(
            DEFAULT_TENANT_ID,
            &digital_employee::store::EmployeeFields {
                name: "steady".into(),
                role: "r".into(),
                instructions: String::new(),
                model_policy: vec!["sandbox/sandbox-1".into()],
                allowed_tools: vec![],
                max_steps: 5,
                token_budget: 100_000,
                temperature: 0.0,
                redact_prompts: false,
                approval_tools: vec![],
                output_schema: None,
                input_timeout_seconds: 86_400,
            },
        )
        .await
        .unwrap();
    let (t, _) = store
        .create_task(&NewTask {
            tenant_id: DEFAULT_TENANT_ID,
            employee: TaskEmployee::Id(emp.id),
            input: json!("hello"),
            priority: 0,
            run_at: now(),
            max_attempts: 3,
            idempotency_key: None,
            request_hash: None,
            parent_task_id: None,
            depth: 0,
            session_id: None,
            callback_url: None,
            metadata: json!({}),
            output_schema: None,
            trace_context: None,
        })
        .await
        .unwrap();
    // Claimed by a worker that then vanishes without renewing its short lease.
    store
        .claim_tasks("ghost", 1, Duration::from_millis(300), 0)
        .await
        .unwrap();
    store.close().await;
    let before = digital_employee::telemetry::metrics::install().render();
    let app = App::build(test_config(&db.url, &with(&[("TASK_LEASE_SECONDS", "1")])))
        .await
        .unwrap();
    let app = TestApp::start(app, db).await;
    let done = wait_status(&app, &t.id.to_string(), "succeeded").await;
    assert_eq!(done["attempt"], 2);
    let after = counted(&app, &before, &["tasks_total{status=\"succeeded\"}"]).await;
    assert_eq!(
        total(&after, "tasks_rescued_total") - total(&before, "tasks_rescued_total"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(&before, &after, "tasks_total{status=\"succeeded\"}"),
        1.0
    );
    app.stop().await.unwrap();
}

async fn each_retry_is_counted(backend: Backend) {
    let _alone = alone().await;
    let vendor = Vendor::start(vec![always("down", status_500())]).await;
    let providers = vendor.providers();
    let extra = with(&[
        ("AI_PROVIDERS", &providers),
        ("AI_SERVICE_RETRY_COUNT", "0"),
        ("AI_BREAKER_THRESHOLD", "1000"),
    ]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "unlucky", "role": "r", "model_policy": ["vendor/down"]}),
    )
    .await;
    let before = app.metrics().await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "unlucky", "input": "hi", "max_attempts": 3}),
        )
        .await,
    );
    wait_status(&app, &id, "failed").await;
    assert_eq!(vendor.count("down"), 3);
    let after = counted(&app, &before, &["tasks_total{status=\"failed\"}"]).await;
    assert_eq!(
        delta(&before, &after, "tasks_retried_total"),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(&before, &after, "tasks_total{status=\"failed\"}"),
        1.0
    );
    assert_eq!(delta(&before, &after, "tasks_claimed_total"), 3.0);
    app.stop().await.unwrap();
}

async fn a_webhook_given_up_is_counted_once(backend: Backend) {
    let _alone = alone().await;
    // A receiver that always answers 500.
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let _receiver = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let extra = with(&[
        ("WEBHOOK_MAX_ATTEMPTS", "3"),
        ("WEBHOOK_RETRY_BASE_DELAY", "0.01"),
        ("WEBHOOK_POLL_INTERVAL", "0.05"),
    ]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(&app, json!({"name": "hooked", "role": "r"})).await;
    let before = app.metrics().await;
    let t = submit(
        &app,
        json!({"employee": "hooked", "input": "hello", "callback_url": url}),
    )
    .await;
    let tid = Uuid::parse_str(&id_of(&t)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = app
            .store
            .list_deliveries(DEFAULT_TENANT_ID, tid)
            .await
            .unwrap();
        if d.len() == 1 && d[0].status == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    let after = app.metrics().await;
    assert_eq!(
        delta(
            &before,
            &after,
            "webhook_deliveries_total{outcome=\"failed\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "webhook_deliveries_total{outcome=\"delivered\"}"
        ),
        0.0
    );
    app.stop().await.unwrap();
}

/// The gateway counts each vendor attempt under its service, model and status, tokens
/// by type, and its own overhead once per routed call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_attempts_are_counted_by_service_model_and_status() {
    let _alone = alone().await;
    let v = Vendor::start(vec![always(
        "down",
        Fault::Status {
            status: 503,
            retry_after: None,
            message: None,
        },
    )])
    .await;
    let openai = format!("{}/v1", v.base);
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("OPENAI_BASE_URL", openai.as_str()),
            ("OPENAI_API_KEY", "sk-v"),
            ("ANTHROPIC_BASE_URL", v.base.as_str()),
            ("ANTHROPIC_API_KEY", "sk-v"),
            ("AI_SERVICE_RETRY_COUNT", "0"),
            ("AI_BREAKER_THRESHOLD", "1000"),
            ("AI_CACHE", "off"),
            (
                "AI_MODEL_ALIASES",
                r#"{"resilient":["openai/down","anthropic/claude-sonnet-4"]}"#,
            ),
        ],
    )
    .await
    .unwrap();
    let before = app.metrics().await;
    for model in ["gpt-4o-mini", "gpt-4o-mini", "resilient"] {
        let r = app
            .post_json(
                "/v1/chat/completions",
                &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let after = app.metrics().await;
    for (series, want) in [
        (
            r#"ai_requests_total{service="openai",model="gpt-4o-mini",status="success"}"#,
            2.0,
        ),
        (
            r#"ai_requests_total{service="openai",model="down",status="error"}"#,
            1.0,
        ),
        (
            r#"ai_requests_total{service="anthropic",model="claude-sonnet-4",status="success"}"#,
            1.0,
        ),
        ("ai_gateway_overhead_seconds_count", 3.0),
    ] {
        assert_eq!(delta(&before, &after, series), want, "{series}\n{after}");
    }
    for kind in ["input", "output"] {
        let s = format!(
            r#"ai_tokens_used_total{{service="anthropic",model="claude-sonnet-4",type="{kind}"}}"#
        );
        assert!(delta(&before, &after, &s) > 0.0, "{s}\n{after}");
    }
    // One failure under a threshold of 1000 leaves the breaker closed.
    assert_eq!(
        common::metric(&after, r#"ai_circuit_breaker_state{provider="openai"}"#),
        0.0
    );
    app.stop().await.unwrap();
}

/// Requests are counted under their route template, exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_once_under_their_route_template() {
    let _alone = alone().await;
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let e = app.create_employee("metered").await;
    let id = e["id"].as_str().unwrap();
    let series = r#"http_requests_total{method="GET",endpoint="/v1/employees/{id}",status="200"}"#;
    let missing = r#"http_requests_total{method="GET",endpoint="/v1/employees/{id}",status="404"}"#;
    let before = app.metrics().await;
    for _ in 0..3 {
        let r = app
            .get(&format!("/v1/employees/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = app
        .get(&format!("/v1/employees/{}", Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app.get("/v1/raw/path/123").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let after = app.metrics().await;
    assert_eq!(delta(&before, &after, series), 3.0, "{after}");
    assert_eq!(
        delta(
            &before,
            &after,
            r#"http_requests_total{method="GET",endpoint="unmatched",status="404"}"#
        ),
        1.0,
        "{after}"
    );
    assert_eq!(delta(&before, &after, missing), 1.0, "{after}");
    assert_eq!(
        delta(
            &before,
            &after,
            r#"http_request_duration_seconds_count{method="GET",endpoint="/v1/employees/{id}"}"#
        ),
        4.0
    );
    app.stop().await.unwrap();
}
