//! Query times with a large history against an empty database: claim latency,
//! `GET /v1/tasks` and `GET /v1/usage`, before and after filling one tenant with
//! 1,000,000 ended tasks, 10,000,000 events and 1,000,000 AI call records spread over the
//! last 30 days; then the time of one retention batch. Not a test: run it with
//! `bench/large_tables.sh`.
//!
//! Environment: `BENCH_DB` (`sqlite` or a `postgres://` URL), `BENCH_SCALE` (default 1;
//! `0.001` fills 1,000 tasks and 10,000 events for a smoke run), `BENCH_EVENTS_PER_TASK`
//! (10), `BENCH_ROUNDS` (200 requests or claims per figure), `BENCH_KEEP` (set: the
//! scratch database is kept and its URL printed, to look at plans afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{KEY, ScratchDb};
use digital_employee::app::App;
use digital_employee::store::{
    DEFAULT_TENANT_ID, DynStore, NewTask, TaskEmployee, TaskStatus, now,
};
use sqlx::Connection;
/// Rows of the fill per statement (one transaction each).
const CHUNK: i64 = 50_000;

enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn exec(&mut self, sql: String) {
        match self {
            Db::Sqlite(c) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(c)
                    .await
                    .unwrap();
            }
            Db::Postgres(c) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(c)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Figures of one phase, milliseconds: (name, p50, p99).
type Figures = Vec<(&'static str, f64, f64)>;

fn pct(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

fn new_task(employee: uuid::Uuid) -> NewTask {
    NewTask {
        tenant_id: DEFAULT_TENANT_ID,
        employee: TaskEmployee::Id(employee),
        input: serde_json::json!("claim me"),
        priority: 0,
        run_at: now(),
        max_attempts: 3,
        idempotency_key: None,
        request_hash: None,
        parent_task_id: None,
        depth: 0,
        session_id: None,
        callback_url: None,
        metadata: serde_json::json!({}),
        output_schema: None,
        trace_context: None,
    }
}

/// Claim latency (one queued task, one claim of one task: the statement a worker runs;
/// the claimed tasks stay `running`, no worker runs here), and client round trips of
/// the task list and the usage report.
async fn measure(
    store: &DynStore,
    employee: uuid::Uuid,
    client: &reqwest::Client,
    base: &str,
    rounds: usize,
) -> Figures {
    let mut claims = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        store.create_task(&new_task(employee)).await.unwrap();
        let t0 = Instant::now();
        let got = store
            .claim_tasks("bench", 1, Duration::from_secs(300), 0)
            .await
            .unwrap();
        claims.push(t0.elapsed());
        assert_eq!(got.len(), 1);
    }
    let mut out = Vec::new();
    let (p50, p99) = pct(claims);
    out.push(("claim (1 task)", p50, p99));
    for (name, path) in [
        ("GET /v1/tasks", "/v1/tasks"),
        ("GET /v1/tasks?status=failed", "/v1/tasks?status=failed"),
        ("GET /v1/usage (30 days)", "/v1/usage"),
        ("GET /v1/usage?group_by=day", "/v1/usage?group_by=day"),
    ] {
        let mut lat = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t0 = Instant::now();
            let r = client
                .get(format!("{base}{path}"))
                .header("X-API-Key", KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.bytes().await.unwrap();
            lat.push(t0.elapsed());
        }
        let (p50, p99) = pct(lat);
        out.push((name, p50, p99));
    }
    out
}

/// Fills `tasks` ended tasks (1 % failed) with `events` events each and one AI call each,
/// created evenly over the 30 days before the last hour, ids UUIDv7 of their creation
/// time as the service writes them; then rebuilds the hourly usage rollup.
async fn fill(db: &mut Db, employee: uuid::Uuid, tasks: i64, events: i64) {
    let end_ms = (now() - chrono::Duration::hours(1)).timestamp_millis();
    let span_ms = chrono::Duration::days(30).num_milliseconds();
    let start_ms = end_ms - span_ms;
    let tenant = DEFAULT_TENANT_ID;
    let started = Instant::now();
    let mut a = 0;
    while a < tasks {
        let b = (a + CHUNK).min(tasks) - 1;
        // i → ms (creation time) → id, the same expression in every statement.
        let statements = match db {
            Db::Postgres(_) => {
                let g = format!(
                    "FROM (SELECT i, ms, to_timestamp(ms / 1000.0) AS ts, \
                     (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(i % 4096), 3, '0') \
                     || '8' || lpad(to_hex(i), 15, '0'))::uuid AS id \
                     FROM (SELECT i, {start_ms} + i * {span_ms} / {tasks} AS ms \
                     FROM generate_series({a}::bigint, {b}::bigint) AS i) x) g"
                );
                vec![
                    format!(
                        "INSERT INTO tasks (id, tenant_id, employee_id, input, status, run_at, \
                         attempt, max_attempts, result, error, tokens_in, tokens_out, cost_nanos, \
                         steps, created_at, started_at, finished_at, updated_at) \
                         SELECT id, '{tenant}', '{employee}', '\"a task\"'::jsonb, \
                         CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, ts, 1, 3, \
                         '\"done\"'::jsonb, NULL, 100, 20, 1000, 1, ts, ts, \
                         ts + interval '1 second', ts + interval '1 second' {g}"
                    ),
                    format!(
                        "INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
                         SELECT id, s, CASE WHEN s = 1 THEN 'status' ELSE 'llm_call' END, \
                         '{{\"step\": 1, \"text\": \"some words of a step\"}}'::jsonb, ts \
                         {g} CROSS JOIN generate_series(1, {events}) AS s"
                    ),
                    format!(
                        "INSERT INTO ai_calls (id, tenant_id, task_id, provider, model, status, \
                         latency_us, input_tokens, output_tokens, cached_tokens, \
                         cache_write_tokens, cost_nanos, cache_hit, streamed, created_at, \
                         employee_id) SELECT gen_random_uuid(), '{tenant}', id, 'sandbox', \
                         'sandbox-1', 'ok', 1000, 100, 20, 0, 0, 1000, false, false, ts, \
                         '{employee}' {g}"
                    ),
                ]
            }
            Db::Sqlite(_) => {
                let g = format!(
                    "FROM (SELECT i, ms, \
                     strftime('%Y-%m-%dT%H:%M:%S', ms / 1000, 'unixepoch') \
                     || printf('.%06dZ', (ms % 1000) * 1000) AS ts, \
                     strftime('%Y-%m-%dT%H:%M:%S', ms / 1000 + 1, 'unixepoch') \
                     || printf('.%06dZ', (ms % 1000) * 1000) AS te, \
                     printf('%08x-%04x-7%03x-8000-%012x', ms >> 16, ms & 65535, i % 4096, i) \
                     AS id FROM (SELECT i, {start_ms} + i * {span_ms} / {tasks} AS ms \
                     FROM s) x) g"
                );
                let series = format!(
                    "WITH RECURSIVE s(i) AS (SELECT {a} UNION ALL SELECT i + 1 FROM s \
                     WHERE i < {b})"
                );
                vec![
                    format!(
                        "{series} INSERT INTO tasks (id, tenant_id, employee_id, input, status, \
                         run_at, attempt, max_attempts, result, tokens_in, tokens_out, \
                         cost_nanos, steps, created_at, started_at, finished_at, updated_at) \
                         SELECT id, '{tenant}', '{employee}', '\"a task\"', \
                         CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, ts, 1, 3, \
                         '\"done\"', 100, 20, 1000, 1, ts, ts, te, te {g}"
                    ),
                    format!(
                        "{series}, e(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM e \
                         WHERE n < {events}) \
                         INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
                         SELECT id, n, CASE WHEN n = 1 THEN 'status' ELSE 'llm_call' END, \
                         '{{\"step\": 1, \"text\": \"some words of a step\"}}', ts {g} \
                         CROSS JOIN e"
                    ),
                    format!(
                        "{series} INSERT INTO ai_calls (id, tenant_id, task_id, provider, model, \
                         status, latency_us, input_tokens, output_tokens, cached_tokens, \
                         cache_write_tokens, cost_nanos, cache_hit, streamed, created_at, \
                         employee_id) SELECT printf('%08x-%04x-7%03x-9000-%012x', ms >> 16, \
                         ms & 65535, i % 4096, i), '{tenant}', id, 'sandbox', 'sandbox-1', \
                         'ok', 1000, 100, 20, 0, 0, 1000, 0, 0, ts, '{employee}' {g}"
                    ),
                ]
            }
        };
        for sql in statements {
            db.exec(sql).await;
        }
        a = b + 1;
        eprintln!(
            "  filled {a} tasks, {} events ({:.0} s)",
            a * events,
            started.elapsed().as_secs_f64()
        );
    }
    // The rollups the service keeps with every insert, rebuilt for the rows written here.
    for (table, pg_unit, sqlite_unit) in [
        (
            "usage_daily",
            "day",
            "substr(created_at, 1, 10) || 'T00:00:00.000000Z'",
        ),
        (
            "usage_hourly",
            "hour",
            "substr(created_at, 1, 13) || ':00:00.000000Z'",
        ),
        (
            "usage_minutely",
            "minute",
            "substr(created_at, 1, 16) || ':00.000000Z'",
        ),
    ] {
        db.exec(format!("DELETE FROM {table}")).await;
        let rollup = match db {
            Db::Postgres(_) => format!(
                "INSERT INTO {table} SELECT tenant_id, \
                 date_trunc('{pg_unit}', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', \
                 COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid), \
                 provider, model, COUNT(*), COUNT(*) FILTER (WHERE status = 'ok'), \
                 COUNT(*) FILTER (WHERE status = 'error'), \
                 COUNT(*) FILTER (WHERE status = 'cache_hit'), SUM(input_tokens)::bigint, \
                 SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint, \
                 SUM(cache_write_tokens)::bigint, SUM(cost_nanos)::bigint, \
                 SUM(reasoning_tokens)::bigint FROM ai_calls GROUP BY 1, 2, 3, 4, 5"
            ),
            Db::Sqlite(_) => format!(
                "INSERT INTO {table} SELECT tenant_id, {sqlite_unit}, \
                 COALESCE(employee_id, ''), provider, model, COUNT(*), \
                 SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END), SUM(input_tokens), \
                 SUM(output_tokens), SUM(cached_tokens), SUM(cache_write_tokens), \
                 SUM(cost_nanos), SUM(reasoning_tokens) FROM ai_calls GROUP BY 1, 2, 3, 4, 5"
            ),
        };
        db.exec(rollup).await;
    }
    if let Db::Postgres(_) = db {
        // What autovacuum does within a minute or two of such a burst.
        db.exec("VACUUM ANALYZE".into()).await;
    }
    eprintln!("  fill done in {:.0} s", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let db_name = env("BENCH_DB", "sqlite");
    let scale: f64 = env("BENCH_SCALE", "1").parse().unwrap();
    let per_task: i64 = env("BENCH_EVENTS_PER_TASK", "10").parse().unwrap();
    let rounds: usize = env("BENCH_ROUNDS", "200").parse().unwrap();
    let tasks = ((1_000_000.0 * scale) as i64).max(1);
    let scratch = ScratchDb::new(&db_name).await;
    // Claims are measured on the store; no worker may take the tasks first.
    let cfg = scratch.config(&[("DB_MAX_CONNECTIONS", "16"), ("WORKERS_ENABLED", "off")]);
    let employee = scratch
        .store()
        .await
        .create_employee(DEFAULT_TENANT_ID, &common::employee("bench"))
        .await
        .unwrap()
        .id;
    let app = App::build(cfg).await.unwrap();
    let base = format!("http://{}", app.api_addr().unwrap());
    let store = app.state().store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();

    let empty = measure(&store, employee, &client, &base, rounds).await;
    eprintln!("filling {tasks} tasks, {} events ...", tasks * per_task);
    let mut conn = if scratch.is_postgres() {
        Db::Postgres(sqlx::PgConnection::connect(&scratch.url).await.unwrap())
    } else {
        Db::Sqlite(sqlx::SqliteConnection::connect(&scratch.url).await.unwrap())
    };
    fill(&mut conn, employee, tasks, per_task).await;
    let large = measure(&store, employee, &client, &base, rounds).await;

    let backend = if scratch.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "db={backend} tasks={tasks} events={} rounds={rounds} (ms)",
        tasks * per_task
    );
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "", "empty p50", "empty p99", "large p50", "large p99", "p99 x"
    );
    for ((name, e50, e99), (_, l50, l99)) in empty.iter().zip(&large) {
        println!(
            "{name:<30} {e50:>9.2} {e99:>9.2} {l50:>9.2} {l99:>9.2} {:>8.2}",
            l99 / e99
        );
    }

    // One retention batch at this size: the oldest half of the history past the cutoff.
    let cutoff = now() - chrono::Duration::days(15);
    let t0 = Instant::now();
    let pruned = store.prune_finished_tasks(cutoff, 500).await.unwrap();
    println!(
        "retention batch (500 tasks): {:.1} ms, deleted {} tasks, {} events",
        t0.elapsed().as_secs_f64() * 1e3,
        pruned.tasks,
        pruned.events
    );
    let mut left = Vec::new();
    for s in [
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        left.push(
            store
                .count_tenant_tasks_in(DEFAULT_TENANT_ID, s)
                .await
                .unwrap(),
        );
    }
    eprintln!(
        "tasks now: {} succeeded, {} failed, {} cancelled",
        left[0], left[1], left[2]
    );

    let _ = tx.send(());
    let _ = running.await;
    if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("kept the scratch database: {}", scratch.url);
    } else {
        scratch.remove().await;
    }
}
