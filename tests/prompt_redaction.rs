//! Employees with `redact_prompts` never send sensitive data to a vendor; the number of
//! redactions is recorded in the task's `llm_call` event. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp};
use serde_json::{Value, json};

backend_tests!(prompts_are_redacted_before_they_reach_the_vendor);

/// Submits `input` to a new employee and returns the finished task and its events.
async fn run_task(app: &TestApp, name: &str, redact: bool, input: &str) -> (Value, Vec<Value>) {
    employee(
        app,
        json!({"name": name, "role": "support agent", "redact_prompts": redact}),
    )
    .await;
    let id = id_of(&submit(app, json!({"employee": name, "input": input})).await);
    let done = wait_status(app, &id, "succeeded").await;
    (done, events(app, &id).await)
}

async fn prompts_are_redacted_before_they_reach_the_vendor(backend: Backend) {
    let app = TestApp::spawn_with(backend, &with(&[])).await.unwrap();
    // The sandbox vendor quotes the user's message back, so its answer shows exactly what
    // it was sent.
    let input = "Refund jane.doe@example.com, card 4111 1111 1111 1111, order 1234567890123";
    let (done, events) = run_task(&app, "careful", true, input).await;
    let output = done["result"]["output"].as_str().unwrap();
    assert!(!output.contains("jane.doe@example.com"), "{output}");
    assert!(!output.contains("4111 1111 1111 1111"), "{output}");
    assert!(
        output.contains("1234567890123"),
        "a non-Luhn order number survives: {output}"
    );
    let llm = events.iter().find(|e| e["kind"] == "llm_call").unwrap();
    assert_eq!(llm["payload"]["redactions"], 2, "{llm}");

    // Without the flag the vendor sees the text as written, and nothing is counted.
    let (done, events) = run_task(&app, "plain", false, input).await;
    assert!(
        done["result"]["output"]
            .as_str()
            .unwrap()
            .contains("jane.doe@example.com")
    );
    let llm = events.iter().find(|e| e["kind"] == "llm_call").unwrap();
    assert_eq!(llm["payload"]["redactions"], 0);

    // The runtime's AI calls are attributed to the employee in usage reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage: Value = app
            .get("/v1/usage?group_by=employee")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let groups = usage["groups"].as_array().cloned().unwrap_or_default();
        let named = groups.iter().filter(|g| !g["key"].is_null()).count();
        if named == 2 {
            assert!(groups.iter().all(|g| g["requests"].as_i64().unwrap() >= 1));
            break;
        }
        assert!(Instant::now() < deadline, "usage by employee: {usage}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
