//! Budgets: the `/v1/budgets` resource, the refusal before a vendor call on every
//! protocol and for tasks, and the reservation that holds under concurrency — 64 calls
//! against a budget for about 10, on SQLite (one process) and across two server
//! processes sharing one PostgreSQL database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tasks::{submit, wait_end};
use common::{ADMIN_KEY, Backend, TestApp, TestDb, assert_error, process};
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use serde_json::{Value, json};

const VENDOR_KEY: &str = "sk-sandbox-budgets";

/// A sandbox vendor on a loopback port that answers after 50–150 ms, so concurrent
/// calls overlap.
struct Vendor {
    base: String,
    engine: Arc<SandboxEngine>,
    _task: tokio::task::JoinHandle<()>,
}

impl Vendor {
    async fn start() -> Vendor {
        let engine = Arc::new(SandboxEngine::default());
        engine.apply(SandboxSetup {
            seed: Some(7),
            faults: vec![FaultRule {
                model: None,
                fault: Fault::Latency {
                    ms: 50,
                    jitter_ms: 100,
                },
                times: None,
                rate: None,
            }],
            scripts: HashMap::new(),
        });
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

    fn providers(&self) -> String {
        json!([
            {"name": "sbopenai", "format": "openai", "base_url": format!("{}/v1", self.base),
             "api_key": VENDOR_KEY},
        ])
        .to_string()
    }

    /// Vendor calls received so far, every model.
    fn calls(&self) -> u64 {
        self.engine.stats().values().sum()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AI_PROVIDERS", self.providers()),
            ("AI_SERVICE_RETRY_DELAY", "0".into()),
            ("AI_SERVICE_RETRY_COUNT", "0".into()),
            ("AI_CACHE", "off".into()),
        ]
    }
}

async fn app(backend: Backend, vendor: &Vendor) -> Option<TestApp> {
    let env = vendor.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_with(backend, &env).await
}

/// A chat completion of a fixed prompt with `max_tokens` 40.
fn chat_body() -> Value {
    json!({
        "model": "sbopenai/sandbox-1",
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "Summarise the quarterly report in one line."}],
    })
}

