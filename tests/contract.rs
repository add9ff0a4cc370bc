//! The API answers the same on both backends for input the stores would treat apart:
//! text holding NUL (PostgreSQL refuses it in `text` and `jsonb`) is a 422 naming the
//! field wherever it appears, and instants outside 1970–9999 or a task's allowed window
//! are a 422 naming the field, never a 500 or a time that does not print as RFC 3339.
//! The document served at `/openapi.json` states these rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tasks::*;
use common::{Backend, TestApp, assert_error};
use serde_json::{Value, json};

async fn expect_422(resp: reqwest::Response, field: &str) {
    let body = assert_error(resp, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], field, "{body}");
}

async fn nul_is_refused_everywhere(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let e = employee(&app, json!({"name": "nul", "role": "r"})).await;
    let eid = id_of(&e);

    // Bodies: top-level texts, nested values and object keys.
    for (path, body, field) in [
        (
            "/v1/employees",
            json!({"name": "a", "role": "r\u{0}x"}),
            "role",
        ),
        (
            "/v1/employees",
            json!({"name": "a", "role": "r", "instructions": "\u{0}"}),
            "instructions",
        ),
        (
            "/v1/tasks",
            json!({"employee": "nul", "input": "a\u{0}b"}),
            "input",
        ),
        (
            "/v1/tasks",
            json!({"employee": "nul", "input": {"deep": ["ok", {"x": "\u{0}"}]}}),
            "input.deep[1].x",
        ),
        (
            "/v1/tasks",
            json!({"employee": "nul", "input": "ok", "metadata": {"k\u{0}": 1}}),
            "metadata",
        ),
        (
            "/v1/tasks",
            json!({"employee": "nu\u{0}l", "input": "ok"}),
            "employee",
        ),
        (
            "/v1/schedules",
            json!({"employee": "nul", "cron": "0 9 * * *", "input": "a\u{0}"}),
            "input",
        ),
        (
            "/v1/tools",
            json!({"name": "t", "description": "d\u{0}", "parameters": {}, "url": "http://127.0.0.1:9/x"}),
            "description",
        ),
        (
            &format!("/v1/employees/{eid}/chat"),
            json!({"message": "hi\u{0}"}),
            "message",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "sandbox/sandbox-1", "messages": [{"role": "user", "content": "\u{0}"}]}),
            "messages[0].content",
        ),
    ] {
        let resp = app.post_json(path, &body).send().await.unwrap();
        expect_422(resp, field).await;
    }
    // Query strings and path parameters.
    let resp = app.get("/v1/tasks?employee=a%00b").send().await.unwrap();
    expect_422(resp, "employee").await;
    let resp = app.get("/v1/employees/a%00b").send().await.unwrap();
    expect_422(resp, "id").await;
    // An escaped backslash followed by the text "u0000" is no NUL: stored as sent.
    let t = submit(&app, json!({"employee": "nul", "input": "a\\u0000b"})).await;
    assert_eq!(task(&app, &id_of(&t)).await["input"], "a\\u0000b");
    // Nothing of the refused requests was stored.
    let page: Value = app
        .get("/v1/tasks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    app.stop().await.unwrap();
}

async fn instants_are_bounded(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    employee(&app, json!({"name": "when", "role": "r"})).await;
    for run_at in [
        "+10000-01-01T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "2001-01-01T00:00:00Z",
        "tomorrow",
    ] {
        let resp = app
            .post_json(
                "/v1/tasks",
                &json!({"employee": "when", "input": "x", "run_at": run_at}),
            )
            .send()
            .await
            .unwrap();
        expect_422(resp, "run_at").await;
    }
    // Beyond the horizon (TASK_MAX_DELAY_DAYS, 365 by default).
    let far = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let resp = app
        .post_json(
            "/v1/tasks",
            &json!({"employee": "when", "input": "x", "run_at": far}),
        )
        .send()
        .await
        .unwrap();
    expect_422(resp, "run_at").await;
    // A minute ago counts as now; a month ahead is kept and prints as RFC 3339.
    let recent = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let t = submit(
        &app,
        json!({"employee": "when", "input": "x", "run_at": recent}),
    )
    .await;
    let run_at = t["run_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(run_at).is_ok(),
        "{run_at}"
    );
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    let t = submit(
        &app,
        json!({"employee": "when", "input": "x", "run_at": later.to_rfc3339()}),
    )
    .await;
    let got = chrono::DateTime::parse_from_rfc3339(t["run_at"].as_str().unwrap()).unwrap();
    assert_eq!(got.timestamp(), later.timestamp());
    // List filters.
    let resp = app
        .get("/v1/tasks?created_after=%2B10000-01-01T00:00:00Z")
        .send()
        .await
        .unwrap();
    expect_422(resp, "created_after").await;
    let resp = app
        .get("/v1/tasks?created_before=9999-12-31T23:59:59Z")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await.unwrap();
}

