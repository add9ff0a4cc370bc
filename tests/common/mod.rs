//! Test harness: boots the real app on port 0 with its own database.
//!
//! SQLite tests get a fresh file in a temporary directory. PostgreSQL tests run when
//! `TEST_DATABASE_URL` is set, each in a schema of its own; with
//! `REQUIRE_BACKEND_TESTS=1` (set by `.ci/run`) a missing URL fails instead of skipping.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod console;
pub mod process;
pub mod tasks;
pub mod vendor;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use digital_employee::app::App;
use digital_employee::config::Config;
use digital_employee::store::{self, DynStore};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test: a SQLite file or a PostgreSQL schema, removed on drop.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    dir: Option<PathBuf>,
    pg_schema: Option<(String, String)>,
    pg_database: Option<(String, String)>,
}

impl TestDb {
    /// `None` when the backend is not configured (and not required).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("de-test-{}", uuid::Uuid::now_v7().simple()));
                std::fs::create_dir_all(&dir).unwrap();
                Some(TestDb {
                    url: format!("sqlite://{}/test.db", dir.display()),
                    backend,
                    dir: Some(dir),
                    pg_schema: None,
                    pg_database: None,
                })
            }
            Backend::Postgres => {
                let base = postgres_url()?;
                let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
                run_pg(&base, &format!("CREATE SCHEMA {schema}")).await;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                Some(TestDb {
                    url,
                    backend,
                    dir: None,
                    pg_schema: Some((base, schema)),
                    pg_database: None,
                })
            }
        }
    }

    /// Like [`TestDb::new`], but on PostgreSQL a whole database of its own rather than a
    /// schema, for tests of whole-database tools (`pg_dump`, `pg_restore`).
    pub async fn new_database(backend: Backend) -> Option<TestDb> {
        if backend == Backend::Sqlite {
            return Self::new(backend).await;
        }
        let base = postgres_url()?;
        let name = format!("de_{}", uuid::Uuid::now_v7().simple());
        run_pg(&base, &format!("CREATE DATABASE {name}")).await;
        let (head, query) = match base.split_once('?') {
            Some((h, q)) => (h, format!("?{q}")),
            None => (base.as_str(), String::new()),
        };
        let prefix = head.rsplit_once('/').map(|(p, _)| p).unwrap_or(head);
        Some(TestDb {
            url: format!("{prefix}/{name}{query}"),
            backend,
            dir: None,
            pg_schema: None,
            pg_database: Some((base, name)),
        })
    }

    pub async fn store(&self) -> DynStore {
        store::connect(&store::ConnectOptions {
            url: self.url.clone(),
            max_connections: 4,
        })
        .await
        .unwrap()
    }

    /// A store with every migration applied.
    pub async fn migrated_store(&self) -> DynStore {
        let s = self.store().await;
        s.migrate().await.unwrap();
        s
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((base, schema)) = self.pg_schema.take() {
            // Best effort, on a thread of its own: Drop cannot be async.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(run_pg(&base, &format!("DROP SCHEMA {schema} CASCADE")));
                }
            })
            .join();
        }
        if let Some((base, name)) = self.pg_database.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(run_pg(
                        &base,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ));
                }
            })
            .join();
        }
    }
}

async fn run_pg(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// The PostgreSQL URL for tests, or `None` to skip; panics if required but missing.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("REQUIRE_BACKEND_TESTS").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_BACKEND_TESTS=1 but TEST_DATABASE_URL is not set");
            }
            eprintln!("skipping: TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// The Redis URL for tests, or `None` to skip; panics if required but missing (like
/// [`postgres_url`]). Tests that use it have `redis` in their name, so `.ci/run` can check
/// they all ran.
pub fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("REQUIRE_BACKEND_TESTS").is_ok_and(|v| v == "1") {
                panic!("REQUIRE_BACKEND_TESTS=1 but TEST_REDIS_URL is not set");
            }
            eprintln!("skipping: TEST_REDIS_URL is not set");
            None
        }
    }
}

/// A Redis key prefix of its own for one test, so tests sharing a server never meet.
pub fn redis_prefix() -> String {
    format!("de:test:{}:", uuid::Uuid::now_v7().simple())
}

