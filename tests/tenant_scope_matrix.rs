//! Every route against every kind of caller: a tenant's read and write keys, and another
//! tenant's read, write and admin keys, on resources of the first tenant. One table, one
//! expected status per cell: too low a scope is 403 before anything is looked up, another
//! tenant's resource is 404 (never 403, which would confirm it exists), and a request
//! naming another tenant's employee in a body is 422 on that field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tasks::*;
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(every_route_answers_each_tenant_and_scope_as_specified);

/// The callers, in the order the columns of the table list them.
const CALLERS: [&str; 5] = ["A read", "A write", "B read", "B write", "B admin"];
/// The order the cells of a row run in: the callers expected to be refused first, so a
/// request that changes something (delete, cancel, approve) succeeds last, after every
/// refusal was seen on the resource as it was.
const RUN_ORDER: [usize; 5] = [2, 3, 4, 0, 1];

struct Row {
    method: Method,
    path: String,
    body: Option<Value>,
    sse: bool,
    /// Expected status for each of `CALLERS`.
    want: [u16; 5],
}

fn row(method: Method, path: &str, body: Option<Value>, want: [u16; 5]) -> Row {
    Row {
        method,
        path: path.to_string(),
        body,
        sse: false,
        want,
    }
}

async fn key(app: &TestApp, body: Value) -> (String, String) {
    let r = app.post_json("/v1/keys", &body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{body}");
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

async fn created(r: reqwest::Response) -> Value {
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

fn as_key(app: &TestApp, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-API-Key", key)
}

async fn every_route_answers_each_tenant_and_scope_as_specified(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    // Tenant A is the default tenant; B is another.
    let b: Value = created(
        app.post_json("/v1/tenants", &json!({"name": "matrix-b"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let b_id = b["id"].as_str().unwrap().to_string();
    let (a_read_id, a_read) = key(&app, json!({"name": "a read", "scope": "read"})).await;
    let (_, a_write) = key(&app, json!({"name": "a write", "scope": "write"})).await;
    let (_, b_read) = key(
        &app,
        json!({"name": "b read", "scope": "read", "tenant_id": b_id}),
    )
    .await;
    let (_, b_write) = key(
        &app,
        json!({"name": "b write", "scope": "write", "tenant_id": b_id}),
    )
    .await;
    let (_, b_admin) = key(
        &app,
        json!({"name": "b admin", "scope": "admin", "tenant_id": b_id}),
    )
    .await;
    let keys = [&a_read, &a_write, &b_read, &b_write, &b_admin];

    // A's resources.
    let e = employee(
        &app,
        json!({"name": "matrix-a", "role": "r", "allowed_tools": ["calculator"],
               "approval_tools": ["calculator"]}),
    )
    .await;
    let e_id = id_of(&e);
    let e_del = id_of(&employee(&app, json!({"name": "matrix-a-del", "role": "r"})).await);
    let plain = employee(&app, json!({"name": "matrix-plain", "role": "r"})).await;
    let done = id_of(&submit(&app, json!({"employee": "matrix-plain", "input": "hello"})).await);
    wait_status(&app, &done, "succeeded").await;
    let to_approve = id_of(&submit(&app, json!({"employee": "matrix-a", "input": "6 * 7"})).await);
    let to_reject = id_of(&submit(&app, json!({"employee": "matrix-a", "input": "2 * 3"})).await);
    wait_status(&app, &to_approve, "waiting_approval").await;
    wait_status(&app, &to_reject, "waiting_approval").await;
    employee(
        &app,
        json!({"name": "matrix-asker", "role": "r", "allowed_tools": ["ask_human"]}),
    )
    .await;
    let to_answer = id_of(&submit(&app, json!({"employee": "matrix-asker", "input": "ask"})).await);
    wait_status(&app, &to_answer, "waiting_input").await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let queued = id_of(
        &submit(
            &app,
            json!({"employee": "matrix-plain", "input": "x", "run_at": later}),
        )
        .await,
    );
    let session = Uuid::now_v7().to_string();
    submit(
        &app,
        json!({"employee": "matrix-plain", "input": "remember", "session_id": session,
               "run_at": later}),
    )
    .await;
    let schedule =
        |input: &str| json!({"employee": "matrix-a", "cron": "0 9 * * *", "input": input});
    let s = id_of(
        &created(
            app.post_json("/v1/schedules", &schedule("s"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let s_del = id_of(
        &created(
            app.post_json("/v1/schedules", &schedule("s-del"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let tool = |name: &str| {
        json!({"name": name, "description": "Look an order up.",
               "parameters": {"type": "object", "properties": {}},
               "url": "http://127.0.0.1:9/hook"})
    };
    let w = id_of(
        &created(
            app.post_json("/v1/tools", &tool("lookup"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let w_del = id_of(
        &created(
            app.post_json("/v1/tools", &tool("lookup_del"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    // MCP servers that do not answer (their status says so; the routes answer anyway).
    let mcp = |name: &str| json!({"name": name, "url": "http://127.0.0.1:9/mcp"});
    let m = id_of(
        &created(
            app.post_json("/v1/mcp-servers", &mcp("matrix-mcp"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let m_del = id_of(
        &created(
            app.post_json("/v1/mcp-servers", &mcp("matrix-mcp-del"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let resp = id_of(
        &created(
            app.post_json(
                "/v1/responses",
                &json!({"model": "sandbox-1", "input": "hi"}),
            )
            .send()
            .await
            .unwrap(),
        )
        .await,
    );
    // B's own employee, for B's submits.
    created(
        as_key(&app, &b_admin, Method::POST, "/v1/employees")
            .json(&json!({"name": "matrix-b-emp", "role": "r"}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    let chat = json!({"model": "sandbox-1", "messages": [{"role": "user", "content": "hi"}]});
    let get = Method::GET;
    let post = Method::POST;
    let patch = Method::PATCH;
    let delete = Method::DELETE;
    //                                                     A read A write B read B write B admin
    let mut table = vec![
        row(
            get.clone(),
            &format!("/v1/employees/{e_id}"),
            None,
            [200, 200, 404, 404, 404],
        ),
        row(
            patch.clone(),
            &format!("/v1/employees/{e_id}"),
            Some(json!({"role": "r2"})),
            [403, 200, 403, 404, 404],
        ),
        row(
            post.clone(),
            &format!("/v1/employees/{}/chat", id_of(&plain)),
            Some(json!({"message": "hi"})),
            [403, 200, 403, 404, 404],
        ),
        row(
            get.clone(),
            &format!("/v1/tasks/{queued}"),
            None,
            [200, 200, 404, 404, 404],
        ),
        row(
            get.clone(),
            &format!("/v1/tasks/{done}/events"),
            None,
            [200, 200, 404, 404, 404],
        ),
        Row {
            sse: true,
            ..row(
                get.clone(),
                &format!("/v1/tasks/{done}/events"),
                None,
                [200, 200, 404, 404, 404],
            )
        },
        row(get.clone(), "/v1/tasks", None, [200, 200, 200, 200, 200]),
        // Submitting to A's employee, by id and by name.
        row(
            post.clone(),
            "/v1/tasks",
            Some(json!({"employee": e_id, "input": "x", "run_at": later})),
            [403, 202, 403, 422, 422],
        ),
        row(
            post.clone(),
            "/v1/tasks",
            Some(json!({"employee": "matrix-a", "input": "x", "run_at": later})),
            [403, 202, 403, 422, 422],
        ),
        // B naming A's session with B's employee gets a session of its own (checked below).
        row(
            post.clone(),
            "/v1/tasks",
            Some(
                json!({"employee": "matrix-b-emp", "input": "x", "session_id": session, "run_at": later}),
            ),
            [403, 422, 403, 202, 202],
        ),
        row(
            get.clone(),
            &format!("/v1/schedules/{s}"),
            None,
            [200, 200, 404, 404, 404],
        ),
        row(
            patch.clone(),
            &format!("/v1/schedules/{s}"),
            Some(json!({"input": "s2"})),
            [403, 200, 403, 404, 404],
        ),
        row(
            post.clone(),
            "/v1/schedules",
            Some(schedule("new")),
            [403, 201, 403, 422, 422],
        ),
        row(
            get.clone(),
            "/v1/schedules",
            None,
            [200, 200, 200, 200, 200],
        ),
        row(
            get.clone(),
            &format!("/v1/tools/{w}"),
            None,
            [200, 200, 404, 404, 404],
        ),
        row(
            patch.clone(),
            &format!("/v1/tools/{w}"),
            Some(json!({"description": "d2"})),
            [403, 200, 403, 404, 404],
        ),
        row(get.clone(), "/v1/tools", None, [200, 200, 200, 200, 200]),
        row(
            get.clone(),
            &format!("/v1/mcp-servers/{m}"),
            None,
            [200, 200, 404, 404, 404],
        ),
        row(
            patch.clone(),
            &format!("/v1/mcp-servers/{m}"),
            Some(json!({"timeout_seconds": 5})),
            [403, 200, 403, 404, 404],
        ),
        row(
            post.clone(),
            &format!("/v1/mcp-servers/{m}/refresh"),
            Some(json!({})),
            [403, 200, 403, 404, 404],
        ),
        row(
            delete.clone(),
            &format!("/v1/mcp-servers/{m_del}"),
            None,
            [403, 204, 403, 404, 404],
        ),
        row(
            get.clone(),
            "/v1/mcp-servers",
            None,
            [200, 200, 200, 200, 200],
        ),
        row(
            get.clone(),
            &format!("/v1/responses/{resp}"),
            None,
            [200, 200, 404, 404, 404],
        ),
        row(
            get.clone(),
            &format!("/v1/keys/{a_read_id}"),
            None,
            [403, 403, 403, 403, 404],
        ),
        row(get.clone(), "/v1/keys", None, [403, 403, 403, 403, 200]),
        row(
            get.clone(),
            &format!("/v1/tenants/{}", digital_employee::store::DEFAULT_TENANT_ID),
            None,
            [403, 403, 403, 403, 404],
        ),
        row(get.clone(), "/v1/usage", None, [200, 200, 200, 200, 200]),
        row(
            post.clone(),
            "/v1/webhooks/secret",
            Some(json!({})),
            [403, 403, 403, 403, 200],
        ),
        // The gateway spends money: a read key may list models, not call them.
        row(get.clone(), "/v1/models", None, [200, 200, 200, 200, 200]),
        row(
            post.clone(),
            "/v1/chat/completions",
            Some(chat.clone()),
            [403, 200, 403, 200, 200],
        ),
        row(
            post.clone(),
            "/v1/messages",
            Some(json!({"model": "sandbox-1", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "hi"}]})),
            [403, 200, 403, 200, 200],
        ),
        row(
            post.clone(),
            "/v1/embeddings",
            Some(json!({"model": "sandbox-embed", "input": "hi"})),
            [403, 200, 403, 200, 200],
        ),
        row(
            post.clone(),
            "/v1/responses",
            Some(json!({"model": "sandbox-1", "input": "hi"})),
            [403, 200, 403, 200, 200],
        ),
        // Changes last, each on a resource of its own.
        row(
            post.clone(),
            &format!("/v1/tasks/{to_approve}/approve"),
            Some(json!({})),
            [403, 202, 403, 404, 404],
        ),
        row(
            post.clone(),
            &format!("/v1/tasks/{to_reject}/reject"),
            Some(json!({"reason": "no"})),
            [403, 202, 403, 404, 404],
        ),
        row(
            post.clone(),
            &format!("/v1/tasks/{to_answer}/input"),
            Some(json!({"answer": "yes"})),
            [403, 202, 403, 404, 404],
        ),
        row(
            post.clone(),
            &format!("/v1/tasks/{queued}/cancel"),
            Some(json!({})),
            [403, 202, 403, 404, 404],
        ),
        row(
            delete.clone(),
            &format!("/v1/schedules/{s_del}"),
            None,
            [403, 204, 403, 404, 404],
        ),
        row(
            delete.clone(),
            &format!("/v1/tools/{w_del}"),
            None,
            [403, 204, 403, 404, 404],
        ),
        row(
            delete.clone(),
            &format!("/v1/responses/{resp}"),
            None,
            [403, 200, 403, 404, 404],
        ),
        row(
            delete.clone(),
            &format!("/v1/keys/{a_read_id}"),
            None,
            [403, 403, 403, 403, 404],
        ),
        row(
            delete.clone(),
            &format!("/v1/employees/{e_del}"),
            None,
            [403, 204, 403, 404, 404],
        ),
    ];
    let mut wrong = Vec::new();
    for r in table.drain(..) {
        for i in RUN_ORDER {
            let mut req = as_key(&app, keys[i], r.method.clone(), &r.path);
            if r.sse {
                req = req.header("Accept", "text/event-stream");
            }
            if let Some(b) = &r.body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let got = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let text = resp.text().await.unwrap();
            if got != r.want[i] {
                wrong.push(format!(
                    "{} {}{} as {}: {got}, want {}: {text}",
                    r.method,
                    r.path,
                    if r.sse { " (SSE)" } else { "" },
                    CALLERS[i],
                    r.want[i]
                ));
                continue;
            }
            if got >= 400 {
                // The one error shape, with the type the status means.
                let v: Value = serde_json::from_str(&text).unwrap();
                // The Anthropic-format route answers in Anthropic's error shape.
                let anthropic = r.path.starts_with("/v1/messages");
                let kind = match (got, anthropic) {
                    (403, false) => "forbidden",
                    (403, true) => "permission_error",
                    (404, _) => "not_found",
                    _ => "validation_error",
                };
                assert_eq!(v["error"]["type"], kind, "{} {}: {v}", r.method, r.path);
                if got == 422 {
                    let field = v["error"]["field"].as_str().unwrap_or_default();
                    assert!(
                        ["employee", "session_id"].contains(&field),
                        "{} {}: {v}",
                        r.method,
                        r.path
                    );
                }
                // A refusal names nothing of A's the caller did not send.
                let sent = r.body.as_ref().map(Value::to_string).unwrap_or_default();
                for secret in ["matrix-a", "matrix-plain", "lookup", "matrix-mcp"] {
                    assert!(sent.contains(secret) || !text.contains(secret), "{text}");
                }
            } else if r.sse {
                assert!(ctype.starts_with("text/event-stream"), "{ctype}");
            }
        }
    }
    assert!(wrong.is_empty(), "cells off:\n{}", wrong.join("\n"));

    // Lists: B sees none of A's.
    for (path, a_has) in [
        ("/v1/tasks?limit=100", done.as_str()),
        ("/v1/schedules?limit=100", s.as_str()),
        ("/v1/tools?limit=100", w.as_str()),
        ("/v1/mcp-servers?limit=100", m.as_str()),
        ("/v1/employees?limit=100", e_id.as_str()),
    ] {
        let mine = as_key(&app, &a_read, Method::GET, path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(mine.contains(a_has), "{path}: {mine}");
        for k in [&b_read, &b_admin] {
            let theirs = as_key(&app, k, Method::GET, path)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(!theirs.contains(a_has), "{path}: {theirs}");
        }
    }
    // Usage: B's report counts B's gateway calls only.
    let usage = |k: &str| {
        let req = as_key(&app, k, Method::GET, "/v1/usage");
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let (ua, ub) = (usage(&a_read).await, usage(&b_read).await);
    let ra = ua["totals"]["requests"].as_i64().unwrap();
    let rb = ub["totals"]["requests"].as_i64().unwrap();
    assert!(ra > rb && rb > 0, "A {ua} B {ub}");
    // The session id B named is B's own: A's session still takes A's employee's tasks and
    // B's was opened for B's employee.
    submit(
        &app,
        json!({"employee": "matrix-plain", "input": "again", "session_id": session,
               "run_at": later}),
    )
    .await;
    let r = app
        .post_json(
            "/v1/tasks",
            &json!({"employee": "matrix-a", "input": "x", "session_id": session}),
        )
        .send()
        .await
        .unwrap();
    let v = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(v["error"]["field"], "session_id");
    app.stop().await.unwrap();
}
