//! The Task Orchestrator and Agent Runtime end to end, on SQLite and PostgreSQL: the
//! real app, vendors through the sandbox (in-process, or over HTTP for faults).
//! Readiness and completion by polling with deadlines, never by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::tasks::*;
use common::vendor::{Gate, Vendor};
use common::{Backend, TestApp, TestDb, test_config};
use digital_employee::ai::sandbox::{Fault, SandboxSetup, ScriptStep, ScriptedCall};
use digital_employee::app::App;
use digital_employee::store::{
    DEFAULT_TENANT_ID, Finish, NewTask, ScheduleFields, StepUpdate, TaskEmployee, TaskStatus, now,
};
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    task_runs_the_tool_loop_to_success,
    idempotency_key_same_body_same_task_other_body_conflict,
    cancel_queued_and_finished,
    cancel_running_stops_before_the_next_vendor_call,
    two_apps_drain_all_tasks_exactly_once,
    stalled_worker_is_rescued_and_its_late_completion_rejected,
    max_steps_and_token_budget_end_as_failed,
    vendor_failure_retries_with_backoff_then_fails,
    approval_survives_a_restart_then_succeeds,
    delegation_runs_a_subtask_and_refuses_a_cycle,
    delegation_with_a_single_worker_slot_does_not_starve,
    delegation_of_a_long_input_runs_once,
    schedule_fires_once_with_two_schedulers,
    sse_resumes_after_last_event_id_and_ends,
    tenant_max_running_caps_a_tenant_and_spares_delegation,
);

/// A second app on the database of `first`.
async fn second_app(first: &TestApp, extra: &[(&str, &str)]) -> TestApp {
    let app = App::build(test_config(&first.db().url, extra))
        .await
        .unwrap();
    TestApp::start(app, TestDb::new(Backend::Sqlite).await.unwrap()).await
}

