//! SIGTERM to one of two replicas (processes of the real binary on one PostgreSQL
//! database) while it runs a task: a grace period shorter than the task releases it and
//! the other replica finishes it, once; a longer one lets the first replica finish it
//! and exit 0. The task's vendor call is held at a gate, so "longer" and "shorter" are
//! decided by the test, not by timing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{Server, poll, temp_dir};
use common::vendor::{Gate, Vendor};
use common::{Backend, TestDb};
use serde_json::{Value, json};

const KEY: &str = "replicas-key-0123456789";

/// One replica on `db`, its vendor calls going to `vendor`.
fn replica(db: &TestDb, vendor: &Vendor, grace: &str) -> Server {
    Server::start(
        &temp_dir(),
        &[
            ("API_KEY_WHITELIST", KEY),
            ("DATABASE_URL", &db.url),
            ("AI_PROVIDERS", &vendor.providers),
            ("AI_CACHE", "off"),
            ("RATE_LIMIT_REQUESTS", "1000000"),
            ("TASK_POLL_INTERVAL", "0.05"),
            ("SHUTDOWN_GRACE_PERIOD", grace),
            ("SHUTDOWN_DRAIN_DELAY", "0"),
        ],
    )
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn of(server: &Server) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: format!("http://{}", server.api),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }
}

/// A migrated PostgreSQL database with replica A running a task whose vendor call is
/// held at `gate`; `None` without PostgreSQL.
async fn running_on_a(
    gate: &Gate,
    vendor_a: &Vendor,
    grace: &str,
) -> Option<(TestDb, Server, String)> {
    common::postgres_url()?;
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    db.migrated_store().await.close().await;
    let a = replica(&db, vendor_a, grace);
    let api = Api::of(&a);
    api.post(
        "/v1/employees",
        json!({"name": "slow", "role": "r", "model_policy": ["vendor/slow"]}),
    )
    .await;
    let t = api
        .post(
            "/v1/tasks",
            json!({"employee": "slow", "input": "take your time"}),
        )
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    poll("the task's vendor call on replica A", || async move {
        gate.arrived() == 1
    })
    .await;
    Some((db, a, id))
}

fn sigterm(server: &Server) {
    let ok = Command::new("kill")
        .args(["-TERM", &server.pid()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn wait_succeeded(api: &Api, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = api.get(&format!("/v1/tasks/{id}")).await;
        if t["status"] == "succeeded" {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task never succeeded: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The task's events: (how many say it was released at shutdown, its terminal status
/// events).
async fn ends(api: &Api, id: &str) -> (usize, Vec<String>) {
    let ev = api.get(&format!("/v1/tasks/{id}/events")).await;
    let ev = ev["data"].as_array().unwrap();
    let released = ev
        .iter()
        .filter(|e| e["payload"]["reason"] == "released at shutdown")
        .count();
    let ended = ev
        .iter()
        .filter(|e| e["kind"] == "status")
        .filter_map(|e| e["payload"]["status"].as_str())
        .filter(|s| ["succeeded", "failed", "cancelled"].contains(s))
        .map(String::from)
        .collect();
    (released, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_grace_shorter_than_the_task_hands_it_to_the_other_replica() {
    let gate = Gate::default();
    let vendor_a = Vendor::gated(&gate).await;
    let Some((db, mut a, id)) = running_on_a(&gate, &vendor_a, "1").await else {
        return;
    };
    let vendor_b = Vendor::start().await;
    let b = replica(&db, &vendor_b, "30");
    let api_b = Api::of(&b);
    sigterm(&a);
    // The gate is never opened: replica A cannot finish the task; its grace runs out.
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    let done = wait_succeeded(&api_b, &id).await;
    assert_eq!(vendor_b.count("slow"), 1, "replica B made the call once");
    assert_eq!(gate.arrived(), 1, "replica A called the vendor once");
    let (released, ended) = ends(&api_b, &id).await;
    assert_eq!(released, 1, "released once, at A's shutdown");
    assert_eq!(ended, ["succeeded"], "finished exactly once");
    assert_eq!(done["attempt"], 1, "the release gave the attempt back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_grace_longer_than_the_task_finishes_it_and_exits_zero() {
    let gate = Gate::default();
    let vendor_a = Vendor::gated(&gate).await;
    let Some((db, mut a, id)) = running_on_a(&gate, &vendor_a, "30").await else {
        return;
    };
    let vendor_b = Vendor::start().await;
    let b = replica(&db, &vendor_b, "30");
    let api_b = Api::of(&b);
    sigterm(&a);
    a.wait_line("the shutdown starting", |l| {
        l["message"] == "shutdown requested: draining"
    });
    assert_eq!(
        api_b.get(&format!("/v1/tasks/{id}")).await["status"],
        "running"
    );
    // The task ends within A's grace period.
    gate.release();
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    wait_succeeded(&api_b, &id).await;
    let (released, ended) = ends(&api_b, &id).await;
    assert_eq!(released, 0, "not released");
    assert_eq!(ended, ["succeeded"], "finished exactly once");
    assert_eq!(vendor_b.count("slow"), 0, "replica B never ran it");
    assert_eq!(gate.arrived(), 1);
}
