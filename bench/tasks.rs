//! End-to-end task throughput (submit → succeeded) of one replica with the in-process
//! sandbox vendor, and submit latency. Not a test: run it with `bench/tasks.sh`.
//!
//! Environment: `BENCH_DB` (`sqlite` or a `postgres://` URL), `BENCH_TASKS` (default
//! 2000), `BENCH_SUBMITTERS` (concurrent HTTP clients, default 32), `WORKER_CONCURRENCY`,
//! `TENANT_MAX_RUNNING` (default 0: the capped claim path when set), `DB_MAX_CONNECTIONS`
//! (default 32), `BENCH_EVENT_NOTIFY`
//! (PostgreSQL; `off` drops the trigger that notifies `de_events` on every step-log append,
//! to see what the notifications cost), `BENCH_USAGE_ROLLUPS` (PostgreSQL; `off` drops the
//! trigger that keeps the day and minute usage rollups, to see what they cost), `BENCH_SQL`
//! (PostgreSQL; statements run in the scratch schema after migrating, to try a schema
//! change before writing its migration).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use digital_employee::app::App;
use digital_employee::config::Config;
use digital_employee::store::{DEFAULT_TENANT_ID, TaskStatus};

#[path = "common.rs"]
mod common;

use common::KEY;

/// The allocator of the shipped binary (`src/main.rs`), so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let db = std::env::var("BENCH_DB").unwrap_or_else(|_| "sqlite".into());
    let n: usize = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let submitters: usize = std::env::var("BENCH_SUBMITTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let workers = std::env::var("WORKER_CONCURRENCY").unwrap_or_else(|_| "32".into());
    let tenant_cap = std::env::var("TENANT_MAX_RUNNING").unwrap_or_else(|_| "0".into());
    let connections = std::env::var("DB_MAX_CONNECTIONS").unwrap_or_else(|_| "32".into());
    let scratch = common::ScratchDb::new(&db).await;
    let url = scratch.url.clone();
    let vars: HashMap<&str, String> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".into()),
        ("PROMETHEUS_METRICS_PORT", "0".into()),
        ("API_KEY_WHITELIST", KEY.into()),
        ("RATE_LIMIT_REQUESTS", "1000000000".into()),
        ("RATE_LIMIT_WINDOW_SECONDS", "1".into()),
        ("DATABASE_URL", url.clone()),
        ("DB_MAX_CONNECTIONS", connections.clone()),
        ("WORKER_CONCURRENCY", workers.clone()),
        ("TENANT_MAX_RUNNING", tenant_cap.clone()),
        ("LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .collect();
    let cfg = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    scratch
        .store()
        .await
        .create_employee(DEFAULT_TENANT_ID, &common::employee("bench"))
        .await
        .unwrap();
    if db != "sqlite" && std::env::var("BENCH_EVENT_NOTIFY").is_ok_and(|v| v == "off") {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("DROP TRIGGER task_events_notify ON task_events")
            .execute(&mut c)
            .await
            .unwrap();
    }
    if db != "sqlite" && std::env::var("BENCH_USAGE_ROLLUPS").is_ok_and(|v| v == "off") {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("DROP TRIGGER ai_calls_rollups ON ai_calls")
            .execute(&mut c)
            .await
            .unwrap();
    }
    if let (false, Ok(sql)) = (db == "sqlite", std::env::var("BENCH_SQL")) {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let app = App::build(cfg).await.unwrap();
    let addr = app.api_addr().unwrap();
    let store = app.state().store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let per = n.div_ceil(submitters);
    let mut handles = Vec::new();
    for w in 0..submitters {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..per {
                let t0 = Instant::now();
                let r = client
                    .post(format!("http://{addr}/v1/tasks"))
                    .header("X-API-Key", KEY)
                    .json(
                        &serde_json::json!({"employee": "bench", "input": format!("task {w}-{i}")}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let submitted = started.elapsed();
    let total = per * submitters;
    // Every task was submitted: wait until none is live (queued, running, waiting).
    loop {
        let live = store
            .count_tasks_by_status()
            .await
            .unwrap()
            .iter()
            .map(|(_, c)| *c)
            .sum::<i64>();
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let count = |status| {
        let store = store.clone();
        async move {
            store
                .count_tenant_tasks_in(DEFAULT_TENANT_ID, status)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(TaskStatus::Failed).await, 0, "no task may fail");
    assert_eq!(
        count(TaskStatus::Succeeded).await as usize,
        total,
        "every task succeeded"
    );
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "db={} workers={} cap={} connections={} tasks={} submit_rate={:.0}/s end_to_end={:.0} tasks/s submit_p50={:.2}ms submit_p99={:.2}ms",
        if db == "sqlite" { "sqlite" } else { "postgres" },
        workers,
        tenant_cap,
        connections,
        total,
        total as f64 / submitted.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    let _ = tx.send(());
    let _ = running.await;
    scratch.remove().await;
}
