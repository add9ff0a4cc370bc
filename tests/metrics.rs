//! Metrics completeness: after a scenario that exercises every subsystem that exports
//! metrics, every metric `docs/operations.md` documents is on `/metrics` with a plausible
//! value, and every metric name the code defines is documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{Backend, TestApp};
use serde_json::{Value, json};

backend_tests!(documented_metrics_are_exported_with_plausible_values);

const OPERATIONS_MD: &str = include_str!("../docs/operations.md");
const METRICS_RS: &str = include_str!("../src/telemetry/metrics.rs");

/// `(name, type)` of every row of the metrics table in `docs/operations.md`.
fn documented() -> Vec<(String, String)> {
    let section = OPERATIONS_MD
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let name = cells[0]
                .trim_start_matches("| ")
                .trim_matches('`')
                .to_string();
            let kind = cells[1].split_whitespace().next().unwrap().to_string();
            (name, kind)
        })
        .collect()
}

/// Every metric name constant in `src/telemetry/metrics.rs`.
fn defined() -> Vec<String> {
    METRICS_RS
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \""))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .filter(|n| n != "unmatched")
        .collect()
}

/// Samples of the exposition: series (`name{labels}` or `name`) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The samples of one metric (exact name, any labels).
fn series<'a>(all: &'a BTreeMap<String, f64>, name: &str) -> Vec<(&'a str, f64)> {
    all.iter()
        .filter(|(s, _)| s.as_str() == name || s.starts_with(&format!("{name}{{")))
        .map(|(s, v)| (s.as_str(), *v))
        .collect()
}

