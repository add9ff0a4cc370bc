//! Task retention (`TASK_RETENTION_DAYS`, ADR 0017) on SQLite and PostgreSQL: ended tasks
//! past the retention go with their events and webhook deliveries, in bounded batches,
//! also with two pruners at once; running, waiting and recent tasks stay, and so do the
//! AI call records, so usage reports do not change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::tasks::{employee, id_of, submit, wait_status, with};
use common::{Backend, TestApp, TestDb, exec_sql, metric};
use digital_employee::store::*;
use serde_json::json;
use uuid::Uuid;

backend_tests!(
    prune_takes_old_ended_tasks_and_keeps_the_rest,
    the_retention_loop_prunes_in_the_background_and_counts,
);

fn new_task(employee: Uuid, parent: Option<Uuid>) -> NewTask {
    NewTask {
        tenant_id: DEFAULT_TENANT_ID,
        employee: TaskEmployee::Id(employee),
        input: json!("hello"),
        priority: 0,
        run_at: now(),
        max_attempts: 3,
        idempotency_key: None,
        request_hash: None,
        parent_task_id: parent,
        depth: i32::from(parent.is_some()),
        session_id: None,
        callback_url: None,
        metadata: json!({}),
        output_schema: None,
        trace_context: None,
    }
}

/// A time as a SQL literal of the backend's timestamp column.
fn ts_sql(backend: Backend, t: DateTime<Utc>) -> String {
    let text = t.format("%Y-%m-%dT%H:%M:%S%.6fZ");
    match backend {
        Backend::Sqlite => format!("'{text}'"),
        Backend::Postgres => format!("'{text}'::timestamptz"),
    }
}

/// A task id as a SQL literal.
fn id_sql(backend: Backend, id: Uuid) -> String {
    match backend {
        Backend::Sqlite => format!("'{id}'"),
        Backend::Postgres => format!("'{id}'::uuid"),
    }
}

async fn set_status(db: &TestDb, id: Uuid, status: &str, finished: Option<DateTime<Utc>>) {
    let finished = finished.map_or("NULL".to_string(), |t| ts_sql(db.backend, t));
    exec_sql(
        db,
        &format!(
            "UPDATE tasks SET status = '{status}', finished_at = {finished} WHERE id = '{id}'"
        ),
    )
    .await;
}

fn call(task: Uuid, when: DateTime<Utc>, cost: i64) -> AiCallRecord {
    AiCallRecord {
        id: Uuid::now_v7(),
        tenant_id: DEFAULT_TENANT_ID,
        task_id: Some(task),
        provider: "openai".into(),
        model: "gpt-4o".into(),
        status: "ok".into(),
        error_kind: None,
        http_status: None,
        latency_us: 10,
        input_tokens: 100,
        output_tokens: 20,
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        cost_nanos: cost,
        cache_hit: false,
        streamed: false,
        created_at: when,
        employee_id: None,
    }
}

async fn exists(s: &DynStore, id: Uuid) -> bool {
    match s.get_task(DEFAULT_TENANT_ID, id).await {
        Ok(_) => true,
        Err(StoreError::NotFound) => false,
        Err(e) => panic!("get_task {id}: {e}"),
    }
}

