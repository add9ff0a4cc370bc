//! The API on threads of its own (`API_THREADS`) and on the shared runtime
//! (`API_THREADS=0`): many connections at once are answered, gateway calls reach an HTTP
//! vendor through each thread's connection pool, and shutdown stops the serving and
//! closes the port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::vendor::Vendor;
use common::{ADMIN_KEY, Backend, TestApp};
use serde_json::json;

const CLIENTS: usize = 24;
const CALLS: usize = 5;

async fn serves_many_connections_then_stops(threads: &str) {
    let vendor = Vendor::start().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("API_THREADS", threads),
            ("AI_PROVIDERS", &vendor.providers),
            ("AI_CACHE", "off"),
        ],
    )
    .await
    .expect("SQLite needs no service");

    // Each client keeps its own connection, so the calls spread over the threads.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let url = app.url("/v1/chat/completions");
        clients.spawn(async move {
            for j in 0..CALLS {
                let body = json!({"model": "vendor/sandbox-1",
                                  "messages": [{"role": "user", "content": format!("hi {i} {j}")}]});
                let r = client
                    .post(&url)
                    .header("X-API-Key", ADMIN_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "client {i}, call {j}");
                assert_eq!(r.headers()["x-de-model"], "vendor/sandbox-1");
                let v: serde_json::Value = r.json().await.unwrap();
                assert!(
                    v["choices"][0]["message"]["content"].is_string(),
                    "client {i}, call {j}: {v}"
                );
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    assert_eq!(vendor.count("sandbox-1"), (CLIENTS * CALLS) as u64);

    let addr = app.addr;
    app.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "API_THREADS={threads}: the port still accepts after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_threads_serve_many_connections_and_release_the_port() {
    serves_many_connections_then_stops("3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_runtime_serves_many_connections_and_releases_the_port() {
    serves_many_connections_then_stops("0").await;
}
