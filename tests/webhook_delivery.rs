//! Completion-webhook delivery as a receiver sees it, on SQLite and PostgreSQL: the
//! backoff between attempts, a receiver that refuses connections and then listens, a
//! restart between attempts, two replicas sharing the queue, and a secret rotated
//! between attempts. Everything is asserted on what reaches the receiver and what the
//! API answers; times only as lower bounds the documented backoff guarantees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::tasks::*;
use common::webhooks::{Receiver, signed_with, verify};
use common::{Backend, TestApp, TestDb, test_config};
use digital_employee::app::App;
use digital_employee::store::DEFAULT_TENANT_ID;
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    retries_are_spaced_by_the_documented_backoff,
    a_refused_connection_is_retried_until_the_receiver_listens,
    a_pending_delivery_survives_a_restart,
    two_replicas_deliver_each_webhook_once,
    an_attempt_after_a_rotation_is_signed_with_the_new_secret,
);

/// Quick deliveries: the queue is scanned every 50 ms.
fn hooks(
    base_delay: &'static str,
    max_attempts: &'static str,
) -> Vec<(&'static str, &'static str)> {
    with(&[
        ("WEBHOOK_POLL_INTERVAL", "0.05"),
        ("WEBHOOK_RETRY_BASE_DELAY", base_delay),
        ("WEBHOOK_MAX_ATTEMPTS", max_attempts),
    ])
}

/// Submits a quick task to `hooked` reporting to `url` and waits for its end.
async fn finished_task(app: &TestApp, url: &str) -> Value {
    let t = submit(
        app,
        json!({"employee": "hooked", "input": "What is 6 * 7?", "callback_url": url}),
    )
    .await;
    wait_end(app, &id_of(&t)).await
}

/// The tenant's webhook secret, rotated (the only way to read it).
async fn rotate_secret(app: &TestApp) -> String {
    let r = app
        .client
        .post(app.url("/v1/webhooks/secret"))
        .header("X-API-Key", common::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["secret"].as_str().unwrap().to_string()
}

/// Delivery attempts `1..=n` of one delivery, in order.
fn assert_one_delivery(got: &[common::webhooks::Received], task: &Value) {
    let attempts: Vec<u32> = got.iter().map(|r| r.attempt()).collect();
    assert_eq!(attempts, (1..=got.len() as u32).collect::<Vec<_>>());
    assert!(got.iter().all(|r| r.delivery() == got[0].delivery()));
    assert!(got.iter().all(|r| r.json()["id"] == task["id"]));
}

/// `WEBHOOK_RETRY_BASE_DELAY`·2^(n−1) after failed attempt n: each gap between two
/// arrivals is at least its documented delay, so a constant or linear backoff fails.
async fn retries_are_spaced_by_the_documented_backoff(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &hooks("0.25", "5")).await else {
        return;
    };
    employee(&app, json!({"name": "hooked", "role": "r"})).await;
    let hook = Receiver::start(4).await;
    let task = finished_task(&app, &hook.url).await;
    let got = hook.wait_for(5).await;
    assert_one_delivery(&got, &task);
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 500, 500, 500, 200]);
    let base = Duration::from_millis(250);
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (n, gap) in gaps.iter().enumerate() {
        let documented = base * (1 << n);
        assert!(
            *gap >= documented,
            "retry {} came {gap:?} after its attempt, before the backoff of {documented:?}: {gaps:?}",
            n + 1
        );
    }
    // The whole wait is the sum of the doubling delays (0.25 + 0.5 + 1 + 2 s) at least.
    assert!(got[4].at - got[0].at >= base * 15, "{gaps:?}");
}

/// A callback port with nothing listening: attempts fail with a refused connection and
/// are retried; once a receiver listens there, the same delivery arrives, once.
async fn a_refused_connection_is_retried_until_the_receiver_listens(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &hooks("0.1", "50")).await else {
        return;
    };
    employee(&app, json!({"name": "hooked", "role": "r"})).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{addr}/hook");
    let task = finished_task(&app, &url).await;
    // Two attempts have been refused once a third is claimed (read from the queue only
    // to know when to listen; the third may already be on its way).
    let tid = Uuid::parse_str(&id_of(&task)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = app
            .store
            .list_deliveries(DEFAULT_TENANT_ID, tid)
            .await
            .unwrap();
        assert!(
            d.first().is_none_or(|d| d.status == "pending"),
            "a refused connection is retried, not given up: {d:?}"
        );
        if d.first().is_some_and(|d| d.attempts >= 3) {
            assert!(d[0].last_error.is_some(), "{d:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no two refused attempts: {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let hook = Receiver::serve(listener, 0);
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].json()["id"], task["id"]);
    assert_eq!(got[0].answered, 200);
    assert!(got[0].attempt() >= 3, "attempt {}", got[0].attempt());
    // A later task's delivery arriving means the loop moved on; still one of the first.
    let later = finished_task(&app, &url).await;
    hook.wait_until("the later task's delivery", |g| {
        g.iter().any(|r| r.json()["id"] == later["id"])
    })
    .await;
    let first: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|r| r.json()["id"] == task["id"])
        .collect();
    assert_eq!(first.len(), 1, "delivered once");
}

