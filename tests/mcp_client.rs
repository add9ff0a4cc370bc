//! MCP servers as tool providers, on SQLite and PostgreSQL: the `/v1/mcp-servers` API
//! (validation, secrets never shown, refresh, tenant scoping, scopes) and tasks whose
//! employee calls MCP tools, served by a real MCP server (the official Rust SDK, over
//! Streamable HTTP on loopback).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp};
use reqwest::Method;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

backend_tests!(
    mcp_servers_crud_secrets_refresh_and_scoping,
    mcp_tools_run_in_tasks_with_errors_approvals_and_a_deleted_server,
);

/// One call the test MCP server saw: the tool, `Authorization` and `X-Tenant-Secret`.
type Call = (String, Option<String>, Option<String>);

/// What the test MCP server saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Call>>>);

#[derive(Clone)]
struct ToolServer {
    seen: Seen,
}

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(v.as_object().unwrap().clone())
}

impl ServerHandler for ToolServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "echo",
                "Repeat a text.",
                schema(json!({"type": "object", "required": ["text"],
                              "properties": {"text": {"type": "string", "maxLength": 200}}})),
            ),
            Tool::new(
                "add",
                "Add two whole numbers.",
                schema(json!({"type": "object", "required": ["a", "b"],
                              "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})),
            ),
            Tool::new(
                "fail",
                "Always fails.",
                schema(json!({"type": "object", "properties": {}})),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let header = |n: &str| {
            parts
                .and_then(|p| p.headers.get(n))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.seen.0.lock().unwrap().push((
            request.name.to_string(),
            header("authorization"),
            header("x-tenant-secret"),
        ));
        let args = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "echo" => CallToolResult::success(vec![ContentBlock::text(format!(
                "echo: {}",
                args.get("text").and_then(Value::as_str).unwrap_or("")
            ))]),
            "add" => {
                let n = |k: &str| args.get(k).and_then(Value::as_i64).unwrap_or(0);
                let mut r = CallToolResult::success(vec![ContentBlock::text("sum")]);
                r.structured_content = Some(json!({"sum": n("a") + n("b")}));
                r
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("disk on fire")]),
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(result.into())
    }
}

struct McpServer {
    url: String,
    seen: Seen,
    _task: tokio::task::JoinHandle<()>,
}

async fn start_mcp_server() -> McpServer {
    let seen = Seen::default();
    let handler = ToolServer { seen: seen.clone() };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    McpServer {
        url,
        seen,
        _task: task,
    }
}

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

async fn register(app: &TestApp, body: Value) -> Value {
    let r = app
        .post_json("/v1/mcp-servers", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// Polls the server until its first refresh is done.
async fn refreshed(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = app
            .get(&format!("/v1/mcp-servers/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] != "pending" {
            return v;
        }
        assert!(Instant::now() < deadline, "never refreshed: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn mcp_servers_crud_secrets_refresh_and_scoping(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = start_mcp_server().await;
    let created = register(
        &app,
        json!({"name": "tools", "url": server.url, "bearer_token": "tok-very-secret-1",
               "headers": {"X-Tenant-Secret": "hdr-very-secret-2"}, "timeout_seconds": 5}),
    )
    .await;
    let text = created.to_string();
    assert!(!text.contains("very-secret"), "a secret came back: {text}");
    assert_eq!(created["has_bearer_token"], true);
    assert_eq!(created["header_names"], json!(["X-Tenant-Secret"]));
    assert_eq!(created["timeout_seconds"], 5);
    let id = id_of(&created);
    let path = format!("/v1/mcp-servers/{id}");

    let s = refreshed(&app, &id).await;
    assert_eq!(s["status"], "ok", "{s}");
    let tools: Vec<&str> = s["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["echo", "add", "fail"]);
    assert_eq!(s["tools"][0]["allowed_tools_entry"], "mcp:tools/echo");
    assert_eq!(s["tools"][1]["input_schema"]["required"], json!(["a", "b"]));
    assert!(!s.to_string().contains("very-secret"));

    // Validation: 422 naming the field.
    for (patch, field) in [
        (json!({"name": "a/b"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"url": "ftp://example.com/mcp"}), "url"),
        (json!({"url": "nope"}), "url"),
        (json!({"headers": {"Authorization": "x"}}), "headers"),
        (json!({"headers": {"bad header": "x"}}), "headers"),
        (json!({"bearer_token": "a\nb"}), "bearer_token"),
        (json!({"tool_allowlist": ["has space"]}), "tool_allowlist"),
        (json!({"timeout_seconds": 0}), "timeout_seconds"),
        (json!({"timeout_seconds": 301}), "timeout_seconds"),
    ] {
        let mut body = json!({"name": "other", "url": "https://mcp.example.com/mcp"});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app
            .post_json("/v1/mcp-servers", &body)
            .send()
            .await
            .unwrap();
        let b = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(b["error"]["field"], field, "{b}");
        let r = app.patch_json(&path, &patch).send().await.unwrap();
        common::assert_error(r, 422, "validation_error").await;
    }
    let r = app
        .post_json(
            "/v1/mcp-servers",
            &json!({"name": "tools", "url": "https://x.example/mcp"}),
        )
        .send()
        .await
        .unwrap();
    common::assert_error(r, 409, "conflict").await;

    // The allow-list narrows the tools employees may use; refresh answers at once.
    let r = app
        .patch_json(&path, &json!({"tool_allowlist": ["echo"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .post_json(&format!("{path}/refresh"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["status"], "ok");
    assert_eq!(s["tool_allowlist"], json!(["echo"]));
    assert_eq!(s["has_bearer_token"], true, "a patch without it keeps it");

    // A server that is down is reported, not fatal.
    let down = register(
        &app,
        json!({"name": "down", "url": "http://127.0.0.1:9/mcp", "timeout_seconds": 2}),
    )
    .await;
    let d = refreshed(&app, &id_of(&down)).await;
    assert_eq!(d["status"], "error", "{d}");
    let last_error = d["last_error"].as_str().unwrap();
    assert!(!last_error.is_empty(), "{d}");
    assert!(
        !last_error.contains("::"),
        "no Rust type paths in what a user reads: {last_error}"
    );

    // Another tenant sees none of it; a read key reads but cannot change.
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
    let r = with_key(&app, Method::POST, &format!("{path}/refresh"), &other)
        .send()
        .await
        .unwrap();
    common::assert_error(r, 404, "not_found").await;
    let l: Value = with_key(&app, Method::GET, "/v1/mcp-servers", &other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l["data"].as_array().unwrap().len(), 0);
    let ro = new_key(&app, json!({"name": "ro", "scope": "read"})).await;
    let r = with_key(&app, Method::GET, "/v1/mcp-servers", &ro)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = with_key(&app, Method::POST, "/v1/mcp-servers", &ro)
        .json(&json!({"name": "x", "url": "https://x.example/mcp"}))
        .send()
        .await
        .unwrap();
    common::assert_error(r, 403, "forbidden").await;
    let r = with_key(&app, Method::POST, &format!("{path}/refresh"), &ro)
        .send()
        .await
        .unwrap();
    common::assert_error(r, 403, "forbidden").await;

    let r = app.delete(&path).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = app.get(&path).send().await.unwrap();
    common::assert_error(r, 404, "not_found").await;
    app.stop().await.unwrap();
}

async fn mcp_tools_run_in_tasks_with_errors_approvals_and_a_deleted_server(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    let server = start_mcp_server().await;
    let s = register(
        &app,
        json!({"name": "tools", "url": server.url, "bearer_token": "tok-1",
               "headers": {"X-Tenant-Secret": "hdr-2"}}),
    )
    .await;
    assert_eq!(refreshed(&app, &id_of(&s)).await["status"], "ok");
    // Entries the employee API accepts and refuses.
    let r = app
        .post_json(
            "/v1/employees",
            &json!({"name": "x", "role": "r", "allowed_tools": ["mcp:tools"]}),
        )
        .send()
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;
    let r = app
        .post_json(
            "/v1/employees",
            &json!({"name": "x", "role": "r", "allowed_tools": ["mcp:tools/echo"],
                    "approval_tools": ["mcp:tools/add"]}),
        )
        .send()
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;
    employee(
        &app,
        json!({"name": "clerk", "role": "r", "allowed_tools": ["mcp:tools/*"],
               "approval_tools": ["mcp:tools/add"]}),
    )
    .await;

    // The sandbox calls the tool the input names (its alias) with schema-valid arguments.
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "clerk", "input": "Use mcp__tools__echo"}),
        )
        .await,
    );
    let done = wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let call = ev.iter().find(|e| e["kind"] == "tool_call").unwrap();
    assert_eq!(call["payload"]["tool"], "mcp:tools/echo", "{call}");
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "ok", "{result}");
    assert!(
        result["payload"]["content"]
            .as_str()
            .unwrap()
            .starts_with("echo: "),
        "{result}"
    );
    assert!(
        done["result"]["output"]
            .as_str()
            .unwrap()
            .contains("echo: "),
        "{done}"
    );
    let seen = server.seen.0.lock().unwrap().clone();
    assert_eq!(seen[0].0, "echo");
    assert_eq!(seen[0].1.as_deref(), Some("Bearer tok-1"));
    assert_eq!(seen[0].2.as_deref(), Some("hdr-2"));

    // An error the tool reports is a tool error the model sees; the task goes on.
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "clerk", "input": "Use mcp__tools__fail"}),
        )
        .await,
    );
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "error", "{result}");
    assert_eq!(result["payload"]["content"]["error"], "disk on fire");

    // An approval tool pauses before the call; approved, it runs (structured result).
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "clerk", "input": "Use mcp__tools__add"}),
        )
        .await,
    );
    let t = wait_status(&app, &id, "waiting_approval").await;
    assert_eq!(t["status"], "waiting_approval");
    let calls_before = server.seen.0.lock().unwrap().len();
    let r = app
        .post_json(&format!("/v1/tasks/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["tool"], "mcp:tools/add");
    assert!(result["payload"]["content"]["sum"].is_i64(), "{result}");
    assert_eq!(server.seen.0.lock().unwrap().len(), calls_before + 1);

    let metrics = app.metrics().await;
    assert!(
        common::metric(&metrics, "tool_calls_total{tool=\"mcp\",outcome=\"ok\"}") >= 2.0,
        "{metrics}"
    );

    // A deleted server leaves a clear tool error.
    let r = app
        .delete(&format!("/v1/mcp-servers/{}", id_of(&s)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    employee(
        &app,
        json!({"name": "direct", "role": "r", "allowed_tools": ["calculator", "mcp:tools/echo"]}),
    )
    .await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "direct", "input": "Use calculator"}),
        )
        .await,
    );
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(
        result["payload"]["tool"], "calculator",
        "only the calculator is offered now"
    );
    app.stop().await.unwrap();
}
