//! Server time of the web console's pages with 10,000 tasks in the database. Not a
//! test: `cargo run --release --example bench_console` (`BENCH_DB=postgres://…` for
//! PostgreSQL, `BENCH_TASKS`, `BENCH_ROUNDS`).
//!
//! Fills one tenant with tasks run to their end by the in-process sandbox (most succeed
//! after a calculator call, 1% fail on their step limit, some wait for approval, some are
//! scheduled for later), signs in, requests every page `BENCH_ROUNDS` times one after the
//! other, and prints for each route the p50/p99 seen by the client and the bucket of the
//! service's own `http_request_duration_seconds` histogram that holds its p99.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{KEY, ScratchDb};
use digital_employee::app::App;
use digital_employee::store::{DEFAULT_TENANT_ID, EmployeeFields, TaskStatus};

fn employee(name: &str, max_steps: i32, approval: bool) -> EmployeeFields {
    EmployeeFields {
        allowed_tools: vec!["calculator".into()],
        max_steps,
        approval_tools: if approval {
            vec!["calculator".into()]
        } else {
            vec![]
        },
        ..common::employee(name)
    }
}

fn value(html: &str, marker: &str) -> String {
    let at = html.find(marker).unwrap() + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let db = env("BENCH_DB", "sqlite");
    let n: usize = env("BENCH_TASKS", "10000").parse().unwrap();
    let rounds: usize = env("BENCH_ROUNDS", "200").parse().unwrap();
    let scratch = ScratchDb::new(&db).await;
    let cfg = scratch.config(&[
        ("DB_MAX_CONNECTIONS", "16"),
        ("WORKER_CONCURRENCY", "32"),
        ("TASK_POLL_INTERVAL", "0.05"),
    ]);
    let s = scratch.store().await;
    let bench = s
        .create_employee(DEFAULT_TENANT_ID, &employee("bench", 5, false))
        .await
        .unwrap();
    s.create_employee(DEFAULT_TENANT_ID, &employee("strict", 1, false))
        .await
        .unwrap();
    s.create_employee(DEFAULT_TENANT_ID, &employee("careful", 5, true))
        .await
        .unwrap();
    let app = App::build(cfg).await.unwrap();
    let addr = app.api_addr().unwrap();
    let metrics_addr = app.metrics_addr().unwrap();
    let store = app.state().store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The tasks: submitted over HTTP by 32 clients, run to their end.
    let started = Instant::now();
    let later = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let submitters = 32;
    let mut handles = Vec::new();
    for w in 0..submitters {
        let client = client.clone();
        let later = later.clone();
        handles.push(tokio::spawn(async move {
            for i in (w..n).step_by(submitters) {
                let body = match i % 100 {
                    0 => serde_json::json!({"employee": "strict", "input": format!("{i} * 2")}),
                    1 if i < 2000 => serde_json::json!({"employee": "careful", "input": format!("{i} + 1")}),
                    2 if i < 2000 => serde_json::json!({"employee": "bench", "input": "later", "run_at": later}),
                    _ => serde_json::json!({"employee": "bench", "input": format!("What is {i} * 3? Use the calculator.")}),
                };
                let r = client
                    .post(format!("http://{addr}/v1/tasks"))
                    .header("X-API-Key", KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    loop {
        let counts = store.count_tasks_by_status().await.unwrap();
        let active: i64 = counts
            .iter()
            .filter(|(s, _)| matches!(s, TaskStatus::Running | TaskStatus::Retrying))
            .map(|(_, n)| n)
            .sum::<i64>()
            + counts
                .iter()
                .filter(|(s, _)| *s == TaskStatus::Queued)
                .map(|(_, n)| n)
                .sum::<i64>()
            - (n as i64 / 100).min(20);
        if active <= 0 {
            println!(
                "{n} tasks submitted and run in {:.1?}: {counts:?}",
                started.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the usage writer flush its batches.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if db != "sqlite" {
        // What autovacuum does within a minute or two of such a burst: fresh planner
        // statistics and a visibility map, so the measurement is of the steady state
        // rather than of the minute after 10,000 inserts and 40,000 updates.
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&scratch.url).await.unwrap();
        sqlx::raw_sql("VACUUM ANALYZE tasks, task_events, ai_calls, usage_daily, usage_hourly, usage_minutely")
            .execute(&mut c)
            .await
            .unwrap();
    }

    // Sign in.
    let r = client
        .get(format!("http://{addr}/signin"))
        .send()
        .await
        .unwrap();
    let signin_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("de_signin="))
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap();
    let html = r.text().await.unwrap();
    let token = value(&html, "name=\"_csrf\" value=\"");
    let body = format!(
        "_csrf={token}&credential={}",
        form_urlencoded::byte_serialize(KEY.as_bytes()).collect::<String>()
    );
    let r = client
        .post(format!("http://{addr}/signin"))
        .header("cookie", signin_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("de_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
        .unwrap();

    let some_task = store
        .list_tasks(DEFAULT_TENANT_ID, &Default::default(), None, 1)
        .await
        .unwrap()
        .items[0]
        .id;
    let pages: Vec<(String, String)> = vec![
        ("/".into(), "/".into()),
        ("/tasks".into(), "/tasks".into()),
        ("/tasks".into(), "/tasks?status=failed".into()),
        ("/tasks/{id}".into(), format!("/tasks/{some_task}")),
        ("/approvals".into(), "/approvals".into()),
        ("/employees".into(), "/employees".into()),
        ("/employees/{id}".into(), format!("/employees/{}", bench.id)),
        ("/usage".into(), "/usage".into()),
        ("/keys".into(), "/keys".into()),
        ("/tenants".into(), "/tenants".into()),
        ("/schedules".into(), "/schedules".into()),
        ("/tools".into(), "/tools".into()),
        ("/chat".into(), "/chat".into()),
    ];
    println!(
        "\n{:<26} {:>9} {:>9}  histogram p99 bucket",
        "page", "p50 ms", "p99 ms"
    );
    let mut seen: Vec<String> = Vec::new();
    for (route, path) in &pages {
        let mut lat = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t0 = Instant::now();
            let r = client
                .get(format!("http://{addr}{path}"))
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let _ = r.bytes().await.unwrap();
            lat.push(t0.elapsed());
        }
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p = |q: f64| ms(lat[((lat.len() as f64 * q).ceil() as usize).min(lat.len()) - 1]);
        let bucket = if seen.contains(route) {
            "(shared with the line above)".to_string()
        } else {
            seen.push(route.clone());
            p99_bucket(&client, metrics_addr, route).await
        };
        println!("{path:<26} {:>9.2} {:>9.2}  {bucket}", p(0.5), p(0.99));
    }
    let _ = tx.send(());
    running.await.unwrap().unwrap();
    scratch.remove().await;
}

/// The upper bound of the histogram bucket that holds the p99 of `GET route`.
async fn p99_bucket(
    client: &reqwest::Client,
    metrics: std::net::SocketAddr,
    route: &str,
) -> String {
    let text = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_bucket{"))
        .filter(|l| l.contains(&format!("endpoint=\"{route}\"")) && l.contains("method=\"GET\""))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let at = buckets
        .iter()
        .find(|(_, c)| *c >= total * 0.99)
        .map_or(f64::INFINITY, |b| b.0);
    format!("<= {} ms ({total} requests)", at * 1000.0)
}
