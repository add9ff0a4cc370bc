//! Usage reports: `GET /v1/usage` and `digital-employee usage` over calls made through the
//! gateway and rows inserted with known values, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Backend, TestApp, assert_error};
use digital_employee::store::{AiCallRecord, DEFAULT_TENANT_ID, DynStore};
use serde_json::{Value, json};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");

backend_tests!(usage_api_and_cli_report_recorded_calls);

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn row(tenant: Uuid, employee: Option<Uuid>, status: &str, when: &str, cost: i64) -> AiCallRecord {
    AiCallRecord {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        task_id: None,
        provider: "openai".into(),
        model: "gpt-4o".into(),
        status: status.into(),
        error_kind: (status == "error").then(|| "server".into()),
        http_status: (status == "error").then_some(503),
        latency_us: 10,
        input_tokens: if status == "ok" { 1000 } else { 0 },
        output_tokens: if status == "ok" { 200 } else { 0 },
        cached_tokens: if status == "ok" { 100 } else { 0 },
        cache_write_tokens: if status == "ok" { 50 } else { 0 },
        reasoning_tokens: if status == "ok" { 30 } else { 0 },
        cost_nanos: cost,
        cache_hit: status == "cache_hit",
        streamed: false,
        created_at: at(when),
        employee_id: employee,
    }
}

