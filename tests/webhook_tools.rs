//! Webhook tools end to end on SQLite and PostgreSQL: the `/v1/tools` API (validation,
//! pagination, tenant scoping, scopes) and tasks whose employee calls one, served by a
//! local receiver that verifies the signature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use common::tasks::*;
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    webhook_tools_crud_validation_and_scoping,
    webhook_tool_call_is_signed_and_its_answer_is_the_result,
    webhook_tool_failure_is_a_tool_error_and_the_task_ends,
);

fn with_key(app: &TestApp, method: Method, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-API-Key", key)
}

async fn new_key(app: &TestApp, body: Value) -> String {
    let r = app.post_json("/v1/keys", &body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let k: Value = r.json().await.unwrap();
    k["secret"].as_str().unwrap().to_string()
}

fn tool_body(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "description": "Look up an order by its number.",
        "parameters": {"type": "object", "required": ["order_id"], "additionalProperties": false,
                       "properties": {"order_id": {"type": "string", "maxLength": 20}}},
        "url": url,
    })
}

async fn create_tool(app: &TestApp, body: Value) -> Value {
    let r = app.post_json("/v1/tools", &body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn webhook_tools_crud_validation_and_scoping(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let t = create_tool(
        &app,
        tool_body("lookup_order", "https://tools.example.com/o"),
    )
    .await;
    assert_eq!(t["name"], "lookup_order");
    assert_eq!(t["timeout_seconds"], 10);
    assert_eq!(t["parameters"]["required"][0], "order_id");
    let path = format!("/v1/tools/{}", id_of(&t));

    // Validation: 422 naming the field.
    let bad = [
        (json!({"name": "calculator"}), "name"),
        (json!({"name": "has space"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"description": " "}), "description"),
        (json!({"parameters": "a string"}), "parameters"),
        (json!({"parameters": [1, 2]}), "parameters"),
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"timeout_seconds": 0}), "timeout_seconds"),
        (json!({"timeout_seconds": 61}), "timeout_seconds"),
    ];
    for (patch, field) in bad {
        let mut body = tool_body("other", "https://tools.example.com/x");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.post_json("/v1/tools", &body).send().await.unwrap();
        let b = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(b["error"]["field"], field, "{b}");
        let r = app.patch_json(&path, &patch).send().await.unwrap();
        common::assert_error(r, 422, "validation_error").await;
    }
    // The name is unique in the tenant.
    let r = app
        .post_json("/v1/tools", &tool_body("lookup_order", "http://x.example/"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 409, "conflict").await;

    // Partial update.
    let r = app
        .patch_json(
            &path,
            &json!({"description": "Find an order.", "timeout_seconds": 5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["description"], "Find an order.");
    assert_eq!(u["timeout_seconds"], 5);
    assert_eq!(u["url"], "https://tools.example.com/o");
    let g: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
    assert_eq!(g, u);

    // Cursor pagination, newest first.
    for i in 0..2 {
        create_tool(&app, tool_body(&format!("t{i}"), "http://t.example/")).await;
    }
    let p1: Value = app
        .get("/v1/tools?limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p1["data"][0]["name"], "t1");
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2: Value = app
        .get(&format!("/v1/tools?limit=2&cursor={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert_eq!(p2["data"][0]["name"], "lookup_order");
    assert!(p2.get("next_cursor").is_none());
    let r = app.get("/v1/tools?cursor=zzz").send().await.unwrap();
    common::assert_error(r, 422, "validation_error").await;

    // Another tenant sees none of it, and may reuse the name.
    let r = app
        .post_json("/v1/tenants", &json!({"name": "tenant-b"}))
        .send()
        .await
        .unwrap();
    let tb: Value = r.json().await.unwrap();
    let other = new_key(
        &app,
        json!({"name": "admin", "scope": "admin", "tenant_id": id_of(&tb)}),
    )
    .await;
    for m in [Method::GET, Method::DELETE] {
        let r = with_key(&app, m, &path, &other).send().await.unwrap();
        common::assert_error(r, 404, "not_found").await;
    }
    let r = with_key(&app, Method::PATCH, &path, &other)
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;
    let l: Value = with_key(&app, Method::GET, "/v1/tools", &other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l["data"].as_array().unwrap().len(), 0);
    let r = with_key(&app, Method::POST, "/v1/tools", &other)
        .json(&tool_body("lookup_order", "http://b.example/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Scopes: read may list and get, not write.
    let ro = new_key(&app, json!({"name": "ro", "scope": "read"})).await;
    let r = with_key(&app, Method::GET, &path, &ro)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = with_key(&app, Method::POST, "/v1/tools", &ro)
        .json(&tool_body("x", "http://x.example/"))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 403, "forbidden").await;
    let r = with_key(&app, Method::DELETE, &path, &ro)
        .send()
        .await
        .unwrap();
    common::assert_error(r, 403, "forbidden").await;

    // Delete.
    let r = app.delete(&path).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = app.get(&path).send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
    let r = app.get("/v1/tools/not-a-uuid").send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
    app.stop().await.unwrap();
}

/// A local tool endpoint on port 0: checks the signature with `secret`, keeps every
/// request body, and answers `status` with a JSON body.
struct ToolServer {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl ToolServer {
    async fn start(secret: String, status: u16) -> ToolServer {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = got.clone();
        let router = axum::Router::new().route(
            "/tool",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let seen = seen.clone();
                    let secret = secret.clone();
                    async move {
                        use hmac::{Hmac, Mac};
                        let sig = headers["x-digital-employee-signature"].to_str().unwrap();
                        let hex_sig = sig.strip_prefix("sha256=").unwrap();
                        let mut mac =
                            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                        mac.update(&body);
                        let valid = mac.verify_slice(&hex::decode(hex_sig).unwrap()).is_ok();
                        let event_ok = headers["x-digital-employee-event"] == "tool.call";
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        seen.lock().unwrap().push(v.clone());
                        let code = if valid && event_ok { status } else { 401 };
                        (
                            axum::http::StatusCode::from_u16(code).unwrap(),
                            axum::Json(json!({
                                "order": v["arguments"]["order_id"],
                                "state": "shipped-by-receiver",
                            })),
                        )
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/tool", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        ToolServer {
            url,
            got,
            _task: task,
        }
    }
}

async fn rotate_secret(app: &TestApp) -> String {
    let r = app
        .client
        .post(app.url("/v1/webhooks/secret"))
        .header("X-API-Key", common::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["secret"].as_str().unwrap().to_string()
}

async fn webhook_tool_call_is_signed_and_its_answer_is_the_result(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let secret = rotate_secret(&app).await;
    let server = ToolServer::start(secret, 200).await;
    create_tool(&app, tool_body("lookup_order", &server.url)).await;
    let emp = employee(
        &app,
        json!({"name": "clerk", "role": "r", "allowed_tools": ["lookup_order"]}),
    )
    .await;
    let t = submit(
        &app,
        json!({"employee": "clerk", "input": "Use lookup_order for my order"}),
    )
    .await;
    let id = id_of(&t);
    let done = wait_status(&app, &id, "succeeded").await;
    assert!(
        done["result"]["output"]
            .as_str()
            .unwrap()
            .contains("shipped-by-receiver"),
        "{done}"
    );
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["tool"], "lookup_order");
    assert_eq!(result["payload"]["outcome"], "ok", "{result}");
    assert_eq!(result["payload"]["content"]["state"], "shipped-by-receiver");
    let got = server.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tool"], "lookup_order");
    assert_eq!(got[0]["task_id"], id.as_str());
    assert_eq!(got[0]["employee_id"], emp["id"]);
    assert!(got[0]["arguments"]["order_id"].is_string());
    app.stop().await.unwrap();
}

async fn webhook_tool_failure_is_a_tool_error_and_the_task_ends(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let secret = rotate_secret(&app).await;
    let server = ToolServer::start(secret, 500).await;
    create_tool(&app, tool_body("lookup_order", &server.url)).await;
    employee(
        &app,
        json!({"name": "clerk", "role": "r", "allowed_tools": ["lookup_order"]}),
    )
    .await;
    let t = submit(
        &app,
        json!({"employee": "clerk", "input": "Use lookup_order for my order"}),
    )
    .await;
    let id = id_of(&t);
    let done = wait_end(&app, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "error", "{result}");
    assert!(
        result["payload"]["content"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{result}"
    );
    assert_eq!(server.got.lock().unwrap().len(), 1);
    app.stop().await.unwrap();
}
