//! The web console over real HTTP: sign-in to a server session, the cookie's flags, the
//! hashed session id, CSRF refusals, sign-out, timeouts, revoked keys, read-only keys,
//! tenant isolation, and the task, approval and employee flows through the pages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::console::{Browser, FormData, no_redirects, set_cookie, try_signin};
use common::tasks::{employee, id_of, submit, wait_status, with};
use common::{Backend, TestApp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn create_key(app: &TestApp, body: Value) -> (String, String) {
    let r = app.post_json("/v1/keys", &body).send().await.unwrap();
    assert_eq!(r.status(), 201, "create key {body}");
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

async fn create_tenant(app: &TestApp, name: &str) -> String {
    let r = app
        .post_json("/v1/tenants", &json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

async fn session_cookie_is_hardened_and_only_its_hash_is_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let client = no_redirects();
    // Pages need a session: a visitor is sent to the sign-in form.
    let r = client.get(app.url("/tasks")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/signin");

    let r = try_signin(&app, &client, common::ADMIN_KEY).await;
    assert_eq!(r.status(), 303);
    let (id, header) = set_cookie(&r, "de_session").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(flag), "{flag} in {header}");
    }
    assert!(
        !header.contains("Secure"),
        "no Secure over plain HTTP: {header}"
    );
    assert!(
        !header.contains(common::ADMIN_KEY),
        "the key never reaches the browser"
    );
    // The store knows the session by the hash of its id, never by the id.
    let rec = app.store.get_session(&sha256_hex(&id)).await.unwrap();
    assert_eq!(rec.scope, "admin");
    assert!(app.store.get_session(&id).await.is_err());

    // Pages carry the strict policy and no inline script.
    let r = client
        .get(app.url("/"))
        .header("cookie", format!("de_session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(
            tag.contains(" src=\"/assets/"),
            "only our own script files: {tag}"
        );
    }
    assert!(!html.contains(" style=\""), "no inline styles");
    // Assets: content-hashed names, cached for a year; the API keeps its own policy.
    let css = html
        .split("href=\"")
        .map(|s| &s[..s.find('"').unwrap_or(0)])
        .find(|s| s.starts_with("/assets/console.") && s.ends_with(".css"))
        .unwrap()
        .to_string();
    let r = client.get(app.url(&css)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    let r = app.get("/v1/employees").send().await.unwrap();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("form-action 'none'")
    );
    // The session cookie is not a credential for the API.
    let r = client
        .get(app.url("/v1/employees"))
        .header("cookie", format!("de_session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // COOKIE_SECURE marks it Secure.
    let Some(secure) = TestApp::spawn_with(backend, &[("COOKIE_SECURE", "true")]).await else {
        return;
    };
    let r = try_signin(&secure, &client, common::ADMIN_KEY).await;
    let (_, header) = set_cookie(&r, "de_session").unwrap();
    assert!(header.contains("; Secure"), "{header}");
}

async fn wrong_credentials_are_refused_and_count_as_failures(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("AUTH_FAILURE_LIMIT", "2")]).await else {
        return;
    };
    let client = no_redirects();
    // Wrong keys answer 401 with the form again, until the address has failed
    // AUTH_FAILURE_LIMIT times (the limiter's window decides on which request after
    // that the block starts); then every page request from it gets 429.
    let mut refused = 0;
    loop {
        let r = client.get(app.url("/signin")).send().await.unwrap();
        if r.status() == 429 {
            break;
        }
        let r = try_signin(&app, &client, "de_0123456789ab_wrong").await;
        if r.status() == 429 {
            break;
        }
        assert_eq!(r.status(), 401);
        assert!(set_cookie(&r, "de_session").is_none());
        assert!(r.text().await.unwrap().contains("signin-error"));
        refused += 1;
        assert!(refused <= 3, "never blocked");
    }
    assert!(refused >= 2, "blocked after {refused} failures");
    // Even a good key is refused now, before any check.
    let r = client
        .post(app.url("/signin"))
        .form_data(&[("credential", common::ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

async fn state_changing_requests_need_the_csrf_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let b = Browser::signin(&app, common::ADMIN_KEY).await;
    let fields = [
        ("name", "forged"),
        ("role", "r"),
        ("model_policy", "sandbox/sandbox-1"),
        ("max_steps", "10"),
        ("token_budget", "1000"),
        ("temperature", "0"),
    ];
    // No token (as a cross-site form would send), then a wrong one: 403, nothing made.
    let r = b.post_raw("/employees", &fields).await;
    assert_eq!(r.status(), 403);
    let mut wrong = vec![("_csrf", "0".repeat(64))];
    wrong.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = b.post_raw("/employees", &wrong).await;
    assert_eq!(r.status(), 403);
    let list: Value = app
        .get("/v1/employees")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    // The token in the X-CSRF-Token header (as htmx sends it) is accepted.
    let r = b
        .client
        .post(app.url("/employees"))
        .header("cookie", format!("de_session={}", b.cookie))
        .header("x-csrf-token", &b.csrf)
        .form_data(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // Sign-in itself needs the form's one-time token and its cookie.
    let client = no_redirects();
    let r = client
        .post(app.url("/signin"))
        .form_data(&[("credential", common::ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "de_session").is_none());
}

async fn sign_out_ends_the_session_on_the_server(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let b = Browser::signin(&app, common::ADMIN_KEY).await;
    let r = b.post("/signout", &[]).await;
    assert_eq!(r.status(), 303);
    let (_, header) = set_cookie(&r, "de_session").unwrap();
    assert!(header.contains("Max-Age=0"), "{header}");
    // The old cookie, replayed, is refused: the session is gone from the store.
    let (status, _) = b.get("/").await;
    assert_eq!(status, 303);
    assert!(app.store.get_session(&sha256_hex(&b.cookie)).await.is_err());
}

async fn idle_sessions_and_revoked_keys_end(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            ("SESSION_IDLE_TIMEOUT", "1"),
            ("SESSION_ABSOLUTE_TIMEOUT", "60"),
        ],
    )
    .await
    else {
        return;
    };
    let b = Browser::signin(&app, common::ADMIN_KEY).await;
    // The idle timeout has to pass: this waits for time, not for readiness.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, _) = b.get("/").await;
    assert_eq!(status, 303, "idle session refused");

    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (key_id, secret) = create_key(&app, json!({"name": "k", "scope": "write"})).await;
    let b = Browser::signin(&app, &secret).await;
    assert_eq!(b.get("/tasks").await.0, 200);
    let r = app
        .delete(&format!("/v1/keys/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(b.get("/tasks").await.0, 303, "a revoked key's session ends");
}

async fn read_only_key_sees_no_edit_buttons_and_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let e = app.create_employee("steady").await;
    let id = e["id"].as_str().unwrap();
    let (_, secret) = create_key(&app, json!({"name": "viewer", "scope": "read"})).await;
    let b = Browser::signin(&app, &secret).await;
    let (status, html) = b.get(&format!("/employees/{id}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("steady"));
    for button in ["save-employee", "delete-employee", "give-task"] {
        assert!(!html.contains(button), "{button} shown to a read-only key");
    }
    let (_, list) = b.get("/employees").await;
    assert!(!list.contains("new-employee"));
    // Forged posts, with a valid CSRF token, are refused by scope.
    let r = b.post(&format!("/employees/{id}/delete"), &[]).await;
    assert_eq!(r.status(), 403);
    let r = b
        .post("/tasks", &[("employee", id), ("input", "do it")])
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        app.get(&format!("/v1/employees/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let tasks: Value = app
        .get("/v1/tasks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tasks["data"].as_array().unwrap().is_empty());
}

async fn another_tenants_session_never_sees_this_tenants_data(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let a_emp = app.create_employee("alpha-secret-agent").await;
    let a_id = a_emp["id"].as_str().unwrap().to_string();
    let task = submit(
        &app,
        json!({"employee": "alpha-secret-agent", "input": "hi"}),
    )
    .await;
    let task_id = id_of(&task);
    let tenant_b = create_tenant(&app, "bravo").await;
    let (_, b_key) = create_key(
        &app,
        json!({"name": "b-admin", "scope": "admin", "tenant_id": tenant_b}),
    )
    .await;
    let b = Browser::signin(&app, &b_key).await;
    let (_, html) = b.get("/employees").await;
    assert!(
        !html.contains("alpha-secret-agent"),
        "tenant B sees A's employee"
    );
    let (_, html) = b.get("/tasks").await;
    assert!(!html.contains(&task_id[24..]), "tenant B sees A's task");
    assert_eq!(b.get(&format!("/employees/{a_id}")).await.0, 404);
    assert_eq!(b.get(&format!("/tasks/{task_id}")).await.0, 404);
    assert_eq!(b.get(&format!("/tasks/{task_id}/live")).await.0, 404);
    let r = b.post(&format!("/tasks/{task_id}/cancel"), &[]).await;
    assert_eq!(r.status(), 404);
    let r = b.post(&format!("/employees/{a_id}/delete"), &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.get(&format!("/v1/employees/{a_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Polls a page until `pred` holds on its HTML.
async fn wait_page(b: &Browser<'_>, path: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, html) = b.get(path).await;
        if status == 200 && pred(&html) {
            return html;
        }
        assert!(Instant::now() < deadline, "{path}: not {what} within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn employee_form_task_and_live_timeline(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let b = Browser::signin(&app, common::ADMIN_KEY).await;
    let mut form = vec![
        ("name", "calc-clerk"),
        ("role", "Does sums"),
        ("model_policy", "sandbox/sandbox-1"),
        ("model_policy", ""),
        ("allowed_tools", "calculator"),
        ("max_steps", "10"),
        ("token_budget", "100000"),
        ("temperature", "7"),
    ];
    // The API's rule, shown beside its field, and the typed values kept.
    let r = b.post("/employees", &form).await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"temperature-error\""), "{html}");
    assert!(html.contains("must be between 0 and 2"));
    assert!(html.contains("value=\"calc-clerk\""));
    form.retain(|(k, _)| *k != "temperature");
    form.push(("temperature", "0"));
    let r = b.post("/employees", &form).await;
    assert_eq!(r.status(), 303);
    let emp_path = r.headers()["location"].to_str().unwrap().to_string();
    let emp_id = emp_path.trim_start_matches("/employees/").to_string();
    // A taken name is reported beside the name.
    let r = b.post("/employees", &form).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("id=\"name-error\""));

    // Give it a task; the page follows the task.
    let r = b
        .post(
            "/tasks",
            &[
                ("employee", &emp_id),
                ("input", "What is 6 * 7? Use the calculator."),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let task_path = r.headers()["location"].to_str().unwrap().to_string();
    let task_id = task_path.trim_start_matches("/tasks/").to_string();
    // The live feed: step fragments, then `end` when the task has ended.
    let live = b
        .client
        .get(app.url(&format!("{task_path}/live")))
        .header("cookie", format!("de_session={}", b.cookie))
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
    let body = tokio::time::timeout(Duration::from_secs(15), live.text())
        .await
        .expect("the live feed ends when the task does")
        .unwrap();
    assert!(body.contains("event: step"), "{body}");
    assert!(body.contains("LLM call: sandbox/sandbox-1"), "{body}");
    assert!(body.contains("Tool call: calculator"), "{body}");
    assert!(body.contains("event: end\ndata: succeeded"), "{body}");
    let html = wait_page(&b, &task_path, "succeeded", |h| {
        h.contains("id=\"task-status\">succeeded")
    })
    .await;
    assert!(html.contains("id=\"task-result\""), "{html}");
    assert!(html.contains("42"), "the answer is shown");
    assert!(html.contains("latency:"), "LLM calls show their latency");
    // Lists and the employee page show it.
    let (_, list) = b.get("/tasks?status=succeeded").await;
    assert!(list.contains(&task_id));
    let (_, list) = b.get("/tasks?status=failed").await;
    assert!(!list.contains(&task_id));
    let (_, page) = b.get(&emp_path).await;
    assert!(page.contains(&task_id));
    // A refused submit field shows beside it.
    let r = b
        .post(
            "/tasks",
            &[("employee", &emp_id), ("input", "x"), ("priority", "1000")],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("id=\"priority-error\""));
    // Delete.
    let r = b.post(&format!("{emp_path}/delete"), &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.get(&format!("/v1/employees/{emp_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

async fn approvals_inbox_approve_reject_and_cancel(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "careful", "role": "r", "allowed_tools": ["calculator"],
               "approval_tools": ["calculator"]}),
    )
    .await;
    let yes = id_of(&submit(&app, json!({"employee": "careful", "input": "6 * 7"})).await);
    let no = id_of(&submit(&app, json!({"employee": "careful", "input": "1 + 1"})).await);
    wait_status(&app, &yes, "waiting_approval").await;
    wait_status(&app, &no, "waiting_approval").await;
    let b = Browser::signin(&app, common::ADMIN_KEY).await;
    // The overview counts them, now and among the last 24 hours' tasks.
    let (_, html) = b.get("/").await;
    assert!(
        html.contains("id=\"stat-waiting\"><a href=\"/approvals\">2</a>"),
        "{html}"
    );
    assert!(html.contains("Tasks in the last 24 hours (2)"), "{html}");
    assert!(
        html.contains("<a href=\"/tasks?status=waiting_approval\">2</a>"),
        "{html}"
    );
    let (_, html) = b.get("/approvals").await;
    assert!(html.contains(&format!("approval-{yes}")), "{html}");
    assert!(html.contains(&format!("approval-{no}")));
    // The pending call itself: the tool and its arguments (not only the task's input).
    assert!(
        html.contains("wants to call <code>calculator</code>"),
        "{html}"
    );
    let shown: Vec<&str> = html
        .split("<summary>Arguments</summary><pre>")
        .skip(1)
        .filter_map(|part| part.split("</pre>").next())
        .collect();
    assert!(
        shown.iter().any(|a| a.contains("6 * 7")) && shown.iter().any(|a| a.contains("1 + 1")),
        "each call's arguments are shown: {html}"
    );
    assert!(
        html.contains("id=\"approvals-badge\""),
        "the navigation badge"
    );
    // htmx swaps the card for the outcome.
    let r = b
        .client
        .post(app.url(&format!("/tasks/{yes}/approve")))
        .header("cookie", format!("de_session={}", b.cookie))
        .header("hx-request", "true")
        .header("x-csrf-token", &b.csrf)
        .form_data(&[("reason", "fine")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Approved"));
    let r = b
        .post(&format!("/tasks/{no}/reject"), &[("reason", "not today")])
        .await;
    assert_eq!(r.status(), 303);
    let t = wait_status(&app, &yes, "succeeded").await;
    assert!(t["result"]["output"].as_str().unwrap().contains("42"));
    wait_status(&app, &no, "succeeded").await;
    let (_, html) = b.get(&format!("/tasks/{no}")).await;
    assert!(
        html.contains("Decision: reject") && html.contains("not today"),
        "{html}"
    );
    // Deciding again is a conflict.
    let r = b.post(&format!("/tasks/{yes}/approve"), &[]).await;
    assert_eq!(r.status(), 409);

    // Cancel a delayed task from its page.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let delayed = id_of(
        &submit(
            &app,
            json!({"employee": "careful", "input": "later", "run_at": later}),
        )
        .await,
    );
    let (_, html) = b.get(&format!("/tasks/{delayed}")).await;
    assert!(html.contains("id=\"cancel-task\""));
    let r = b.post(&format!("/tasks/{delayed}/cancel"), &[]).await;
    assert_eq!(r.status(), 303);
    wait_status(&app, &delayed, "cancelled").await;
    let r = b.post(&format!("/tasks/{delayed}/cancel"), &[]).await;
    assert_eq!(r.status(), 409);
}

async fn chat_schedules_tools_keys_tenants_and_usage_pages(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let e = app.create_employee("talker").await;
    let emp = e["id"].as_str().unwrap().to_string();
    let b = Browser::signin(&app, common::ADMIN_KEY).await;

    // Chat: an empty message is refused beside the field; a turn answers in a session.
    let r = b
        .post("/chat", &[("employee", &emp), ("message", " ")])
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("id=\"message-error\""));
    let r = b
        .post("/chat", &[("employee", &emp), ("message", "Hello there")])
        .await;
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let (_, html) = b.get(&to).await;
    assert!(
        html.contains("Hello there") && html.contains("Sandbox reply to: Hello there"),
        "{html}"
    );
    assert!(html.contains("id=\"chat-session\""));

    // Schedules: the cron helper lists the next five fires; a bad cron is refused.
    let (status, frag) = b
        .get("/schedules/preview?cron=0+9+*+*+*&timezone=UTC")
        .await;
    assert_eq!(status, 200);
    assert_eq!(frag.matches("<li>").count(), 5, "{frag}");
    assert!(frag.contains(" 09:00:00 UTC"));
    let (_, frag) = b.get("/schedules/preview?cron=nonsense").await;
    assert!(frag.contains("field-error"), "{frag}");
    let r = b
        .post(
            "/schedules",
            &[
                ("employee", &emp),
                ("cron", "nonsense"),
                ("timezone", "UTC"),
                ("input", "x"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("id=\"s-cron-error\""));
    let r = b
        .post(
            "/schedules",
            &[
                ("employee", &emp),
                ("cron", "0 9 * * *"),
                ("timezone", "Mars/Olympus"),
                ("input", "x"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("id=\"s-timezone-error\""));
    let r = b
        .post(
            "/schedules",
            &[
                ("employee", &emp),
                ("cron", "0 9 * * *"),
                ("timezone", "Europe/Paris"),
                ("input", "report"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let list: Value = app
        .get("/v1/schedules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = list["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["data"][0]["enabled"], true);
    let r = b.post(&format!("/schedules/{sid}/toggle"), &[]).await;
    assert_eq!(r.status(), 303);
    let s: Value = app
        .get(&format!("/v1/schedules/{sid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["enabled"], false);
    let r = b.post(&format!("/schedules/{sid}/delete"), &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.get(&format!("/v1/schedules/{sid}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Webhook tools: the API's rules beside the fields.
    let tool = |name: &'static str, url: &'static str| {
        vec![
            ("name", name),
            ("description", "Looks up an order"),
            ("parameters", "{\"type\":\"object\"}"),
            ("url", url),
            ("timeout_seconds", "5"),
        ]
    };
    let r = b
        .post("/tools", &tool("calculator", "https://tools.example.com/x"))
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("built-in tool"));
    let r = b
        .post("/tools", &tool("lookup_order", "http://10.0.0.1/x"))
        .await;
    assert_eq!(
        r.status(),
        422,
        "the egress policy refuses an internal address"
    );
    assert!(r.text().await.unwrap().contains("id=\"t-url-error\""));
    let r = b
        .post(
            "/tools",
            &tool("lookup_order", "https://tools.example.com/orders"),
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, html) = b.get("/tools").await;
    assert!(html.contains("tool-lookup_order"));
    let (_, form) = b.get(&format!("/employees/{emp}")).await;
    assert!(
        form.contains("value=\"lookup_order\""),
        "the employee form offers webhook tools"
    );

    // Keys: created with the secret shown once, then revoked.
    let r = b
        .post("/keys", &[("name", "from-console"), ("scope", "read")])
        .await;
    assert_eq!(r.status(), 201);
    let html = r.text().await.unwrap();
    let at = html.find("id=\"new-key-secret\">").unwrap() + "id=\"new-key-secret\">".len();
    let secret = html[at..at + html[at..].find('<').unwrap()].to_string();
    assert!(secret.starts_with("de_"), "{secret}");
    let ok = app
        .client
        .get(app.url("/v1/employees"))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let (_, again) = b.get("/keys").await;
    assert!(!again.contains(&secret), "the secret is shown once");
    let keys: Value = app
        .get("/v1/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "from-console")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b.post(&format!("/keys/{key_id}/revoke"), &[]).await;
    assert_eq!(r.status(), 303);
    let gone = app
        .client
        .get(app.url("/v1/employees"))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
    let r = b.post("/keys", &[("name", ""), ("scope", "read")]).await;
    assert_eq!(r.status(), 422);

    // Tenants: the operator creates one; the name rule is the API's.
    let r = b.post("/tenants", &[("name", "bad name")]).await;
    assert_eq!(r.status(), 422);
    let r = b.post("/tenants", &[("name", "charlie")]).await;
    assert_eq!(r.status(), 303);
    let (_, html) = b.get("/tenants").await;
    assert!(html.contains("charlie"));

    // Usage: the chat turn shows in the chart and the CSV.
    let (_, html) = b.get("/usage").await;
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 30);
    assert!(html.contains("sandbox-1"));
    let r = b
        .client
        .get(app.url("/usage.csv?group_by=employee"))
        .header("cookie", format!("de_session={}", b.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("employee,employee_name,requests"), "{csv}");
    assert!(csv.contains("\"talker\""), "{csv}");
    // The cost is exact dollars with nine decimals (from the integer nano-dollars).
    let row = csv
        .lines()
        .find(|l| l.contains("\"talker\""))
        .unwrap_or_default();
    let (whole, frac) = row
        .rsplit(',')
        .next()
        .and_then(|c| c.split_once('.'))
        .unwrap_or_default();
    assert!(
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 9
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "{csv}"
    );
    let (status, _) = b.get("/usage?from=2025-13-01").await;
    assert_eq!(status, 200, "a bad date is reported on the page");

    // A non-operator admin sees only its own tenant and cannot create tenants.
    let tb = create_tenant(&app, "delta").await;
    let (_, key) = create_key(
        &app,
        json!({"name": "d", "scope": "admin", "tenant_id": tb}),
    )
    .await;
    let d = Browser::signin(&app, &key).await;
    let (_, html) = d.get("/tenants").await;
    assert!(html.contains("delta") && !html.contains("charlie"));
    assert_eq!(d.post("/tenants", &[("name", "echo")]).await.status(), 403);
    // A write key is no admin: keys and tenants are refused.
    let (_, w) = create_key(&app, json!({"name": "w", "scope": "write"})).await;
    let w = Browser::signin(&app, &w).await;
    assert_eq!(w.get("/keys").await.0, 403);
    assert_eq!(
        w.post("/keys", &[("name", "x"), ("scope", "admin")])
            .await
            .status(),
        403
    );
}

/// The session store on its own: create, read (with the key's revocation), touch,
/// delete, and the sweep of stale rows.
async fn session_store_conformance(backend: Backend) {
    use digital_employee::store::{DEFAULT_TENANT_ID, SessionRecord, StoreError};
    let Some(db) = common::TestDb::new(backend).await else {
        return;
    };
    let store = db.migrated_store().await;
    let issued = digital_employee::auth::keys::issue(
        &store,
        DEFAULT_TENANT_ID,
        "k",
        digital_employee::auth::Scope::Write,
        Some(7),
    )
    .await
    .unwrap();
    let t0 = digital_employee::store::now();
    let rec =
        |hash: &str, key: Option<uuid::Uuid>, seen: chrono::DateTime<chrono::Utc>| SessionRecord {
            id_hash: hash.into(),
            tenant_id: DEFAULT_TENANT_ID,
            key_id: key,
            scope: "write".into(),
            subject: "key:x".into(),
            rate_limit: Some(7),
            created_at: seen,
            last_seen_at: seen,
            expires_at: seen + chrono::Duration::hours(1),
            key_revoked: false,
        };
    let a = rec("a".repeat(64).as_str(), Some(issued.record.id), t0);
    store.create_session(&a).await.unwrap();
    let got = store.get_session(&a.id_hash).await.unwrap();
    assert_eq!(got.key_id, Some(issued.record.id));
    assert_eq!(got.rate_limit, Some(7));
    assert!(!got.key_revoked);
    assert!((got.expires_at - a.expires_at).num_milliseconds().abs() < 1);
    // Revoking the key shows in the session read.
    store
        .revoke_api_key(DEFAULT_TENANT_ID, issued.record.id)
        .await
        .unwrap();
    assert!(store.get_session(&a.id_hash).await.unwrap().key_revoked);
    // Touch moves last_seen_at.
    let later = t0 + chrono::Duration::seconds(90);
    store.touch_session(&a.id_hash, later).await.unwrap();
    let got = store.get_session(&a.id_hash).await.unwrap();
    assert!((got.last_seen_at - later).num_milliseconds().abs() < 1);
    // The sweep removes idle and expired rows only.
    let idle = rec(&"b".repeat(64), None, t0 - chrono::Duration::hours(2));
    store.create_session(&idle).await.unwrap();
    let mut expired = rec(&"c".repeat(64), None, t0);
    expired.expires_at = t0 - chrono::Duration::seconds(1);
    store.create_session(&expired).await.unwrap();
    let n = store
        .delete_stale_sessions(t0, t0 - chrono::Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store.get_session(&a.id_hash).await.is_ok());
    store.delete_session(&a.id_hash).await.unwrap();
    assert!(matches!(
        store.get_session(&a.id_hash).await,
        Err(StoreError::NotFound)
    ));
    store.delete_session(&a.id_hash).await.unwrap();
}

async fn a_jwt_opens_a_session_that_ends_with_the_token(backend: Backend) {
    use digital_employee::auth::Scope;
    use digital_employee::auth::jwt::JwtKeys;
    use digital_employee::config::Secret;
    const SECRET: &str = "console-jwt-secret-0123456789abcdef";
    let Some(app) = TestApp::spawn_with(backend, &[("JWT_SECRET_KEY", SECRET)]).await else {
        return;
    };
    let keys = JwtKeys::new(&Secret::new(SECRET)).unwrap();
    let tenant = digital_employee::store::DEFAULT_TENANT_ID;
    let token = keys
        .mint("alice", tenant, Scope::Read, Duration::from_secs(2))
        .unwrap();
    let b = Browser::signin(&app, &token).await;
    let (_, html) = b.get("/").await;
    assert!(
        html.contains("default · read"),
        "acts with the token's scope"
    );
    let rec = app.store.get_session(&sha256_hex(&b.cookie)).await.unwrap();
    assert_eq!(
        rec.subject,
        "jwt:00000000-0000-0000-0000-000000000001:alice"
    );
    assert!(rec.expires_at <= chrono::Utc::now() + chrono::Duration::seconds(3));
    // The token's expiry ends the session, well before the absolute timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(b.get("/").await.0, 303);
    // A wrong token is refused like a wrong key.
    let client = no_redirects();
    let forged = JwtKeys::new(&Secret::new("another-secret-0123456789abcdef"))
        .unwrap()
        .mint("mallory", tenant, Scope::Admin, Duration::from_secs(60))
        .unwrap();
    assert_eq!(try_signin(&app, &client, &forged).await.status(), 401);
}

backend_tests!(
    session_cookie_is_hardened_and_only_its_hash_is_stored,
    wrong_credentials_are_refused_and_count_as_failures,
    state_changing_requests_need_the_csrf_token,
    sign_out_ends_the_session_on_the_server,
    idle_sessions_and_revoked_keys_end,
    read_only_key_sees_no_edit_buttons_and_is_refused,
    another_tenants_session_never_sees_this_tenants_data,
    employee_form_task_and_live_timeline,
    approvals_inbox_approve_reject_and_cancel,
    chat_schedules_tools_keys_tenants_and_usage_pages,
    session_store_conformance,
    a_jwt_opens_a_session_that_ends_with_the_token,
    an_alias_in_the_model_policy_is_saved_as_its_chain,
);

async fn an_alias_in_the_model_policy_is_saved_as_its_chain(backend: Backend) {
    let aliases = r#"{"smart":["sandbox/sandbox-1","sandbox/sandbox-large"]}"#;
    let Some(app) = TestApp::spawn_with(backend, &with(&[("AI_MODEL_ALIASES", aliases)])).await
    else {
        return;
    };
    let b = Browser::signin(&app, common::ADMIN_KEY).await;
    // The picker offers the alias with what it stands for.
    let (status, html) = b.get("/employees/new").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(
            "<option value=\"smart\" label=\"alias: sandbox/sandbox-1 → sandbox/sandbox-large\">"
        ),
        "{html}"
    );
    let form = [
        ("name", "aliased"),
        ("role", "Uses an alias"),
        ("model_policy", "smart"),
        ("model_policy", "sandbox/sandbox-1"),
        ("max_steps", "5"),
        ("token_budget", "1000"),
        ("temperature", "0"),
    ];
    let r = b.post("/employees", &form).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let id = r.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/employees/")
        .to_string();
    // Stored as the chain, each candidate once, in order: what the API accepts.
    let e: Value = app
        .get(&format!("/v1/employees/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        e["model_policy"],
        json!(["sandbox/sandbox-1", "sandbox/sandbox-large"])
    );
    // A name that is no alias is still refused beside the field.
    let mut bad = form.to_vec();
    bad[0] = ("name", "unaliased");
    bad[2] = ("model_policy", "clever");
    let r = b.post("/employees", &bad).await;
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("id=\"model_policy-error\"")
    );
}
