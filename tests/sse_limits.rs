//! Live event streams are bounded: a tenant holds at most `SSE_MAX_STREAMS_PER_TENANT` of
//! them per replica (429 with `Retry-After` past it; the JSON form is not limited), each
//! lives at most `SSE_MAX_STREAM_SECONDS`, and `sse_streams_open` counts them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp};
use serde_json::json;

/// A task that stays queued for a month: its stream never ends by itself.
async fn waiting_task(app: &TestApp) -> String {
    employee(app, json!({"name": "later", "role": "r"})).await;
    let run_at = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    id_of(
        &submit(
            app,
            json!({"employee": "later", "input": "next year", "run_at": run_at}),
        )
        .await,
    )
}

async fn open(app: &TestApp, id: &str) -> reqwest::Response {
    app.get(&format!("/v1/tasks/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn streams_are_capped_per_tenant_and_end_after_their_lifetime() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &with(&[("SSE_MAX_STREAMS_PER_TENANT", "2")]),
    )
    .await
    .unwrap();
    let id = waiting_task(&app).await;
    let first = open(&app, &id).await;
    let second = open(&app, &id).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(
        common::metric(&app.metrics().await, "sse_streams_open"),
        2.0
    );

    let third = open(&app, &id).await;
    assert_eq!(third.headers()["retry-after"], "5");
    let body = common::assert_error(third, 429, "rate_limited").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 live event streams"),
        "{body}"
    );
    // The JSON step log is not a stream and is not capped.
    let r = app
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A client that goes away frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let r = open(&app, &id).await;
        if r.status() == 200 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped stream kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop((second, again));
    app.stop().await.unwrap();
    // The metrics recorder is per process: the lifetime scenario runs after this one,
    // in the same test, so each reads its own count.
    a_stream_ends_after_its_lifetime().await;
}

async fn a_stream_ends_after_its_lifetime() {
    let app = TestApp::spawn_with(Backend::Sqlite, &with(&[("SSE_MAX_STREAM_SECONDS", "1")]))
        .await
        .unwrap();
    let id = waiting_task(&app).await;
    let r = open(&app, &id).await;
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .expect("the stream outlived its lifetime")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ended too early"
    );
    // It delivered the task's first event, with its seq as the id to resume from.
    assert!(body.contains("id: 1"), "{body}");
    assert_eq!(task(&app, &id).await["status"], "queued");
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(&app.metrics().await, "sse_streams_open") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the ended stream is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await.unwrap();
}
