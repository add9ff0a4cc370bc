//! Backup and restore against real databases: a round trip while writes continue, the
//! refusals, the binary and the wrapper scripts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestApp, TestDb, test_config};
use digital_employee::ops::backup::{self, BackupOptions};
use digital_employee::store::{DEFAULT_TENANT_ID, DynStore, EmployeeFields, NewApiKey};
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("de-backup-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fields(name: &str, i: usize) -> EmployeeFields {
    EmployeeFields {
        name: name.to_string(),
        role: format!("role {i} with unicode: 数字员工 ✓"),
        instructions: "x".repeat(i * 37 % 500),
        model_policy: vec!["sandbox/sandbox-1".into(), format!("openai/gpt-{i}")],
        allowed_tools: vec!["calculator".into()],
        max_steps: (i % 100) as i32 + 1,
        token_budget: 1000 * i as i64,
        temperature: (i % 20) as f64 / 10.0 + 0.05,
        redact_prompts: i.is_multiple_of(2),
        approval_tools: if i.is_multiple_of(3) {
            vec!["calculator".into()]
        } else {
            Vec::new()
        },
        output_schema: None,
        input_timeout_seconds: 86_400,
    }
}

/// Tenants, keys and employees, some updated so versions differ.
async fn populate(store: &DynStore) {
    let mut tenants = vec![DEFAULT_TENANT_ID];
    for t in 0..3 {
        tenants.push(
            store
                .create_tenant(&format!("tenant-{t}"))
                .await
                .unwrap()
                .id,
        );
    }
    for (ti, tenant) in tenants.iter().enumerate() {
        for k in 0..2 {
            store
                .insert_api_key(&NewApiKey {
                    id: uuid::Uuid::now_v7(),
                    tenant_id: *tenant,
                    name: format!("key {k}"),
                    prefix: format!(
                        "p{ti}{k}{}",
                        &uuid::Uuid::now_v7().simple().to_string()[20..]
                    ),
                    secret_hash: format!("{:064x}", ti * 10 + k),
                    scopes: vec!["read".into(), "write".into()],
                    rate_limit: (k == 1).then_some(500),
                })
                .await
                .unwrap();
        }
        for i in 0..15 {
            let e = store
                .create_employee(*tenant, &fields(&format!("emp-{ti}-{i}"), i))
                .await
                .unwrap();
            if i.is_multiple_of(3) {
                store
                    .update_employee(
                        *tenant,
                        e.id,
                        e.version,
                        &fields(&format!("emp-{ti}-{i}-v2"), i + 1),
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

/// Every row of every table, as canonical text, per table.
async fn snapshot(backend: Backend, url: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            for t in tables {
                let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{t}')"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                // quote() renders every storage class exactly (text, integer, real, blob).
                let expr = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM \"{t}\"")))
                        .fetch_all(&mut c)
                        .await
                        .unwrap();
                out.insert(t, rows.into_iter().collect());
            }
            // Closed before returning: a restore needs the file to itself.
            c.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            for t in tables {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t)::text FROM \"{t}\" t"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                out.insert(t, rows.into_iter().collect());
            }
            c.close().await.unwrap();
        }
    }
    out
}