async fn documented_metrics_are_exported_with_plausible_values(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Employee CRUD.
    let e = app.create_employee("metrics-crud").await;
    let id = e["id"].as_str().unwrap();
    let path = format!("/v1/employees/{id}");
    assert_eq!(app.get(&path).send().await.unwrap().status(), 200);
    let r = app
        .patch_json(&path, &json!({"role": "patched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.delete(&path).send().await.unwrap().status(), 204);
    // A 404 and a 401.
    assert_eq!(app.get(&path).send().await.unwrap().status(), 404);
    let r = app
        .client
        .get(app.url("/v1/employees"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Gateway completions: a cache miss, then the same request as a cache hit.
    for _ in 0..2 {
        let body = json!({"model": "sandbox-1", "temperature": 0,
                          "messages": [{"role": "user", "content": "metrics please"}]});
        let r = app
            .post_json("/v1/chat/completions", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A 429: a key allowed one request per window.
    let r = app
        .post_json(
            "/v1/keys",
            &json!({"name": "tight", "scope": "read", "rate_limit": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let statuses = {
        let mut s = Vec::new();
        for _ in 0..2 {
            let r = app
                .client
                .get(app.url("/v1/employees"))
                .header("X-API-Key", &secret)
                .send()
                .await
                .unwrap();
            s.push(r.status().as_u16());
        }
        s
    };
    assert_eq!(statuses, [200, 429]);
    // A rate limiter whose Redis is unreachable (fail open): the recorder is process-wide,
    // so this second app's count shows on the first one's scrape.
    let dead = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
            ("RATE_LIMIT_REDIS_FAILURE", "open"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        dead.get("/v1/employees").send().await.unwrap().status(),
        200
    );
    dead.stop().await.unwrap();

    // A task with one tool call, run to its end by this replica's workers.
    let r = app
        .post_json(
            "/v1/employees",
            &json!({"name": "metrics-calc", "role": "calculator", "allowed_tools": ["calculator"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: serde_json::Value = app
        .post_json(
            "/v1/tasks",
            &json!({"employee": "metrics-calc", "input": "What is 6 * 7?"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_path = format!("/v1/tasks/{}", t["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let t: serde_json::Value = app
            .get(&task_path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["status"] == "succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task never succeeded: {t}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The queue-depth gauge is sampled periodically; wait for its first sample.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !app
        .metrics()
        .await
        .contains("digital_employee_queue_depth{")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "queue depth never sampled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let text = app.metrics().await;
    // The queue depth counts live tasks only: the one that succeeded is not there.
    assert!(
        !text.contains("digital_employee_queue_depth{status=\"succeeded\"}"),
        "{text}"
    );
    let all = samples(&text);
    let docs = documented();
    assert!(docs.len() >= 20, "metrics table not found: {docs:?}");

    // Every defined metric is documented.
    for name in defined() {
        assert!(
            docs.iter().any(|(n, _)| *n == name),
            "{name} is exported but not documented in docs/operations.md"
        );
    }

    // Every documented metric is exported with a plausible value.
    let memory_limit = digital_employee::telemetry::process::memory_limit_bytes();
    for (name, kind) in &docs {
        match kind.as_str() {
            "histogram" => {
                let count = series(&all, &format!("{name}_count"));
                assert!(
                    !series(&all, &format!("{name}_bucket")).is_empty()
                        && !series(&all, &format!("{name}_sum")).is_empty()
                        && !count.is_empty(),
                    "{name}: histogram without _bucket/_sum/_count in\n{text}"
                );
                assert!(
                    count.iter().any(|(_, v)| *v > 0.0),
                    "{name}: nothing observed"
                );
            }
            "counter" => {
                let s = series(&all, name);
                assert!(!s.is_empty(), "{name} missing from\n{text}");
                assert!(s.iter().all(|(_, v)| *v >= 0.0 && v.fract() == 0.0));
                // The scenario exercised every counter but those of rare events.
                let rare = [
                    "ai_call_records_dropped_total",
                    "tasks_rescued_total",
                    "tasks_retried_total",
                    "schedule_fires_total",
                    "schedule_fire_errors_total",
                    "webhook_deliveries_total",
                    "egress_refused_total",
                    "auth_failures_total",
                    "budget_refusals_total",
                    "budget_settle_failures_total",
                    // Retention is off in this scenario (tests/retention.rs exercises it).
                    "digital_employee_pruned_total",
                    // Tracing is off in this scenario (tests/traces.rs exercises it).
                    "otel_spans_exported_total",
                    "otel_spans_dropped_total",
                ];
                if !rare.contains(&name.as_str()) {
                    assert!(s.iter().any(|(_, v)| *v > 0.0), "{name} is 0: {s:?}");
                }
            }
            "gauge" => {
                let s = series(&all, name);
                if name == "digital_employee_memory_limit_bytes" && memory_limit.is_none() {
                    assert!(s.is_empty(), "no cgroup limit here, yet {s:?}");
                    continue;
                }
                assert!(!s.is_empty(), "{name} missing from\n{text}");
                assert!(
                    s.iter().all(|(_, v)| v.is_finite() && *v >= 0.0),
                    "{name}: {s:?}"
                );
            }
            other => panic!("{name}: unknown type {other:?} in docs/operations.md"),
        }
    }

    // Values the scenario determines.
    let value = |series: &str| {
        *all.get(series)
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    };
    for (method, endpoint, status) in [
        ("POST", "/v1/employees", "201"),
        ("GET", "/v1/employees/{id}", "200"),
        ("PATCH", "/v1/employees/{id}", "200"),
        ("DELETE", "/v1/employees/{id}", "204"),
        ("GET", "/v1/employees/{id}", "404"),
        ("GET", "/v1/employees", "401"),
        ("GET", "/v1/employees", "429"),
        ("POST", "/v1/chat/completions", "200"),
    ] {
        let s = format!(
            "http_requests_total{{method=\"{method}\",endpoint=\"{endpoint}\",status=\"{status}\"}}"
        );
        assert!(value(&s) >= 1.0, "{s}");
    }
    let ai = |status: &str| {
        value(&format!(
            "ai_requests_total{{service=\"sandbox\",model=\"sandbox-1\",status=\"{status}\"}}"
        ))
    };
    assert!(ai("success") >= 1.0 && ai("cache_hit") >= 1.0);
    for kind in ["input", "output"] {
        assert!(
            value(&format!(
                "ai_tokens_used_total{{service=\"sandbox\",model=\"sandbox-1\",type=\"{kind}\"}}"
            )) > 0.0
        );
    }
    assert!(value("ai_cost_usd_total{service=\"sandbox\",model=\"sandbox-1\"}") > 0.0);
    assert!(value("ai_cache_hits_total") >= 1.0 && value("ai_cache_misses_total") >= 1.0);
    // Every call above succeeded: each provider's breaker is published, and closed.
    let breakers = series(&all, "ai_circuit_breaker_state");
    assert!(
        breakers
            .iter()
            .any(|(s, _)| s.contains("provider=\"sandbox\"")),
        "{breakers:?}"
    );
    for (s, v) in breakers {
        assert_eq!(v, 0.0, "{s}");
    }
    assert!(value("rate_limited_total{tenant=\"00000000-0000-0000-0000-000000000001\"}") >= 1.0);
    assert!(value("rate_limit_redis_errors_total{policy=\"open\"}") >= 1.0);
    assert_eq!(
        value(&format!(
            "digital_employee_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    if let Some(limit) = memory_limit {
        assert_eq!(value("digital_employee_memory_limit_bytes"), limit as f64);
    }
    assert_eq!(value("db_pool_max_connections{pool=\"main\"}"), 4.0);
    let idle = value("db_pool_connections{pool=\"main\",state=\"idle\"}");
    let in_use = value("db_pool_connections{pool=\"main\",state=\"in_use\"}");
    assert!(idle + in_use <= 4.0);
    app.stop().await.unwrap();
}

/// With `METRICS_BEARER_TOKEN` set, the metrics port answers only the scraper holding it.
#[tokio::test]
async fn the_metrics_port_can_require_a_bearer_token() {
    let token = "scrape-token-9f3e1c7a";
    let app = TestApp::spawn_with(Backend::Sqlite, &[("METRICS_BEARER_TOKEN", token)])
        .await
        .unwrap();
    let url = format!("http://{}/metrics", app.metrics_addr);
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "unauthorized", "{body}");
    assert!(!body.to_string().contains(token));
    let r = app
        .client
        .get(&url)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("http_requests_total"));
    app.stop().await.unwrap();
}