async fn wait_rows(store: &DynStore, n: usize) -> Vec<AiCallRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store
            .list_ai_calls(DEFAULT_TENANT_ID, None, 1000)
            .await
            .unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(Instant::now() < deadline, "only {} of {n} rows", rows.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn usage(app: &TestApp, query: &str) -> Value {
    let r = app.get(&format!("/v1/usage{query}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

async fn usage_api_and_cli_report_recorded_calls(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Three gateway calls through the built-in sandbox; the third repeats the second
    // (temperature 0) and is answered from the cache.
    let mut gateway_cost = 0i64;
    for text in ["first", "second", "second"] {
        let body = json!({"model": "sandbox-1", "temperature": 0,
                          "messages": [{"role": "user", "content": text}]});
        let r = app
            .post_json("/v1/chat/completions", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let recorded = wait_rows(&app.store, 3).await;
    assert!(recorded.iter().all(|r| r.employee_id.is_none()));
    for r in &recorded {
        gateway_cost += r.cost_nanos;
    }
    let gateway_in: i64 = recorded.iter().map(|r| r.input_tokens).sum();

    // Rows with known values: two employees on a past day, one row the window excludes,
    // and another tenant's row.
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let other = app.store.create_tenant("usage-other").await.unwrap().id;
    app.store
        .insert_ai_calls(&[
            row(
                DEFAULT_TENANT_ID,
                Some(a),
                "ok",
                "2025-01-10T08:00:00Z",
                1_000_000_001,
            ),
            row(
                DEFAULT_TENANT_ID,
                Some(a),
                "error",
                "2025-01-10T09:00:00Z",
                0,
            ),
            row(DEFAULT_TENANT_ID, Some(b), "ok", "2025-01-11T23:59:59Z", 2),
            row(DEFAULT_TENANT_ID, Some(b), "ok", "2025-01-12T00:00:00Z", 4),
            row(other, Some(a), "ok", "2025-01-10T08:00:00Z", 8),
        ])
        .await
        .unwrap();

    // Dates: `to` includes its whole day, so 2025-01-12 is outside `to=2025-01-11`.
    let v = usage(&app, "?from=2025-01-10&to=2025-01-11&group_by=employee").await;
    assert_eq!(v["from"], "2025-01-10T00:00:00Z");
    assert_eq!(v["to"], "2025-01-12T00:00:00Z");
    assert_eq!(v["group_by"], "employee");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v:#}");
    assert_eq!(groups[0]["key"], a.to_string());
    assert_eq!(groups[0]["requests"], 2);
    assert_eq!(groups[0]["successes"], 1);
    assert_eq!(groups[0]["errors"], 1);
    assert_eq!(groups[0]["error_rate"], 0.5);
    assert_eq!(groups[0]["input_tokens"], 1000);
    assert_eq!(groups[0]["output_tokens"], 200);
    assert_eq!(groups[0]["cached_tokens"], 100);
    assert_eq!(groups[0]["cache_write_tokens"], 50);
    assert_eq!(groups[0]["reasoning_tokens"], 30);
    assert_eq!(groups[0]["cost_nanos"], 1_000_000_001);
    assert_eq!(groups[0]["cost_usd"], 1.000000001);
    assert_eq!(groups[1]["key"], b.to_string());
    assert_eq!(groups[1]["cost_nanos"], 2);
    assert_eq!(v["totals"]["requests"], 3);
    assert_eq!(v["totals"]["cost_nanos"], 1_000_000_003);
    assert!(v["totals"].get("key").is_none());

    // The default window (last 30 days) holds only the gateway calls, with no employee.
    let v = usage(&app, "?group_by=employee").await;
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{v:#}");
    assert_eq!(groups[0]["key"], Value::Null);
    assert_eq!(groups[0]["requests"], 3);
    assert_eq!(groups[0]["successes"], 2);
    assert_eq!(groups[0]["cache_hits"], 1);
    assert_eq!(groups[0]["errors"], 0);
    assert_eq!(groups[0]["input_tokens"], gateway_in);
    assert_eq!(groups[0]["cost_nanos"], gateway_cost);
    // Grouped by the UTC day the calls were recorded on (read from the rows, not from
    // the clock now, so a run across midnight still agrees).
    let v = usage(&app, "").await;
    assert_eq!(v["group_by"], "day");
    let mut days: Vec<String> = recorded
        .iter()
        .map(|r| r.created_at.format("%Y-%m-%d").to_string())
        .collect();
    days.sort();
    days.dedup();
    let mut keys: Vec<String> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, days, "{v:#}");
    let per_day: i64 = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(per_day, 3);
    let v = usage(&app, "?group_by=provider").await;
    assert_eq!(v["groups"][0]["key"], "sandbox");
    let v = usage(&app, "?group_by=model&from=2025-01-01T00:00:00%2B01:00").await;
    let models: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["gpt-4o", "sandbox-1"]);
    assert_eq!(v["totals"]["requests"], 7);

    // Bad input names the parameter.
    for (query, field) in [
        ("?from=yesterday", "from"),
        ("?to=2025-02-30", "to"),
        ("?from=2025-01-02&to=2025-01-01", "to"),
        ("?from=2025-01-01T10:00:00Z&to=2025-01-01T10:00:00Z", "to"),
        ("?group_by=week", "group_by"),
    ] {
        let r = app.get(&format!("/v1/usage{query}")).send().await.unwrap();
        let body = assert_error(r, 422, "validation_error").await;
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let r = app.get("/v1/usage?bogus=1").send().await.unwrap();
    assert_error(r, 422, "validation_error").await;
    let r = app.client.get(app.url("/v1/usage")).send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;

    // A read key of another tenant sees only that tenant's usage.
    let r = app
        .post_json(
            "/v1/keys",
            &json!({"name": "reader", "scope": "read", "tenant_id": other}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .client
        .get(app.url("/v1/usage?from=2025-01-01&group_by=employee"))
        .header("X-API-Key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["totals"]["requests"], 1, "{v:#}");
    assert_eq!(v["totals"]["cost_nanos"], 8);

    // The command reads the same store query.
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .env_clear()
            .env("DATABASE_URL", &app.db().url)
            .arg("usage")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = cli(&[
        "--from",
        "2025-01-10",
        "--to",
        "2025-01-11",
        "--group-by",
        "employee",
        "--format",
        "csv",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "employee_id,requests,successes,errors,cache_hits,error_rate,input_tokens,\
             output_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,cost_usd,cost_nanos",
            &format!("{a},2,1,1,0,0.5000,1000,200,100,50,30,1.000000001,1000000001"),
            &format!("{b},1,1,0,0,0.0000,1000,200,100,50,30,0.000000002,2"),
        ]
    );
    let (code, stdout, stderr) = cli(&[
        "--from",
        "2025-01-01",
        "--tenant",
        "usage-other",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["totals"]["cost_nanos"], 8);
    assert_eq!(v["groups"][0]["key"], "2025-01-10");
    let (code, stdout, _) = cli(&["--group-by", "model"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("sandbox-1") && stdout.contains("TOTAL"),
        "{stdout}"
    );
    let (code, _, stderr) = cli(&["--from", "2025-02-01", "--to", "2025-01-01"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--to"), "{stderr}");
    let (code, _, _) = cli(&["--group-by", "week"]);
    assert_eq!(code, Some(2));
    app.stop().await.unwrap();
}