/// A delivery still pending when its replica stops is delivered by a new server on the
/// same database: the same delivery id, the attempt count carried on.
async fn a_pending_delivery_survives_a_restart(backend: Backend) {
    // The first server retries a second after a failure, so it has stopped well before.
    let Some(app) = TestApp::spawn_with(backend, &hooks("1", "10")).await else {
        return;
    };
    employee(&app, json!({"name": "hooked", "role": "r"})).await;
    let hook = Receiver::start(0).await;
    hook.set_failing(true);
    let task = finished_task(&app, &hook.url).await;
    let before = hook.wait_for(1).await;
    let db = app.stop_keep_db().await;
    hook.set_failing(false);
    let seen = hook.received().len();
    assert!(
        hook.received().iter().all(|r| r.answered == 500),
        "nothing delivered before the restart"
    );

    let app = TestApp::spawn_on(db, &hooks("0.05", "10")).await;
    let got = hook
        .wait_until("the delivery after the restart", |g| {
            g.iter().any(|r| r.answered == 200)
        })
        .await;
    assert_one_delivery(&got, &task);
    assert_eq!(got[0].delivery(), before[0].delivery());
    assert!(got.len() > seen, "a new attempt, by the new server");
    // A later task's delivery on the new server; the first is still delivered once.
    let later = finished_task(&app, &hook.url).await;
    let got = hook
        .wait_until("the later task's delivery", |g| {
            g.iter().any(|r| r.json()["id"] == later["id"])
        })
        .await;
    let delivered = got
        .iter()
        .filter(|r| r.answered == 200 && r.json()["id"] == task["id"])
        .count();
    assert_eq!(delivered, 1);
}

/// Two replicas on one database with many tasks ending at once: every delivery id and
/// every task reaches the receiver exactly once.
async fn two_replicas_deliver_each_webhook_once(backend: Backend) {
    let Some(a) = TestApp::spawn_with(backend, &hooks("0.05", "5")).await else {
        return;
    };
    let b = App::build(test_config(&a.db().url, &hooks("0.05", "5")))
        .await
        .unwrap();
    let b = TestApp::start(b, TestDb::new(Backend::Sqlite).await.unwrap()).await;
    employee(&a, json!({"name": "hooked", "role": "r"})).await;
    let hook = Receiver::start(0).await;
    const N: usize = 40;
    let mut ids = Vec::new();
    for i in 0..N {
        let app = if i % 2 == 0 { &a } else { &b };
        let t = submit(
            app,
            json!({"employee": "hooked", "input": format!("What is {i} + 1?"),
                   "callback_url": hook.url}),
        )
        .await;
        ids.push(id_of(&t));
    }
    for id in &ids {
        wait_end(&a, id).await;
    }
    hook.wait_for(N).await;
    let later = finished_task(&b, &hook.url).await;
    let got = hook
        .wait_until("the later task's delivery", |g| {
            g.iter().any(|r| r.json()["id"] == later["id"])
        })
        .await;
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for r in &got {
        assert_eq!(r.answered, 200);
        *per_delivery.entry(r.delivery().to_string()).or_default() += 1;
        *per_task
            .entry(r.json()["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_delivery.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(per_delivery.len(), N + 1);
    for id in &ids {
        assert_eq!(per_task.get(id), Some(&1), "task {id}");
    }
}

/// The secret is read at each attempt: the attempt after `POST /v1/webhooks/secret` is
/// signed with the new secret, not the one the first attempt used.
async fn an_attempt_after_a_rotation_is_signed_with_the_new_secret(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &hooks("0.2", "50")).await else {
        return;
    };
    employee(&app, json!({"name": "hooked", "role": "r"})).await;
    let old = rotate_secret(&app).await;
    let hook = Receiver::start(0).await;
    hook.set_failing(true);
    let task = finished_task(&app, &hook.url).await;
    let first = hook.wait_for(1).await;
    assert_eq!(verify(&old, &first[0])["id"], task["id"]);
    let new = rotate_secret(&app).await;
    assert_ne!(new, old);
    hook.set_failing(false);
    let got = hook
        .wait_until("the delivery after the rotation", |g| {
            g.iter().any(|r| r.answered == 200)
        })
        .await;
    assert_one_delivery(&got, &task);
    let delivered = got.last().unwrap();
    assert_eq!(delivered.answered, 200);
    assert_eq!(verify(&new, delivered)["id"], task["id"]);
    assert!(
        !signed_with(&old, delivered),
        "not signed with the old secret"
    );
}
