//! [`TaskStore`] on SQLite. Every multi-statement write is one transaction whose first
//! statement writes, so SQLite takes the write lock before reading: two claimers (or a
//! claimer and the reaper) are serialised by the database, never interleaved.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Connection;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::writer::engine;
use super::{SqliteStore, parse_id, parse_ts, ts};
use crate::store::*;

macro_rules! task_cols {
    () => {
        "id, tenant_id, employee_id, input, status, priority, run_at, attempt, max_attempts, \
         lease_owner, lease_expires_at, idempotency_key, request_hash, parent_task_id, depth, \
         session_id, callback_url, metadata, result, error, tokens_in, tokens_out, cost_nanos, \
         steps, cancel_requested, created_at, started_at, finished_at, updated_at, \
         output_schema, trace_context"
    };
}

macro_rules! schedule_cols {
    () => {
        "id, tenant_id, employee_id, cron, timezone, input, priority, enabled, next_fire_at, \
         last_fired_at, created_at, updated_at"
    };
}

fn json(s: &str) -> StoreResult<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("json {s:?}: {e}")))
}

fn opt_ts(r: &SqliteRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    r.try_get::<Option<String>, _>(col)?
        .map(|s| parse_ts(&s))
        .transpose()
}

fn opt_id(r: &SqliteRow, col: &str) -> StoreResult<Option<Uuid>> {
    r.try_get::<Option<String>, _>(col)?
        .map(|s| parse_id(&s))
        .transpose()
}

fn status(s: &str) -> StoreResult<TaskStatus> {
    TaskStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("task status {s:?}")))
}

/// Column access shared by the async driver's rows and the writer thread's rows, so one
/// mapper ([`task_from`]) builds a [`Task`] from either.
trait Cols {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn int32(&self, col: &str) -> StoreResult<i32>;
    fn flag(&self, col: &str) -> StoreResult<bool>;
}

impl Cols for SqliteRow {
    fn text(&self, col: &str) -> StoreResult<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> StoreResult<i64> {
        Ok(self.try_get(col)?)
    }
    fn int32(&self, col: &str) -> StoreResult<i32> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        Ok(self.try_get(col)?)
    }
}

impl Cols for rusqlite::Row<'_> {
    fn text(&self, col: &str) -> StoreResult<String> {
        self.get(col).map_err(engine)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.get(col).map_err(engine)
    }
    fn int(&self, col: &str) -> StoreResult<i64> {
        self.get(col).map_err(engine)
    }
    fn int32(&self, col: &str) -> StoreResult<i32> {
        self.get(col).map_err(engine)
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        self.get(col).map_err(engine)
    }
}

fn task_row(r: &SqliteRow) -> StoreResult<Task> {
    task_from(r)
}

fn task_from(r: &impl Cols) -> StoreResult<Task> {
    let opt_ts = |c: &str| r.opt_text(c)?.map(|s| parse_ts(&s)).transpose();
    let opt_id = |c: &str| r.opt_text(c)?.map(|s| parse_id(&s)).transpose();
    Ok(Task {
        id: parse_id(&r.text("id")?)?,
        tenant_id: parse_id(&r.text("tenant_id")?)?,
        employee_id: parse_id(&r.text("employee_id")?)?,
        input: json(&r.text("input")?)?,
        status: status(&r.text("status")?)?,
        priority: r.int32("priority")?,
        run_at: parse_ts(&r.text("run_at")?)?,
        attempt: r.int32("attempt")?,
        max_attempts: r.int32("max_attempts")?,
        lease_owner: r.opt_text("lease_owner")?,
        lease_expires_at: opt_ts("lease_expires_at")?,
        idempotency_key: r.opt_text("idempotency_key")?,
        request_hash: r.opt_text("request_hash")?,
        parent_task_id: opt_id("parent_task_id")?,
        depth: r.int32("depth")?,
        session_id: opt_id("session_id")?,
        callback_url: r.opt_text("callback_url")?,
        metadata: json(&r.text("metadata")?)?,
        output_schema: r.opt_text("output_schema")?.map(|s| json(&s)).transpose()?,
        trace_context: r.opt_text("trace_context")?,
        result: r.opt_text("result")?.map(|s| json(&s)).transpose()?,
        error: r.opt_text("error")?,
        tokens_in: r.int("tokens_in")?,
        tokens_out: r.int("tokens_out")?,
        cost_nanos: r.int("cost_nanos")?,
        steps: r.int32("steps")?,
        cancel_requested: r.flag("cancel_requested")?,
        created_at: parse_ts(&r.text("created_at")?)?,
        started_at: opt_ts("started_at")?,
        finished_at: opt_ts("finished_at")?,
        updated_at: parse_ts(&r.text("updated_at")?)?,
    })
}

fn event_row(r: &SqliteRow) -> StoreResult<TaskEvent> {
    Ok(TaskEvent {
        task_id: parse_id(r.try_get("task_id")?)?,
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        payload: json(r.try_get("payload")?)?,
        created_at: parse_ts(r.try_get("created_at")?)?,
    })
}

fn schedule_row(r: &SqliteRow) -> StoreResult<Schedule> {
    Ok(Schedule {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        fields: ScheduleFields {
            employee_id: parse_id(r.try_get("employee_id")?)?,
            cron: r.try_get("cron")?,
            timezone: r.try_get("timezone")?,
            input: json(r.try_get("input")?)?,
            priority: r.try_get("priority")?,
            enabled: r.try_get("enabled")?,
        },
        next_fire_at: parse_ts(r.try_get("next_fire_at")?)?,
        last_fired_at: opt_ts(r, "last_fired_at")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        updated_at: parse_ts(r.try_get("updated_at")?)?,
    })
}

