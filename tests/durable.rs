//! Checkpointed runs, on SQLite and PostgreSQL (ADR 0015): another attempt goes on from
//! the first step not recorded. The vendor is the sandbox over HTTP, so its request count
//! says how many model turns were really asked for; tool receivers are local servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::console::Browser;
use common::tasks::*;
use common::{ADMIN_KEY, Backend, TestApp, expire_lease, test_config};
use digital_employee::ai::sandbox::{Fault, SandboxEngine, SandboxSetup, ScriptStep, ScriptedCall};
use digital_employee::ai::types::Usage;
use digital_employee::app::App;
use digital_employee::store::{
    DEFAULT_TENANT_ID, DynStore, Finish, Lease, NewTask, StepUpdate, Task, TaskEmployee, TaskStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    resume_after_a_lost_lease_asks_no_model_step_twice,
    a_started_call_of_a_webhook_tool_goes_to_a_human,
    a_rejected_call_of_unknown_outcome_is_not_made_again,
    usage_is_the_sum_of_the_steps_after_three_attempts,
    ask_human_round_trip_across_a_restart,
    an_unanswered_question_fails_with_input_timeout,
    parents_waiting_on_twenty_children_hold_no_slot,
    every_end_writes_its_webhook_in_the_same_write,
    a_crash_right_after_the_end_still_delivers_once,
);

/// A sandbox vendor over HTTP, named `vendor` in `AI_PROVIDERS`.
struct Vendor {
    engine: Arc<SandboxEngine>,
    providers: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Vendor {
    async fn start() -> Vendor {
        let engine = Arc::new(SandboxEngine::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let router =
            digital_employee::ai::sandbox_server::router(engine.clone(), Some("sk-v".into()));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Vendor {
            engine,
            providers: json!([{"name": "vendor", "format": "openai", "base_url": base,
                               "api_key": "sk-v"}])
            .to_string(),
            _task: task,
        }
    }

    fn script(&self, model: &str, steps: Vec<ScriptStep>) {
        self.engine.apply(SandboxSetup {
            seed: Some(1),
            faults: vec![],
            scripts: HashMap::from([(model.to_string(), steps)]),
        });
    }

    fn count(&self, model: &str) -> u64 {
        self.engine.stats().get(model).copied().unwrap_or(0)
    }
}

fn call(name: &str, arguments: Value) -> ScriptStep {
    ScriptStep {
        tool_calls: vec![ScriptedCall {
            name: name.into(),
            arguments,
        }],
        ..Default::default()
    }
}

fn answer(text: &str) -> ScriptStep {
    ScriptStep {
        content: Some(text.into()),
        ..Default::default()
    }
}

/// A receiver whose first request never gets an answer (its caller "crashes" while
/// waiting); later ones are answered at once. Keeps the headers of every request.
struct Receiver {
    url: String,
    calls: Arc<AtomicUsize>,
    headers: Arc<Mutex<Vec<(String, String, Value)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let calls = Arc::new(AtomicUsize::new(0));
        let headers: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
        let (c, h) = (calls.clone(), headers.clone());
        let handler = move |hm: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (c, h) = (c.clone(), h.clone());
            async move {
                let get = |k: &str| {
                    hm.get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                h.lock()
                    .unwrap()
                    .push((get("idempotency-key"), get("webhook-id"), v));
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                axum::Json(json!({"state": "done"}))
            }
        };
        let router =
            axum::Router::new().route("/effect", axum::routing::get(handler.clone()).post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/effect", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver {
            url,
            calls,
            headers,
            _task: task,
        }
    }

    fn host(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/effect")
            .to_string()
    }

    async fn wait_calls(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.calls.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the receiver never got call {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn of_kind<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["kind"] == kind).collect()
}

async fn resume_after_a_lost_lease_asks_no_model_step_twice(backend: Backend) {
    let vendor = Vendor::start().await;
    let receiver = Receiver::start().await;
    vendor.script(
        "steps",
        vec![
            call(
                "http_request",
                json!({"method": "GET", "url": receiver.url}),
            ),
            answer("fetched"),
        ],
    );
    let host = receiver.host();
    let extra = with(&[
        ("AI_PROVIDERS", &vendor.providers),
        ("AI_SERVICE_RETRY_COUNT", "0"),
        ("HTTP_TOOL_ALLOWED_HOSTS", &host),
        ("TASK_LEASE_SECONDS", "1"),
    ]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "fetcher", "role": "r", "model_policy": ["vendor/steps"],
               "allowed_tools": ["http_request"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "fetcher", "input": "fetch it"})).await);
    // The tool call is in flight (and will never answer): the worker is presumed dead.
    receiver.wait_calls(1).await;
    expire_lease(app.db(), &id).await;

