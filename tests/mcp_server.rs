//! The `/mcp` endpoint on SQLite and PostgreSQL, driven by the official Rust SDK's client
//! over Streamable HTTP: tools by scope, run_task to completion, an approval through
//! MCP, a read key refused a write tool, tenants kept apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

backend_tests!(mcp_endpoint_runs_tasks_and_approvals_by_scope_and_tenant);

async fn connect(app: &TestApp, key: &str) -> RunningService<RoleClient, ()> {
    let headers = HashMap::from([(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_str(key).unwrap(),
    )]);
    let config =
        StreamableHttpClientTransportConfig::with_uri(app.url("/mcp")).custom_headers(headers);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ().serve(transport).await.unwrap()
}

async fn call(client: &RunningService<RoleClient, ()>, name: &str, args: Value) -> Value {
    let r = client
        .call_tool(
            CallToolRequestParams::new(name.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{name}: {r:?}");
    r.structured_content.unwrap()
}

async fn tool_names(client: &RunningService<RoleClient, ()>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

async fn new_key(app: &TestApp, body: Value) -> String {
    let r = app.post_json("/v1/keys", &body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let k: Value = r.json().await.unwrap();
    k["secret"].as_str().unwrap().to_string()
}

async fn mcp_endpoint_runs_tasks_and_approvals_by_scope_and_tenant(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(
        &app,
        json!({"name": "helper", "role": "a helpful assistant"}),
    )
    .await;
    employee(
        &app,
        json!({"name": "gated", "role": "r", "allowed_tools": ["calculator"],
               "approval_tools": ["calculator"]}),
    )
    .await;
    employee(
        &app,
        json!({"name": "asker", "role": "r", "allowed_tools": ["ask_human"]}),
    )
    .await;
    let writer = new_key(&app, json!({"name": "w", "scope": "write"})).await;
    let client = connect(&app, &writer).await;
    assert_eq!(
        tool_names(&client).await,
        [
            "answer_task",
            "approve_task",
            "chat_with_employee",
            "get_task",
            "list_employees",
            "list_pending_approvals",
            "reject_task",
            "run_task"
        ]
    );
    let tools = client.list_all_tools().await.unwrap();
    let run = tools.iter().find(|t| t.name == "run_task").unwrap();
    let props = run.input_schema["properties"].as_object().unwrap();
    assert!(props.contains_key("employee") && props.contains_key("wait_seconds"));

    let employees = call(&client, "list_employees", json!({})).await;
    assert_eq!(employees["data"].as_array().unwrap().len(), 3);

    let done = call(
        &client,
        "run_task",
        json!({"employee": "helper", "input": "Say hello", "wait_seconds": 20}),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["result"]["output"].is_string());

    // A task paused for approval comes back at once; approve it through MCP.
    let paused = call(
        &client,
        "run_task",
        json!({"employee": "gated", "input": "What is 6 * 7?", "wait_seconds": 20}),
    )
    .await;
    assert_eq!(paused["status"], "waiting_approval", "{paused}");
    let id = paused["id"].as_str().unwrap().to_string();
    let pending = call(&client, "list_pending_approvals", json!({})).await;
    assert_eq!(pending["data"][0]["task"]["id"], id.as_str());
    assert_eq!(pending["data"][0]["pending_call"]["tool"], "calculator");
    call(
        &client,
        "approve_task",
        json!({"task_id": id, "reason": "fine"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = call(&client, "get_task", json!({"task_id": id})).await;
        if t["task"]["status"] == "succeeded" {
            assert!(
                t["recent_events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["kind"] == "approval"),
                "{t}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A task waiting on a question comes back at once; the answer resumes it.
    let asking = call(
        &client,
        "run_task",
        json!({"employee": "asker", "input": "Use ask_human to ask for the region.",
               "wait_seconds": 20}),
    )
    .await;
    assert_eq!(asking["status"], "waiting_input", "{asking}");
    let asked = asking["id"].as_str().unwrap().to_string();
    let t = call(&client, "get_task", json!({"task_id": asked})).await;
    assert!(
        t["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["payload"]["status"] == "waiting_input"
                && e["payload"]["question"].is_string()),
        "the question is among the recent events: {t}"
    );
    let resumed = call(
        &client,
        "answer_task",
        json!({"task_id": asked, "answer": "eu-west-3"}),
    )
    .await;
    assert_eq!(resumed["id"], asked.as_str());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = call(&client, "get_task", json!({"task_id": asked})).await;
        if t["task"]["status"] == "succeeded" {
            let out = t["task"]["result"]["output"].as_str().unwrap_or_default();
            assert!(
                out.contains("eu-west-3"),
                "the answer reached the model: {t}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Answering a task that waits on nothing is a tool error naming why.
    let r = client
        .call_tool(
            CallToolRequestParams::new("answer_task").with_arguments(
                json!({"task_id": asked, "answer": "again"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(format!("{r:?}").contains("not waiting for input"), "{r:?}");

    // A tool's own failure is a tool error the caller reads.
    let r = client
        .call_tool(
            CallToolRequestParams::new("run_task").with_arguments(
                json!({"employee": "nobody", "input": "x"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));

    let chat = call(
        &client,
        "chat_with_employee",
        json!({"employee": "helper", "message": "Hi there"}),
    )
    .await;
    assert!(
        chat["session_id"].is_string() && chat["answer"].is_string(),
        "{chat}"
    );

    // A read key sees the read tools only, and a write tool is refused naming the scope.
    let reader = new_key(&app, json!({"name": "r", "scope": "read"})).await;
    let ro = connect(&app, &reader).await;
    assert_eq!(
        tool_names(&ro).await,
        ["get_task", "list_employees", "list_pending_approvals"]
    );
    let refused = ro
        .call_tool(
            CallToolRequestParams::new("run_task").with_arguments(
                json!({"employee": "helper", "input": "x"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("write scope"), "{refused}");

    // Another tenant's client never sees this tenant's employees or tasks.
    let r = app
        .post_json("/v1/tenants", &json!({"name": "tenant-b"}))
        .send()
        .await
        .unwrap();
    let tb: Value = r.json().await.unwrap();
    let other = new_key(
        &app,
        json!({"name": "b", "scope": "write", "tenant_id": id_of(&tb)}),
    )
    .await;
    let b = connect(&app, &other).await;
    let listed = call(&b, "list_employees", json!({})).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
    let r = b
        .call_tool(
            CallToolRequestParams::new("get_task")
                .with_arguments(json!({"task_id": id}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "another tenant's task: {r:?}");

    // Without a key, /mcp answers 401 like every other route.
    let r = app
        .client
        .post(app.url("/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await.unwrap();
}