fn message_row(r: &SqliteRow) -> StoreResult<SessionMessage> {
    Ok(SessionMessage {
        id: parse_id(r.try_get("id")?)?,
        session_id: parse_id(r.try_get("session_id")?)?,
        role: r.try_get("role")?,
        content: r.try_get("content")?,
        task_id: opt_id(r, "task_id")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
    })
}

fn after(d: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

// ---- Hot writes: run on the group-commit writer thread (see `writer.rs`), each inside
// its own savepoint of the batch's transaction. ----

/// Appends events after the task's last `seq`; the caller wrote the task row first.
fn append_rs(conn: &rusqlite::Connection, task: &str, events: &[NewEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let t = ts(&now());
    let mut next: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM task_events WHERE task_id = ?1")
        .and_then(|mut st| st.query_row([task], |r| r.get(0)))
        .map_err(engine)?;
    let mut ins = conn
        .prepare_cached(
            "INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(engine)?;
    for e in events {
        next += 1;
        ins.execute(rusqlite::params![
            task,
            next,
            e.kind,
            e.payload.to_string(),
            t
        ])
        .map_err(engine)?;
    }
    Ok(())
}

/// Writes the completion webhook (the outbox row, ADR 0016) of task `task` when it has
/// ended and asked for one, in the caller's transaction: the end and its delivery commit
/// together. The body is rendered at delivery time from the ended row.
fn outbox_rs(conn: &rusqlite::Connection, task: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO webhook_deliveries (id, tenant_id, task_id, event, url, body, status, \
         attempts, next_attempt_at, last_error, created_at, updated_at) \
         SELECT ?1, tenant_id, id, ?2, callback_url, NULL, 'pending', 0, ?3, NULL, ?3, ?3 \
         FROM tasks WHERE id = ?4 AND callback_url IS NOT NULL \
         AND status IN ('succeeded', 'failed', 'cancelled') \
         ON CONFLICT (task_id, event) DO NOTHING",
    )
    .and_then(|mut st| {
        st.execute(rusqlite::params![
            Uuid::now_v7().to_string(),
            TASK_FINISHED,
            ts(&now()),
            task
        ])
    })
    .map_err(engine)?;
    Ok(())
}

/// The id of the tenant's employee `e` names, if it has one.
fn task_employee_rs(
    conn: &rusqlite::Connection,
    tenant: Uuid,
    e: &TaskEmployee,
) -> StoreResult<Option<String>> {
    use rusqlite::OptionalExtension;
    let (sql, key) = match e {
        TaskEmployee::Id(id) => (
            "SELECT id FROM employees WHERE id = ?2 AND tenant_id = ?1",
            id.to_string(),
        ),
        TaskEmployee::Name(name) => (
            "SELECT id FROM employees WHERE tenant_id = ?1 AND name = ?2",
            name.clone(),
        ),
    };
    conn.prepare_cached(sql)
        .map_err(engine)?
        .query_row(rusqlite::params![tenant.to_string(), key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(engine)
}

fn create_task_rs(conn: &rusqlite::Connection, t: &NewTask) -> StoreResult<(Task, bool)> {
    let id = Uuid::now_v7().to_string();
    let created = ts(&now());
    // No such employee in the tenant: nothing is inserted (an existing task with the
    // idempotency key is still returned).
    let employee = task_employee_rs(conn, t.tenant_id, &t.employee)?;
    let inserted = if let Some(employee) = employee {
        let mut st = conn
            .prepare_cached(concat!(
                "INSERT INTO tasks (id, tenant_id, employee_id, input, status, priority, run_at, \
                 max_attempts, idempotency_key, request_hash, parent_task_id, depth, session_id, \
                 callback_url, metadata, created_at, updated_at, output_schema, trace_context) \
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                 ?15, ?15, ?16, ?17) \
                 ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING RETURNING ",
                task_cols!()
            ))
            .map_err(engine)?;
        let mut rows = st
            .query(rusqlite::params![
                id,
                t.tenant_id.to_string(),
                employee,
                t.input.to_string(),
                t.priority,
                ts(&t.run_at),
                t.max_attempts,
                t.idempotency_key,
                t.request_hash,
                t.parent_task_id.map(|p| p.to_string()),
                t.depth,
                t.session_id.map(|s| s.to_string()),
                t.callback_url,
                t.metadata.to_string(),
                created,
                t.output_schema.as_ref().map(|v| v.to_string()),
                t.trace_context,
            ])
            .map_err(engine)?;
        match rows.next().map_err(engine)? {
            Some(r) => Some(task_from(r)?),
            None => None,
        }
    } else {
        None
    };
    if let Some(task) = inserted {
        append_rs(
            conn,
            &id,
            &[NewEvent::status(TaskStatus::Queued, Value::Null)],
        )?;
        return Ok((task, true));
    }
    // The idempotency key is taken (the existing task), or no such employee.
    let mut st = conn
        .prepare_cached(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE tenant_id = ?1 AND idempotency_key = ?2"
        ))
        .map_err(engine)?;
    let mut rows = st
        .query(rusqlite::params![
            t.tenant_id.to_string(),
            t.idempotency_key
        ])
        .map_err(engine)?;
    match rows.next().map_err(engine)? {
        Some(r) => Ok((task_from(r)?, false)),
        None => Err(StoreError::NotFound),
    }
}

/// A due task in its tenant's line, as the fair claim deals them.
struct InLine {
    id: String,
    priority: i64,
    run_at: String,
    /// The tenant's running top-level tasks plus this task's place in the tenant's line.
    rank: i64,
}

/// The fair claim (ADR 0008), the same rules as the PostgreSQL statement: walk the
/// tenants with queued work (one index probe each), read each one's running top-level
/// count and the head of its line (deepest delegation, then priority, then age), drop the
/// top-level tasks past `cap`, and deal the `n` lowest ranks. It runs in one write
/// transaction, so the counts cannot change underneath it.
fn claim_tasks_rs(
    conn: &rusqlite::Connection,
    owner: &str,
    n: u32,
    lease: Duration,
    cap: u32,
) -> StoreResult<Vec<Task>> {
    use rusqlite::OptionalExtension;
    let t = ts(&now());
    let mut line: Vec<InLine> = Vec::new();
    {
        let mut next_tenant = conn
            .prepare_cached(
                // Without `INDEXED BY` the planner (no statistics) picks `tasks_status`
                // and sorts the whole queue on every probe.
                "SELECT tenant_id FROM tasks INDEXED BY tasks_due_tenant \
                 WHERE status IN ('queued', 'retrying') AND tenant_id > ?1 \
                 ORDER BY tenant_id LIMIT 1",
            )
            .map_err(engine)?;
        let mut running = conn
            .prepare_cached(
                "SELECT count(*) FROM tasks WHERE tenant_id = ?1 AND status = 'running' \
                 AND depth = 0",
            )
            .map_err(engine)?;
        let mut head = conn
            .prepare_cached(
                "SELECT id, depth, priority, run_at FROM tasks INDEXED BY tasks_due_tenant \
                 WHERE tenant_id = ?1 AND status IN ('queued', 'retrying') AND run_at <= ?2 \
                 ORDER BY depth DESC, priority DESC, run_at, id LIMIT ?3",
            )
            .map_err(engine)?;
        let mut after_tenant = String::new();
        while let Some(tenant) = next_tenant
            .query_row([&after_tenant], |r| r.get::<_, String>(0))
            .optional()
            .map_err(engine)?
        {
            let running: i64 = running.query_row([&tenant], |r| r.get(0)).map_err(engine)?;
            let mut rows = head
                .query(rusqlite::params![tenant, t, i64::from(n)])
                .map_err(engine)?;
            let (mut place, mut top) = (running, running);
            while let Some(r) = rows.next().map_err(engine)? {
                place += 1;
                let depth: i64 = r.get(1).map_err(engine)?;
                if depth == 0 {
                    top += 1;
                    if cap > 0 && top > i64::from(cap) {
                        continue;
                    }
                }
                line.push(InLine {
                    id: r.get(0).map_err(engine)?,
                    priority: r.get(2).map_err(engine)?,
                    run_at: r.get(3).map_err(engine)?,
                    rank: place,
                });
            }
            after_tenant = tenant;
        }
    }
    line.sort_by(|a, b| {
        a.rank
            .cmp(&b.rank)
            .then(b.priority.cmp(&a.priority))
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    line.truncate(n as usize);
    let mut tasks = Vec::with_capacity(line.len());
    {
        let mut st = conn
            .prepare_cached(concat!(
                "UPDATE tasks SET status = 'running', attempt = attempt + 1, lease_owner = ?1, \
                 lease_expires_at = ?2, started_at = COALESCE(started_at, ?3), updated_at = ?3 \
                 WHERE id = ?4 AND status IN ('queued', 'retrying') RETURNING ",
                task_cols!()
            ))
            .map_err(engine)?;
        let expires = ts(&after(lease));
        for pick in &line {
            let mut rows = st
                .query(rusqlite::params![owner, expires, t, pick.id])
                .map_err(engine)?;
            if let Some(r) = rows.next().map_err(engine)? {
                tasks.push(task_from(r)?);
            }
        }
    }
    for task in &tasks {
        let ev = NewEvent::status(
            TaskStatus::Running,
            serde_json::json!({ "attempt": task.attempt }),
        );
        append_rs(conn, &task.id.to_string(), &[ev])?;
    }
    Ok(tasks)
}

/// Each claimed task with its employee, read in the claim's transaction (`None` when it
/// no longer exists), so a worker starts without a read of its own. The row comes as
/// JSON shaped as [`Employee`] serialises, one decoder for every backend.
fn with_employees_rs(
    conn: &rusqlite::Connection,
    tasks: Vec<Task>,
) -> StoreResult<Vec<(Task, Option<Employee>)>> {
    use rusqlite::OptionalExtension;
    let mut st = conn
        .prepare_cached(
            "SELECT json_object('id', id, 'tenant_id', tenant_id, 'name', name, 'role', role, \
             'instructions', instructions, 'model_policy', json(model_policy), \
             'allowed_tools', json(allowed_tools), 'max_steps', max_steps, \
             'token_budget', token_budget, 'temperature', temperature, \
             'redact_prompts', json(CASE WHEN redact_prompts THEN 'true' ELSE 'false' END), \
             'version', version, 'created_at', created_at, 'updated_at', updated_at, \
             'approval_tools', json(approval_tools), 'output_schema', json(output_schema), \
             'input_timeout_seconds', input_timeout_seconds) \
             FROM employees WHERE id = ?1 AND tenant_id = ?2",
        )
        .map_err(engine)?;
    let mut seen: std::collections::HashMap<(Uuid, Uuid), Option<Employee>> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let key = (task.tenant_id, task.employee_id);
        let employee = match seen.get(&key) {
            Some(e) => e.clone(),
            None => {
                let json: Option<String> = st
                    .query_row(
                        rusqlite::params![task.employee_id.to_string(), task.tenant_id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(engine)?;
                let e = json
                    .map(|j| {
                        serde_json::from_str::<Employee>(&j)
                            .map_err(|e| StoreError::Corrupt(format!("employee row: {e}")))
                    })
                    .transpose()?;
                seen.insert(key, e.clone());
                e
            }
        };
        out.push((task, employee));
    }
    Ok(out)
}

fn renew_lease_rs(
    conn: &rusqlite::Connection,
    lease: &Lease,
    duration: Duration,
) -> StoreResult<Option<bool>> {
    let mut st = conn
        .prepare_cached(
            "UPDATE tasks SET lease_expires_at = ?1 WHERE id = ?2 AND lease_owner = ?3 \
             AND attempt = ?4 AND status = 'running' RETURNING cancel_requested",
        )
        .map_err(engine)?;
    let mut rows = st
        .query(rusqlite::params![
            ts(&after(duration)),
            lease.task_id.to_string(),
            lease.owner,
            lease.attempt
        ])
        .map_err(engine)?;
    match rows.next().map_err(engine)? {
        Some(r) => Ok(Some(r.get::<_, bool>(0).map_err(engine)?)),
        None => Ok(None),
    }
}

fn record_step_rs(
    conn: &rusqlite::Connection,
    lease: &Lease,
    step: &StepUpdate,
) -> StoreResult<Option<bool>> {
    let id = lease.task_id.to_string();
    let cancel = {
        let mut st = conn
            .prepare_cached(
                "UPDATE tasks SET tokens_in = tokens_in + ?1, tokens_out = tokens_out + ?2, \
                 cost_nanos = cost_nanos + ?3, steps = steps + ?4, updated_at = ?5 \
                 WHERE id = ?6 AND lease_owner = ?7 AND attempt = ?8 AND status = 'running' \
                 RETURNING cancel_requested",
            )
            .map_err(engine)?;
        let mut rows = st
            .query(rusqlite::params![
                step.tokens_in,
                step.tokens_out,
                step.cost_nanos,
                step.steps,
                ts(&now()),
                id,
                lease.owner,
                lease.attempt
            ])
            .map_err(engine)?;
        match rows.next().map_err(engine)? {
            Some(r) => Some(r.get::<_, bool>(0).map_err(engine)?),
            None => None,
        }
    };
    if cancel.is_some() {
        append_rs(conn, &id, &step.events)?;
    }
    Ok(cancel)
}

fn finish_task_rs(conn: &rusqlite::Connection, lease: &Lease, f: &Finish) -> StoreResult<bool> {
    let t = ts(&now());
    let id = lease.task_id.to_string();
    let give_back = matches!(
        f.status,
        TaskStatus::Queued
            | TaskStatus::WaitingApproval
            | TaskStatus::WaitingInput
            | TaskStatus::WaitingSubtasks
    );
    let done = conn
        .prepare_cached(
            "UPDATE tasks SET status = CASE WHEN ?1 = 'waiting_subtasks' AND NOT EXISTS \
             (SELECT 1 FROM tasks c WHERE c.parent_task_id = tasks.id AND c.status IN \
             ('queued', 'running', 'retrying', 'waiting_approval', 'waiting_input', 'waiting_subtasks')) THEN 'queued' ELSE ?1 END, \
             result = COALESCE(?2, result), error = ?3, \
             run_at = COALESCE(?4, run_at), lease_owner = NULL, lease_expires_at = NULL, \
             attempt = CASE WHEN ?5 THEN attempt - 1 ELSE attempt END, \
             finished_at = CASE WHEN ?6 THEN ?7 ELSE finished_at END, \
             tokens_in = tokens_in + ?8, tokens_out = tokens_out + ?9, \
             cost_nanos = cost_nanos + ?10, steps = steps + ?11, updated_at = ?7 \
             WHERE id = ?12 AND lease_owner = ?13 AND attempt = ?14 AND status = 'running'",
        )
        .and_then(|mut st| {
            st.execute(rusqlite::params![
                f.status.as_str(),
                f.result.as_ref().map(Value::to_string),
                f.error,
                f.run_at.as_ref().map(ts),
                give_back,
                f.status.is_terminal(),
                t,
                f.step.tokens_in,
                f.step.tokens_out,
                f.step.cost_nanos,
                f.step.steps,
                id,
                lease.owner,
                lease.attempt
            ])
        })
        .map_err(engine)?;
    if done != 1 {
        return Ok(false);
    }
    append_rs(conn, &id, &f.step.events)?;
    if f.status.is_terminal() {
        outbox_rs(conn, &id)?;
    }
    session_turn_rs(conn, &id, &f.messages, &t)?;
    Ok(true)
}

/// Appends a finished task's session turn to its session, when the session still exists
/// and belongs to the task's tenant (a session deleted while its task ran takes no turn).
fn session_turn_rs(
    conn: &rusqlite::Connection,
    task: &str,
    msgs: &[SessionMessage],
    at: &str,
) -> StoreResult<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let mut touch = conn
        .prepare_cached(
            "UPDATE sessions SET updated_at = ?1 WHERE id = ?2 \
             AND tenant_id = (SELECT tenant_id FROM tasks WHERE id = ?3)",
        )
        .map_err(engine)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO messages (id, tenant_id, session_id, role, content, task_id, \
             created_at) SELECT ?1, tenant_id, ?2, ?3, ?4, ?5, ?6 FROM tasks WHERE id = ?5",
        )
        .map_err(engine)?;
    for m in msgs {
        let session = m.session_id.to_string();
        if touch
            .execute(rusqlite::params![at, session, task])
            .map_err(engine)?
            != 1
        {
            tracing::warn!(task_id = %task, session_id = %session, "the task's session is gone; its turn is not kept");
            return Ok(());
        }
        insert
            .execute(rusqlite::params![
                m.id.to_string(),
                session,
                m.role,
                m.content,
                task,
                ts(&m.created_at)
            ])
            .map_err(engine)?;
    }
    Ok(())
}

/// A running task whose lease ran out, with what the reaper decided for it.
struct Expired {
    id: Uuid,
    tenant_id: Uuid,
    attempt: i32,
    owner: Option<String>,
    to: TaskStatus,
    run_at: DateTime<Utc>,
    error: String,
}

/// Moves each still-expired task to `retrying` or `failed` (guarded by owner, attempt and
/// the expiry itself) with a status event.
fn rescue_rs(
    conn: &rusqlite::Connection,
    expired: &[Expired],
    at: &DateTime<Utc>,
) -> StoreResult<Vec<Rescued>> {
    let t = ts(at);
    let mut st = conn
        .prepare_cached(
            "UPDATE tasks SET status = ?1, run_at = ?2, error = ?3, lease_owner = NULL, \
             lease_expires_at = NULL, finished_at = CASE WHEN ?4 THEN ?5 ELSE NULL END, \
             updated_at = ?5 WHERE id = ?6 AND lease_owner IS ?7 AND attempt = ?8 \
             AND status = 'running' AND lease_expires_at < ?5",
        )
        .map_err(engine)?;
    let mut rescued = Vec::new();
    for e in expired {
        let id = e.id.to_string();
        let done = st
            .execute(rusqlite::params![
                e.to.as_str(),
                ts(&e.run_at),
                e.error,
                e.to.is_terminal(),
                t,
                id,
                e.owner,
                e.attempt
            ])
            .map_err(engine)?;
        if done == 1 {
            let ev = NewEvent::status(
                e.to,
                serde_json::json!({"reason": "lease_expired", "error": e.error}),
            );
            append_rs(conn, &id, &[ev])?;
            if e.to.is_terminal() {
                outbox_rs(conn, &id)?;
            }
            rescued.push(Rescued {
                task_id: e.id,
                tenant_id: e.tenant_id,
                status: e.to,
            });
        }
    }
    Ok(rescued)
}

/// The task row an `UPDATE … RETURNING` gave back, if any.
fn returned_task(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Option<Task>> {
    let mut st = conn.prepare_cached(sql).map_err(engine)?;
    let mut rows = st.query(params).map_err(engine)?;
    match rows.next().map_err(engine)? {
        Some(r) => Ok(Some(task_from(r)?)),
        None => Ok(None),
    }
}

/// Cancels a task that has not started (or waits for approval) at once; asks a running
/// one to stop. `None`: the task had already ended (or does not exist).
fn cancel_rs(
    conn: &rusqlite::Connection,
    tenant: Uuid,
    id: Uuid,
) -> StoreResult<Option<CancelOutcome>> {
    let (t, tenant, id) = (ts(&now()), tenant.to_string(), id.to_string());
    let cancelled = returned_task(
        conn,
        concat!(
            "UPDATE tasks SET status = 'cancelled', cancel_requested = 1, finished_at = ?1, \
             updated_at = ?1, error = 'cancelled on request' WHERE tenant_id = ?2 AND id = ?3 \
             AND status IN ('queued', 'retrying', 'waiting_approval', 'waiting_input', \
             'waiting_subtasks') RETURNING ",
            task_cols!()
        ),
        rusqlite::params![t, tenant, id],
    )?;
    if let Some(task) = cancelled {
        let ev = NewEvent::status(
            TaskStatus::Cancelled,
            serde_json::json!({"reason": "cancelled on request"}),
        );
        append_rs(conn, &id, &[ev])?;
        outbox_rs(conn, &id)?;
        return Ok(Some(CancelOutcome::Cancelled(task)));
    }
    let requested = returned_task(
        conn,
        concat!(
            "UPDATE tasks SET cancel_requested = 1, updated_at = ?1 WHERE tenant_id = ?2 \
             AND id = ?3 AND status = 'running' RETURNING ",
            task_cols!()
        ),
        rusqlite::params![t, tenant, id],
    )?;
    Ok(requested.map(CancelOutcome::Requested))
}

/// Requeues a task waiting in `from` (for approval, for input), with `event` (the
/// decision, the answer) and the status as events.
fn resume_waiting_rs(
    conn: &rusqlite::Connection,
    tenant: Uuid,
    id: Uuid,
    from: TaskStatus,
    event: NewEvent,
) -> StoreResult<Option<Task>> {
    let (t, id) = (ts(&now()), id.to_string());
    let Some(task) = returned_task(
        conn,
        concat!(
            "UPDATE tasks SET status = 'queued', run_at = ?1, updated_at = ?1 \
             WHERE tenant_id = ?2 AND id = ?3 AND status = ?4 RETURNING ",
            task_cols!()
        ),
        rusqlite::params![t, tenant.to_string(), id, from.as_str()],
    )?
    else {
        return Ok(None);
    };
    append_rs(
        conn,
        &id,
        &[event, NewEvent::status(TaskStatus::Queued, Value::Null)],
    )?;
    Ok(Some(task))
}

/// Requeues the parents whose sub-tasks all ended, each with a `queued` event.
fn requeue_parents_rs(conn: &rusqlite::Connection) -> StoreResult<Vec<Uuid>> {
    let t = ts(&now());
    let mut st = conn
        .prepare_cached(
            "UPDATE tasks SET status = 'queued', run_at = ?1, updated_at = ?1 \
             WHERE status = 'waiting_subtasks' AND NOT EXISTS (SELECT 1 FROM tasks c \
             WHERE c.parent_task_id = tasks.id AND c.status IN \
             ('queued', 'running', 'retrying', 'waiting_approval', 'waiting_input', 'waiting_subtasks')) RETURNING id",
        )
        .map_err(engine)?;
    let ids = st
        .query_map(rusqlite::params![t], |r| r.get::<_, String>(0))
        .map_err(engine)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(engine)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let ev = NewEvent::status(
            TaskStatus::Queued,
            serde_json::json!({"reason": "sub-tasks ended"}),
        );
        append_rs(conn, &id, &[ev])?;
        out.push(parse_id(&id)?);
    }
    Ok(out)
}

/// Fails the tasks whose wait for input is over, each with a `failed` event.
fn expire_inputs_rs(conn: &rusqlite::Connection) -> StoreResult<Vec<Rescued>> {
    let t = ts(&now());
    let mut st = conn
        .prepare_cached(
            "UPDATE tasks SET status = 'failed', finished_at = ?1, updated_at = ?1, \
             error = 'input_timeout: no answer before the deadline' \
             WHERE id IN (SELECT id FROM tasks WHERE status = 'waiting_input' AND run_at <= ?1 \
             LIMIT 100) AND status = 'waiting_input' RETURNING id, tenant_id",
        )
        .map_err(engine)?;
    let rows = st
        .query_map(rusqlite::params![t], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(engine)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(engine)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, tenant) in rows {
        let ev = NewEvent::status(
            TaskStatus::Failed,
            serde_json::json!({"reason": "input_timeout",
                               "error": "input_timeout: no answer before the deadline"}),
        );
        append_rs(conn, &id, &[ev])?;
        outbox_rs(conn, &id)?;
        out.push(Rescued {
            task_id: parse_id(&id)?,
            tenant_id: parse_id(&tenant)?,
            status: TaskStatus::Failed,
        });
    }
    Ok(out)
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn find_employee_by_name(&self, tenant: Uuid, name: &str) -> StoreResult<Employee> {
        self.employee_by_name(tenant, name).await
    }

    async fn create_task(&self, t: &NewTask) -> StoreResult<(Task, bool)> {
        let t = t.clone();
        self.hot.run(move |c| create_task_rs(c, &t)).await
    }

    async fn get_task(&self, tenant: Uuid, id: Uuid) -> StoreResult<Task> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        task_row(&row)
    }

    async fn list_tasks(
        &self,
        tenant: Uuid,
        f: &TaskFilter,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Task>> {
        // Only the filters given become conditions, so each combination is a plain
        // query the planner can serve from an index (`tasks_tenant_status_id`, ...).
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE tenant_id = "
        ));
        q.push_bind(tenant.to_string());
        if let Some(b) = before {
            q.push(" AND id < ").push_bind(b.to_string());
        }
        if let Some(st) = f.status {
            q.push(" AND status = ").push_bind(st.as_str());
        }
        if let Some(e) = f.employee_id {
            q.push(" AND employee_id = ").push_bind(e.to_string());
        }
        if let Some(t) = &f.created_after {
            q.push(" AND created_at >= ").push_bind(ts(t));
        }
        if let Some(t) = &f.created_before {
            q.push(" AND created_at < ").push_bind(ts(t));
        }
        if let Some(p) = f.parent_task_id {
            q.push(" AND parent_task_id = ").push_bind(p.to_string());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(task_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn claim_tasks(
        &self,
        owner: &str,
        n: u32,
        lease: Duration,
        tenant_max_running: u32,
    ) -> StoreResult<Vec<Task>> {
        let owner = owner.to_string();
        self.hot
            .run(move |c| claim_tasks_rs(c, &owner, n, lease, tenant_max_running))
            .await
    }

    async fn claim_tasks_with_employees(
        &self,
        owner: &str,
        n: u32,
        lease: Duration,
        tenant_max_running: u32,
    ) -> StoreResult<Vec<(Task, Option<Employee>)>> {
        let owner = owner.to_string();
        self.hot
            .run(move |c| {
                let tasks = claim_tasks_rs(c, &owner, n, lease, tenant_max_running)?;
                with_employees_rs(c, tasks)
            })
            .await
    }

    async fn renew_lease(&self, lease: &Lease, duration: Duration) -> StoreResult<Option<bool>> {
        let lease = lease.clone();
        self.hot
            .run(move |c| renew_lease_rs(c, &lease, duration))
            .await
    }

    async fn record_step(&self, lease: &Lease, step: &StepUpdate) -> StoreResult<Option<bool>> {
        let (lease, step) = (lease.clone(), step.clone());
        self.hot
            .run(move |c| record_step_rs(c, &lease, &step))
            .await
    }

    async fn finish_task(&self, lease: &Lease, f: &Finish) -> StoreResult<bool> {
        let (lease, f) = (lease.clone(), f.clone());
        self.hot.run(move |c| finish_task_rs(c, &lease, &f)).await
    }

    async fn rescue_expired(
        &self,
        backoff: &(dyn Fn(i32) -> Duration + Send + Sync),
    ) -> StoreResult<Vec<Rescued>> {
        let t = now();
        // Read on the pool; the writer's update re-checks every condition, so a task that
        // was renewed or finished in between is left alone.
        let rows = sqlx::query(
            "SELECT id, tenant_id, attempt, max_attempts, lease_owner FROM tasks \
             WHERE status = 'running' AND lease_expires_at < ? LIMIT 100",
        )
        .bind(ts(&t))
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for r in rows {
            let attempt: i32 = r.try_get("attempt")?;
            let max: i32 = r.try_get("max_attempts")?;
            let (to, run_at, error) = if attempt >= max {
                (
                    TaskStatus::Failed,
                    t,
                    format!("lease expired (worker lost) and all {max} attempts are used"),
                )
            } else {
                (
                    TaskStatus::Retrying,
                    after(backoff(attempt)),
                    "lease expired (worker lost); retrying".to_string(),
                )
            };
            expired.push(Expired {
                id: parse_id(r.try_get("id")?)?,
                tenant_id: parse_id(r.try_get("tenant_id")?)?,
                attempt,
                owner: r.try_get("lease_owner")?,
                to,
                run_at,
                error,
            });
        }
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        self.hot.run(move |c| rescue_rs(c, &expired, &t)).await
    }

    async fn cancel_task(&self, tenant: Uuid, id: Uuid) -> StoreResult<CancelOutcome> {
        match self.hot.run(move |c| cancel_rs(c, tenant, id)).await? {
            Some(outcome) => Ok(outcome),
            None => Ok(CancelOutcome::AlreadyFinished(
                self.get_task(tenant, id).await?,
            )),
        }
    }

    async fn resolve_approval(
        &self,
        tenant: Uuid,
        id: Uuid,
        decision: Value,
    ) -> StoreResult<Option<Task>> {
        self.hot
            .run(move |c| {
                resume_waiting_rs(
                    c,
                    tenant,
                    id,
                    TaskStatus::WaitingApproval,
                    NewEvent::new("approval", decision),
                )
            })
            .await
    }

    async fn answer_input(
        &self,
        tenant: Uuid,
        id: Uuid,
        input: Value,
    ) -> StoreResult<Option<Task>> {
        self.hot
            .run(move |c| {
                resume_waiting_rs(
                    c,
                    tenant,
                    id,
                    TaskStatus::WaitingInput,
                    NewEvent::new("input", input),
                )
            })
            .await
    }

    async fn expire_inputs(&self) -> StoreResult<Vec<Rescued>> {
        self.hot.run(expire_inputs_rs).await
    }

    async fn requeue_parents(&self) -> StoreResult<Vec<Uuid>> {
        self.hot.run(requeue_parents_rs).await
    }

    async fn list_events(&self, task: Uuid, after: i64, limit: u32) -> StoreResult<Vec<TaskEvent>> {
        let rows = sqlx::query(
            "SELECT task_id, seq, kind, payload, created_at FROM task_events \
             WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(task.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    async fn last_events(&self, tasks: &[Uuid], kind: &str) -> StoreResult<Vec<TaskEvent>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&tasks.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .map_err(|e| StoreError::Engine(format!("task ids: {e}")))?;
        let rows = sqlx::query(
            "SELECT e.task_id, e.seq, e.kind, e.payload, e.created_at \
             FROM json_each(?1) AS j JOIN task_events AS e ON e.task_id = j.value \
             AND e.seq = (SELECT MAX(seq) FROM task_events \
                          WHERE task_id = j.value AND kind = ?2)",
        )
        .bind(ids)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    async fn prune_finished_tasks(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Pruned> {
        let mut w = self.w().await?;
        // The write lock first: the batch is read and deleted under it, so another process
        // on the same file cannot slip a write in between (which would fail the upgrade).
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        // Oldest first along the primary key (ids are time-ordered UUIDv7 text, which sorts
        // as the bytes do); the unary `+` keeps the planner off the status index, which
        // would visit every recent ended task.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t WHERE t.id < ? \
             AND +t.status IN ('succeeded', 'failed', 'cancelled') AND t.finished_at < ? \
             AND NOT EXISTS (SELECT 1 FROM tasks p WHERE p.id = t.parent_task_id \
             AND p.status NOT IN ('succeeded', 'failed', 'cancelled')) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.task_id = t.id \
             AND d.status = 'pending') \
             ORDER BY t.id LIMIT ?",
        )
        .bind(uuid_v7_floor(before).to_string())
        .bind(ts(&before))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(Pruned::default());
        }
        let ids = serde_json::to_string(&ids)
            .map_err(|e| StoreError::Corrupt(format!("task ids: {e}")))?;
        // The step log and the webhooks first, then the tasks they belong to.
        let mut removed = [0u64; 3];
        for (n, sql) in removed.iter_mut().zip([
            "DELETE FROM task_events WHERE task_id IN (SELECT value FROM json_each(?))",
            "DELETE FROM webhook_deliveries WHERE task_id IN (SELECT value FROM json_each(?))",
            "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
        ]) {
            *n = sqlx::query(sql)
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        let [events, webhook_deliveries, tasks] = removed;
        tx.commit().await?;
        Ok(Pruned {
            tasks,
            events,
            webhook_deliveries,
        })
    }

    async fn count_tasks_by_status(&self) -> StoreResult<Vec<(TaskStatus, i64)>> {
        // Live statuses only: the status index keeps this small however many tasks ended.
        let rows = sqlx::query(concat!(
            "SELECT status, COUNT(*) AS n FROM tasks WHERE status IN ",
            crate::store::tasks::live_statuses_sql!(),
            " GROUP BY status"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((status(r.try_get("status")?)?, r.try_get("n")?)))
            .collect()
    }

    async fn count_tenants_at_cap(&self, cap: u32) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT tenant_id FROM tasks \
             WHERE status = 'running' AND depth = 0 GROUP BY tenant_id \
             HAVING count(*) >= ?) r WHERE EXISTS (SELECT 1 FROM tasks q \
             WHERE q.tenant_id = r.tenant_id AND q.status IN ('queued', 'retrying') \
             AND q.depth = 0 AND q.run_at <= ?)",
        )
        .bind(i64::from(cap))
        .bind(ts(&now()))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn count_tenant_tasks(
        &self,
        tenant: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(TaskStatus, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT status, SUM(CASE WHEN created_at >= ? THEN 1 ELSE 0 END) AS recent, \
             COUNT(*) AS n FROM tasks WHERE tenant_id = ? GROUP BY status",
        )
        .bind(ts(&since))
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    status(r.try_get("status")?)?,
                    r.try_get("recent")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    async fn count_tenant_tasks_in(&self, tenant: Uuid, status: TaskStatus) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant_id = ? AND status = ?")
                .bind(tenant.to_string())
                .bind(status.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn ensure_session(&self, tenant: Uuid, id: Uuid, employee: Uuid) -> StoreResult<Session> {
        let t = ts(&now());
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, employee_id, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(employee.to_string())
        .bind(&t)
        .bind(&t)
        .execute(&mut *self.w().await?)
        .await?;
        let row = sqlx::query(
            "SELECT id, tenant_id, employee_id, created_at, updated_at FROM sessions \
             WHERE id = ? AND tenant_id = ? AND employee_id = ?",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(employee.to_string())
        .fetch_optional(&mut *self.w().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(Session {
            id: parse_id(row.try_get("id")?)?,
            tenant_id: parse_id(row.try_get("tenant_id")?)?,
            employee_id: parse_id(row.try_get("employee_id")?)?,
            created_at: parse_ts(row.try_get("created_at")?)?,
            updated_at: parse_ts(row.try_get("updated_at")?)?,
        })
    }

    async fn list_messages(
        &self,
        tenant: Uuid,
        session: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<SessionMessage>> {
        let rows = sqlx::query(
            "SELECT m.id, m.session_id, m.role, m.content, m.task_id, m.created_at \
             FROM messages m WHERE m.tenant_id = ? AND m.session_id = ? \
             ORDER BY m.id DESC LIMIT ?",
        )
        .bind(tenant.to_string())
        .bind(session.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(message_row)
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn append_messages(&self, tenant: Uuid, msgs: &[SessionMessage]) -> StoreResult<()> {
        let mut w = self.w().await?;
        let mut tx = w.begin().await?;
        for m in msgs {
            let done =
                sqlx::query("UPDATE sessions SET updated_at = ? WHERE id = ? AND tenant_id = ?")
                    .bind(ts(&now()))
                    .bind(m.session_id.to_string())
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(
                "INSERT INTO messages (id, tenant_id, session_id, role, content, task_id, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(m.id.to_string())
            .bind(tenant.to_string())
            .bind(m.session_id.to_string())
            .bind(&m.role)
            .bind(&m.content)
            .bind(m.task_id.map(|t| t.to_string()))
            .bind(ts(&m.created_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn memory_get(
        &self,
        tenant: Uuid,
        employee: Uuid,
        key: &str,
    ) -> StoreResult<Option<Value>> {
        let v: Option<String> = sqlx::query_scalar(
            "SELECT value FROM employee_memory WHERE tenant_id = ? AND employee_id = ? AND key = ?",
        )
        .bind(tenant.to_string())
        .bind(employee.to_string())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        v.map(|s| json(&s)).transpose()
    }

    async fn memory_set(
        &self,
        tenant: Uuid,
        employee: Uuid,
        key: &str,
        value: &Value,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO employee_memory (tenant_id, employee_id, key, value, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, employee_id, key) \
             DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(employee.to_string())
        .bind(key)
        .bind(value.to_string())
        .bind(ts(&now()))
        .execute(&mut *self.w().await?)
        .await?;
        Ok(())
    }

    async fn create_schedule(
        &self,
        tenant: Uuid,
        f: &ScheduleFields,
        next_fire_at: DateTime<Utc>,
    ) -> StoreResult<Schedule> {
        let t = ts(&now());
        let row = sqlx::query(concat!(
            "INSERT INTO schedules (",
            schedule_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) RETURNING ",
            schedule_cols!()
        ))
        .bind(Uuid::now_v7().to_string())
        .bind(tenant.to_string())
        .bind(f.employee_id.to_string())
        .bind(&f.cron)
        .bind(&f.timezone)
        .bind(f.input.to_string())
        .bind(f.priority)
        .bind(f.enabled)
        .bind(ts(&next_fire_at))
        .bind(&t)
        .bind(&t)
        .fetch_one(&mut *self.w().await?)
        .await?;
        schedule_row(&row)
    }

    async fn get_schedule(&self, tenant: Uuid, id: Uuid) -> StoreResult<Schedule> {
        let row = sqlx::query(concat!(
            "SELECT ",
            schedule_cols!(),
            " FROM schedules WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        schedule_row(&row)
    }

    async fn list_schedules(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Schedule>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            schedule_cols!(),
            " FROM schedules WHERE tenant_id = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(schedule_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn update_schedule(
        &self,
        tenant: Uuid,
        id: Uuid,
        f: &ScheduleFields,
        next_fire_at: DateTime<Utc>,
    ) -> StoreResult<Schedule> {
        let row = sqlx::query(concat!(
            "UPDATE schedules SET employee_id = ?, cron = ?, timezone = ?, input = ?, \
             priority = ?, enabled = ?, next_fire_at = ?, updated_at = ? \
             WHERE tenant_id = ? AND id = ? RETURNING ",
            schedule_cols!()
        ))
        .bind(f.employee_id.to_string())
        .bind(&f.cron)
        .bind(&f.timezone)
        .bind(f.input.to_string())
        .bind(f.priority)
        .bind(f.enabled)
        .bind(ts(&next_fire_at))
        .bind(ts(&now()))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *self.w().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        schedule_row(&row)
    }

    async fn delete_schedule(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM schedules WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut *self.w().await?)
            .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn due_schedules(
        &self,
        at: DateTime<Utc>,
        per_tenant: u32,
        limit: u32,
    ) -> StoreResult<Vec<Schedule>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            schedule_cols!(),
            " FROM (SELECT ",
            schedule_cols!(),
            ", ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY next_fire_at, id) AS rn \
             FROM schedules WHERE enabled = 1 AND next_fire_at <= ?) due \
             WHERE rn <= ? ORDER BY rn, next_fire_at, id LIMIT ?"
        ))
        .bind(ts(&at))
        .bind(i64::from(per_tenant))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule_row).collect()
    }

    async fn count_schedules(&self, tenant: Uuid) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant_id = ?")
            .bind(tenant.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn claim_fire(
        &self,
        id: Uuid,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let t = ts(&now());
        let done = sqlx::query(
            "UPDATE schedules SET next_fire_at = ?, last_fired_at = ?, updated_at = ? \
             WHERE id = ? AND next_fire_at = ? AND enabled = 1",
        )
        .bind(ts(&next))
        .bind(&t)
        .bind(&t)
        .bind(id.to_string())
        .bind(ts(&expected))
        .execute(&mut *self.w().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