    let t = wait_status(&app, &id, "succeeded").await;
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(t["steps"], 2, "{t}");
    let ev = events(&app, &id).await;
    let llm = of_kind(&ev, "llm_call");
    assert_eq!(llm.len(), 2);
    assert_eq!(
        vendor.count("steps"),
        llm.len() as u64,
        "the vendor was asked exactly once per recorded step"
    );
    let resumed = of_kind(&ev, "resumed");
    assert_eq!(resumed.len(), 1, "{ev:?}");
    assert_eq!(resumed[0]["payload"]["step"], 1);
    assert_eq!(resumed[0]["payload"]["pending_calls"], 1);
    // GET is idempotent: made again, with the same id, without asking anyone.
    let started = of_kind(&ev, "tool_started");
    assert_eq!(started.len(), 2);
    assert_eq!(
        started[0]["payload"]["idempotency_key"],
        started[1]["payload"]["idempotency_key"]
    );
    assert_eq!(
        started[0]["payload"]["idempotency_key"],
        format!("{id}:1:0")
    );
    assert_eq!(of_kind(&ev, "tool_result").len(), 1);
    assert!(
        !ev.iter()
            .any(|e| e["payload"]["status"] == "waiting_approval")
    );
    assert_eq!(receiver.calls.load(Ordering::SeqCst), 2);
    app.stop().await.unwrap();
}

