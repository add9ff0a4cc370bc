//! Cross-replica live-event latency on PostgreSQL: replica A runs the tasks (in-process
//! sandbox vendor), replica B (no workers) streams each task's events over SSE, and for
//! every event B delivers the bench takes the time from the event's write (`created_at`,
//! set by the writer on A) to its receipt by the client of B. Not a test: run it with
//! `bench/sse_latency.sh`.
//!
//! Environment: `BENCH_DB` (a `postgres://` URL, required), `BENCH_TASKS` (default 300),
//! `BENCH_FOLLOWERS` (tasks followed at once, default 16), `BENCH_SAME_REPLICA=1` (follow
//! on A instead: the in-process wake-up, for comparison). B's safety re-read
//! (`SSE_REREAD_SECONDS`) is 60 s, so every event measured arrived through a notification.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use digital_employee::app::App;
use digital_employee::store::DEFAULT_TENANT_ID;

#[path = "common.rs"]
mod common;

use common::KEY;

/// One replica on the scratch database, running until the returned sender fires.
async fn replica(
    scratch: &common::ScratchDb,
    workers: bool,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let cfg = scratch.config(&[
        ("DB_MAX_CONNECTIONS", "16"),
        ("WORKERS_ENABLED", if workers { "on" } else { "off" }),
        ("TASK_POLL_INTERVAL", "0.05"),
        ("SSE_REREAD_SECONDS", "60"),
        ("SSE_MAX_STREAMS_PER_TENANT", "10000"),
    ]);
    let app = App::build(cfg).await.unwrap();
    let addr = app.api_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let _ = app
            .run(async move {
                let _ = rx.await;
            })
            .await;
    });
    (addr, tx, run)
}

/// Submits a task due shortly on A, follows it on B until it ends, and returns the
/// latency of every event written after the stream was open.
async fn one(client: &reqwest::Client, a: SocketAddr, b: SocketAddr, i: usize) -> Vec<f64> {
    let run_at = (Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let t: serde_json::Value = client
        .post(format!("http://{a}/v1/tasks"))
        .header("X-API-Key", KEY)
        .json(
            &serde_json::json!({"employee": "bench", "input": format!("task {i}"),
                                  "run_at": run_at}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = t["id"].as_str().unwrap();
    let mut live = client
        .get(format!("http://{b}/v1/tasks/{id}/events"))
        .header("X-API-Key", KEY)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let opened = Utc::now();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), live.chunk())
        .await
        .expect("an event within 30 s")
        .unwrap()
    {
        let got = Utc::now();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let e: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            let written: DateTime<Utc> = e["created_at"].as_str().unwrap().parse().unwrap();
            if written > opened {
                out.push((got - written).num_microseconds().unwrap() as f64 / 1e3);
            }
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let db = std::env::var("BENCH_DB").unwrap_or_default();
    assert!(
        db.starts_with("postgres"),
        "BENCH_DB=postgres://… (two replicas need PostgreSQL)"
    );
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, followers) = (env("BENCH_TASKS", 300), env("BENCH_FOLLOWERS", 16));
    let scratch = common::ScratchDb::new(&db).await;
    scratch
        .store()
        .await
        .create_employee(DEFAULT_TENANT_ID, &common::employee("bench"))
        .await
        .unwrap();
    let (a, stop_a, run_a) = replica(&scratch, true).await;
    let (b, stop_b, run_b) = replica(&scratch, false).await;
    let same = std::env::var("BENCH_SAME_REPLICA").is_ok_and(|v| v == "1");
    let follow_on = if same { a } else { b };
    let client = reqwest::Client::new();
    let per = n.div_ceil(followers);
    let mut handles = Vec::new();
    for f in 0..followers {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in 0..per {
                lat.extend(one(&client, a, follow_on, f * per + i).await);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} tasks={} followers={} events={} event->client latency p50={:.1}ms p95={:.1}ms p99={:.1}ms max={:.1}ms",
        if same {
            "same replica"
        } else {
            "across replicas"
        },
        per * followers,
        followers,
        lat.len(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        lat[lat.len() - 1],
    );
    let _ = stop_a.send(());
    let _ = stop_b.send(());
    let _ = run_a.await;
    let _ = run_b.await;
    scratch.remove().await;
}