/// Runs `n` tool-using tasks through the app to success, and waits until their AI calls
/// are recorded, so the backup holds tasks, their events and ai_calls rows.
async fn run_tasks(app: &TestApp, n: usize) {
    let r = app
        .post_json(
            "/v1/employees",
            &serde_json::json!({"name": "backup-calc", "role": "calculator", "allowed_tools": ["calculator"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut ids = Vec::new();
    for i in 0..n {
        let t: serde_json::Value = app
            .post_json(
                "/v1/tasks",
                &serde_json::json!({"employee": "backup-calc", "input": format!("What is {i} + 40?")}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let t: serde_json::Value = app
                .get(&format!("/v1/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if t["status"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "task never succeeded: {t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while app
        .store
        .list_ai_calls(DEFAULT_TENANT_ID, None, 1000)
        .await
        .unwrap()
        .len()
        < 2 * n
    {
        assert!(Instant::now() < deadline, "AI calls not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn round_trip_while_writing(backend: Backend) {
    let Some(src) = TestDb::new_database(backend).await else {
        return;
    };
    let app = TestApp::spawn_on(src, &[]).await;
    let src_url = app.db().url.clone();
    populate(&app.store).await;
    run_tasks(&app, 5).await;
    let before = snapshot(backend, &src_url).await;
    assert!(before["employees"].len() >= 60, "populated");
    assert!(before["api_keys"].len() >= 8);
    assert!(before["tenants"].len() >= 4);
    assert!(before["tasks"].len() >= 5);
    assert!(
        before["task_events"].len() >= 5 * 5,
        "tasks with their events"
    );
    assert!(before["ai_calls"].len() >= 10, "AI calls of the tasks");

    // A writer that keeps committing employees through the whole backup.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, written) = (app.store.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                store
                    .create_employee(DEFAULT_TENANT_ID, &fields(&format!("during-{i}"), i))
                    .await
                    .unwrap();
                written.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    while written.load(Ordering::SeqCst) < 5 {
        tokio::task::yield_now().await;
    }
    let dir = temp_dir();
    let config = test_config(&src_url, &[]);
    let opts = BackupOptions {
        output_dir: dir.clone(),
        retention_days: 7,
        s3_bucket: None,
    };
    let at_start = written.load(Ordering::SeqCst);
    let report = backup::backup(&config, &opts).await.unwrap();
    let at_end = written.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(at_end > at_start, "writes continued during the backup");
    let name = report
        .file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let ext = if backend == Backend::Sqlite {
        ".sqlite3"
    } else {
        ".dump"
    };
    assert!(
        name.starts_with("db_backup_") && name.ends_with(ext),
        "{name}"
    );
    assert!(report.verified && report.size_bytes > 0);
    let log = std::fs::read_to_string(dir.join("backup.log")).unwrap();
    assert!(log.contains(" OK ") && log.contains(&name), "{log}");

    // Restore into an empty database.
    let dst = TestDb::new_database(backend).await.unwrap();
    let dst_config = test_config(&dst.url, &[]);
    let plan = backup::plan_restore(&dst_config, &report.file)
        .await
        .unwrap();
    let status = backup::restore(&dst_config, &plan).await.unwrap();
    assert!(status.is_current());
    let after = snapshot(backend, &dst.url).await;
    for (table, rows) in &before {
        let restored = &after[table];
        let missing: Vec<&String> = rows.difference(restored).collect();
        assert!(
            missing.is_empty(),
            "{table}: rows lost or changed: {missing:?}"
        );
    }
    // The writer's rows in the backup are a consistent prefix: at least those committed
    // before it started.
    let during = after["employees"]
        .iter()
        .filter(|r| r.contains("during-"))
        .count() as u64;
    assert!(during >= at_start, "{during} of {at_start} early writes");

    // The restored database serves what was backed up: the tasks, with their results
    // and events, as the source serves them.
    let restored_app = TestApp::spawn_on(dst, &[]).await;
    let r = restored_app
        .get("/v1/tasks?employee=backup-calc&status=succeeded&limit=100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tasks: serde_json::Value = r.json().await.unwrap();
    let tasks = tasks["data"].as_array().unwrap();
    assert_eq!(tasks.len(), 5, "{tasks:?}");
    for t in tasks {
        let id = t["id"].as_str().unwrap();
        let original = app
            .get(&format!("/v1/tasks/{id}"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let served = restored_app
            .get(&format!("/v1/tasks/{id}"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(served, original);
        assert!(served["result"]["output"].is_string(), "{served}");
        let events = restored_app
            .get(&format!("/v1/tasks/{id}/events"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(
            events["data"].as_array().unwrap().last().unwrap()["payload"]["status"],
            "succeeded"
        );
    }
    restored_app.stop().await.unwrap();
    app.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

backend_tests!(round_trip_while_writing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restore_refuses_while_the_server_holds_the_database() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let url = app.db().url.clone();
    let dir = temp_dir();
    let config = test_config(&url, &[]);
    let opts = BackupOptions {
        output_dir: dir.clone(),
        retention_days: 0,
        s3_bucket: None,
    };
    let report = backup::backup(&config, &opts).await.unwrap();
    let plan = backup::plan_restore(&config, &report.file).await.unwrap();
    let err = backup::restore(&config, &plan).await.unwrap_err();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
    // Once the server stops, the same restore goes through.
    let db = app.stop_keep_db().await;
    backup::restore(&config, &plan).await.unwrap();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

fn bin(db_url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("DATABASE_URL", db_url)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null());
    c
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_backs_up_and_refuses_bad_restores() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let url = app.db().url.clone();
    let dir = temp_dir();

    let out = bin(&url)
        .args(["backup", "--output-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let backups = backup::list_backups(&dir).unwrap();
    assert_eq!(backups.len(), 1);
    let good = backups[0].0.clone();
    // A row written after the backup: a restore that wrongly went through would lose it.
    app.create_employee("after-the-backup").await;

    // Stopped first, so no refusal below can come from the server holding the file.
    let db = app.stop_keep_db().await;
    let unchanged = snapshot(Backend::Sqlite, &url).await;
    assert!(
        unchanged["employees"]
            .iter()
            .any(|r| r.contains("after-the-backup"))
    );
    let refused = |out: &std::process::Output, says: &str| {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
        assert!(text(out).contains(says), "wanted {says:?} in {}", text(out));
        assert!(!text(out).contains("in use"), "{}", text(out));
    };

    // A missing file.
    let out = bin(&url)
        .args(["restore", "/nonexistent/db_backup_x.sqlite3", "--yes"])
        .output()
        .unwrap();
    refused(&out, "does not exist");
    assert_eq!(snapshot(Backend::Sqlite, &url).await, unchanged);
    // A corrupt file: a real backup cut short.
    let bytes = std::fs::read(&good).unwrap();
    let junk = dir.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    let corrupt = junk.join("db_backup_corrupt.sqlite3");
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let out = bin(&url)
        .arg("restore")
        .arg(&corrupt)
        .arg("--yes")
        .output()
        .unwrap();
    refused(&out, "db_backup_corrupt.sqlite3");
    assert_eq!(snapshot(Backend::Sqlite, &url).await, unchanged);
    // Without --yes and without a terminal: refused, nothing changed.
    let out = bin(&url).arg("restore").arg(&good).output().unwrap();
    refused(&out, "pass --yes");
    assert_eq!(snapshot(Backend::Sqlite, &url).await, unchanged);
    // A PostgreSQL dump for a SQLite database.
    let pg = junk.join("db_backup_x.dump");
    std::fs::write(&pg, b"PGDMP\x01\x0e\x00").unwrap();
    let out = bin(&url)
        .arg("restore")
        .arg(&pg)
        .arg("--yes")
        .output()
        .unwrap();
    refused(&out, "is a PostgreSQL dump but DATABASE_URL is SQLite");
    assert_eq!(snapshot(Backend::Sqlite, &url).await, unchanged);
    // Usage error.
    let out = bin(&url)
        .args(["backup", "--retention-days", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The wrapper scripts: backup with the specification's variables, list without args.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/backup_database.sh"))
        .env("DIGITAL_EMPLOYEE_BIN", BIN)
        .env("DATABASE_URL", &url)
        .env("BACKUP_DIR", &dir)
        .env("RETENTION_DAYS", "3")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(backup::list_backups(&dir).unwrap().len(), 2);
    let out = Command::new("bash")
        .arg(root.join("scripts/restore_database.sh"))
        .env("BACKUP_DIR", &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("db_backup_"), "{}", text(&out));
    let log = std::fs::read_to_string(dir.join("backup.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains(" OK ")).count(),
        2,
        "{log}"
    );
    assert_eq!(snapshot(Backend::Sqlite, &url).await, unchanged);

    // The first backup restored through the binary: the later row is gone, the rest is
    // back.
    let out = bin(&url)
        .arg("restore")
        .arg(&good)
        .arg("--yes")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema current"), "{}", text(&out));
    let restored = snapshot(Backend::Sqlite, &url).await;
    assert!(
        !restored["employees"]
            .iter()
            .any(|r| r.contains("after-the-backup"))
    );
    assert_eq!(restored["api_keys"], unchanged["api_keys"]);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On PostgreSQL, through the binary, over a database that already holds data: without
/// `--yes` nothing changes; with it the database is exactly what was backed up (a row
/// written after the backup is gone), and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cli_restore_over_an_existing_database() {
    let Some(db) = TestDb::new_database(Backend::Postgres).await else {
        return;
    };
    let app = TestApp::spawn_on(db, &[]).await;
    let url = app.db().url.clone();
    app.create_employee("before-the-backup").await;
    let dir = temp_dir();
    let out = bin(&url)
        .args(["backup", "--output-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dump = backup::list_backups(&dir).unwrap()[0].0.clone();
    let backed_up = snapshot(Backend::Postgres, &url).await;
    app.create_employee("after-the-backup").await;
    let db = app.stop_keep_db().await;
    let current = snapshot(Backend::Postgres, &url).await;
    assert_ne!(current["employees"], backed_up["employees"]);

    let out = bin(&url).arg("restore").arg(&dump).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("pass --yes"), "{}", text(&out));
    assert_eq!(snapshot(Backend::Postgres, &url).await, current);

    let out = bin(&url)
        .arg("restore")
        .arg(&dump)
        .arg("--yes")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema current"), "{}", text(&out));
    let restored = snapshot(Backend::Postgres, &url).await;
    for table in ["employees", "tenants", "api_keys", "_sqlx_migrations"] {
        assert_eq!(restored[table], backed_up[table], "{table}");
    }

    let app = TestApp::spawn_on(db, &[]).await;
    let names = app
        .get("/v1/employees?limit=100")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(names.contains("before-the-backup"), "{names}");
    assert!(!names.contains("after-the-backup"), "{names}");
    app.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
