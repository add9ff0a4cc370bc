//! The synchronous chat turn, the schedules API and the completion webhooks, end to end
//! on SQLite and PostgreSQL: the real app with the in-process sandbox vendor. Readiness
//! and completion by polling with deadlines, never by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::tasks::*;
use common::webhooks::{Receiver, verify};
use common::{Backend, TestApp, TestDb, test_config};
use digital_employee::app::App;
use digital_employee::store::DEFAULT_TENANT_ID;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    chat_turns_share_a_session_with_tasks,
    chat_is_tenant_scoped,
    schedules_crud_validation_and_scoping,
    schedule_created_through_the_api_fires_once_per_tick_with_two_apps,
    webhooks_deliver_signed_final_tasks_and_retry,
    a_task_ended_in_the_store_alone_is_delivered,
);

fn with_key(app: &TestApp, method: Method, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-API-Key", key)
}

/// A new tenant with an admin key of its own: (tenant id, key).
async fn other_tenant(app: &TestApp, name: &str) -> (String, String) {
    let r = app
        .post_json("/v1/tenants", &json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    let tenant = id_of(&t);
    let r = app
        .post_json(
            "/v1/keys",
            &json!({"name": "admin", "scope": "admin", "tenant_id": tenant}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let k: Value = r.json().await.unwrap();
    (tenant, k["secret"].as_str().unwrap().to_string())
}

/// A second app on the database of `first`.
async fn second_app(first: &TestApp, extra: &[(&str, &str)]) -> TestApp {
    let app = App::build(test_config(&first.db().url, extra))
        .await
        .unwrap();
    TestApp::start(app, TestDb::new(Backend::Sqlite).await.unwrap()).await
}

async fn chat(app: &TestApp, employee: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/employees/{employee}/chat"), &body)
        .send()
        .await
        .unwrap()
}

async fn chat_turns_share_a_session_with_tasks(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let e = employee(
        &app,
        json!({"name": "calc", "role": "a careful accountant", "allowed_tools": ["calculator"]}),
    )
    .await;
    let eid = id_of(&e);

    // First turn: a new session, the tool loop runs (calculator, then the answer).
    let r = chat(&app, &eid, json!({"message": "What is 2 + 3 * 4?"})).await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    let sid = first["session_id"].as_str().unwrap().to_string();
    assert!(first["answer"].as_str().unwrap().contains("14"), "{first}");
    assert_eq!(first["steps"], 2);
    assert!(first["usage"]["input_tokens"].as_i64().unwrap() > 0);
    assert!(first["usage"]["output_tokens"].as_i64().unwrap() > 0);
    assert!(first["usage"]["cost_usd"].is_number());

    // Second turn in the same session: the history is sent, so more input tokens than
    // the same message in a fresh session.
    let r = chat(
        &app,
        &eid,
        json!({"session_id": sid, "message": "And 1 + 1?"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["session_id"], sid.as_str());
    let r = chat(&app, &eid, json!({"message": "And 1 + 1?"})).await;
    let fresh: Value = r.json().await.unwrap();
    assert_ne!(fresh["session_id"], sid.as_str());
    assert!(
        second["usage"]["input_tokens"].as_i64().unwrap()
            > fresh["usage"]["input_tokens"].as_i64().unwrap(),
        "{second} vs {fresh}"
    );
    let session = Uuid::parse_str(&sid).unwrap();
    let msgs = app
        .store
        .list_messages(DEFAULT_TENANT_ID, session, 100)
        .await
        .unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(msgs[0].content, "What is 2 + 3 * 4?");
    assert!(msgs[1].content.contains("14"));
    // No task row is made for a chat turn.
    let r: Value = app
        .get("/v1/tasks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["data"].as_array().unwrap().is_empty(), "{r}");

    // A task in that session sees the same history (more input than without it) and
    // adds its own turn to it.
    let plain = submit(&app, json!({"employee": "calc", "input": "Sum 5 + 5"})).await;
    let in_session = submit(
        &app,
        json!({"employee": "calc", "input": "Sum 5 + 5", "session_id": sid}),
    )
    .await;
    let plain = wait_end(&app, &id_of(&plain)).await;
    let in_session = wait_end(&app, &id_of(&in_session)).await;
    assert_eq!(in_session["status"], "succeeded", "{in_session}");
    assert!(
        in_session["tokens_in"].as_i64().unwrap() > plain["tokens_in"].as_i64().unwrap(),
        "{in_session} vs {plain}"
    );
    // The worker appends the task's turn just after recording its end.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msgs = app
            .store
            .list_messages(DEFAULT_TENANT_ID, session, 100)
            .await
            .unwrap();
        if msgs.len() == 6 {
            assert_eq!(msgs[4].content, "Sum 5 + 5");
            break;
        }
        assert!(Instant::now() < deadline, "{msgs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a chat turn after the task sees the task's turn.
    let r = chat(
        &app,
        &eid,
        json!({"session_id": sid, "message": "And 1 + 1?"}),
    )
    .await;
    let third: Value = r.json().await.unwrap();
    assert!(
        third["usage"]["input_tokens"].as_i64().unwrap()
            > second["usage"]["input_tokens"].as_i64().unwrap()
    );

    // Validation.
    let r = chat(&app, &eid, json!({"message": "  "})).await;
    let b = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(b["error"]["field"], "message");
    let r = chat(&app, &eid, json!({"text": "hi"})).await;
    common::assert_error(r, 422, "validation_error").await;

    // A limit ends the turn with a clear reason and stores nothing.
    let tight = employee(
        &app,
        json!({"name": "tight", "role": "r", "allowed_tools": ["calculator"], "max_steps": 1}),
    )
    .await;
    let r = chat(&app, &id_of(&tight), json!({"message": "What is 1 + 2?"})).await;
    let b = common::assert_error(r, 422, "validation_error").await;
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_steps"),
        "{b}"
    );
}

async fn chat_is_tenant_scoped(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let mine = employee(&app, json!({"name": "mine", "role": "r"})).await;
    let r = chat(&app, &id_of(&mine), json!({"message": "hello"})).await;
    assert_eq!(r.status(), 200);
    let turn: Value = r.json().await.unwrap();
    let sid = turn["session_id"].as_str().unwrap().to_string();

    let (b_tenant, key) = other_tenant(&app, "tenant-b").await;
    let r = with_key(&app, Method::POST, "/v1/employees", &key)
        .json(&json!({"name": "theirs", "role": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let theirs: Value = r.json().await.unwrap();

    // Another tenant's employee: 404, both ways.
    let r = with_key(
        &app,
        Method::POST,
        &format!("/v1/employees/{}/chat", id_of(&mine)),
        &key,
    )
    .json(&json!({"message": "hello"}))
    .send()
    .await
    .unwrap();
    common::assert_error(r, 404, "not_found").await;
    let r = chat(&app, &id_of(&theirs), json!({"message": "hello"})).await;
    common::assert_error(r, 404, "not_found").await;
    // The same session id in another tenant: a session of that tenant's own — no error,
    // no collision, and the first tenant's history is neither read nor written.
    let r = with_key(
        &app,
        Method::POST,
        &format!("/v1/employees/{}/chat", id_of(&theirs)),
        &key,
    )
    .json(&json!({"session_id": sid, "message": "hello from b"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let theirs_turn: Value = r.json().await.unwrap();
    assert_eq!(theirs_turn["session_id"], sid.as_str());
    let session = Uuid::parse_str(&sid).unwrap();
    let b_tenant = Uuid::parse_str(&b_tenant).unwrap();
    let history = |tenant: Uuid| {
        let store = app.store.clone();
        async move {
            store
                .list_messages(tenant, session, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.role, m.content))
                .collect::<Vec<_>>()
        }
    };
    let theirs_history = history(b_tenant).await;
    assert_eq!(theirs_history.len(), 2, "{theirs_history:?}");
    assert_eq!(theirs_history[0], ("user".into(), "hello from b".into()));
    let mine_history = history(DEFAULT_TENANT_ID).await;
    assert_eq!(mine_history.len(), 2, "{mine_history:?}");
    assert_eq!(mine_history[0], ("user".into(), "hello".into()));
    // A task of tenant B in that session is accepted, runs, and adds to B's session only.
    let r = with_key(&app, Method::POST, "/v1/tasks", &key)
        .json(&json!({"employee": "theirs", "input": "more from b", "session_id": sid}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let task_id = Uuid::parse_str(&id_of(&r.json().await.unwrap())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = app.store.get_task(b_tenant, task_id).await.unwrap();
        if t.status.is_terminal() {
            assert_eq!(t.status.as_str(), "succeeded", "{t:?}");
            break;
        }
        assert!(Instant::now() < deadline, "tenant B's task never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session turn is written just after the task's end (not in the same commit):
    // wait for it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    while history(b_tenant).await.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "tenant B's session turn never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(history(b_tenant).await.len(), 4);
    assert_eq!(history(DEFAULT_TENANT_ID).await, mine_history);
    // Another employee's session in the same tenant: 404 too.
    let other = employee(&app, json!({"name": "other", "role": "r"})).await;
    let r = chat(
        &app,
        &id_of(&other),
        json!({"session_id": sid, "message": "hello"}),
    )
    .await;
    common::assert_error(r, 404, "not_found").await;
    // A read-only key cannot chat.
    let r = app
        .post_json("/v1/keys", &json!({"name": "ro", "scope": "read"}))
        .send()
        .await
        .unwrap();
    let ro: Value = r.json().await.unwrap();
    let r = with_key(
        &app,
        Method::POST,
        &format!("/v1/employees/{}/chat", id_of(&mine)),
        ro["secret"].as_str().unwrap(),
    )
    .json(&json!({"message": "hello"}))
    .send()
    .await
    .unwrap();
    common::assert_error(r, 403, "forbidden").await;
}

async fn schedules_crud_validation_and_scoping(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(&app, json!({"name": "reporter", "role": "r"})).await;
    let create = |body: Value| app.post_json("/v1/schedules", &body).send();

    // 422 naming the bad field.
    for (body, field) in [
        (
            json!({"employee": "reporter", "cron": "every day", "input": "x"}),
            "cron",
        ),
        (
            json!({"employee": "reporter", "cron": "61 * * * *", "input": "x"}),
            "cron",
        ),
        (
            json!({"employee": "reporter", "cron": "0 9 * * *", "timezone": "Mars/Base", "input": "x"}),
            "timezone",
        ),
        (
            json!({"employee": "nobody", "cron": "0 9 * * *", "input": "x"}),
            "employee",
        ),
        (
            json!({"employee": "reporter", "cron": "0 9 * * *", "input": ""}),
            "input",
        ),
        (
            json!({"employee": "reporter", "cron": "0 9 * * *"}),
            "input",
        ),
    ] {
        let r = create(body.clone()).await.unwrap();
        let b = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(b["error"]["field"], field, "{body} -> {b}");
    }

    // Create: default time zone UTC, next fire computed in the zone.
    let r = create(json!({"employee": "reporter", "cron": "0 9 * * *", "input": "daily"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let utc: Value = r.json().await.unwrap();
    assert_eq!(utc["timezone"], "UTC");
    assert_eq!(utc["enabled"], true);
    let next: chrono::DateTime<chrono::Utc> =
        utc["next_fire_at"].as_str().unwrap().parse().unwrap();
    assert!(next > chrono::Utc::now());
    assert_eq!(next.format("%H:%M:%S").to_string(), "09:00:00");
    let r = create(
        json!({"employee": "reporter", "cron": "0 0 9 * * *", "timezone": "Asia/Tokyo",
                          "input": {"report": "daily"}, "enabled": false, "priority": 5}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let tokyo: Value = r.json().await.unwrap();
    let next: chrono::DateTime<chrono::Utc> =
        tokyo["next_fire_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(next.format("%H:%M:%S").to_string(), "00:00:00");
    assert_eq!(tokyo["enabled"], false);
    assert_eq!(tokyo["priority"], 5);

    // Get, list with cursor pagination (newest first).
    let r: Value = app
        .get(&format!("/v1/schedules/{}", id_of(&utc)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, utc);
    let page: Value = app
        .get("/v1/schedules?limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"][0]["id"], tokyo["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: Value = app
        .get(&format!("/v1/schedules?limit=1&cursor={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"][0]["id"], utc["id"]);
    assert!(page.get("next_cursor").is_none());
    let r = app.get("/v1/schedules?cursor=zzz").send().await.unwrap();
    common::assert_error(r, 422, "validation_error").await;

    // Partial update recomputes the next fire; a bad value changes nothing.
    let path = format!("/v1/schedules/{}", id_of(&utc));
    let r = app
        .patch_json(
            &path,
            &json!({"cron": "30 18 * * *", "timezone": "America/New_York"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let upd: Value = r.json().await.unwrap();
    assert_eq!(upd["cron"], "30 18 * * *");
    assert_eq!(upd["input"], "daily");
    assert_ne!(upd["next_fire_at"], utc["next_fire_at"]);
    let r = app
        .patch_json(&path, &json!({"timezone": "Nowhere/Land"}))
        .send()
        .await
        .unwrap();
    let b = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(b["error"]["field"], "timezone");
    let r = app
        .patch_json(&path, &json!({"cron": "* *"}))
        .send()
        .await
        .unwrap();
    let b = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(b["error"]["field"], "cron");
    let again: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["cron"], "30 18 * * *");

    // Another tenant sees none of it.
    let (_, key) = other_tenant(&app, "tenant-b").await;
    for m in [Method::GET, Method::DELETE] {
        let r = with_key(&app, m, &path, &key).send().await.unwrap();
        common::assert_error(r, 404, "not_found").await;
    }
    let r = with_key(&app, Method::PATCH, &path, &key)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;
    let r: Value = with_key(&app, Method::GET, "/v1/schedules", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["data"].as_array().unwrap().is_empty());
    // Its own schedule cannot name our employee.
    let r = with_key(&app, Method::POST, "/v1/schedules", &key)
        .json(&json!({"employee": "reporter", "cron": "0 9 * * *", "input": "x"}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;

    // Scopes: read may list, not create.
    let r = app
        .post_json("/v1/keys", &json!({"name": "ro", "scope": "read"}))
        .send()
        .await
        .unwrap();
    let ro: Value = r.json().await.unwrap();
    let ro = ro["secret"].as_str().unwrap();
    let r = with_key(&app, Method::GET, "/v1/schedules", ro)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = with_key(&app, Method::POST, "/v1/schedules", ro)
        .json(&json!({"employee": "reporter", "cron": "0 9 * * *", "input": "x"}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 403, "forbidden").await;
    let r = with_key(&app, Method::DELETE, &path, ro)
        .send()
        .await
        .unwrap();
    common::assert_error(r, 403, "forbidden").await;

    // Delete.
    let r = app.delete(&path).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = app.get(&path).send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
    let r = app.delete(&path).send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
}

async fn schedule_created_through_the_api_fires_once_per_tick_with_two_apps(backend: Backend) {
    let Some(a) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let b = second_app(&a, &with(&[])).await;
    employee(&a, json!({"name": "ticker", "role": "r"})).await;
    let r = a
        .post_json(
            "/v1/schedules",
            &json!({"employee": "ticker", "cron": "*/1 * * * * *", "input": "tick"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let s: Value = r.json().await.unwrap();
    let path = format!("/v1/schedules/{}", id_of(&s));

    // Poll for the created tasks: two fires, to see that it keeps firing once per tick.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tasks = loop {
        let r: Value = b
            .get("/v1/tasks?employee=ticker")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tasks = r["data"].as_array().unwrap().clone();
        if tasks.len() >= 2 {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not fire twice: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = a
        .patch_json(&path, &json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ticker_tasks = || async {
        let r: Value = a
            .get("/v1/tasks?employee=ticker&limit=100")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["metadata"]["schedule_id"] == s["id"])
            .cloned()
            .collect::<Vec<Value>>()
    };
    // A scan already under way when it was disabled may still fire once; after that,
    // several scans of both schedulers add nothing.
    scheduler_scans(&a, "ticker", 1).await;
    let all = ticker_tasks().await;
    assert!(all.len() >= tasks.len());
    // An enabled every-second schedule would be due again within a second: let two
    // whole seconds pass, then two more scans.
    let due = chrono::Utc::now() + chrono::Duration::seconds(2);
    while chrono::Utc::now() < due {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler_scans(&a, "ticker", 2).await;
    assert_eq!(
        ticker_tasks().await.len(),
        all.len(),
        "fired while disabled"
    );
    // One task per fire, never two, whichever app's scheduler took it; each fire is a
    // whole second of the every-second cron.
    let mut fires: Vec<chrono::DateTime<chrono::Utc>> = all
        .iter()
        .map(|t| t["metadata"]["fire_at"].as_str().unwrap().parse().unwrap())
        .collect();
    let n = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), n, "a fire created two tasks: {all:?}");
    assert!(
        fires.iter().all(|f| f.timestamp_subsec_nanos() == 0),
        "{fires:?}"
    );
    wait_end(&a, &id_of(&tasks[0])).await;
    let got: Value = a.get(&path).send().await.unwrap().json().await.unwrap();
    assert!(got["last_fired_at"].is_string(), "{got}");
    assert_eq!(got["enabled"], false);
}

async fn webhooks_deliver_signed_final_tasks_and_retry(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &with(&[
            ("WEBHOOK_RETRY_BASE_DELAY", "0.05"),
            ("WEBHOOK_POLL_INTERVAL", "0.05"),
            ("WEBHOOK_MAX_ATTEMPTS", "3"),
        ]),
    )
    .await
    else {
        return;
    };
    // Rotating shows the secret once; only admins may.
    let r = app
        .post_json("/v1/keys", &json!({"name": "w", "scope": "write"}))
        .send()
        .await
        .unwrap();
    let w: Value = r.json().await.unwrap();
    let r = with_key(
        &app,
        Method::POST,
        "/v1/webhooks/secret",
        w["secret"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap();
    common::assert_error(r, 403, "forbidden").await;
    let r = app
        .client
        .post(app.url("/v1/webhooks/secret"))
        .header("X-API-Key", common::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));

    employee(
        &app,
        json!({"name": "hooked", "role": "r", "allowed_tools": ["calculator"]}),
    )
    .await;
    employee(
        &app,
        json!({"name": "tight", "role": "r", "allowed_tools": ["calculator"], "max_steps": 1}),
    )
    .await;

    // callback_url must be an absolute http(s) URL.
    for bad in [
        "ftp://example.com/x",
        "not a url",
        "http://",
        "file:///etc/passwd",
    ] {
        let r = app
            .post_json(
                "/v1/tasks",
                &json!({"employee": "hooked", "input": "x", "callback_url": bad}),
            )
            .send()
            .await
            .unwrap();
        let b = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(b["error"]["field"], "callback_url", "{bad}");
    }

    // Succeeded: one signed delivery of the final task.
    let ok = Receiver::start(0).await;
    let t = submit(
        &app,
        json!({"employee": "hooked", "input": "What is 6 * 7?", "callback_url": ok.url}),
    )
    .await;
    let done = wait_end(&app, &id_of(&t)).await;
    assert_eq!(done["status"], "succeeded");
    let got = ok.wait_for(1).await;
    let body = verify(&secret, &got[0]);
    assert_eq!(body, done, "the final task JSON");
    let delivery_id = got[0].headers["x-digital-employee-delivery"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(Uuid::parse_str(&delivery_id).is_ok());

    // Failed and cancelled tasks are delivered too.
    let failed = submit(
        &app,
        json!({"employee": "tight", "input": "What is 1 + 2?", "callback_url": ok.url}),
    )
    .await;
    assert_eq!(wait_end(&app, &id_of(&failed)).await["status"], "failed");
    let run_at = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let later = submit(
        &app,
        json!({"employee": "hooked", "input": "later", "callback_url": ok.url,
               "run_at": run_at}),
    )
    .await;
    let r = app
        .post_json(&format!("/v1/tasks/{}/cancel", id_of(&later)), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = ok.wait_for(3).await;
    let mut ended: Vec<(String, String)> = got[1..]
        .iter()
        .map(|r| {
            let b = verify(&secret, r);
            (
                b["id"].as_str().unwrap().to_string(),
                b["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ended.sort();
    let mut want = vec![
        (id_of(&failed), "failed".to_string()),
        (id_of(&later), "cancelled".to_string()),
    ];
    want.sort();
    assert_eq!(ended, want);

    // A receiver failing twice: the same delivery, retried, then delivered.
    let flaky = Receiver::start(2).await;
    let t = submit(
        &app,
        json!({"employee": "hooked", "input": "What is 2 + 2?", "callback_url": flaky.url}),
    )
    .await;
    let got = flaky.wait_for(3).await;
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 500, 200]);
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["x-digital-employee-delivery"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let attempts: Vec<&str> = got
        .iter()
        .map(|r| r.headers["x-digital-employee-attempt"].to_str().unwrap())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    for r in &got {
        assert_eq!(verify(&secret, r)["id"], t["id"]);
    }
    let tid = Uuid::parse_str(&id_of(&t)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = app
            .store
            .list_deliveries(DEFAULT_TENANT_ID, tid)
            .await
            .unwrap();
        if d.len() == 1 && d[0].status == "delivered" {
            assert_eq!(d[0].attempts, 3);
            break;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A receiver that always fails: given up after WEBHOOK_MAX_ATTEMPTS, no more.
    let down = Receiver::start(u32::MAX).await;
    let t = submit(
        &app,
        json!({"employee": "hooked", "input": "hello", "callback_url": down.url}),
    )
    .await;
    let tid = Uuid::parse_str(&id_of(&t)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d = app
            .store
            .list_deliveries(DEFAULT_TENANT_ID, tid)
            .await
            .unwrap();
        if d.len() == 1 && d[0].status == "failed" {
            break d;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(d[0].attempts, 3);
    assert!(d[0].last_error.as_deref().unwrap().contains("500"), "{d:?}");
    assert_eq!(down.received().len(), 3);
    // Exactly one delivery per ended task reached the first receiver.
    assert_eq!(ok.received().len(), 3);
    // The give-up is counted exactly in tests/metric_deltas.rs.
}

/// A task ended by the store alone (no code of the API around it, as if the process
/// stopped right after the end) has its delivery queued by that same write, and delivered.
async fn a_task_ended_in_the_store_alone_is_delivered(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[("WEBHOOK_POLL_INTERVAL", "0.05")])).await
    else {
        return;
    };
    let e = employee(&app, json!({"name": "swept", "role": "r"})).await;
    let hook = Receiver::start(0).await;
    // Not due for an hour, so no worker takes it; cancelled in the store directly.
    let (t, _) = app
        .store
        .create_task(&digital_employee::store::NewTask {
            tenant_id: DEFAULT_TENANT_ID,
            employee: digital_employee::store::TaskEmployee::Id(
                Uuid::parse_str(e["id"].as_str().unwrap()).unwrap(),
            ),
            input: json!("never run"),
            priority: 0,
            run_at: digital_employee::store::now() + chrono::Duration::hours(1),
            max_attempts: 1,
            idempotency_key: None,
            request_hash: None,
            parent_task_id: None,
            depth: 0,
            session_id: None,
            callback_url: Some(hook.url.clone()),
            metadata: json!({}),
            output_schema: None,
            trace_context: None,
        })
        .await
        .unwrap();
    app.store
        .cancel_task(DEFAULT_TENANT_ID, t.id)
        .await
        .unwrap();
    let queued = app
        .store
        .list_deliveries(DEFAULT_TENANT_ID, t.id)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "queued with the end: {queued:?}");
    let got = hook.wait_for(1).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["id"], t.id.to_string());
    assert_eq!(body["status"], "cancelled");
    let deliveries = app
        .store
        .list_deliveries(DEFAULT_TENANT_ID, t.id)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1, "queued exactly once");
}