/// A task whose webhook-tool call was started and never answered (its worker presumed
/// dead): the next attempt pauses it for a human. The model's last turn answers `last`.
async fn paused_on_an_unknown_outcome(
    backend: Backend,
    last: &str,
) -> Option<(TestApp, Vendor, Receiver, String)> {
    let vendor = Vendor::start().await;
    let receiver = Receiver::start().await;
    vendor.script(
        "mail",
        vec![
            call("send_mail", json!({"to": "ops@example.com"})),
            answer(last),
        ],
    );
    let extra = with(&[
        ("AI_PROVIDERS", &vendor.providers),
        ("AI_SERVICE_RETRY_COUNT", "0"),
        ("TASK_LEASE_SECONDS", "1"),
    ]);
    let app = TestApp::spawn_with(backend, &extra).await?;
    let r = app
        .post_json(
            "/v1/tools",
            &json!({"name": "send_mail", "description": "send an e-mail",
                    "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
                    "url": receiver.url}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    employee(
        &app,
        json!({"name": "mailer", "role": "r", "model_policy": ["vendor/mail"],
               "allowed_tools": ["send_mail"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "mailer", "input": "mail ops"})).await);
    receiver.wait_calls(1).await;
    expire_lease(app.db(), &id).await;
    wait_status(&app, &id, "waiting_approval").await;
    Some((app, vendor, receiver, id))
}

async fn a_started_call_of_a_webhook_tool_goes_to_a_human(backend: Backend) {
    let Some((app, vendor, receiver, id)) = paused_on_an_unknown_outcome(backend, "sent").await
    else {
        return;
    };

    // Did the e-mail go out? Nobody knows: a human decides, the call is not repeated.
    let ev = events(&app, &id).await;
    let paused = ev
        .iter()
        .rev()
        .find(|e| e["payload"]["status"] == "waiting_approval")
        .unwrap();
    assert_eq!(paused["payload"]["reason"], "outcome unknown");
    assert_eq!(paused["payload"]["tool"], "send_mail");
    let key = format!("{id}:1:0");
    assert_eq!(paused["payload"]["idempotency_key"], key);
    assert_eq!(receiver.calls.load(Ordering::SeqCst), 1);
    // The console's approvals inbox says so, with the key to check the receiver by.
    let b = Browser::signin(&app, ADMIN_KEY).await;
    let (status, html) = b.get("/approvals").await;
    assert_eq!(status, 200);
    let notice = html
        .find(&format!("id=\"unknown-{id}\""))
        .map(|at| &html[at..])
        .unwrap_or_else(|| panic!("no outcome-unknown notice: {html}"));
    assert!(notice.contains(&format!("<code>{key}</code>")), "{notice}");

    let r = app
        .post_json(
            &format!("/v1/tasks/{id}/approve"),
            &json!({"reason": "it did not arrive"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_status(&app, &id, "succeeded").await;
    assert_eq!(vendor.count("mail"), 2, "no model step asked twice");
    let got = receiver.headers.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    for (idem, webhook_id, body) in &got {
        assert_eq!(idem, &key, "Idempotency-Key");
        assert_eq!(webhook_id, &key, "webhook-id");
        assert_eq!(body["call_id"], key.as_str());
    }
    app.stop().await.unwrap();
}

/// The other answer a human may give: the call may have happened, so it is not made
/// again and the model is told so (the tool itself needs no approval).
async fn a_rejected_call_of_unknown_outcome_is_not_made_again(backend: Backend) {
    let Some((app, vendor, receiver, id)) =
        paused_on_an_unknown_outcome(backend, "not sent again").await
    else {
        return;
    };
    let r = app
        .post_json(
            &format!("/v1/tasks/{id}/reject"),
            &json!({"reason": "it arrived"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t = wait_status(&app, &id, "succeeded").await;
    assert_eq!(t["result"]["output"], "not sent again");
    assert_eq!(receiver.calls.load(Ordering::SeqCst), 1, "not made again");
    let ev = events(&app, &id).await;
    assert_eq!(of_kind(&ev, "tool_started").len(), 1, "{ev:?}");
    let result = of_kind(&ev, "tool_result");
    assert_eq!(result.len(), 1);
    assert_eq!(result[0]["payload"]["outcome"], "rejected");
    assert_eq!(
        result[0]["payload"]["idempotency_key"],
        format!("{id}:1:0").as_str()
    );
    assert_eq!(vendor.count("mail"), 2, "no model step asked twice");
    app.stop().await.unwrap();
}

async fn usage_is_the_sum_of_the_steps_after_three_attempts(backend: Backend) {
    let vendor = Vendor::start().await;
    let usage = |i: u64, o: u64| {
        Some(Usage {
            input_tokens: i,
            output_tokens: o,
            ..Default::default()
        })
    };
    let down = || ScriptStep {
        fault: Some(Fault::Status {
            status: 500,
            retry_after: None,
            message: None,
        }),
        ..Default::default()
    };
    let mut first = call("calculator", json!({"expression": "1 + 1"}));
    first.usage = usage(100, 10);
    let mut second = call("calculator", json!({"expression": "2 + 2"}));
    second.usage = usage(200, 20);
    let mut last = answer("four");
    last.usage = usage(300, 30);
    vendor.script("thrice", vec![first, down(), second, down(), last]);
    let extra = with(&[
        ("AI_PROVIDERS", &vendor.providers),
        ("AI_SERVICE_RETRY_COUNT", "0"),
        ("AI_BREAKER_THRESHOLD", "1000"),
    ]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "counter", "role": "r", "model_policy": ["vendor/thrice"],
               "allowed_tools": ["calculator"]}),
    )
    .await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "counter", "input": "add", "max_attempts": 3}),
        )
        .await,
    );
    let t = wait_end(&app, &id).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(t["attempt"], 3);
    let ev = events(&app, &id).await;
    let llm = of_kind(&ev, "llm_call");
    assert_eq!(llm.len(), 3, "three recorded steps");
    assert_eq!(vendor.count("thrice"), 5, "three steps and two failures");
    let sum = |k: &str| {
        llm.iter()
            .map(|e| e["payload"][k].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(sum("tokens_in"), 600);
    assert_eq!(sum("tokens_out"), 60);
    assert_eq!(t["tokens_in"], 600, "{t}");
    assert_eq!(t["tokens_out"], 60, "{t}");
    assert_eq!(t["steps"], 3);
    assert_eq!(t["cost_nanos"], sum("cost_nanos"), "{t}");
    let resumed: Vec<i64> = of_kind(&ev, "resumed")
        .iter()
        .map(|e| e["payload"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(resumed, vec![1, 2]);
    // Each calculator call was made once: results recorded are never asked again.
    assert_eq!(of_kind(&ev, "tool_started").len(), 2);
    assert_eq!(of_kind(&ev, "tool_result").len(), 2);
    app.stop().await.unwrap();
}

async fn ask_human_round_trip_across_a_restart(backend: Backend) {
    let vendor = Vendor::start().await;
    vendor.script(
        "asker",
        vec![
            call("ask_human", json!({"question": "Which region?"})),
            answer("deploying to the region given"),
        ],
    );
    let extra = with(&[
        ("AI_PROVIDERS", &vendor.providers),
        ("AI_SERVICE_RETRY_COUNT", "0"),
    ]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "deployer", "role": "r", "model_policy": ["vendor/asker"],
               "allowed_tools": ["ask_human"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "deployer", "input": "deploy"})).await);
    let t = wait_status(&app, &id, "waiting_input").await;
    assert_eq!(
        t["attempt"], 0,
        "a task waiting for a person holds no attempt: {t}"
    );
    let ev = events(&app, &id).await;
    let asked = ev
        .iter()
        .find(|e| e["payload"]["status"] == "waiting_input")
        .unwrap();
    assert_eq!(asked["payload"]["question"], "Which region?");

    // Not waiting for input yet / bad answers.
    let post = |app: &TestApp, id: &str, body: Value| {
        app.post_json(&format!("/v1/tasks/{id}/input"), &body)
            .send()
    };
    let r = post(&app, &id, json!({})).await.unwrap();
    common::assert_error(r, 422, "validation_error").await;
    let r = post(&app, &id, json!({"answer": "   "})).await.unwrap();
    let body = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], "answer", "{body}");
    let r = post(&app, &id, json!({"answer": "x".repeat(20_001)}))
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;
    let r = post(
        &app,
        &uuid::Uuid::now_v7().to_string(),
        json!({"answer": "eu"}),
    )
    .await
    .unwrap();
    common::assert_error(r, 404, "not_found").await;

    // Restart: a new app on the same database still waits, and takes the answer.
    let db = app.stop_keep_db().await;
    let app = App::build(test_config(&db.url, &extra)).await.unwrap();
    let app = TestApp::start(app, db).await;
    assert_eq!(task(&app, &id).await["status"], "waiting_input");
    let r = post(&app, &id, json!({"answer": "eu-west"})).await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let t = wait_status(&app, &id, "succeeded").await;
    assert_eq!(t["result"]["output"], "deploying to the region given");
    assert_eq!(vendor.count("asker"), 2, "the question was asked once");
    let ev = events(&app, &id).await;
    let input = of_kind(&ev, "input");
    assert_eq!(input.len(), 1);
    assert_eq!(input[0]["payload"]["answer"], "eu-west");
    let result = of_kind(&ev, "tool_result");
    assert_eq!(result.len(), 1);
    assert_eq!(result[0]["payload"]["tool"], "ask_human");
    assert_eq!(result[0]["payload"]["content"]["answer"], "eu-west");
    let r = post(&app, &id, json!({"answer": "again"})).await.unwrap();
    common::assert_error(r, 409, "conflict").await;
    app.stop().await.unwrap();
}

async fn an_unanswered_question_fails_with_input_timeout(backend: Backend) {
    let vendor = Vendor::start().await;
    vendor.script(
        "asker",
        vec![call("ask_human", json!({"question": "Anyone there?"}))],
    );
    let extra = with(&[("AI_PROVIDERS", &vendor.providers)]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let r = app
        .post_json(
            "/v1/employees",
            &json!({"name": "x", "role": "r", "input_timeout_seconds": 0}),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], "input_timeout_seconds", "{body}");
    let e = employee(
        &app,
        json!({"name": "lonely", "role": "r", "model_policy": ["vendor/asker"],
               "allowed_tools": ["ask_human"], "input_timeout_seconds": 1}),
    )
    .await;
    assert_eq!(e["input_timeout_seconds"], 1);
    let id = id_of(&submit(&app, json!({"employee": "lonely", "input": "hello"})).await);
    wait_status(&app, &id, "waiting_input").await;
    let t = wait_status(&app, &id, "failed").await;
    assert!(
        t["error"].as_str().unwrap().starts_with("input_timeout"),
        "{t}"
    );
    let ev = events(&app, &id).await;
    assert!(ev.iter().any(|e| e["payload"]["reason"] == "input_timeout"));
    app.stop().await.unwrap();
}

async fn parents_waiting_on_twenty_children_hold_no_slot(backend: Backend) {
    let vendor = Vendor::start().await;
    let delegate_all = |from: usize| ScriptStep {
        tool_calls: (from..from + 10)
            .map(|i| ScriptedCall {
                name: "delegate".into(),
                arguments: json!({"employee": "helper", "input": format!("part {i}")}),
            })
            .collect(),
        ..Default::default()
    };
    vendor.script(
        "boss",
        vec![
            delegate_all(0),
            delegate_all(10),
            answer("all parts done"),
            answer("all parts done"),
        ],
    );
    let extra = with(&[
        ("AI_PROVIDERS", &vendor.providers),
        ("WORKER_CONCURRENCY", "2"),
    ]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(&app, json!({"name": "helper", "role": "r"})).await;
    employee(
        &app,
        json!({"name": "boss", "role": "r", "model_policy": ["vendor/boss"],
               "allowed_tools": ["delegate"]}),
    )
    .await;
    // Two parents, ten children each, two worker slots: a parent that held its slot
    // while waiting would leave its children none.
    let a = id_of(&submit(&app, json!({"employee": "boss", "input": "first half"})).await);
    let b = id_of(&submit(&app, json!({"employee": "boss", "input": "second half"})).await);
    for id in [&a, &b] {
        let t = wait_end(&app, id).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        let ev = events(&app, id).await;
        assert!(
            ev.iter()
                .any(|e| e["payload"]["status"] == "waiting_subtasks"),
            "{ev:?}"
        );
        let results = of_kind(&ev, "tool_result");
        assert_eq!(results.len(), 10);
        assert!(
            results.iter().all(|r| r["payload"]["outcome"] == "ok"),
            "{results:?}"
        );
    }
    let filter = digital_employee::store::TaskFilter {
        parent_task_id: Some(a.parse().unwrap()),
        ..Default::default()
    };
    let children = app
        .store
        .list_tasks(
            digital_employee::store::DEFAULT_TENANT_ID,
            &filter,
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(children.items.len(), 10);
    assert!(
        children
            .items
            .iter()
            .all(|c| c.status == digital_employee::store::TaskStatus::Succeeded)
    );
    assert_eq!(
        vendor.count("boss"),
        4,
        "each parent asked twice, nothing repeated"
    );
    app.stop().await.unwrap();
}

/// A completion-webhook receiver answering 200, keeping every request.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start() -> Hook {
        let got: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>> = Arc::default();
        let seen = got.clone();
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((headers, v));
                axum::http::StatusCode::OK
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Hook {
            url,
            got,
            _task: task,
        }
    }

    fn received(&self) -> Vec<(axum::http::HeaderMap, Value)> {
        self.got.lock().unwrap().clone()
    }
}

/// A task of `employee` inserted through the store: due now or in an hour.
async fn new_task(
    store: &DynStore,
    employee: Uuid,
    callback_url: Option<&str>,
    due_now: bool,
    max_attempts: i32,
) -> Task {
    let now = digital_employee::store::now();
    let (t, created) = store
        .create_task(&NewTask {
            tenant_id: DEFAULT_TENANT_ID,
            employee: TaskEmployee::Id(employee),
            input: json!("hello"),
            priority: 0,
            run_at: if due_now {
                now
            } else {
                now + chrono::Duration::hours(1)
            },
            max_attempts,
            idempotency_key: None,
            request_hash: None,
            parent_task_id: None,
            depth: 0,
            session_id: None,
            callback_url: callback_url.map(str::to_string),
            metadata: json!({}),
            output_schema: None,
            trace_context: None,
        })
        .await
        .unwrap();
    assert!(created);
    t
}

/// Claims task `id` (the only one due) as a worker would.
async fn claim(store: &DynStore, id: Uuid, lease: Duration) -> Lease {
    let claimed = store.claim_tasks("test-worker", 1, lease, 0).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].id, id);
    claimed[0].lease().unwrap()
}

