//! Redis stopped and started again under running apps: a `redis-server` of the test's
//! own on a free port. While it is down the rate limiter behaves as documented (ADR
//! 0002: `open` serves unlimited and counts `rate_limit_redis_errors_total`, `/ready`
//! stays 200 showing `redis: ok=false`; `closed` answers 503 with `Retry-After: 1` and
//! fails `/ready`) and the AI result cache is a miss, never an error (ADR 0003). Once
//! Redis is back, limits and the shared cache work again, with no restart of the apps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `redis-server` on a port of its own, without persistence: a restart starts empty.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// `None` (skip) when `redis-server` is not installed, unless the backend tests are
    /// required.
    async fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var("REQUIRE_BACKEND_TESTS").as_deref() != Ok("1"),
                "REQUIRE_BACKEND_TESTS=1 but redis-server is not installed"
            );
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis { port, child: None };
        r.up().await;
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server on its port and waits until it answers `PING`.
    async fn up(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.pong().await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server and waits until its port refuses connections.
    async fn down(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!self.pong().await, "Redis still answers");
    }

    async fn pong(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn app_on(redis: &Redis, extra: &[(&str, &str)]) -> TestApp {
    let url = redis.url();
    let prefix = common::redis_prefix();
    let mut cfg = vec![
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_KEY_PREFIX", prefix.as_str()),
        ("RATE_LIMIT_WINDOW_SECONDS", "600"),
    ];
    cfg.extend_from_slice(extra);
    TestApp::spawn_with(Backend::Sqlite, &cfg).await.unwrap()
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls until `pred` holds, failing after a deadline.
async fn eventually<F, Fut>(what: &str, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred().await {
        assert!(Instant::now() < deadline, "{what} within 20s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `X-RateLimit-Remaining` of a limited request, `None` when the limit was not checked.
fn remaining(r: &reqwest::Response) -> Option<u32> {
    r.headers()
        .get("x-ratelimit-remaining")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// A cacheable gateway call (temperature 0) with its own text.
async fn cacheable(app: &TestApp, text: &str) {
    let body = json!({"model": "sandbox-1", "temperature": 0,
                      "messages": [{"role": "user", "content": text}]});
    let r = app
        .post_json("/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{text}: {}", r.text().await.unwrap());
}

/// One of the app's usage totals (`requests`, `cache_hits`) over its gateway calls, from
/// `/v1/usage` (records are written in the background: wait for `requests` first).
async fn total(app: &TestApp, what: &str) -> i64 {
    app.get_json("/v1/usage?group_by=model").await["totals"][what]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_and_recovers() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    const LIMIT: u32 = 5;
    let limited = app_on(&redis, &[("RATE_LIMIT_REQUESTS", "5")]).await;
    // Two replicas sharing the result cache through Redis, not limited here.
    let a = app_on(&redis, &[]).await;
    let b = app_on(&redis, &[]).await;
    let open_errors = |m: &str| common::metric(m, "rate_limit_redis_errors_total{policy=\"open\"}");

    // Up: counted in Redis, and a call on A is a hit on B.
    for want in [LIMIT - 1, LIMIT - 2] {
        let r = limited.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(remaining(&r), Some(want));
    }
    assert_eq!(ready(&limited).await.1["checks"]["redis"]["ok"], true);
    cacheable(&a, "before the outage").await;
    cacheable(&b, "before the outage").await;
    eventually("B's cache hit is recorded", || async {
        total(&b, "cache_hits").await == 1
    })
    .await;

    redis.down().await;
    let before = open_errors(&limited.metrics().await);
    // Down, fail-open: more requests than the limit, all served, none counted.
    for _ in 0..2 * LIMIT {
        let r = limited.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.status(), 200, "served while Redis is down");
        assert_eq!(remaining(&r), None, "not limited while Redis is down");
    }
    let after = open_errors(&limited.metrics().await);
    assert!(after > before, "errors counted: {before} → {after}");
    eventually("/ready to show Redis down and stay 200", || async {
        let (status, v) = ready(&limited).await;
        assert_eq!(status, 200, "fail-open keeps the replica in rotation: {v}");
        v["checks"]["redis"]["ok"] == false
    })
    .await;
    // The cache is a miss, never an error: B answers a call A made during the outage.
    cacheable(&a, "during the outage").await;
    cacheable(&b, "during the outage").await;
    eventually("B's call during the outage recorded", || async {
        total(&b, "requests").await == 2
    })
    .await;
    assert_eq!(
        total(&b, "cache_hits").await,
        1,
        "no hit while Redis is down"
    );

    redis.up().await;
    // Back: the limiter counts again (the restarted Redis starts empty) and refuses
    // past the limit.
    eventually("requests to be limited again", || async {
        let r = limited.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.status(), 200);
        remaining(&r).is_some()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..LIMIT {
        statuses.push(
            limited
                .get("/v1/employees")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "the limit holds again: {statuses:?}"
    );
    eventually("/ready to show Redis up", || async {
        ready(&limited).await.1["checks"]["redis"]["ok"] == true
    })
    .await;
    // And the cache is shared again: a new call on A becomes a hit on B (the first
    // calls after the restart may still miss while the connection comes back).
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 1.. {
        let text = format!("after the outage {n}");
        cacheable(&a, &text).await;
        cacheable(&b, &text).await;
        // B's calls so far: one before the outage, one during it, `n` after.
        eventually("B's call recorded", || async {
            total(&b, "requests").await == 2 + n
        })
        .await;
        if total(&b, "cache_hits").await == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no shared cache hit within 20s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let app = app_on(&redis, &[("RATE_LIMIT_REDIS_FAILURE", "closed")]).await;
    let r = app.get("/v1/employees").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(remaining(&r).is_some());

    redis.down().await;
    for _ in 0..3 {
        let r = app.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.headers()["retry-after"], "1");
        common::assert_error(r, 503, "unavailable").await;
    }
    eventually("/ready to fail", || async {
        let (status, v) = ready(&app).await;
        status == 503 && v["checks"]["redis"]["ok"] == false
    })
    .await;

    redis.up().await;
    eventually("requests to be served again", || async {
        app.get("/v1/employees").send().await.unwrap().status() == 200
    })
    .await;
    eventually("/ready to pass again", || async {
        ready(&app).await.0 == 200
    })
    .await;
}