async fn prune_takes_old_ended_tasks_and_keeps_the_rest(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = common::hire(&s, DEFAULT_TENANT_ID).await;
    let mk = async |parent: Option<Uuid>| s.create_task(&new_task(e, parent)).await.unwrap().0.id;
    let t0 = now();
    let ended = t0 - chrono::Duration::days(3);

    // Ended long enough ago: these go.
    let succeeded = mk(None).await;
    let failed = mk(None).await;
    let cancelled = mk(None).await;
    let delivered = mk(None).await;
    // These stay: not ended, ended too recently, a child whose parent still waits for
    // it, and one whose completion webhook is still being delivered.
    let queued = mk(None).await;
    let running = mk(None).await;
    let waiting = mk(None).await;
    let recent = mk(None).await;
    let parent = mk(None).await;
    let child = mk(Some(parent)).await;
    let pending = mk(None).await;
    for (id, status) in [
        (succeeded, "succeeded"),
        (failed, "failed"),
        (cancelled, "cancelled"),
        (delivered, "succeeded"),
        (child, "succeeded"),
        (pending, "succeeded"),
    ] {
        set_status(&db, id, status, Some(ended)).await;
    }
    set_status(&db, running, "running", None).await;
    set_status(&db, waiting, "waiting_approval", None).await;
    set_status(&db, parent, "waiting_subtasks", None).await;
    set_status(
        &db,
        recent,
        "succeeded",
        Some(t0 + chrono::Duration::hours(1)),
    )
    .await;
    // Their deliveries, as the end would have written them (ended here by SQL).
    for id in [delivered, pending] {
        let at = ts_sql(db.backend, t0);
        exec_sql(
            &db,
            &format!(
                "INSERT INTO webhook_deliveries (id, tenant_id, task_id, event, url, body, \
                 status, attempts, next_attempt_at, created_at, updated_at) \
                 VALUES ('{}', '{DEFAULT_TENANT_ID}', '{id}', 'task.finished', \
                 'http://127.0.0.1:9/hook', NULL, 'pending', 0, {at}, {at}, {at})",
                Uuid::now_v7()
            ),
        )
        .await;
    }
    exec_sql(
        &db,
        &format!(
            "UPDATE webhook_deliveries SET status = 'delivered' WHERE task_id = '{delivered}'"
        ),
    )
    .await;
    // Every task has its step log; the pruned ones' events go with them.
    let mut doomed_events = 0;
    for id in [succeeded, failed, cancelled, delivered] {
        doomed_events += s.list_events(id, 0, 1000).await.unwrap().len() as u64;
    }
    assert!(doomed_events >= 4, "tasks start with a status event");

    // The usage ledger: calls of a pruned task, in a partial hour (read from the calls)
    // and in whole hours (read from the rollup).
    let old_call = ended - chrono::Duration::minutes(30);
    s.insert_ai_calls(&[call(succeeded, old_call, 5_000), call(failed, t0, 7_000)])
        .await
        .unwrap();
    let report = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let s = s.clone();
        async move {
            s.usage_report(DEFAULT_TENANT_ID, from, to, UsageGroupBy::Provider)
                .await
                .unwrap()
        }
    };
    let partial = (
        old_call - chrono::Duration::minutes(5),
        old_call + chrono::Duration::minutes(5),
    );
    let whole = (
        t0 - chrono::Duration::days(10),
        t0 + chrono::Duration::days(1),
    );
    let before_partial = report(partial.0, partial.1).await;
    let before_whole = report(whole.0, whole.1).await;
    assert_eq!(before_partial.len(), 1);
    assert_eq!(before_partial[0].cost_nanos, 5_000);
    assert_eq!(before_whole[0].cost_nanos, 12_000);

    // Two pruners at once (two replicas), two tasks per batch at most, until done.
    let other = db.store().await;
    let cutoff = t0 + chrono::Duration::seconds(1);
    let mut total = Pruned::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (a, b) = tokio::join!(
            s.prune_finished_tasks(cutoff, 2),
            other.prune_finished_tasks(cutoff, 2)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            a.tasks <= 2 && b.tasks <= 2,
            "a batch is bounded: {a:?} {b:?}"
        );
        for p in [a, b] {
            total.tasks += p.tasks;
            total.events += p.events;
            total.webhook_deliveries += p.webhook_deliveries;
        }
        if a.tasks == 0 && b.tasks == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "pruning never ends: {total:?}");
    }
    assert_eq!(
        total,
        Pruned {
            tasks: 4,
            events: doomed_events,
            webhook_deliveries: 1,
        }
    );
    for id in [succeeded, failed, cancelled, delivered] {
        assert!(!exists(&s, id).await, "{id} ended long ago and is pruned");
        assert!(s.list_events(id, 0, 1000).await.unwrap().is_empty());
    }
    for id in [queued, running, waiting, recent, parent, child, pending] {
        assert!(exists(&s, id).await, "{id} stays");
        assert!(!s.list_events(id, 0, 1000).await.unwrap().is_empty());
    }
    assert!(
        s.list_deliveries(DEFAULT_TENANT_ID, delivered)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.list_deliveries(DEFAULT_TENANT_ID, pending)
            .await
            .unwrap()
            .len(),
        1
    );
    // Nothing of the usage ledger went: the calls of pruned tasks and every report.
    assert_eq!(
        s.list_ai_calls(DEFAULT_TENANT_ID, Some(succeeded), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(report(partial.0, partial.1).await, before_partial);
    assert_eq!(report(whole.0, whole.1).await, before_whole);
    other.close().await;
}

/// Copies task `src` (and its events) as a task created and ended `age` ago, as if it
/// had been in the database that long.
async fn age_copy(db: &TestDb, src: &str, age: chrono::Duration) -> Uuid {
    let when = now() - age;
    let secs = u64::try_from(when.timestamp()).unwrap();
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0));
    let (idl, tsl) = (id_sql(db.backend, id), ts_sql(db.backend, when));
    exec_sql(
        db,
        &format!(
            "INSERT INTO tasks (id, tenant_id, employee_id, input, status, priority, run_at, \
             attempt, max_attempts, idempotency_key, metadata, result, tokens_in, tokens_out, \
             cost_nanos, steps, cancel_requested, created_at, started_at, finished_at, \
             updated_at) SELECT {idl}, tenant_id, employee_id, input, status, priority, {tsl}, \
             attempt, max_attempts, NULL, metadata, result, tokens_in, tokens_out, cost_nanos, \
             steps, cancel_requested, {tsl}, {tsl}, {tsl}, {tsl} FROM tasks WHERE id = '{src}'"
        ),
    )
    .await;
    exec_sql(
        db,
        &format!(
            "INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
             SELECT {idl}, seq, kind, payload, {tsl} FROM task_events WHERE task_id = '{src}'"
        ),
    )
    .await;
    id
}