fn end(status: TaskStatus) -> Finish {
    Finish {
        status,
        result: (status == TaskStatus::Succeeded).then(|| json!({"output": "done"})),
        error: (status != TaskStatus::Succeeded).then(|| "it went wrong".to_string()),
        run_at: None,
        step: StepUpdate::default(),
        messages: Vec::new(),
    }
}

/// Every path that ends a task writes its completion webhook in the same write as the
/// end, through the store alone: no worker, no delivery loop, no code after the write
/// runs here (`WORKERS_ENABLED=false`). Writes that do not end the task queue nothing.
async fn every_end_writes_its_webhook_in_the_same_write(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("WORKERS_ENABLED", "false")]).await else {
        return;
    };
    let e = employee(&app, json!({"name": "hooked", "role": "r"})).await;
    let emp = Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();
    let s = &app.store;
    let hook = "http://127.0.0.1:9/hook";
    let queued = |id: Uuid| async move { s.list_deliveries(DEFAULT_TENANT_ID, id).await.unwrap() };
    let assert_queued = |id: Uuid, what: &str, d: Vec<digital_employee::store::Delivery>| {
        assert_eq!(d.len(), 1, "{what}: {d:?}");
        assert_eq!(d[0].task_id, id, "{what}");
        assert_eq!(d[0].event, "task.finished", "{what}");
        assert_eq!(d[0].url, hook, "{what}");
        assert_eq!(d[0].status, "pending", "{what}");
        assert_eq!(d[0].attempts, 0, "{what}");
        assert_eq!(d[0].body, None, "{what}: rendered at delivery");
    };

    // The worker's end: succeeded, failed (budget_exceeded, invalid_output, ... end this
    // way too), cancelled at a step boundary.
    for status in [
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        let t = new_task(s, emp, Some(hook), true, 3).await;
        let lease = claim(s, t.id, Duration::from_secs(30)).await;
        assert!(
            s.record_step(&lease, &StepUpdate::default())
                .await
                .unwrap()
                .is_some()
        );
        assert!(queued(t.id).await.is_empty(), "a step is not an end");
        assert!(s.finish_task(&lease, &end(status)).await.unwrap());
        assert_queued(t.id, status.as_str(), queued(t.id).await);
        // A late, fenced-out end writes nothing more.
        assert!(!s.finish_task(&lease, &end(status)).await.unwrap());
        assert_eq!(queued(t.id).await.len(), 1);
    }

    // A retry and a release are not ends.
    let t = new_task(s, emp, Some(hook), true, 3).await;
    let lease = claim(s, t.id, Duration::from_secs(30)).await;
    let mut retry = end(TaskStatus::Retrying);
    retry.run_at = Some(digital_employee::store::now() + chrono::Duration::hours(1));
    assert!(s.finish_task(&lease, &retry).await.unwrap());
    assert!(queued(t.id).await.is_empty(), "a retry is not an end");

    // A cancel of a task that is not running.
    let t = new_task(s, emp, Some(hook), false, 3).await;
    s.cancel_task(DEFAULT_TENANT_ID, t.id).await.unwrap();
    assert_queued(t.id, "cancel", queued(t.id).await);

    // The reaper's rescue with the attempts used up.
    let t = new_task(s, emp, Some(hook), true, 1).await;
    claim(s, t.id, Duration::from_millis(1)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.rescue_expired(&|_| Duration::ZERO).await.unwrap();
        if r.iter().any(|r| r.task_id == t.id) {
            assert_eq!(r[0].status, TaskStatus::Failed);
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_queued(t.id, "rescue", queued(t.id).await);

    // A question nobody answered in time.
    let t = new_task(s, emp, Some(hook), true, 3).await;
    let lease = claim(s, t.id, Duration::from_secs(30)).await;
    let mut wait = end(TaskStatus::WaitingInput);
    wait.run_at = Some(digital_employee::store::now() - chrono::Duration::seconds(1));
    assert!(s.finish_task(&lease, &wait).await.unwrap());
    assert!(queued(t.id).await.is_empty(), "waiting is not an end");
    let expired = s.expire_inputs().await.unwrap();
    assert!(expired.iter().any(|r| r.task_id == t.id), "{expired:?}");
    assert_queued(t.id, "input_timeout", queued(t.id).await);

    // Without a callback_url, an end queues nothing.
    let t = new_task(s, emp, None, true, 3).await;
    let lease = claim(s, t.id, Duration::from_secs(30)).await;
    assert!(
        s.finish_task(&lease, &end(TaskStatus::Succeeded))
            .await
            .unwrap()
    );
    assert!(queued(t.id).await.is_empty());
    app.stop().await.unwrap();
}

/// The process that ended a task dies right after the end committed, before any
/// webhook attempt: another replica on the same database delivers it, exactly once.
async fn a_crash_right_after_the_end_still_delivers_once(backend: Backend) {
    let hook = Hook::start().await;
    // Replica A runs no deliverer; the test is its worker, and no code of A runs after
    // the worker's end (the crash).
    let Some(a) = TestApp::spawn_with(backend, &[("WORKERS_ENABLED", "false")]).await else {
        return;
    };
    employee(&a, json!({"name": "hooked", "role": "r"})).await;
    let t = submit(
        &a,
        json!({"employee": "hooked", "input": "hello", "callback_url": hook.url}),
    )
    .await;
    let id = Uuid::parse_str(&id_of(&t)).unwrap();
    let lease = claim(&a.store, id, Duration::from_secs(30)).await;
    assert!(
        a.store
            .finish_task(&lease, &end(TaskStatus::Succeeded))
            .await
            .unwrap()
    );
    let db = a.stop_keep_db().await;
    assert!(hook.received().is_empty());

    let b = App::build(test_config(&db.url, &[("WEBHOOK_POLL_INTERVAL", "0.05")]))
        .await
        .unwrap();
    let b = TestApp::start(b, db).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d = b
            .store
            .list_deliveries(DEFAULT_TENANT_ID, id)
            .await
            .unwrap();
        if d.len() == 1 && d[0].status == "delivered" {
            break d;
        }
        assert!(Instant::now() < deadline, "not delivered: {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(d[0].attempts, 1);
    let got = hook.received();
    assert_eq!(got.len(), 1, "delivered once");
    let (headers, body) = &got[0];
    assert_eq!(
        headers["x-digital-employee-delivery"].to_str().unwrap(),
        d[0].id.to_string()
    );
    assert_eq!(headers["x-digital-employee-event"], "task.finished");
    assert!(headers.contains_key("x-digital-employee-signature"));
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["result"]["output"], "done");
    // The body is the task as the API shows it.
    assert_eq!(*body, task(&b, &id.to_string()).await);
    b.stop().await.unwrap();
}

/// The `id:`s of the complete lines of an SSE body read so far.
fn sse_ids(body: &str) -> Vec<i64> {
    let complete = body.rsplit_once('\n').map_or("", |(done, _)| done);
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

/// Two replicas on one PostgreSQL database: replica B (no workers) streams the events of a
/// task replica A runs. B re-reads the log on its own only every 60 s, so the events can
/// reach it in time only through the notifications (`de_events`) of A's writes, sent
/// because B's stream registered itself as a follower of the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_follower_on_another_replica_is_woken_by_notifications() {
    if common::postgres_url().is_none() {
        return;
    }
    let vendor = Vendor::start().await;
    vendor.script(
        "asker",
        vec![
            call("ask_human", json!({"question": "Which region?"})),
            answer("deployed"),
        ],
    );
    let extra = with(&[
        ("AI_PROVIDERS", &vendor.providers),
        ("SSE_REREAD_SECONDS", "60"),
    ]);
    let a = TestApp::spawn_with(Backend::Postgres, &extra)
        .await
        .unwrap();
    employee(
        &a,
        json!({"name": "deployer", "role": "r", "model_policy": ["vendor/asker"],
               "allowed_tools": ["ask_human"]}),
    )
    .await;
    let id = id_of(&submit(&a, json!({"employee": "deployer", "input": "deploy"})).await);
    wait_status(&a, &id, "waiting_input").await;
    let so_far = events(&a, &id).await.len();

    let b = App::build(test_config(
        &a.db().url,
        &[("WORKERS_ENABLED", "false"), ("SSE_REREAD_SECONDS", "60")],
    ))
    .await
    .unwrap();
    let b_addr = b.api_addr().unwrap();
    let (stop_b, stopped) = tokio::sync::oneshot::channel::<()>();
    let b_run = tokio::spawn(b.run(async move {
        let _ = stopped.await;
    }));
    common::poll_ok(|| a.client.get(format!("http://{b_addr}/ready"))).await;
    let mut live = a
        .client
        .get(format!("http://{b_addr}/v1/tasks/{id}/events"))
        .header("X-API-Key", common::ADMIN_KEY)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    // B streams the log so far, then waits.
    let mut body = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sse_ids(&body).len() < so_far {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .expect("B streams the events written so far")
            .unwrap()
            .expect("the stream is open while the task waits");
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }

    // A runs the rest of the task; B's follower must be woken for each new event.
    let answered = Instant::now();
    let r = a
        .post_json(&format!("/v1/tasks/{id}/input"), &json!({"answer": "eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Some(chunk) = tokio::time::timeout_at(deadline, live.chunk())
        .await
        .expect("B's stream ends with the task, long before its 60 s re-read")
        .unwrap()
    {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let elapsed = answered.elapsed();
    let all = events(&a, &id).await;
    assert_eq!(task(&a, &id).await["status"], "succeeded");
    assert!(all.len() > so_far);
    body.push('\n');
    assert_eq!(
        sse_ids(&body),
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "{body}"
    );
    println!("answer to the end of B's stream: {elapsed:?}");
    // The stream's registration went with it.
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&a.db().url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM task_followers")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} registrations left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_b.send(());
    b_run.await.unwrap().unwrap();
    a.stop().await.unwrap();
}