async fn task_runs_the_tool_loop_to_success(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "calc", "role": "a careful accountant", "allowed_tools": ["calculator"]}),
    )
    .await;
    let t = submit(
        &app,
        json!({"employee": "calc", "input": "What is 2 + 3 * 4?"}),
    )
    .await;
    assert_eq!(t["status"], "queued");
    let id = id_of(&t);
    let done = wait_status(&app, &id, "succeeded").await;
    assert!(
        done["result"]["output"].as_str().unwrap().contains("14"),
        "{done}"
    );
    assert_eq!(done["steps"], 2);
    assert_eq!(done["attempt"], 1);
    assert!(done["tokens_in"].as_i64().unwrap() > 0 && done["tokens_out"].as_i64().unwrap() > 0);
    assert!(done["finished_at"].is_string() && done["started_at"].is_string());
    let ev = events(&app, &id).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["status", "llm_call", "tool_call", "tool_result", "message"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let seqs: Vec<i64> = ev.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=ev.len() as i64).collect::<Vec<_>>());
    assert_eq!(ev.last().unwrap()["payload"]["status"], "succeeded");
    let llm = ev.iter().find(|e| e["kind"] == "llm_call").unwrap();
    assert_eq!(llm["payload"]["model"], "sandbox-1");

    // Listing with filters, and tenant scoping.
    let r: Value = app
        .get("/v1/tasks?status=succeeded&employee=calc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["data"][0]["id"], id.as_str());
    let r: Value = app
        .get("/v1/tasks?status=queued")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["data"].as_array().unwrap().is_empty());
    let other = app.store.create_tenant("other").await.unwrap();
    let (foreign, _) = app
        .store
        .create_task(&NewTask {
            tenant_id: other.id,
            employee: TaskEmployee::Id(common::hire(&app.store, other.id).await),
            input: json!("x"),
            priority: 0,
            run_at: now() + chrono::Duration::hours(1),
            max_attempts: 1,
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
    for path in ["", "/events"] {
        let r = app
            .get(&format!("/v1/tasks/{}{path}", foreign.id))
            .send()
            .await
            .unwrap();
        common::assert_error(r, 404, "not_found").await;
    }
    let r = app
        .post_json(&format!("/v1/tasks/{}/cancel", foreign.id), &json!({}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;
    // Its metrics are counted exactly in tests/metric_deltas.rs.
}

async fn idempotency_key_same_body_same_task_other_body_conflict(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(&app, json!({"name": "idem", "role": "r"})).await;
    let body = json!({"employee": "idem", "input": "hello", "priority": 3});
    let send = |b: &Value| {
        app.post_json("/v1/tasks", b)
            .header("Idempotency-Key", "order-17")
    };
    let a: Value = send(&body).send().await.unwrap().json().await.unwrap();
    let r = send(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let b: Value = r.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let r = send(&json!({"employee": "idem", "input": "other"}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 409, "conflict").await;
    let r = app
        .post_json("/v1/tasks", &json!({"employee": "nobody", "input": "x"}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;
}

async fn cancel_queued_and_finished(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(&app, json!({"name": "later", "role": "r"})).await;
    let run_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let t = submit(
        &app,
        json!({"employee": "later", "input": "x", "run_at": run_at}),
    )
    .await;
    let id = id_of(&t);
    let r = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(task(&app, &id).await["status"], "cancelled");
    let r = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 409, "conflict").await;
}

async fn cancel_running_stops_before_the_next_vendor_call(backend: Backend) {
    // The first vendor call (which asks for a tool) is held until the cancel is recorded,
    // so the order is fixed whatever the machine's speed.
    let gate = Gate::default();
    let vendor = Vendor::gated(&gate).await;
    let Some(app) = TestApp::spawn_with(
        backend,
        &with(&[("AI_PROVIDERS", &vendor.providers), ("AI_CACHE", "off")]),
    )
    .await
    else {
        return;
    };
    employee(
        &app,
        json!({"name": "slowpoke", "role": "r", "model_policy": ["vendor/slow"],
               "allowed_tools": ["calculator"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "slowpoke", "input": "1 + 1"})).await);
    wait_status(&app, &id, "running").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gate.arrived() < 1 {
        assert!(Instant::now() < deadline, "no vendor call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for(&app, &id, "cancel requested", |t| {
        t["cancel_requested"] == true
    })
    .await;
    gate.release();
    let t = wait_status(&app, &id, "cancelled").await;
    assert_eq!(t["cancel_requested"], true);
    assert_eq!(gate.arrived(), 1, "no vendor call after the cancel");
    assert_eq!(vendor.count("slow"), 1);
}

async fn two_apps_drain_all_tasks_exactly_once(backend: Backend) {
    let extra = with(&[("WORKER_CONCURRENCY", "4")]);
    let Some(a) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    let b = second_app(&a, &extra).await;
    employee(&a, json!({"name": "bulk", "role": "r"})).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { &a } else { &b };
        ids.push(id_of(
            &submit(
                app,
                json!({"employee": "bulk", "input": format!("job {i}")}),
            )
            .await,
        ));
    }
    for id in &ids {
        let t = wait_status(&a, id, "succeeded").await;
        assert_eq!(t["attempt"], 1, "{t}");
    }
    for id in &ids {
        let ev = events(&a, id).await;
        let ends = ev
            .iter()
            .filter(|e| e["kind"] == "status" && e["payload"]["status"] == "succeeded")
            .count();
        assert_eq!(ends, 1, "succeeded exactly once: {ev:?}");
    }
    // Each submit made its own task and nothing else was made: the tenant's list is
    // exactly the 40, all succeeded.
    let submitted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(submitted.len(), 40);
    let r: Value = a
        .get("/v1/tasks?employee=bulk&limit=100")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&Value> = r["data"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 40, "{r}");
    let listed_ids: HashSet<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids, submitted);
    assert!(listed.iter().all(|t| t["status"] == "succeeded"), "{r}");
}

async fn stalled_worker_is_rescued_and_its_late_completion_rejected(backend: Backend) {
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
    // A worker claims it, then "crashes": it never renews its short lease.
    let ghost = store
        .claim_tasks("ghost", 1, Duration::from_millis(300), 0)
        .await
        .unwrap();
    let ghost_lease = ghost[0].lease().unwrap();
    store.close().await;
    let app = App::build(test_config(&db.url, &with(&[("TASK_LEASE_SECONDS", "1")])))
        .await
        .unwrap();
    let app = TestApp::start(app, db).await;
    let id = t.id.to_string();
    let done = wait_status(&app, &id, "succeeded").await;
    assert_eq!(done["attempt"], 2);
    let late = Finish {
        status: TaskStatus::Failed,
        result: None,
        error: Some("late".into()),
        run_at: None,
        step: StepUpdate::default(),
        messages: Vec::new(),
    };
    assert!(!app.store.finish_task(&ghost_lease, &late).await.unwrap());
    assert_eq!(task(&app, &id).await["status"], "succeeded");
    let ev = events(&app, &id).await;
    assert!(ev.iter().any(|e| e["payload"]["reason"] == "lease_expired"));
}

async fn max_steps_and_token_budget_end_as_failed(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "short", "role": "r", "allowed_tools": ["calculator"], "max_steps": 1}),
    )
    .await;
    employee(
        &app,
        json!({"name": "poor", "role": "r", "token_budget": 1}),
    )
    .await;
    let a = id_of(&submit(&app, json!({"employee": "short", "input": "2 + 2"})).await);
    let b = id_of(&submit(&app, json!({"employee": "poor", "input": "hello"})).await);
    let ta = wait_status(&app, &a, "failed").await;
    assert!(ta["error"].as_str().unwrap().contains("max_steps"), "{ta}");
    assert_eq!(ta["attempt"], 1, "a limit is not retried");
    let tb = wait_status(&app, &b, "failed").await;
    assert!(
        tb["error"].as_str().unwrap().contains("token budget"),
        "{tb}"
    );
    assert!(tb["result"].is_null());
}

async fn vendor_failure_retries_with_backoff_then_fails(backend: Backend) {
    let vendor = Vendor::start().await;
    vendor.fault(
        "down",
        Fault::Status {
            status: 500,
            retry_after: None,
            message: None,
        },
    );
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
        json!({"name": "unlucky", "role": "r", "model_policy": ["vendor/down"]}),
    )
    .await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "unlucky", "input": "hi", "max_attempts": 3}),
        )
        .await,
    );
    let t = wait_status(&app, &id, "failed").await;
    assert_eq!(t["attempt"], 3);
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("all AI candidates failed")
    );
    assert_eq!(vendor.count("down"), 3);
    let ev = events(&app, &id).await;
    let retries: Vec<f64> = ev
        .iter()
        .filter(|e| e["payload"]["status"] == "retrying")
        .map(|e| e["payload"]["retry_in_seconds"].as_f64().unwrap())
        .collect();
    assert_eq!(retries, vec![0.05, 0.1], "exponential backoff");
}

