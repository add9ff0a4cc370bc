//! The health checker, the smoke test and the process/pool metrics against a running app.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ADMIN_KEY, Backend, TestApp, test_config};
use digital_employee::ops::{health, smoke};

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");

async fn health_check_reports_every_selected_check(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut extra = vec![];
    // Fails rather than skipping the Redis check when REQUIRE_BACKEND_TESTS=1.
    let redis = common::redis_url();
    if let Some(r) = &redis {
        extra.push(("REDIS_URL", r.as_str()));
    }
    let config = test_config(&app.db().url, &extra);
    let mut opts = health::Options::new(format!("http://{}", app.addr));
    // Thresholds high enough that a busy CI machine is still "healthy".
    opts.cpu_threshold = 100.1;
    opts.memory_threshold = 100.1;
    opts.disk_threshold = 100.1;
    opts.disk_path = Some(std::env::temp_dir());
    let report = health::run(&config, &opts).await;
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["timestamp"].is_string());
    assert_eq!(json["overall_status"], "healthy", "{json:#}");
    let checks = &json["checks"];
    assert_eq!(checks["app"]["healthy"], true);
    assert_eq!(checks["app"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(checks["app"]["response_time"].as_f64().unwrap() >= 0.0);
    let db = &checks["database"];
    assert_eq!(db["healthy"], true, "{db}");
    match backend {
        Backend::Sqlite => {
            assert_eq!(db["quick_check"], "ok");
            assert!(db["size_bytes"].as_u64().unwrap() > 0);
        }
        Backend::Postgres => {
            assert!(db["active_connections"].as_i64().unwrap() >= 1);
            assert!(db["max_connections"].as_i64().unwrap() > 0);
        }
    }
    if redis.is_some() {
        assert_eq!(checks["redis"]["healthy"], true, "{}", checks["redis"]);
        assert!(checks["redis"]["uptime_seconds"].as_u64().is_some());
        assert!(checks["redis"]["connected_clients"].as_u64().unwrap() >= 1);
    } else {
        assert_eq!(checks["redis"]["skipped"], true);
    }
    assert_eq!(checks["ai"]["skipped"], true);
    let sys = &checks["system"];
    assert!((0.0..=100.0).contains(&sys["cpu_percent"].as_f64().unwrap()));
    assert!(sys["load_average_1m"].as_f64().unwrap() >= 0.0);
    assert!(checks["disk"]["total_gb"].as_f64().unwrap() > 0.0);

    // A failing threshold makes the report unhealthy.
    opts.disk_threshold = 0.0;
    opts.only = vec![health::CheckKind::Disk];
    let report = health::run(&config, &opts).await;
    assert!(!report.is_healthy());
    assert_eq!(report.checks.len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_binary_exit_codes_and_the_container_probe() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .env_clear()
            // No database configured at all: `--only app` must not need one.
            .env("DATA_DIR", "/nonexistent/data")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let url = format!("http://{}", app.addr);
    let out = run(&["health-check", "--only", "app", "--url", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["overall_status"], "healthy");
    assert_eq!(v["checks"].as_object().unwrap().len(), 1);

    let out = run(&[
        "health-check",
        "--only",
        "app",
        "--url",
        &url,
        "--format",
        "table",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("app            healthy"));

    // Nothing listens on port 9 here: unhealthy, exit 1.
    let out = run(&[
        "health-check",
        "--only",
        "app",
        "--url",
        "http://127.0.0.1:9",
        "--timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["overall_status"], "unhealthy");
    assert!(v["checks"]["app"]["error"].is_string());
    // The database check on a missing SQLite file fails without creating it.
    let out = run(&["health-check", "--only", "db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!std::path::Path::new("/nonexistent/data").exists());

    // Usage errors exit 2.
    assert_eq!(
        run(&["health-check", "--only", "bogus"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["health-check", "--disk-threshold", "120"])
            .status
            .code(),
        Some(2)
    );

    // The wrapper script passes its arguments on.
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/health_check.sh"
        ))
        .args(["--only", "app"])
        .env("DIGITAL_EMPLOYEE_BIN", BIN)
        .env("APP_URL", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await.unwrap();
}

/// A fake vendor: `/v1/models` answers 429 for one key and 401 for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_probes_count_429_as_reachable_and_401_as_not() {
    use axum::http::{HeaderMap, StatusCode};
    let router = axum::Router::new().route(
        "/v1/models",
        axum::routing::get(|h: HeaderMap| async move {
            if h.get("authorization")
                .is_some_and(|v| v == "Bearer busy-key")
            {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let base = format!("http://{addr}/v1");
    let mut opts = health::Options::new("http://127.0.0.1:9");
    opts.only = vec![health::CheckKind::Ai];
    opts.openai_base_url = base.clone();
    opts.anthropic_base_url = base.clone();

    let config = test_config("sqlite::memory:", &[("OPENAI_API_KEY", "busy-key")]);
    let report = health::run(&config, &opts).await;
    assert!(report.is_healthy(), "{:?}", report.checks);
    assert_eq!(report.checks["ai_openai"]["status_code"], 429);

    let config = test_config(
        "sqlite::memory:",
        &[
            ("OPENAI_API_KEY", "busy-key"),
            ("CLAUDE_API_KEY", "wrong-key"),
        ],
    );
    let report = health::run(&config, &opts).await;
    assert!(!report.is_healthy());
    assert_eq!(report.checks["ai_openai"]["healthy"], true);
    assert_eq!(report.checks["ai_anthropic"]["healthy"], false);
    assert_eq!(report.checks["ai_anthropic"]["status_code"], 401);
    server.abort();
}

async fn smoke_test_passes_and_cleans_up(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let opts = smoke::Options {
        url: format!("http://{}", app.addr),
        api_key: ADMIN_KEY.into(),
        timeout: Duration::from_secs(10),
    };
    let mut seen = Vec::new();
    let report = smoke::run(&opts, &mut |s| seen.push(s.name.clone()))
        .await
        .unwrap();
    assert!(report.passed, "{:?}", report.steps);
    assert_eq!(
        seen,
        [
            "health",
            "ready",
            "create employee",
            "get employee",
            "submit task",
            "task succeeds",
            "task events",
            "list employees",
            "gateway completion",
            "delete employee",
            "employee is gone (404)"
        ]
    );
    // Nothing left behind.
    let list: serde_json::Value = app
        .get("/v1/employees")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");

    // A wrong key fails at the first authenticated step, exit code 1 from the binary.
    let out = Command::new(BIN)
        .env_clear()
        .args(["smoke", "--url", &opts.url, "--api-key", "wrong-key"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   health") && stdout.contains("FAIL create employee"),
        "{stdout}"
    );
    app.stop().await.unwrap();
}

/// Every metric `docs/operations.md` documents is exported with a plausible value.
async fn metrics_cover_process_pool_and_build(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for i in 0..3 {
        app.create_employee(&format!("metrics-{i}")).await;
    }
    assert_eq!(app.get("/v1/employees").send().await.unwrap().status(), 200);
    let text = app.metrics().await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert_eq!(value("db_pool_max_connections{pool=\"main\"}"), 4.0);
    let idle = value("db_pool_connections{pool=\"main\",state=\"idle\"}");
    let in_use = value("db_pool_connections{pool=\"main\",state=\"in_use\"}");
    assert!(idle >= 0.0 && in_use >= 0.0 && idle + in_use <= 4.0);
    // The backend's other pools are published beside the main one, each with its bound.
    let others: &[(&str, f64)] = match backend {
        Backend::Sqlite => &[("writer", 1.0)],
        Backend::Postgres => &[
            (
                "hot",
                f64::from(digital_employee::store::postgres::HOT_POOL_SIZE),
            ),
            (
                "reports",
                f64::from(digital_employee::store::postgres::REPORT_POOL_SIZE),
            ),
        ],
    };
    for (pool, max) in others {
        assert_eq!(
            value(&format!("db_pool_max_connections{{pool=\"{pool}\"}}")),
            *max,
            "{pool}"
        );
        let open = value(&format!(
            "db_pool_connections{{pool=\"{pool}\",state=\"idle\"}}"
        )) + value(&format!(
            "db_pool_connections{{pool=\"{pool}\",state=\"in_use\"}}"
        ));
        assert!(open <= *max, "{pool}: {open} connections open");
    }
    assert_eq!(
        value(&format!(
            "digital_employee_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(
        value("http_requests_total{method=\"POST\",endpoint=\"/v1/employees\",status=\"201\"}")
            >= 3.0
    );
    assert!(text.contains("http_request_duration_seconds_bucket{"));
    assert!(text.contains("http_requests_in_flight"));
    app.stop().await.unwrap();
}

backend_tests!(
    health_check_reports_every_selected_check,
    smoke_test_passes_and_cleans_up,
    metrics_cover_process_pool_and_build,
);
