//! The submit path (`orchestrator::submit`) on a real app state: the employee resolved
//! within the caller's tenant only, the claimers woken by a new task and not by a replay,
//! and an idempotency key replayed with the same body or another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use digital_employee::app::App;
use digital_employee::config::Config;
use digital_employee::orchestrator::{EmployeeRef, Idempotency, Submit, SubmitError, submit};
use digital_employee::store::{self, Employee};
use serde_json::json;
use uuid::Uuid;

/// The state of an app on a fresh SQLite file with its workers off, and an employee
/// of the default tenant and one of another tenant.
async fn state_with_employees() -> (App, Employee, Employee, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("de-submit-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/t.db", dir.display());
    let data_dir = dir.display().to_string();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DATA_DIR", data_dir.as_str()),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PROMETHEUS_METRICS_PORT", "0"),
        ("API_KEY_WHITELIST", "submit-unit-test-key-0123"),
        ("WORKERS_ENABLED", "off"),
    ];
    let config = Config::from_lookup(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let app = App::build(config).await.unwrap();
    let store = &app.state().store;
    let fields = |name: &str| -> store::EmployeeFields {
        serde_json::from_value(json!({"name": name, "role": "r", "instructions": "",
            "model_policy": [], "allowed_tools": [], "max_steps": 5,
            "token_budget": 1000, "temperature": 0.0, "redact_prompts": false}))
        .unwrap()
    };
    let mine = store
        .create_employee(store::DEFAULT_TENANT_ID, &fields("mine"))
        .await
        .unwrap();
    let other = store.create_tenant("other").await.unwrap();
    let theirs = store
        .create_employee(other.id, &fields("theirs"))
        .await
        .unwrap();
    (app, mine, theirs, dir)
}

/// The submit path itself: the employee resolved within the caller's tenant only, the
/// claimers woken by a new task and not by a replay, and an idempotency key replayed
/// with the same body (the first task) or another (a conflict).
#[tokio::test]
async fn submit_resolves_in_the_tenant_wakes_and_replays() {
    use futures_util::FutureExt;
    let (app, mine, theirs, dir) = state_with_employees().await;
    let state = app.state();
    let tenant = store::DEFAULT_TENANT_ID;
    let woken = || {
        state
            .tasks
            .wake_signal()
            .notified()
            .now_or_never()
            .is_some()
    };
    assert!(!woken(), "nothing submitted yet");

    let by_name = submit(
        state,
        Submit::new(tenant, EmployeeRef::Key("mine".into()), json!("a")),
    )
    .await
    .unwrap();
    assert!(by_name.created);
    assert_eq!(by_name.task.employee_id, mine.id);
    assert_eq!(by_name.task.status, store::TaskStatus::Queued);
    assert!(woken(), "a new task wakes the claimers");
    assert!(!woken(), "once");

    // Another tenant's employee, by name, by id or already read: refused on the field.
    for other in [
        EmployeeRef::Key("theirs".into()),
        EmployeeRef::Id(theirs.id),
        EmployeeRef::Resolved(Box::new(theirs.clone())),
    ] {
        match submit(state, Submit::new(tenant, other, json!("b"))).await {
            Err(SubmitError::Invalid { field, .. }) => assert_eq!(field, "employee"),
            r => panic!("another tenant's employee: {r:?}"),
        }
    }

    let keyed = |hash: &str| {
        let mut r = Submit::new(tenant, EmployeeRef::Id(mine.id), json!("c"));
        r.idempotency = Some(Idempotency {
            key: "k-1".into(),
            body_hash: Some(hash.into()),
        });
        r
    };
    let first = submit(state, keyed("h1")).await.unwrap();
    assert!(first.created);
    assert!(woken());
    let again = submit(state, keyed("h1")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    assert!(!woken(), "a replay wakes nobody");
    assert!(matches!(
        submit(state, keyed("h2")).await,
        Err(SubmitError::IdempotencyConflict)
    ));
    drop(app);
    let _ = std::fs::remove_dir_all(dir);
}
