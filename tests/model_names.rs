//! Caller-chosen model names cannot grow the process: a name is 1–128 characters of a
//! fixed set (else 422), and metric labels carry only configured models (the rest share
//! `model="other"`), so thousands of made-up names add no series and no memory.
//! Alone in its file, so the resident-memory reading is this test's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, TestApp};
use futures_util::StreamExt;
use serde_json::json;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn ai_series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("ai_") && !l.starts_with('#'))
        .count()
}

async fn complete(app: &TestApp, model: String) -> u16 {
    app.post_json(
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_model_names_add_no_series_and_no_memory() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();

    // The name itself is bounded.
    for bad in [
        format!("sandbox/{}", "m".repeat(200)),
        "sandbox/with space".to_string(),
        "sandbox/<script>".to_string(),
        String::new(),
    ] {
        let r = app
            .post_json(
                "/v1/chat/completions",
                &json!({"model": bad, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        let body = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(body["error"]["field"], "model", "{body}");
    }
    assert_eq!(
        complete(&app, "sandbox/llama3:8b-instruct".into()).await,
        200
    );

    // Warm up with one configured model, then measure across 5,000 made-up ones.
    let warm = futures_util::stream::iter(0..300)
        .map(|_| complete(&app, "sandbox/sandbox-1".into()))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(warm.iter().all(|s| *s == 200));
    let series_before = ai_series(&app.metrics().await);
    let rss_before = rss_kib();
    let statuses = futures_util::stream::iter(0..5_000)
        .map(|i| {
            complete(
                &app,
                format!("sandbox/made-up-{i}-{}", uuid::Uuid::now_v7()),
            )
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", &statuses[..10]);
    let metrics = app.metrics().await;
    let rss_growth_kib = rss_kib().saturating_sub(rss_before);
    let series_after = ai_series(&metrics);
    assert!(
        metrics.contains("model=\"other\""),
        "made-up names share the other label"
    );
    assert!(
        !metrics.contains("made-up-"),
        "a made-up name became a label"
    );
    assert!(
        series_after <= series_before + 40,
        "ai_* series grew from {series_before} to {series_after}"
    );
    assert!(
        rss_growth_kib < 8 * 1024,
        "resident memory grew by {rss_growth_kib} KiB over 5,000 made-up model names"
    );
    app.stop().await.unwrap();
}