/// Whole numbers written as floats are integers (as JSON Schema says); -0 reads as 0.
async fn numbers_as_json_schema_reads_them(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let resp = app
        .post_json(
            "/v1/employees",
            &json!({"name": "n", "role": "r", "max_steps": 5.0, "token_budget": 1e3, "temperature": -0.0}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let raw = resp.text().await.unwrap();
    assert!(!raw.contains("-0.0"), "{raw}");
    let e: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (e["max_steps"].as_i64(), e["token_budget"].as_i64()),
        (Some(5), Some(1000))
    );
    let resp = app
        .post_json(
            "/v1/employees",
            &json!({"name": "m", "role": "r", "max_steps": 5.5}),
        )
        .send()
        .await
        .unwrap();
    expect_422(resp, "max_steps").await;
    let resp = app.get("/v1/tasks?limit=2.0").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await.unwrap();
}

/// Numbers at the edges of f64 come back as sent (PostgreSQL prints them in full decimal;
/// the reader must round them back exactly, or the row could never be read again).
async fn extreme_numbers_round_trip(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    employee(&app, json!({"name": "num", "role": "r"})).await;
    let numbers = json!([
        1.7976931348623157e308,
        -1.7976931348623157e308,
        5e-324,
        2.2250738585072014e-308,
        1e300,
        -5.403845323021167e16
    ]);
    // Equal as numbers (a whole float may come back written as an integer).
    let same = |got: &Value| {
        let got: Vec<f64> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = numbers
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_f64().unwrap())
            .collect();
        assert_eq!(got, want);
    };
    let t = submit(&app, json!({"employee": "num", "input": {"n": numbers}})).await;
    same(&task(&app, &id_of(&t)).await["input"]["n"]);
    let resp = app
        .post_json(
            "/v1/tools",
            &json!({"name": "edge", "description": "d", "parameters": {"n": numbers},
                    "url": "http://127.0.0.1:9/x"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let page: Value = app
        .get("/v1/tools")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    same(&page["data"][0]["parameters"]["n"]);
    app.stop().await.unwrap();
}

backend_tests!(
    extreme_numbers_round_trip,
    nul_is_refused_everywhere,
    instants_are_bounded,
    numbers_as_json_schema_reads_them
);

/// The document: query parameters are in the query, operation ids are unique, every
/// operation documents its error answers, creates link to the created resource, and the
/// rules above are stated.
#[tokio::test]
async fn the_document_states_the_contract() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                if p["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: {name} is not in the path"
                    );
                }
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"), "{method} {path}");
            if path.starts_with("/v1/") {
                for code in ["401", "403", "429"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
        }
    }
    // Every reference resolves (a dangling one makes generators drop whole endpoints).
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or(r);
        assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
    }
    let list = &doc["paths"]["/v1/tasks"]["get"]["parameters"];
    for p in list.as_array().unwrap() {
        assert_eq!(p["in"], "query", "{p}");
    }
    let links = &doc["paths"]["/v1/employees"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        links["employees_get"]["parameters"]["id"],
        "$response.body#/id"
    );
    let input = &doc["components"]["schemas"]["CreateTask"]["properties"]["input"];
    assert!(
        input["anyOf"].as_array().is_some_and(|a| a.len() == 2),
        "{input}"
    );
    let role = &doc["components"]["schemas"]["CreateEmployee"]["properties"]["role"];
    assert!(
        role["pattern"]
            .as_str()
            .is_some_and(|p| p.contains("\\x00")),
        "{role}"
    );
    let model = &doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"];
    assert!(
        model["pattern"]
            .as_str()
            .is_some_and(|p| p.contains("sandbox")),
        "{model}"
    );
    app.stop().await.unwrap();
}
