//! A submitted task starts on a wake-up, not on the next queue poll: with
//! `TASK_POLL_INTERVAL` at ten minutes, tasks submitted after the workers' first poll
//! must still end within the tests' usual deadline (20 s). In one app that is the
//! in-process wake-up (both backends); across two apps on PostgreSQL, the submitting app
//! has no workers and the other is woken by `NOTIFY de_tasks`. PostgreSQL tests take a
//! database of their own: a notification reaches every listener of its database, so
//! other suites' submits in a shared one would wake these workers too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::tasks::*;
use common::{Backend, TestApp, TestDb, test_config};
use digital_employee::app::App;
use serde_json::json;

backend_tests!(a_submitted_task_starts_without_waiting_for_a_poll);

/// Ten minutes between polls: a task that ends within 20 s was started by a wake-up.
const SLOW_POLL: &[(&str, &str)] = &[("TASK_POLL_INTERVAL", "600")];

/// Submits `n` tasks to `to`, one after the other's end, each ending (on any app sharing
/// the database) within the deadline of [`wait_end`].
async fn tasks_end_one_after_another(to: &TestApp, watch: &TestApp, n: usize) {
    for i in 0..n {
        let t = submit(
            to,
            json!({"employee": "prompt", "input": format!("What is {i} + 2?")}),
        )
        .await;
        let done = wait_end(watch, &id_of(&t)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
}

async fn a_submitted_task_starts_without_waiting_for_a_poll(backend: Backend) {
    let Some(db) = TestDb::new_database(backend).await else {
        return;
    };
    let app = TestApp::spawn_on(db, SLOW_POLL).await;
    employee(&app, json!({"name": "prompt", "role": "r"})).await;
    // The claim loop's first poll may come after the first submit; the later ones can
    // only be started by a wake-up.
    tasks_end_one_after_another(&app, &app, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_the_workers_of_another_app() {
    let Some(db) = TestDb::new_database(Backend::Postgres).await else {
        return;
    };
    let front = TestApp::spawn_on(
        db,
        &[("WORKERS_ENABLED", "off"), ("TASK_POLL_INTERVAL", "600")],
    )
    .await;
    employee(&front, json!({"name": "prompt", "role": "r"})).await;
    let workers = App::build(test_config(&front.db().url, SLOW_POLL))
        .await
        .unwrap();
    let workers = TestApp::start(workers, TestDb::new(Backend::Sqlite).await.unwrap()).await;
    // Submitted on the app without workers, run by the other.
    tasks_end_one_after_another(&front, &front, 4).await;
    let _ = workers;
}