async fn approval_survives_a_restart_then_succeeds(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "careful", "role": "r", "allowed_tools": ["calculator"],
               "approval_tools": ["calculator"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "careful", "input": "6 * 7"})).await);
    wait_status(&app, &id, "waiting_approval").await;
    let ev = events(&app, &id).await;
    let paused = ev
        .iter()
        .find(|e| e["payload"]["status"] == "waiting_approval")
        .unwrap();
    assert_eq!(paused["payload"]["tool"], "calculator");
    assert!(
        paused["payload"]["arguments"]
            .as_str()
            .unwrap()
            .contains("6 * 7")
    );

    // Restart: a new app on the same database.
    let db = app.stop_keep_db().await;
    let app = App::build(test_config(&db.url, &with(&[]))).await.unwrap();
    let app = TestApp::start(app, db).await;
    assert_eq!(task(&app, &id).await["status"], "waiting_approval");
    let r = app
        .post_json(
            &format!("/v1/tasks/{id}/approve"),
            &json!({"reason": "fine"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t = wait_status(&app, &id, "succeeded").await;
    assert!(
        t["result"]["output"].as_str().unwrap().contains("42"),
        "{t}"
    );
    let ev = events(&app, &id).await;
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "approval" && e["payload"]["decision"] == "approve")
    );
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "tool_result" && e["payload"]["outcome"] == "ok")
    );
    let r = app
        .post_json(&format!("/v1/tasks/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 409, "conflict").await;

    // Reject: the model is told and finishes without the tool.
    let id = id_of(&submit(&app, json!({"employee": "careful", "input": "1 + 1"})).await);
    wait_status(&app, &id, "waiting_approval").await;
    let r = app
        .post_json(&format!("/v1/tasks/{id}/reject"), &json!({"reason": "no"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "tool_result" && e["payload"]["outcome"] == "rejected")
    );
}

async fn delegation_runs_a_subtask_and_refuses_a_cycle(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "lead", "role": "r", "allowed_tools": ["delegate"]}),
    )
    .await;
    employee(&app, json!({"name": "helper-b", "role": "r"})).await;
    // The sandbox fills `employee` and `input` from the user's words.
    let id = id_of(&submit(&app, json!({"employee": "lead", "input": "helper-b"})).await);
    let t = wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "ok", "{result}");
    let child = result["payload"]["content"]["task_id"].as_str().unwrap();
    let c = task(&app, child).await;
    assert_eq!(c["parent_task_id"], t["id"]);
    assert_eq!(c["status"], "succeeded");

    let id = id_of(&submit(&app, json!({"employee": "lead", "input": "lead"})).await);
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "denied");
    assert!(
        result["payload"]["content"]["error"]
            .as_str()
            .unwrap()
            .contains("cycle")
    );
}

