//! What a tenant's schedules may do to the queue: no cron firing more often than
//! `SCHEDULE_MIN_INTERVAL_SECONDS`, at most `SCHEDULE_MAX_PER_TENANT` schedules, and a fire
//! whose task insert fails is not lost: it stays due and fires exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp, TestDb};
use digital_employee::store::{DEFAULT_TENANT_ID, ScheduleFields, now};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

#[tokio::test]
async fn schedules_have_a_minimum_interval_and_a_cap() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &with(&[
            ("SCHEDULE_MIN_INTERVAL_SECONDS", "60"),
            ("SCHEDULE_MAX_PER_TENANT", "2"),
        ]),
    )
    .await
    .unwrap();
    employee(&app, json!({"name": "reporter", "role": "r"})).await;
    let create = |cron: &str| {
        app.post_json(
            "/v1/schedules",
            &json!({"employee": "reporter", "cron": cron, "input": "report"}),
        )
    };
    for too_often in ["* * * * * *", "*/30 * * * * *", "0,30 0 9 * * *"] {
        let r = create(too_often).send().await.unwrap();
        let body = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(body["error"]["field"], "cron", "{too_often}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("SCHEDULE_MIN_INTERVAL_SECONDS"),
            "{body}"
        );
    }
    let every_minute = create("* * * * *").send().await.unwrap();
    assert_eq!(every_minute.status(), 201);
    let s: Value = every_minute.json().await.unwrap();
    // An update to a faster cron is refused the same way.
    let r = app
        .patch_json(
            &format!("/v1/schedules/{}", id_of(&s)),
            &json!({"cron": "*/10 * * * * *"}),
        )
        .send()
        .await
        .unwrap();
    common::assert_error(r, 422, "validation_error").await;

    assert_eq!(create("0 9 * * *").send().await.unwrap().status(), 201);
    let r = create("0 10 * * *").send().await.unwrap();
    let body = common::assert_error(r, 409, "conflict").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SCHEDULE_MAX_PER_TENANT"),
        "{body}"
    );
    app.stop().await.unwrap();
}

/// The task insert of a fire fails (a trigger refuses it while a row of `fail_inserts`
/// exists): the fire must stay due, and fire exactly once when inserts work again.
#[tokio::test]
async fn a_fire_whose_insert_fails_is_not_lost() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn_on(db, &with(&[])).await;
    let e = employee(&app, json!({"name": "yearly", "role": "r"})).await;
    let emp = Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();

    let mut conn = sqlx::SqliteConnection::connect(&app.db().url)
        .await
        .unwrap();
    for sql in [
        "CREATE TABLE fail_inserts (x INTEGER)",
        "INSERT INTO fail_inserts VALUES (1)",
        "CREATE TRIGGER fail_task_inserts BEFORE INSERT ON tasks \
         WHEN EXISTS (SELECT 1 FROM fail_inserts) \
         BEGIN SELECT RAISE(ABORT, 'injected insert failure'); END",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }

    // Due a second ago; the next fire is a year away, so a lost fire stays lost.
    let fire = now() - chrono::Duration::seconds(1);
    let sch = app
        .store
        .create_schedule(
            DEFAULT_TENANT_ID,
            &ScheduleFields {
                employee_id: emp,
                cron: "0 0 1 1 *".into(),
                timezone: "UTC".into(),
                input: json!("yearly report"),
                priority: 0,
                enabled: true,
            },
            fire,
        )
        .await
        .unwrap();

    // Wait until the scheduler tried and failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::metric(&app.metrics().await, "schedule_fire_errors_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the scheduler never tried the fire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = app
        .store
        .get_schedule(DEFAULT_TENANT_ID, sch.id)
        .await
        .unwrap();
    assert_eq!(
        s.next_fire_at, sch.next_fire_at,
        "a failed fire was moved past"
    );

    // Inserts work again: the fire happens, once.
    sqlx::query("DELETE FROM fail_inserts")
        .execute(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = app
            .store
            .get_schedule(DEFAULT_TENANT_ID, sch.id)
            .await
            .unwrap();
        if s.next_fire_at > sch.next_fire_at {
            break;
        }
        assert!(Instant::now() < deadline, "the fire never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed: Value = app
        .get("/v1/tasks?employee=yearly")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tasks = listed["data"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{listed}");
    assert_eq!(tasks[0]["metadata"]["schedule_id"], sch.id.to_string());
    app.stop().await.unwrap();
}
