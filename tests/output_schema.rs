//! Structured task results: an employee's or a task's `output_schema` makes the task's
//! `result.output` JSON valid for it, through either vendor wire format; an invalid
//! answer gets one corrective turn, then the task fails with `invalid_output`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::tasks::{employee, events, id_of, submit, wait_end, with};
use common::{Backend, TestApp};
use digital_employee::ai::sandbox::{SandboxEngine, SandboxSetup, ScriptStep};
use digital_employee::runtime::schema::validate;
use serde_json::{Value, json};

const VENDOR_KEY: &str = "sk-sandbox-schema";

struct Vendor {
    base: String,
    engine: Arc<SandboxEngine>,
    _task: tokio::task::JoinHandle<()>,
}

async fn vendor() -> Vendor {
    let engine = Arc::new(SandboxEngine::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = digital_employee::ai::sandbox_server::router(engine.clone(), Some(VENDOR_KEY.into()));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Vendor {
        base,
        engine,
        _task: task,
    }
}

async fn app(backend: Backend, v: &Vendor) -> Option<TestApp> {
    let providers = json!([
        {"name": "sbopenai", "format": "openai", "base_url": format!("{}/v1", v.base),
         "api_key": VENDOR_KEY},
        {"name": "sbclaude", "format": "anthropic", "base_url": v.base, "api_key": VENDOR_KEY},
    ])
    .to_string();
    TestApp::spawn_with(
        backend,
        &with(&[
            ("AI_PROVIDERS", &providers),
            ("AI_SERVICE_RETRY_DELAY", "0"),
            ("AI_CACHE", "off"),
        ]),
    )
    .await
}

fn ticket_schema() -> Value {
    json!({"type": "object", "properties": {
        "category": {"enum": ["billing", "bug", "other"]},
        "priority": {"type": "integer", "minimum": 1},
        "summary": {"type": "string"}},
        "required": ["category", "priority", "summary"], "additionalProperties": false})
}

async fn results_are_json_valid_for_the_schema(backend: Backend) {
    let v = vendor().await;
    let Some(app) = app(backend, &v).await else {
        return;
    };
    let schema = ticket_schema();
    for policy in [
        "sandbox/sandbox-1",
        "sbopenai/sandbox-1",
        "sbclaude/sandbox-1",
    ] {
        let name = format!("triage-{}", policy.replace('/', "-"));
        let e = employee(
            &app,
            json!({"name": name, "role": "ticket triage", "model_policy": [policy],
                "allowed_tools": ["calculator"], "output_schema": schema}),
        )
        .await;
        assert_eq!(e["output_schema"], schema);
        let t = submit(
            &app,
            json!({"employee": name, "input": "Classify: I was charged twice, 2 * 21 euros"}),
        )
        .await;
        let t = wait_end(&app, &id_of(&t)).await;
        assert_eq!(t["status"], "succeeded", "{policy}: {t}");
        let output = &t["result"]["output"];
        assert!(
            output.is_object(),
            "{policy}: the output is JSON, not text: {t}"
        );
        validate(&schema, output).unwrap_or_else(|e| panic!("{policy}: {e}"));
    }

    // A task's own schema wins over the employee's (here: none).
    let list = json!({"type": "array", "items": {"type": "string"}, "minItems": 2});
    employee(&app, json!({"name": "free", "role": "writer"})).await;
    let t = submit(
        &app,
        json!({"employee": "free", "input": "Two names", "output_schema": list}),
    )
    .await;
    assert_eq!(t["output_schema"], list);
    let t = wait_end(&app, &id_of(&t)).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    validate(&list, &t["result"]["output"]).unwrap();

    // Without a schema the output stays text.
    let t = submit(&app, json!({"employee": "free", "input": "hello"})).await;
    let t = wait_end(&app, &id_of(&t)).await;
    assert!(t["result"]["output"].is_string());
}

async fn an_invalid_answer_gets_one_correction_then_fails(backend: Backend) {
    let v = vendor().await;
    let Some(app) = app(backend, &v).await else {
        return;
    };
    let step = |content: &str| ScriptStep {
        content: Some(content.into()),
        ..Default::default()
    };
    // First model: wrong once, then right. Second model: wrong twice.
    v.engine.apply(SandboxSetup {
        seed: None,
        faults: Vec::new(),
        scripts: HashMap::from([
            (
                "fixes-itself".to_string(),
                vec![
                    step("Sure! The category is billing."),
                    step(r#"{"category": "billing", "priority": 2, "summary": "double charge"}"#),
                ],
            ),
            (
                "stubborn".to_string(),
                vec![step(r#"{"category": "refunds"}"#), step("still not JSON")],
            ),
        ]),
    });
    for (model, ends) in [("fixes-itself", "succeeded"), ("stubborn", "failed")] {
        employee(
            &app,
            json!({"name": model, "role": "triage", "model_policy": [format!("sbopenai/{model}")],
                "output_schema": ticket_schema()}),
        )
        .await;
        let t = submit(&app, json!({"employee": model, "input": "charged twice"})).await;
        let id = id_of(&t);
        let t = wait_end(&app, &id).await;
        assert_eq!(t["status"], ends, "{model}: {t}");
        assert_eq!(t["steps"], 2, "{model}: one corrective turn, no more: {t}");
        assert_eq!(t["attempt"], 1, "{model}: not retried");
        let evs = events(&app, &id).await;
        let corrections = evs
            .iter()
            .filter(|e| e["kind"] == "message" && e["payload"]["role"] == "system")
            .count();
        assert_eq!(corrections, 1, "{model}: {evs:?}");
        if ends == "succeeded" {
            assert_eq!(t["result"]["output"]["summary"], "double charge");
        } else {
            let error = t["error"].as_str().unwrap();
            assert!(error.starts_with("invalid_output: "), "{error}");
            assert!(t["result"].is_null());
        }
        assert_eq!(v.engine.stats()[model], 2);
    }
}

async fn schemas_are_checked_and_can_be_cleared(backend: Backend) {
    let v = vendor().await;
    let Some(app) = app(backend, &v).await else {
        return;
    };
    for bad in [json!("a string"), json!({"type": 7})] {
        let r = app
            .post_json(
                "/v1/employees",
                &json!({"name": "x", "role": "r", "output_schema": bad}),
            )
            .send()
            .await
            .unwrap();
        let body = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(body["error"]["field"], "output_schema");
    }
    let e = employee(
        &app,
        json!({"name": "x", "role": "r", "output_schema": ticket_schema()}),
    )
    .await;
    let r = app
        .post_json(
            "/v1/tasks",
            &json!({"employee": "x", "input": "hi", "output_schema": [1]}),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], "output_schema");
    // A patch without the field keeps it; null clears it.
    let id = id_of(&e);
    let r = app
        .patch_json(&format!("/v1/employees/{id}"), &json!({"role": "r2"}))
        .send()
        .await
        .unwrap();
    let kept: Value = r.json().await.unwrap();
    assert_eq!(kept["output_schema"], ticket_schema());
    let r = app
        .patch_json(
            &format!("/v1/employees/{id}"),
            &json!({"output_schema": null}),
        )
        .send()
        .await
        .unwrap();
    let cleared: Value = r.json().await.unwrap();
    assert!(cleared["output_schema"].is_null(), "{cleared}");
}

backend_tests!(
    results_are_json_valid_for_the_schema,
    an_invalid_answer_gets_one_correction_then_fails,
    schemas_are_checked_and_can_be_cleared
);