/// With one worker slot, a parent waiting on its sub-task lends the slot, so the sub-task
/// runs on the same replica instead of waiting for a slot that never frees.
async fn delegation_with_a_single_worker_slot_does_not_starve(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[("WORKER_CONCURRENCY", "1")])).await
    else {
        return;
    };
    employee(
        &app,
        json!({"name": "solo-lead", "role": "r", "allowed_tools": ["delegate"]}),
    )
    .await;
    employee(&app, json!({"name": "solo-helper", "role": "r"})).await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "solo-lead", "input": "solo-helper"}),
        )
        .await,
    );
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "ok", "{result}");
    let child = result["payload"]["content"]["task_id"].as_str().unwrap();
    assert_eq!(task(&app, child).await["status"], "succeeded");
    // The slot came back: another task still runs afterwards.
    let next = id_of(&submit(&app, json!({"employee": "solo-helper", "input": "again"})).await);
    wait_status(&app, &next, "succeeded").await;
}

/// A 50,000-character delegation: the sub-task's idempotency key is a digest of the input
/// (a key carrying the input itself broke PostgreSQL's unique index), and a parent that
/// asks twice for the same delegation gets the same sub-task.
async fn delegation_of_a_long_input_runs_once(backend: Backend) {
    let vendor = Vendor::start().await;
    let long = "a long brief. ".repeat(50_000 / 14 + 1)[..50_000].to_string();
    let delegate = || ScriptStep {
        content: None,
        tool_calls: vec![ScriptedCall {
            name: "delegate".into(),
            arguments: json!({"employee": "long-helper", "input": long}),
        }],
        usage: None,
        fault: None,
    };
    let answer = ScriptStep {
        content: Some("delegated".into()),
        tool_calls: Vec::new(),
        usage: None,
        fault: None,
    };
    vendor.engine.apply(SandboxSetup {
        seed: Some(1),
        faults: Vec::new(),
        scripts: HashMap::from([(
            "lead-model".to_string(),
            vec![delegate(), delegate(), answer],
        )]),
    });
    let extra = with(&[("AI_PROVIDERS", &vendor.providers)]);
    let Some(app) = TestApp::spawn_with(backend, &extra).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "long-lead", "role": "r", "allowed_tools": ["delegate"],
               "model_policy": ["vendor/lead-model"]}),
    )
    .await;
    employee(
        &app,
        json!({"name": "long-helper", "role": "r", "model_policy": ["vendor/helper-model"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "long-lead", "input": "go"})).await);
    let t = wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let results: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "tool_result").collect();
    assert_eq!(results.len(), 2, "{ev:?}");
    let children: Vec<&str> = results
        .iter()
        .map(|r| {
            assert_eq!(r["payload"]["outcome"], "ok", "{r}");
            r["payload"]["content"]["task_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        children[0], children[1],
        "the same delegation, the same sub-task"
    );
    let child = task(&app, children[0]).await;
    assert_eq!(child["parent_task_id"], t["id"]);
    assert_eq!(child["input"].as_str().unwrap().len(), 50_000);
    let key = child["idempotency_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("delegate:{id}:")) && key.len() <= 200,
        "{key}"
    );
    let listed: Value = app
        .get("/v1/tasks?employee=long-helper")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
}

async fn schedule_fires_once_with_two_schedulers(backend: Backend) {
    let Some(a) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let b = second_app(&a, &with(&[])).await;
    let e = employee(&a, json!({"name": "cronjob", "role": "r"})).await;
    let emp = Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();
    let fire = now() - chrono::Duration::seconds(1);
    let s = a
        .store
        .create_schedule(
            DEFAULT_TENANT_ID,
            &ScheduleFields {
                employee_id: emp,
                cron: "0 0 1 1 *".into(),
                timezone: "UTC".into(),
                input: json!("yearly report"),
                priority: 0,
                enabled: true,
            },
            fire,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = a.store.get_schedule(DEFAULT_TENANT_ID, s.id).await.unwrap();
        if got.next_fire_at > now() {
            break;
        }
        assert!(Instant::now() < deadline, "schedule never fired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The winner inserts the task just after claiming the fire: poll for it. Both
    // schedulers keep scanning; the fire is taken, so no second task appears.
    let r = loop {
        let r: Value = a
            .get("/v1/tasks?employee=cronjob")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !r["data"].as_array().unwrap().is_empty() {
            break r;
        }
        assert!(Instant::now() < deadline, "the fire created no task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = r["data"][0]["id"].as_str().unwrap().to_string();
    // Counted again once both schedulers had several more scans in which to fire it twice.
    scheduler_scans(&a, "cronjob", 3).await;
    let r: Value = a
        .get("/v1/tasks?employee=cronjob&limit=100")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fired: Vec<&Value> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["metadata"]["schedule_id"] == s.id.to_string())
        .collect();
    assert_eq!(fired.len(), 1, "{r}");
    assert_eq!(fired[0]["id"], first.as_str());
    wait_status(&b, &first, "succeeded").await;
}

async fn sse_resumes_after_last_event_id_and_ends(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "streamer", "role": "r", "allowed_tools": ["calculator"]}),
    )
    .await;
    let id = id_of(&submit(&app, json!({"employee": "streamer", "input": "3 + 4"})).await);
    // Follow live from the start.
    let live = app
        .get(&format!("/v1/tasks/{id}/events"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = tokio::time::timeout(Duration::from_secs(20), live.text())
        .await
        .expect("stream ends when the task ends")
        .unwrap();
    let ids = sse_ids(&body);
    let all = events(&app, &id).await;
    assert_eq!(ids, (1..=all.len() as i64).collect::<Vec<_>>(), "{body}");
    assert!(body.contains("event: llm_call"));
    // Resume after seq 3.
    let resumed = app
        .get(&format!("/v1/tasks/{id}/events"))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sse_ids(&resumed),
        (4..=all.len() as i64).collect::<Vec<_>>()
    );
}

fn sse_ids(body: &str) -> Vec<i64> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

/// `TENANT_MAX_RUNNING=1` with four worker slots: the tenant's slow tasks run one at a
/// time, each starting as the previous one ends (not at the next poll), and a task that
/// delegates at the cap still gets its sub-task run (a capped sub-task would wait for its
/// own parent: a deadlock).
async fn tenant_max_running_caps_a_tenant_and_spares_delegation(backend: Backend) {
    let vendor = Vendor::start().await;
    vendor.fault(
        "slow",
        Fault::Latency {
            ms: 150,
            jitter_ms: 0,
        },
    );
    let Some(app) = TestApp::spawn_with(
        backend,
        &with(&[
            ("AI_PROVIDERS", &vendor.providers),
            ("AI_CACHE", "off"),
            ("WORKER_CONCURRENCY", "4"),
            ("TENANT_MAX_RUNNING", "1"),
            // A claim cut short by the cap must not wait for the next poll: the end of
            // a task wakes the claimer.
            ("TASK_POLL_INTERVAL", "30"),
        ]),
    )
    .await
    else {
        return;
    };
    employee(
        &app,
        json!({"name": "slowpoke", "role": "r", "model_policy": ["vendor/slow"]}),
    )
    .await;
    let ids: Vec<String> = futures_util::future::join_all((0..3).map(|i| {
        submit(
            &app,
            json!({"employee": "slowpoke", "input": format!("job {i}")}),
        )
    }))
    .await
    .iter()
    .map(id_of)
    .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    loop {
        let r = app.get("/v1/tasks?status=running").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.unwrap();
        let running = page["data"].as_array().unwrap().len();
        assert!(
            running <= 1,
            "{running} tasks of one tenant running: {page}"
        );
        most = most.max(running);
        let mut ended = 0;
        for id in &ids {
            let t = task(&app, id).await;
            assert_ne!(t["status"], "failed", "{t}");
            ended += usize::from(t["status"] == "succeeded");
        }
        if ended == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the capped tasks never all ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 1, "a task was seen running");
    assert_eq!(vendor.count("slow"), 3);

    employee(
        &app,
        json!({"name": "capped-lead", "role": "r", "allowed_tools": ["delegate"]}),
    )
    .await;
    employee(&app, json!({"name": "capped-helper", "role": "r"})).await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "capped-lead", "input": "capped-helper"}),
        )
        .await,
    );
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "ok", "{result}");
}
