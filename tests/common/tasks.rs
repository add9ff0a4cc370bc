//! Helpers for scenarios that run tasks through the API.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestApp;

/// Short poll intervals, so scenarios finish quickly.
pub const FAST: &[(&str, &str)] = &[
    ("TASK_POLL_INTERVAL", "0.05"),
    ("TASK_RETRY_BASE_DELAY", "0.05"),
    ("SCHEDULER_INTERVAL", "0.05"),
];

pub fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = FAST.to_vec();
    v.extend_from_slice(extra);
    v
}

pub async fn employee(app: &TestApp, body: Value) -> Value {
    let r = app.post_json("/v1/employees", &body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

pub async fn submit(app: &TestApp, body: Value) -> Value {
    let r = app.post_json("/v1/tasks", &body).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

pub async fn task(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/tasks/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Polls the task until `pred` holds, failing after a deadline.
pub async fn wait_for(app: &TestApp, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = task(app, id).await;
        if pred(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {what}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    wait_for(app, id, status, |t| t["status"] == status).await
}

pub async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["data"].as_array().unwrap().clone()
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Polls the task until it ends (succeeded, failed or cancelled), failing after a deadline.
pub async fn wait_end(app: &TestApp, id: &str) -> Value {
    wait_for(app, id, "ended", |t| {
        ["succeeded", "failed", "cancelled"].contains(&t["status"].as_str().unwrap_or(""))
    })
    .await
}

/// Returns once the schedulers sharing `app`'s database have run `n` more scans: each
/// round adds a yearly schedule of `employee` already due and waits for its task, which
/// only a scan begun after the schedule existed can create. Counting something after
/// this is counting after several scheduler ticks, without guessing at how long they take.
pub async fn scheduler_scans(app: &TestApp, employee: &str, n: usize) {
    let e = app
        .store
        .find_employee_by_name(digital_employee::store::DEFAULT_TENANT_ID, employee)
        .await
        .unwrap();
    for _ in 0..n {
        let s = app
            .store
            .create_schedule(
                digital_employee::store::DEFAULT_TENANT_ID,
                &digital_employee::store::ScheduleFields {
                    employee_id: e.id,
                    cron: "0 0 1 1 *".into(),
                    timezone: "UTC".into(),
                    input: serde_json::json!("scan marker"),
                    priority: 0,
                    enabled: true,
                },
                digital_employee::store::now() - chrono::Duration::seconds(1),
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r: Value = app
                .get(&format!("/v1/tasks?employee={employee}&limit=100"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let fired = r["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["metadata"]["schedule_id"] == s.id.to_string());
            if fired {
                break;
            }
            assert!(Instant::now() < deadline, "no scheduler scan within 20s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.store
            .delete_schedule(digital_employee::store::DEFAULT_TENANT_ID, s.id)
            .await
            .unwrap();
    }
}