async fn the_retention_loop_prunes_in_the_background_and_counts(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &with(&[])).await else {
        return;
    };
    employee(&app, json!({"name": "kept", "role": "r"})).await;
    let recent = id_of(&submit(&app, json!({"employee": "kept", "input": "2 + 2"})).await);
    wait_status(&app, &recent, "succeeded").await;
    let db = app.stop_keep_db().await;
    let old = age_copy(&db, &recent, chrono::Duration::days(40)).await;
    let young = age_copy(&db, &recent, chrono::Duration::days(20)).await;

    // Retention off (the default): an old task stays.
    let app = TestApp::spawn_on(db, &with(&[("TASK_PRUNE_INTERVAL", "0.05")])).await;
    let status = |app: &TestApp, id: String| {
        let r = app.get(&format!("/v1/tasks/{id}"));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&app, old.to_string()).await, 200);
    let db = app.stop_keep_db().await;

    let app = TestApp::spawn_on(
        db,
        &with(&[
            ("TASK_RETENTION_DAYS", "30"),
            ("TASK_PRUNE_INTERVAL", "0.05"),
            ("TASK_PRUNE_PAUSE", "0.01"),
            ("TASK_PRUNE_BATCH_SIZE", "1"),
        ]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&app, old.to_string()).await != 404 {
        assert!(Instant::now() < deadline, "the old task was never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status(&app, young.to_string()).await,
        200,
        "inside the retention"
    );
    assert_eq!(status(&app, recent.clone()).await, 200);
    let r = app
        .get(&format!("/v1/tasks/{old}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = app.metrics().await;
    // The recorder is shared by every test of this binary: at least this one's rows.
    assert!(metric(&text, "digital_employee_pruned_total{kind=\"tasks\"}") >= 1.0);
    assert!(metric(&text, "digital_employee_pruned_total{kind=\"task_events\"}") >= 1.0);
    app.stop().await.unwrap();
}