/// Configuration for a test app: loopback, port 0, the test admin key.
pub fn test_config(db_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PROMETHEUS_METRICS_PORT", "0"),
        ("API_KEY_WHITELIST", ADMIN_KEY),
        ("DATABASE_URL", db_url),
        ("DB_MAX_CONNECTIONS", "4"),
        ("SHUTDOWN_GRACE_PERIOD", "5"),
        // Scenarios send more than the default 100 requests a minute; the rate-limit
        // tests set their own limit.
        ("RATE_LIMIT_REQUESTS", "1000000"),
        // Test receivers (webhooks, tools, http_request targets) listen on loopback; the
        // egress tests set this empty to see the policy refuse it.
        ("EGRESS_ALLOW_CIDRS", "127.0.0.1/32"),
        // Scenarios use per-second schedules to see fires quickly.
        ("SCHEDULE_MIN_INTERVAL_SECONDS", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| map.get(k).cloned()).unwrap()
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub client: reqwest::Client,
    db: Option<TestDb>,
    pub store: DynStore,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Boots the app on a fresh database (PostgreSQL migrated first, as an operator
    /// would). `None` when the backend is not configured.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, &[]).await
    }

    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
        let db = TestDb::new(backend).await?;
        Some(Self::spawn_on(db, extra).await)
    }

    /// Boots the app on a given database (PostgreSQL migrated first).
    pub async fn spawn_on(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
        let backend = db.backend;
        if backend == Backend::Postgres {
            db.migrated_store().await.close().await;
        }
        let app = App::build(test_config(&db.url, extra)).await.unwrap();
        Self::start(app, db).await
    }

    pub async fn start(app: App, db: TestDb) -> TestApp {
        let addr = app.api_addr().unwrap();
        let metrics_addr = app.metrics_addr().unwrap();
        let store = app.state().store.clone();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        let t = TestApp {
            addr,
            metrics_addr,
            client: reqwest::Client::new(),
            db: Some(db),
            store,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        t.wait_ready().await;
        t
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls `/ready` until 200, failing after a deadline.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.client.get(self.url("/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "app not ready within 10s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path))
            .header("X-API-Key", ADMIN_KEY)
    }

    /// GETs `path` as the admin, asserting 200, and returns the JSON body.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("X-API-Key", ADMIN_KEY)
            .json(body)
    }

    pub fn patch_json(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .patch(self.url(path))
            .header("X-API-Key", ADMIN_KEY)
            .json(body)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(self.url(path))
            .header("X-API-Key", ADMIN_KEY)
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates an employee and returns its JSON.
    pub async fn create_employee(&self, name: &str) -> serde_json::Value {
        let r = self
            .post_json(
                "/v1/employees",
                &serde_json::json!({"name": name, "role": "tester"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create {name}");
        r.json().await.unwrap()
    }

    pub fn db(&self) -> &TestDb {
        self.db.as_ref().unwrap()
    }

    /// Shuts down and hands back the database, to reopen it with another app.
    pub async fn stop_keep_db(mut self) -> TestDb {
        let db = self.db.take().unwrap();
        self.stop().await.unwrap();
        db
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Triggers shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> anyhow::Result<()> {
        match self.handle.take() {
            Some(h) => h.await.unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Sends the request built by `make` until it answers 200, failing after a deadline (for
/// an instance started without `TestApp`).
pub async fn poll_ok(make: impl Fn() -> reqwest::RequestBuilder) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = make().send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "no 200 within 10s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves `router` on a free loopback port (a vendor or a receiver a test stands up);
/// returns its address and the task serving it.
pub async fn serve_local(router: axum::Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr, task)
}

/// Asserts the one JSON error shape and returns it.
pub async fn assert_error(resp: reqwest::Response, status: u16, kind: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let header_id = resp
        .headers()
        .get("x-request-id")
        .expect("X-Request-Id header")
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"]["type"], kind, "error type in {body}");
    assert!(body["error"]["message"].is_string(), "message in {body}");
    assert_eq!(body["error"]["request_id"], header_id.as_str());
    body
}

/// Generates one test per backend from an async scenario `fn(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::common::postgres_url().is_none() {
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// The value of one series (`name` or `name{labels}`, written as exposed) in a Prometheus
/// text exposition; 0 when it is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs one statement on the test database (faults a test injects behind the app's back,
/// like a lease that runs out while its worker still works).
pub async fn exec_sql(db: &TestDb, statement: &str) {
    use sqlx::Connection;
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

/// Makes a running task's lease run out now: its worker is presumed dead, the reaper
/// rescues the task and the worker learns it lost the lease at its next renewal.
pub async fn expire_lease(db: &TestDb, task: &str) {
    let past = match db.backend {
        Backend::Sqlite => "'2000-01-01T00:00:00.000000Z'",
        Backend::Postgres => "now() - interval '1 hour'",
    };
    exec_sql(
        db,
        &format!(
            "UPDATE tasks SET lease_expires_at = {past} WHERE id = '{task}' AND status = 'running'"
        ),
    )
    .await;
}

/// A new employee of `tenant` (a unique name, the sandbox model), for tasks written
/// straight to the store: the store takes a task only for an employee of its tenant.
pub async fn hire(s: &DynStore, tenant: uuid::Uuid) -> uuid::Uuid {
    let fields = store::EmployeeFields {
        name: format!("e-{}", uuid::Uuid::now_v7()),
        role: "r".into(),
        instructions: String::new(),
        model_policy: vec!["sandbox/sandbox-1".into()],
        allowed_tools: Vec::new(),
        max_steps: 5,
        token_budget: 1000,
        temperature: 0.0,
        redact_prompts: false,
        approval_tools: Vec::new(),
        output_schema: None,
        input_timeout_seconds: 86_400,
    };
    s.create_employee(tenant, &fields).await.unwrap().id
}