async fn budget(app: &TestApp, body: Value) -> Value {
    let r = app.post_json("/v1/budgets", &body).send().await.unwrap();
    assert_eq!(r.status(), 201, "create budget {body}");
    r.json().await.unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

async fn crud_and_rules(backend: Backend) {
    let vendor = Vendor::start().await;
    let Some(app) = app(backend, &vendor).await else {
        return;
    };
    let b = budget(
        &app,
        json!({"scope": "tenant", "period": "day", "limit_usd": 12.5}),
    )
    .await;
    assert_eq!(b["scope"], "tenant");
    assert_eq!(b["period"], "day");
    assert_eq!(f(&b, "limit_usd"), 12.5);
    assert_eq!(f(&b, "spent_usd"), 0.0);
    assert_eq!(f(&b, "remaining_usd"), 12.5);
    assert!(b["subject_id"].is_null());
    let reset = chrono::DateTime::parse_from_rfc3339(b["reset_at"].as_str().unwrap()).unwrap();
    assert!(reset > chrono::Utc::now() && reset <= chrono::Utc::now() + chrono::Duration::days(1));
    let id = b["id"].as_str().unwrap().to_string();

    // One budget per scope, subject and period; another period is another budget.
    let dup = app
        .post_json(
            "/v1/budgets",
            &json!({"scope": "tenant", "period": "day", "limit_usd": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_error(dup, 409, "conflict").await;
    let month = budget(
        &app,
        json!({"scope": "tenant", "period": "month", "limit_usd": 100}),
    )
    .await;
    let none = budget(
        &app,
        json!({"scope": "tenant", "period": "none", "limit_usd": 1000}),
    )
    .await;
    assert!(none["reset_at"].is_null());

    for (body, field) in [
        (
            json!({"scope": "tenant", "period": "day", "limit_usd": -1}),
            "limit_usd",
        ),
        (
            json!({"scope": "tenant", "period": "day", "limit_usd": 2e9}),
            "limit_usd",
        ),
        (
            json!({"scope": "tenant", "subject_id": uuid::Uuid::now_v7(), "period": "week", "limit_usd": 1}),
            "period",
        ),
        (
            json!({"scope": "tenant", "subject_id": uuid::Uuid::now_v7(), "period": "day", "limit_usd": 1}),
            "subject_id",
        ),
        (
            json!({"scope": "key", "period": "day", "limit_usd": 1}),
            "subject_id",
        ),
        (
            json!({"scope": "employee", "subject_id": uuid::Uuid::now_v7(), "period": "day", "limit_usd": 1}),
            "subject_id",
        ),
    ] {
        let r = app.post_json("/v1/budgets", &body).send().await.unwrap();
        let e = assert_error(r, 422, "validation_error").await;
        assert_eq!(e["error"]["field"], field, "{body} → {e}");
    }

    let emp = app.create_employee("budgeted").await;
    let eb = budget(
        &app,
        json!({"scope": "employee", "subject_id": emp["id"], "period": "month", "limit_usd": 3}),
    )
    .await;
    assert_eq!(eb["subject_id"], emp["id"]);

    let list: Value = app
        .get("/v1/budgets?limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    assert!(list["next_cursor"].is_string());

    let r = app
        .patch_json(&format!("/v1/budgets/{id}"), &json!({"limit_usd": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(f(&changed, "limit_usd"), 20.0);

    // A key without the admin scope sees nothing of budgets.
    let k: Value = app
        .post_json("/v1/keys", &json!({"name": "writer", "scope": "write"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = app
        .client
        .get(app.url("/v1/budgets"))
        .header("X-API-Key", k["secret"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;

    for gone in [&id, month["id"].as_str().unwrap()] {
        let r = app
            .delete(&format!("/v1/budgets/{gone}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let r = app.get(&format!("/v1/budgets/{id}")).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app.delete("/v1/budgets/not-an-id").send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    app.stop().await.unwrap();
}

async fn every_protocol_is_refused_before_the_vendor(backend: Backend) {
    let vendor = Vendor::start().await;
    let Some(app) = app(backend, &vendor).await else {
        return;
    };
    // A key of its own, with a zero budget: its calls are refused, the admin's are not.
    let k: Value = app
        .post_json("/v1/keys", &json!({"name": "capped", "scope": "write"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = k["secret"].as_str().unwrap().to_string();
    budget(
        &app,
        json!({"scope": "key", "subject_id": k["id"], "period": "month", "limit_usd": 0}),
    )
    .await;
    let post = |path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .header("X-API-Key", &secret)
            .json(&body)
    };
    let before = vendor.calls();

    let r = post("/v1/chat/completions", chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-should-retry"], "false");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&retry), "{retry}");
    let e = assert_error(r, 429, "budget_exceeded").await;
    assert_eq!(e["error"]["budget"]["scope"], "key");
    assert_eq!(e["error"]["budget"]["limit_usd"], 0.0);
    let reset = e["error"]["budget"]["reset_at"].as_str().unwrap();
    assert!(
        reset.contains("-01T00:00:00"),
        "month budgets reset on the 1st: {reset}"
    );

    let mut streamed = chat_body();
    streamed["stream"] = json!(true);
    let r = post("/v1/chat/completions", streamed).send().await.unwrap();
    assert_error(r, 429, "budget_exceeded").await;

    let r = post(
        "/v1/messages",
        json!({"model": "sbopenai/sandbox-1", "max_tokens": 20,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    assert!(body["error"]["budget"]["reset_at"].is_string(), "{body}");

    let r = post(
        "/v1/responses",
        json!({"model": "sbopenai/sandbox-1", "input": "hi", "stream": true}),
    )
    .send()
    .await
    .unwrap();
    assert_error(r, 429, "budget_exceeded").await;

    let r = post(
        "/v1/embeddings",
        json!({"model": "sbopenai/text-embedding-3-small", "input": "hi"}),
    )
    .send()
    .await
    .unwrap();
    assert_error(r, 429, "budget_exceeded").await;

    assert_eq!(vendor.calls(), before, "no refused call reached the vendor");

    // The admin key has no budget of its own and the tenant none: it is served.
    let r = app
        .post_json("/v1/chat/completions", &chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(vendor.calls(), before + 1);
    app.stop().await.unwrap();
}

async fn a_task_over_budget_fails_without_retry(backend: Backend) {
    let vendor = Vendor::start().await;
    let Some(app) = app(backend, &vendor).await else {
        return;
    };
    let emp = common::tasks::employee(
        &app,
        json!({"name": "thrifty", "role": "r", "model_policy": ["sbopenai/sandbox-1"]}),
    )
    .await;
    budget(
        &app,
        json!({"scope": "employee", "subject_id": emp["id"], "period": "day", "limit_usd": 0}),
    )
    .await;
    let before = vendor.calls();
    let t = submit(
        &app,
        json!({"employee": "thrifty", "input": "do it", "max_attempts": 3}),
    )
    .await;
    let done = wait_end(&app, t["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .starts_with("budget_exceeded"),
        "{done}"
    );
    assert_eq!(done["attempt"], 1, "not retried: {done}");
    assert_eq!(vendor.calls(), before);

    // The employee's chat is refused the same way, with the API's budget error.
    let r = app
        .post_json(
            &format!("/v1/employees/{}/chat", emp["id"].as_str().unwrap()),
            &json!({"message": "hello"}),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, 429, "budget_exceeded").await;
    app.stop().await.unwrap();
}

/// Sends `n` chat calls at once, spread over `urls`; returns (answered, refused) and
/// the maximum cost a refusal reported.
async fn burst(urls: &[String], n: usize) -> (usize, usize) {
    let client = reqwest::Client::new();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = format!("{}/v1/chat/completions", urls[i % urls.len()]);
        let client = client.clone();
        calls.spawn(async move {
            let r = client
                .post(url)
                .header("X-API-Key", ADMIN_KEY)
                .json(&chat_body())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = calls.join_next().await {
        let (status, body) = r.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, refused)
}

/// Creates a tenant budget for about `calls` calls (a refused probe reports one call's
/// maximum cost); returns the budget's id, its limit and that maximum cost.
async fn budget_for(api: &str, client: &reqwest::Client, calls: f64) -> (String, f64, f64) {
    let created: Value = client
        .post(format!("{api}/v1/budgets"))
        .header("X-API-Key", ADMIN_KEY)
        .json(&json!({"scope": "tenant", "period": "none", "limit_usd": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let probe: Value = client
        .post(format!("{api}/v1/chat/completions"))
        .header("X-API-Key", ADMIN_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let max_cost = f(&probe["error"]["budget"], "needed_usd");
    assert!(max_cost > 0.0, "{probe}");
    let limit = max_cost * calls;
    let r = client
        .patch(format!("{api}/v1/budgets/{id}"))
        .header("X-API-Key", ADMIN_KEY)
        .json(&json!({"limit_usd": limit}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (id, limit, max_cost)
}

/// Waits until every hold of the budget is settled; returns the settled spend.
async fn settled(api: &str, client: &reqwest::Client, id: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b: Value = client
            .get(format!("{api}/v1/budgets/{id}"))
            .header("X-API-Key", ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if f(&b, "reserved_usd") == 0.0 {
            return f(&b, "spent_usd");
        }
        assert!(Instant::now() < deadline, "holds not settled: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_calls_on_sqlite_never_overspend() {
    let vendor = Vendor::start().await;
    let app = app(Backend::Sqlite, &vendor).await.unwrap();
    let api = app.url("");
    let (id, limit, max_cost) = budget_for(&api, &app.client, 10.0).await;
    let before = vendor.calls();
    let (ok, refused) = burst(std::slice::from_ref(&api), 64).await;
    let spent = settled(&api, &app.client, &id).await;
    eprintln!(
        "sqlite: {ok} answered, {refused} refused, ${spent} spent of ${limit} (one call ≤ ${max_cost})"
    );
    assert_eq!(ok + refused, 64);
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    assert!(
        spent <= limit + max_cost,
        "spent {spent} > limit {limit} + one call {max_cost}"
    );
    assert_eq!(
        vendor.calls() - before,
        ok as u64,
        "refused calls reached the vendor"
    );
    // The spend is exactly what the answered calls cost, as recorded per call (the
    // records are written in batches: poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage: Value = app
            .get("/v1/usage")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let recorded = f(&usage["totals"], "cost_usd");
        if (recorded - spent).abs() < 1e-9 {
            break;
        }
        assert!(Instant::now() < deadline, "usage {usage} vs spent {spent}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await.unwrap();
}

/// One `digital-employee serve` process on the shared database.
struct Server {
    api: String,
    _process: process::Server,
}

impl Server {
    fn start(db_url: &str, vendor: &Vendor) -> Server {
        let vendor_env = vendor.env();
        let mut env = vec![
            ("DATABASE_URL", db_url),
            ("API_KEY_WHITELIST", ADMIN_KEY),
            ("RATE_LIMIT_REQUESTS", "1000000"),
        ];
        env.extend(vendor_env.iter().map(|(k, v)| (*k, v.as_str())));
        let started = process::Server::start(&process::temp_dir(), &env);
        Server {
            api: format!("http://{}", started.api),
            _process: started,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_calls_across_two_postgres_replicas_never_overspend() {
    if common::postgres_url().is_none() {
        return;
    }
    let vendor = Vendor::start().await;
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    db.migrated_store().await.close().await;
    let a = Server::start(&db.url, &vendor);
    let b = Server::start(&db.url, &vendor);
    let client = reqwest::Client::new();
    let (id, limit, max_cost) = budget_for(&a.api, &client, 10.0).await;
    let before = vendor.calls();
    let (ok, refused) = burst(&[a.api.clone(), b.api.clone()], 64).await;
    let spent = settled(&b.api, &client, &id).await;
    eprintln!(
        "postgres, two replicas: {ok} answered, {refused} refused, ${spent} spent of ${limit} (one call ≤ ${max_cost})"
    );
    assert_eq!(ok + refused, 64);
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    assert!(
        spent <= limit + max_cost,
        "spent {spent} > limit {limit} + one call {max_cost}"
    );
    assert_eq!(vendor.calls() - before, ok as u64);
    drop((a, b));
}

/// A hold its process never settled (it died) is reclaimed once it expires.
async fn an_expired_hold_is_reclaimed(backend: Backend) {
    use digital_employee::store::{BudgetPeriod, BudgetScope, HoldRequest, NewBudget, Reserved};
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.migrated_store().await;
    let tenant = store.create_tenant("reclaim").await.unwrap().id;
    let now = chrono::Utc::now();
    let b = store
        .create_budget(
            tenant,
            &NewBudget {
                id: uuid::Uuid::now_v7(),
                scope: BudgetScope::Tenant,
                subject_id: None,
                period: BudgetPeriod::Month,
                limit_nanos: 1000,
                now,
            },
        )
        .await
        .unwrap();
    let hold = |amount: i64, ttl: i64| HoldRequest {
        hold_id: uuid::Uuid::now_v7(),
        tenant,
        key: None,
        employee: None,
        amount_nanos: amount,
        now,
        expires_at: now + chrono::Duration::seconds(ttl),
    };
    let dead = hold(800, -1);
    assert_eq!(
        store.reserve_budget(&dead).await.unwrap(),
        Reserved::Held(vec![b.id])
    );
    // Full: 800 held of 1000.
    assert!(matches!(
        store.reserve_budget(&hold(300, 60)).await.unwrap(),
        Reserved::Refused(_)
    ));
    assert_eq!(
        store
            .reclaim_budget_holds(chrono::Utc::now())
            .await
            .unwrap(),
        1
    );
    let live = hold(300, 60);
    assert_eq!(
        store.reserve_budget(&live).await.unwrap(),
        Reserved::Held(vec![b.id])
    );
    // Settling the reclaimed hold late charges its cost without freeing twice.
    store
        .settle_budget(dead.hold_id, &[b.id], 100, now)
        .await
        .unwrap();
    store
        .settle_budget(live.hold_id, &[b.id], 250, now)
        .await
        .unwrap();
    let after = store.get_budget(tenant, b.id).await.unwrap();
    assert_eq!((after.spent_nanos, after.reserved_nanos), (350, 0));
}

backend_tests!(
    crud_and_rules,
    every_protocol_is_refused_before_the_vendor,
    a_task_over_budget_fails_without_retry,
    an_expired_hold_is_reclaimed,
);
