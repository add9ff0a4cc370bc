//! [`TaskStore`] on PostgreSQL. The claim is one statement with `FOR UPDATE SKIP LOCKED`,
//! so concurrent claimers take disjoint rows without waiting on each other. Event appends
//! always follow a write to the task row in the same transaction: the row lock
//! serialises appends per task, so `seq` has no gaps and no duplicates.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::PgStore;
use super::batch::BatchOp;
use crate::store::*;
use sqlx::PgPool;

/// The channel `LISTEN`ed to by workers; the payload is unused (a wake-up only).
pub const TASKS_CHANNEL: &str = "de_tasks";
/// The channel every append to `task_events` notifies (a trigger, migration 0018) with
/// the comma-separated ids of the tasks appended to; `LISTEN`ed to for SSE followers.
pub const EVENTS_CHANNEL: &str = "de_events";

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

/// The advisory lock capped claims take turns on (see `claim_tasks_with_employees`).
const CLAIM_LOCK: i64 = 0x6465_5f63_6c61_696d; // "de_claim"

/// The fair claim (ADR 0008), one statement: `$1` owner, `$2` lease expiry, `$3` now,
/// `$4` batch size, `$5` `TENANT_MAX_RUNNING` (0 = no cap).
///
/// - `t`: the tenants with queued work, by a skip scan of `tasks_due_tenant` (one index
///   probe per tenant, however long its queue).
/// - `r`: each one's running top-level tasks (`tasks_running_tenant`), counted once per
///   tenant (`MATERIALIZED`: inlined, the count ran once per candidate row).
/// - `q`: each one's next `$4` due tasks (deepest delegation, then priority, then age),
///   locked with `SKIP LOCKED` so concurrent claimers take disjoint rows.
/// - `ranked`: a task's rank is its tenant's running count plus its place in that
///   tenant's line, so the batch is dealt round-robin, tenants with fewer running tasks
///   first; `top` counts the tenant's top-level tasks up to this one, for the cap.
/// - `pick`: the `$4` lowest ranks (then priority, age) within the cap. Sub-tasks
///   (`depth > 0`) are not capped: their parent is running and waits on them.
/// - then the claim itself, a `running` event per task, and each task's employee (read
///   in the same snapshot; NULL when it no longer exists).
const CLAIM_SQL: &str = concat!(
    "WITH RECURSIVE t AS ( \
     (SELECT tenant_id FROM tasks WHERE status IN ('queued', 'retrying') \
     ORDER BY tenant_id LIMIT 1) \
     UNION ALL SELECT (SELECT x.tenant_id FROM tasks x \
     WHERE x.status IN ('queued', 'retrying') AND x.tenant_id > t.tenant_id \
     ORDER BY x.tenant_id LIMIT 1) FROM t WHERE t.tenant_id IS NOT NULL), \
     r AS MATERIALIZED (SELECT t.tenant_id, (SELECT count(*) FROM tasks x \
     WHERE x.tenant_id = t.tenant_id \
     AND x.status = 'running' AND x.depth = 0) AS running FROM t \
     WHERE t.tenant_id IS NOT NULL), \
     q AS (SELECT r.tenant_id, r.running, d.id, d.depth, d.priority, d.run_at FROM r \
     CROSS JOIN LATERAL (SELECT id, depth, priority, run_at FROM tasks \
     WHERE tenant_id = r.tenant_id AND status IN ('queued', 'retrying') AND run_at <= $3 \
     ORDER BY depth DESC, priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) d), \
     ranked AS (SELECT id, depth, priority, run_at, running + row_number() OVER w AS rank, \
     running + count(*) FILTER (WHERE depth = 0) OVER w AS top FROM q \
     WINDOW w AS (PARTITION BY tenant_id ORDER BY depth DESC, priority DESC, run_at, id)), \
     pick AS (SELECT id, rank FROM ranked WHERE $5 = 0 OR depth > 0 OR top <= $5 \
     ORDER BY rank, priority DESC, run_at, id LIMIT $4), \
     c AS (UPDATE tasks SET status = 'running', attempt = attempt + 1, \
     lease_owner = $1, lease_expires_at = $2, started_at = COALESCE(started_at, $3), \
     updated_at = $3 WHERE id IN (SELECT id FROM pick) \
     AND status IN ('queued', 'retrying') RETURNING ",
    task_cols!(),
    "), ev AS (INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
     SELECT c.id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM task_events \
     WHERE task_id = c.id), 'status', \
     jsonb_build_object('status', 'running', 'attempt', c.attempt), $3 FROM c) \
     SELECT c.*, (SELECT to_jsonb(e) FROM employees e WHERE e.id = c.employee_id \
     AND e.tenant_id = c.tenant_id) AS employee, \
     (SELECT p.rank FROM pick p WHERE p.id = c.id) AS claim_rank FROM c"
);

fn status(s: &str) -> StoreResult<TaskStatus> {
    TaskStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("task status {s:?}")))
}

fn task_row(r: &PgRow) -> StoreResult<Task> {
    let Json(input): Json<Value> = r.try_get("input")?;
    let Json(metadata): Json<Value> = r.try_get("metadata")?;
    let result: Option<Json<Value>> = r.try_get("result")?;
    Ok(Task {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        employee_id: r.try_get("employee_id")?,
        input,
        status: status(r.try_get("status")?)?,
        priority: r.try_get("priority")?,
        run_at: r.try_get("run_at")?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        idempotency_key: r.try_get("idempotency_key")?,
        request_hash: r.try_get("request_hash")?,
        parent_task_id: r.try_get("parent_task_id")?,
        depth: r.try_get("depth")?,
        session_id: r.try_get("session_id")?,
        callback_url: r.try_get("callback_url")?,
        metadata,
        output_schema: r
            .try_get::<Option<Json<Value>>, _>("output_schema")?
            .map(|Json(v)| v),
        trace_context: r.try_get("trace_context")?,
        result: result.map(|Json(v)| v),
        error: r.try_get("error")?,
        tokens_in: r.try_get("tokens_in")?,
        tokens_out: r.try_get("tokens_out")?,
        cost_nanos: r.try_get("cost_nanos")?,
        steps: r.try_get("steps")?,
        cancel_requested: r.try_get("cancel_requested")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn event_row(r: &PgRow) -> StoreResult<TaskEvent> {
    let Json(payload): Json<Value> = r.try_get("payload")?;
    Ok(TaskEvent {
        task_id: r.try_get("task_id")?,
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        payload,
        created_at: r.try_get("created_at")?,
    })
}

fn schedule_row(r: &PgRow) -> StoreResult<Schedule> {
    let Json(input): Json<Value> = r.try_get("input")?;
    Ok(Schedule {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        fields: ScheduleFields {
            employee_id: r.try_get("employee_id")?,
            cron: r.try_get("cron")?,
            timezone: r.try_get("timezone")?,
            input,
            priority: r.try_get("priority")?,
            enabled: r.try_get("enabled")?,
        },
        next_fire_at: r.try_get("next_fire_at")?,
        last_fired_at: r.try_get("last_fired_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn message_row(r: &PgRow) -> StoreResult<SessionMessage> {
    Ok(SessionMessage {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        role: r.try_get("role")?,
        content: r.try_get("content")?,
        task_id: r.try_get("task_id")?,
        created_at: r.try_get("created_at")?,
    })
}

fn after(d: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Appends events after the last `seq` of the task (the caller holds the row lock).
async fn append(
    tx: &mut Transaction<'_, Postgres>,
    task: Uuid,
    events: &[NewEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let payloads: Vec<Json<&Value>> = events.iter().map(|e| Json(&e.payload)).collect();
    sqlx::query(
        "INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
         SELECT $1, (SELECT COALESCE(MAX(seq), 0) FROM task_events WHERE task_id = $1) + e.n, \
         e.kind, e.payload, $4 \
         FROM UNNEST($2::text[], $3::jsonb[]) WITH ORDINALITY AS e(kind, payload, n)",
    )
    .bind(task)
    .bind(&kinds)
    .bind(&payloads)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the completion webhook (the outbox row, ADR 0016) of each of `tasks` that has
/// ended and asked for one, in the caller's transaction: the end and its delivery commit
/// together. The body is rendered at delivery time from the ended row.
async fn outbox(tx: &mut Transaction<'_, Postgres>, tasks: &[Uuid]) -> StoreResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, tenant_id, task_id, event, url, body, status, \
         attempts, next_attempt_at, last_error, created_at, updated_at) \
         SELECT j.did, t.tenant_id, t.id, $3, t.callback_url, NULL, 'pending', 0, $4, NULL, \
         $4, $4 FROM UNNEST($1::uuid[], $2::uuid[]) AS j(task, did) \
         JOIN tasks t ON t.id = j.task WHERE t.callback_url IS NOT NULL \
         AND t.status IN ('succeeded', 'failed', 'cancelled') \
         ON CONFLICT (task_id, event) DO NOTHING",
    )
    .bind(tasks)
    .bind(&ids)
    .bind(TASK_FINISHED)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Kinds and payloads of events as two arrays for `UNNEST`.
fn event_arrays(events: &[NewEvent]) -> (Vec<&'static str>, Vec<Json<&Value>>) {
    (
        events.iter().map(|e| e.kind).collect(),
        events.iter().map(|e| Json(&e.payload)).collect(),
    )
}

/// A CTE appending events `$9` (kinds) / `$10` (payloads) to the task updated by CTE `u`
/// (nothing when the fenced update matched no row). The `seq` base is read in the
/// statement's snapshot: safe because only the lease holder appends to a running task,
/// one write at a time, and `u`'s fence fails for anyone else.
macro_rules! append_after_u {
    () => {
        "ev AS (INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
         SELECT u.id, (SELECT COALESCE(MAX(seq), 0) FROM task_events WHERE task_id = u.id) \
         + e.n, e.kind, e.payload, $5 \
         FROM u, UNNEST($9::text[], $10::jsonb[]) WITH ORDINALITY AS e(kind, payload, n))"
    };
}

#[async_trait]
impl TaskStore for PgStore {
    async fn find_employee_by_name(&self, tenant: Uuid, name: &str) -> StoreResult<Employee> {
        self.employee_by_name(tenant, name).await
    }

    async fn create_task(&self, t: &NewTask) -> StoreResult<(Task, bool)> {
        // Group-committed with the submits running alongside (ADR 0018): the row, its
        // `queued` event and the wake-up of the workers in one statement.
        if let Some(task) = self.submits.submit(t.clone()).await? {
            return Ok((task, true));
        }
        // Not inserted: its idempotency key is taken (the existing task), or the tenant
        // has no such employee.
        if t.idempotency_key.is_none() {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(t.tenant_id)
        .bind(&t.idempotency_key)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok((task_row(&row)?, false))
    }

    async fn get_task(&self, tenant: Uuid, id: Uuid) -> StoreResult<Task> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
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
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE tenant_id = "
        ));
        q.push_bind(tenant);
        if let Some(b) = before {
            q.push(" AND id < ").push_bind(b);
        }
        if let Some(st) = f.status {
            q.push(" AND status = ").push_bind(st.as_str());
        }
        if let Some(e) = f.employee_id {
            q.push(" AND employee_id = ").push_bind(e);
        }
        if let Some(t) = f.created_after {
            q.push(" AND created_at >= ").push_bind(t);
        }
        if let Some(t) = f.created_before {
            q.push(" AND created_at < ").push_bind(t);
        }
        if let Some(p) = f.parent_task_id {
            q.push(" AND parent_task_id = ").push_bind(p);
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
        Ok(self
            .claim_tasks_with_employees(owner, n, lease, tenant_max_running)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    async fn claim_tasks_with_employees(
        &self,
        owner: &str,
        n: u32,
        lease: Duration,
        tenant_max_running: u32,
    ) -> StoreResult<Vec<(Task, Option<Employee>)>> {
        let claim = sqlx::query(CLAIM_SQL)
            .bind(owner)
            .bind(after(lease))
            .bind(now())
            .bind(i64::from(n))
            .bind(i64::from(tenant_max_running));
        let rows = if tenant_max_running == 0 {
            claim.fetch_all(&self.hot).await?
        } else {
            // The cap counts running tasks in the claim's snapshot. Claimers that ran
            // concurrently could each see room for the same slot, so capped claims take
            // turns: the lock is taken before the claim statement, whose snapshot then
            // includes everything the previous holder claimed.
            let mut tx = self.hot.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK)
                .execute(&mut *tx)
                .await?;
            let rows = claim.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        };
        let mut claimed = rows
            .iter()
            .map(|r| {
                let employee: Option<Json<Employee>> = r.try_get("employee")?;
                let rank: i64 = r.try_get("claim_rank")?;
                Ok((rank, task_row(r)?, employee.map(|Json(e)| e)))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by(|(ra, a, _), (rb, b, _)| {
            ra.cmp(rb)
                .then(b.priority.cmp(&a.priority))
                .then(a.run_at.cmp(&b.run_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(claimed.into_iter().map(|(_, t, e)| (t, e)).collect())
    }

    async fn renew_lease(&self, lease: &Lease, duration: Duration) -> StoreResult<Option<bool>> {
        Ok(sqlx::query_scalar(
            "UPDATE tasks SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 \
             AND attempt = $4 AND status = 'running' RETURNING cancel_requested",
        )
        .bind(after(duration))
        .bind(lease.task_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn record_step(&self, lease: &Lease, step: &StepUpdate) -> StoreResult<Option<bool>> {
        let (kinds, payloads) = event_arrays(&step.events);
        Ok(sqlx::query_scalar(concat!(
            "WITH u AS (UPDATE tasks SET tokens_in = tokens_in + $1, \
             tokens_out = tokens_out + $2, cost_nanos = cost_nanos + $3, steps = steps + $4, \
             updated_at = $5 \
             WHERE id = $6 AND lease_owner = $7 AND attempt = $8 AND status = 'running' \
             RETURNING id, cancel_requested), ",
            append_after_u!(),
            " SELECT cancel_requested FROM u"
        ))
        .bind(step.tokens_in)
        .bind(step.tokens_out)
        .bind(step.cost_nanos)
        .bind(step.steps)
        .bind(now())
        .bind(lease.task_id)
        .bind(&lease.owner)
        .bind(lease.attempt)
        .bind(&kinds)
        .bind(&payloads)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn finish_task(&self, lease: &Lease, f: &Finish) -> StoreResult<bool> {
        // Group-committed with the ends of other tasks (ADR 0018).
        self.finishes
            .submit(FinishItem {
                lease: lease.clone(),
                finish: f.clone(),
            })
            .await
    }

    async fn rescue_expired(
        &self,
        backoff: &(dyn Fn(i32) -> Duration + Send + Sync),
    ) -> StoreResult<Vec<Rescued>> {
        let t = now();
        let rows = sqlx::query(
            "SELECT id, tenant_id, attempt, max_attempts, lease_owner FROM tasks \
             WHERE status = 'running' AND lease_expires_at < $1 LIMIT 100",
        )
        .bind(t)
        .fetch_all(&self.pool)
        .await?;
        let mut rescued = Vec::new();
        for r in rows {
            let id: Uuid = r.try_get("id")?;
            let tenant_id: Uuid = r.try_get("tenant_id")?;
            let attempt: i32 = r.try_get("attempt")?;
            let max: i32 = r.try_get("max_attempts")?;
            let owner: Option<String> = r.try_get("lease_owner")?;
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
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE tasks SET status = $1, run_at = $2, error = $3, lease_owner = NULL, \
                 lease_expires_at = NULL, finished_at = CASE WHEN $4 THEN $5 ELSE NULL END, \
                 updated_at = $5 WHERE id = $6 AND lease_owner IS NOT DISTINCT FROM $7 \
                 AND attempt = $8 AND status = 'running' AND lease_expires_at < $5",
            )
            .bind(to.as_str())
            .bind(run_at)
            .bind(&error)
            .bind(to.is_terminal())
            .bind(t)
            .bind(id)
            .bind(&owner)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let ev = NewEvent::status(
                    to,
                    serde_json::json!({"reason": "lease_expired", "error": error}),
                );
                append(&mut tx, id, &[ev]).await?;
                if to.is_terminal() {
                    outbox(&mut tx, &[id]).await?;
                }
                rescued.push(Rescued {
                    task_id: id,
                    tenant_id,
                    status: to,
                });
            }
            tx.commit().await?;
        }
        Ok(rescued)
    }

    async fn cancel_task(&self, tenant: Uuid, id: Uuid) -> StoreResult<CancelOutcome> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET status = 'cancelled', cancel_requested = true, finished_at = $1, \
             updated_at = $1, error = 'cancelled on request' WHERE tenant_id = $2 AND id = $3 \
             AND status IN ('queued', 'retrying', 'waiting_approval', 'waiting_input', \
             'waiting_subtasks') RETURNING ",
            task_cols!()
        ))
        .bind(t)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let ev = NewEvent::status(
                TaskStatus::Cancelled,
                serde_json::json!({"reason": "cancelled on request"}),
            );
            append(&mut tx, id, &[ev]).await?;
            outbox(&mut tx, &[id]).await?;
            tx.commit().await?;
            return Ok(CancelOutcome::Cancelled(task_row(&row)?));
        }
        let row = sqlx::query(concat!(
            "UPDATE tasks SET cancel_requested = true, updated_at = $1 WHERE tenant_id = $2 \
             AND id = $3 AND status = 'running' RETURNING ",
            task_cols!()
        ))
        .bind(t)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(CancelOutcome::Requested(task_row(&row)?)),
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
        self.resume_waiting(
            tenant,
            id,
            TaskStatus::WaitingApproval,
            NewEvent::new("approval", decision),
        )
        .await
    }

    async fn answer_input(
        &self,
        tenant: Uuid,
        id: Uuid,
        input: Value,
    ) -> StoreResult<Option<Task>> {
        self.resume_waiting(
            tenant,
            id,
            TaskStatus::WaitingInput,
            NewEvent::new("input", input),
        )
        .await
    }

    async fn requeue_parents(&self) -> StoreResult<Vec<Uuid>> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE tasks p SET status = 'queued', run_at = $1, updated_at = $1 \
             WHERE p.status = 'waiting_subtasks' AND NOT EXISTS (SELECT 1 FROM tasks c \
             WHERE c.parent_task_id = p.id AND c.status IN \
             ('queued', 'running', 'retrying', 'waiting_approval', 'waiting_input', 'waiting_subtasks')) RETURNING p.id",
        )
        .bind(t)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            let ev = NewEvent::status(
                TaskStatus::Queued,
                serde_json::json!({"reason": "sub-tasks ended"}),
            );
            append(&mut tx, *id, &[ev]).await?;
        }
        if !ids.is_empty() {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(TASKS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn expire_inputs(&self) -> StoreResult<Vec<Rescued>> {
        const ERROR: &str = "input_timeout: no answer before the deadline";
        let t = now();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE tasks SET status = 'failed', finished_at = $1, updated_at = $1, error = $2 \
             WHERE id IN (SELECT id FROM tasks WHERE status = 'waiting_input' AND run_at <= $1 \
             LIMIT 100 FOR UPDATE SKIP LOCKED) AND status = 'waiting_input' \
             RETURNING id, tenant_id",
        )
        .bind(t)
        .bind(ERROR)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: Uuid = r.try_get("id")?;
            let ev = NewEvent::status(
                TaskStatus::Failed,
                serde_json::json!({"reason": "input_timeout", "error": ERROR}),
            );
            append(&mut tx, id, &[ev]).await?;
            out.push(Rescued {
                task_id: id,
                tenant_id: r.try_get("tenant_id")?,
                status: TaskStatus::Failed,
            });
        }
        let ended: Vec<Uuid> = out.iter().map(|r| r.task_id).collect();
        outbox(&mut tx, &ended).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn follow_task(&self, task: Uuid, until: DateTime<Utc>) -> StoreResult<Option<Uuid>> {
        let id = Uuid::now_v7();
        sqlx::query(
            "WITH gone AS (DELETE FROM task_followers WHERE expires_at < $4) \
             INSERT INTO task_followers (id, task_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(task)
        .bind(until)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(Some(id))
    }

    async fn unfollow_task(&self, id: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM task_followers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_events(&self, task: Uuid, after: i64, limit: u32) -> StoreResult<Vec<TaskEvent>> {
        let rows = sqlx::query(
            "SELECT task_id, seq, kind, payload, created_at FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(task)
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
        let rows = sqlx::query(
            "SELECT e.task_id, e.seq, e.kind, e.payload, e.created_at \
             FROM unnest($1::uuid[]) AS j(id) CROSS JOIN LATERAL \
             (SELECT * FROM task_events WHERE task_id = j.id AND kind = $2 \
              ORDER BY seq DESC LIMIT 1) AS e",
        )
        .bind(tasks)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    async fn prune_finished_tasks(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Pruned> {
        let mut tx = self.pool.begin().await?;
        // Oldest first along the primary key (ids are time-ordered); rows another replica
        // is pruning right now are skipped, not waited for.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t WHERE t.id < $1 \
             AND t.status IN ('succeeded', 'failed', 'cancelled') AND t.finished_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM tasks p WHERE p.id = t.parent_task_id \
             AND p.status NOT IN ('succeeded', 'failed', 'cancelled')) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.task_id = t.id \
             AND d.status = 'pending') \
             ORDER BY t.id LIMIT $3 FOR UPDATE SKIP LOCKED",
        )
        .bind(uuid_v7_floor(before))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(Pruned::default());
        }
        let events = sqlx::query("DELETE FROM task_events WHERE task_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let webhook_deliveries =
            sqlx::query("DELETE FROM webhook_deliveries WHERE task_id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let tasks = sqlx::query("DELETE FROM tasks WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
             HAVING count(*) >= $1) r WHERE EXISTS (SELECT 1 FROM tasks q \
             WHERE q.tenant_id = r.tenant_id AND q.status IN ('queued', 'retrying') \
             AND q.depth = 0 AND q.run_at <= $2)",
        )
        .bind(i64::from(cap))
        .bind(now())
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
            "SELECT status, COUNT(*) FILTER (WHERE created_at >= $2) AS recent, \
             COUNT(*) AS n FROM tasks WHERE tenant_id = $1 GROUP BY status",
        )
        .bind(tenant)
        .bind(since)
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
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE tenant_id = $1 AND status = $2")
                .bind(tenant)
                .bind(status.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn ensure_session(&self, tenant: Uuid, id: Uuid, employee: Uuid) -> StoreResult<Session> {
        let t = now();
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, employee_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(id)
        .bind(tenant)
        .bind(employee)
        .bind(t)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT id, tenant_id, employee_id, created_at, updated_at FROM sessions \
             WHERE id = $1 AND tenant_id = $2 AND employee_id = $3",
        )
        .bind(id)
        .bind(tenant)
        .bind(employee)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(Session {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            employee_id: row.try_get("employee_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
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
             FROM messages m WHERE m.tenant_id = $1 AND m.session_id = $2 \
             ORDER BY m.id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(session)
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
        let mut tx = self.pool.begin().await?;
        for m in msgs {
            let done =
                sqlx::query("UPDATE sessions SET updated_at = $1 WHERE id = $2 AND tenant_id = $3")
                    .bind(now())
                    .bind(m.session_id)
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(
                "INSERT INTO messages (id, tenant_id, session_id, role, content, task_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(m.id)
            .bind(tenant)
            .bind(m.session_id)
            .bind(&m.role)
            .bind(&m.content)
            .bind(m.task_id)
            .bind(m.created_at)
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
        let v: Option<Json<Value>> = sqlx::query_scalar(
            "SELECT value FROM employee_memory WHERE tenant_id = $1 AND employee_id = $2 \
             AND key = $3",
        )
        .bind(tenant)
        .bind(employee)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(v.map(|Json(v)| v))
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
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, employee_id, key) \
             DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(employee)
        .bind(key)
        .bind(Json(value))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_schedule(
        &self,
        tenant: Uuid,
        f: &ScheduleFields,
        next_fire_at: DateTime<Utc>,
    ) -> StoreResult<Schedule> {
        let row = sqlx::query(concat!(
            "INSERT INTO schedules (",
            schedule_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $10) RETURNING ",
            schedule_cols!()
        ))
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(f.employee_id)
        .bind(&f.cron)
        .bind(&f.timezone)
        .bind(Json(&f.input))
        .bind(f.priority)
        .bind(f.enabled)
        .bind(next_fire_at)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        schedule_row(&row)
    }

    async fn get_schedule(&self, tenant: Uuid, id: Uuid) -> StoreResult<Schedule> {
        let row = sqlx::query(concat!(
            "SELECT ",
            schedule_cols!(),
            " FROM schedules WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
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
            " FROM schedules WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(before)
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
            "UPDATE schedules SET employee_id = $1, cron = $2, timezone = $3, input = $4, \
             priority = $5, enabled = $6, next_fire_at = $7, updated_at = $8 \
             WHERE tenant_id = $9 AND id = $10 RETURNING ",
            schedule_cols!()
        ))
        .bind(f.employee_id)
        .bind(&f.cron)
        .bind(&f.timezone)
        .bind(Json(&f.input))
        .bind(f.priority)
        .bind(f.enabled)
        .bind(next_fire_at)
        .bind(now())
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        schedule_row(&row)
    }

    async fn delete_schedule(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
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
             FROM schedules WHERE enabled AND next_fire_at <= $1) due \
             WHERE rn <= $2 ORDER BY rn, next_fire_at, id LIMIT $3"
        ))
        .bind(at)
        .bind(i64::from(per_tenant))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule_row).collect()
    }

    async fn count_schedules(&self, tenant: Uuid) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant_id = $1")
            .bind(tenant)
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
        let done = sqlx::query(
            "UPDATE schedules SET next_fire_at = $1, last_fired_at = $2, updated_at = $2 \
             WHERE id = $3 AND next_fire_at = $4 AND enabled",
        )
        .bind(next)
        .bind(now())
        .bind(id)
        .bind(expected)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl PgStore {
    /// Requeues a task waiting in `from` (for approval, for input), with `event` (the
    /// decision, the answer) and the status as events, and wakes the claimers.
    async fn resume_waiting(
        &self,
        tenant: Uuid,
        id: Uuid,
        from: TaskStatus,
        event: NewEvent,
    ) -> StoreResult<Option<Task>> {
        let t = now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE tasks SET status = 'queued', run_at = $1, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status = $4 RETURNING ",
            task_cols!()
        ))
        .bind(t)
        .bind(tenant)
        .bind(id)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        append(
            &mut tx,
            id,
            &[event, NewEvent::status(TaskStatus::Queued, Value::Null)],
        )
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(TASKS_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(task_row(&row)?))
    }
}

/// `create_task`, group-committed (ADR 0018): the rows of many submits, their `queued`
/// events and one wake-up of the workers in one statement. Each row's employee is found
/// by the statement among its tenant's (by id or by name); a submit whose tenant has no
/// such employee inserts nothing.
pub(super) struct SubmitBatch;

#[async_trait]
impl BatchOp for SubmitBatch {
    const KIND: &'static str = "submit";
    type Item = NewTask;
    /// The inserted task, or `None` when its idempotency key was already taken.
    type Out = Option<Task>;

    async fn run(&self, pool: &PgPool, items: &[NewTask]) -> StoreResult<Vec<Option<Task>>> {
        let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
        let queued = NewEvent::status(TaskStatus::Queued, Value::Null);
        let rows = sqlx::query(concat!(
            "WITH ins AS (INSERT INTO tasks (id, tenant_id, employee_id, input, status, \
             priority, run_at, max_attempts, idempotency_key, request_hash, parent_task_id, \
             depth, session_id, callback_url, metadata, created_at, updated_at, output_schema, \
             trace_context) \
             SELECT j.id, j.tenant_id, e.id, j.input, 'queued', j.priority, j.run_at, \
             j.max_attempts, j.idem, j.hash, j.parent, j.depth, j.session, j.callback, \
             j.metadata, $17, $17, j.schema, j.trace \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::int4[], \
             $6::timestamptz[], $7::int4[], $8::text[], $9::text[], $10::uuid[], $11::int4[], \
             $12::uuid[], $13::text[], $14::jsonb[], $15::jsonb[], $16::text[], $20::text[]) \
             AS j(id, tenant_id, employee_id, input, priority, run_at, max_attempts, idem, \
             hash, parent, depth, session, callback, metadata, schema, trace, employee_name) \
             CROSS JOIN LATERAL (SELECT x.id FROM employees x WHERE x.id = j.employee_id \
             AND x.tenant_id = j.tenant_id UNION ALL SELECT x.id FROM employees x \
             WHERE x.tenant_id = j.tenant_id AND x.name = j.employee_name LIMIT 1) e \
             ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
             DO NOTHING RETURNING ",
            task_cols!(),
            "), ev AS (INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
             SELECT id, 1, 'status', $18, $17 FROM ins), \
             wake AS (SELECT pg_notify($19, '') WHERE EXISTS (SELECT 1 FROM ins)) \
             SELECT ins.* FROM ins LEFT JOIN wake ON true"
        ))
        .bind(&ids)
        .bind(items.iter().map(|t| t.tenant_id).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|t| match &t.employee {
                    TaskEmployee::Id(id) => Some(*id),
                    TaskEmployee::Name(_) => None,
                })
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|t| Json(&t.input)).collect::<Vec<_>>())
        .bind(items.iter().map(|t| t.priority).collect::<Vec<_>>())
        .bind(items.iter().map(|t| t.run_at).collect::<Vec<_>>())
        .bind(items.iter().map(|t| t.max_attempts).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|t| t.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|t| t.request_hash.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|t| t.parent_task_id).collect::<Vec<_>>())
        .bind(items.iter().map(|t| t.depth).collect::<Vec<_>>())
        .bind(items.iter().map(|t| t.session_id).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|t| t.callback_url.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|t| Json(&t.metadata)).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|t| t.output_schema.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|t| t.trace_context.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(now())
        .bind(Json(&queued.payload))
        .bind(TASKS_CHANNEL)
        .bind(
            items
                .iter()
                .map(|t| match &t.employee {
                    TaskEmployee::Id(_) => None,
                    TaskEmployee::Name(name) => Some(name.as_str()),
                })
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await?;
        let mut inserted = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let t = task_row(r)?;
            inserted.insert(t.id, t);
        }
        Ok(ids.iter().map(|id| inserted.remove(id)).collect())
    }
}

/// A task's end as the finish batch takes it.
pub(super) struct FinishItem {
    pub(super) lease: Lease,
    pub(super) finish: Finish,
}

/// `finish_task`, group-committed (ADR 0018): the fenced ends of many tasks, their
/// events, their completion webhooks, their session turns and at most one wake-up in one
/// statement.
pub(super) struct FinishBatch;

#[async_trait]
impl BatchOp for FinishBatch {
    const KIND: &'static str = "finish";
    type Item = FinishItem;
    /// Whether the lease still held (the end was written).
    type Out = bool;

    async fn run(&self, pool: &PgPool, items: &[FinishItem]) -> StoreResult<Vec<bool>> {
        let n = items.len();
        let (mut ev_item, mut ev_kind, mut ev_payload, mut ev_n) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Events name their item by its place in the batch (1-based, as `ORDINALITY`).
        for (k, it) in items.iter().enumerate() {
            for (i, e) in it.finish.step.events.iter().enumerate() {
                ev_item.push(i64::try_from(k + 1).unwrap_or(i64::MAX));
                ev_kind.push(e.kind);
                ev_payload.push(Json(&e.payload));
                ev_n.push(i64::try_from(i + 1).unwrap_or(i64::MAX));
            }
        }
        // The session turns, by item as the events.
        let (mut msg_item, mut msg_session, mut msg_id) = (Vec::new(), Vec::new(), Vec::new());
        let (mut msg_role, mut msg_content, mut msg_at) = (Vec::new(), Vec::new(), Vec::new());
        for (k, it) in items.iter().enumerate() {
            for m in &it.finish.messages {
                msg_item.push(i64::try_from(k + 1).unwrap_or(i64::MAX));
                msg_session.push(m.session_id);
                msg_id.push(m.id);
                msg_role.push(m.role.as_str());
                msg_content.push(m.content.as_str());
                msg_at.push(m.created_at);
            }
        }
        let (mut give_back, mut requeued) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for it in items {
            give_back.push(matches!(
                it.finish.status,
                TaskStatus::Queued
                    | TaskStatus::WaitingApproval
                    | TaskStatus::WaitingInput
                    | TaskStatus::WaitingSubtasks
            ));
            requeued.push(matches!(
                it.finish.status,
                TaskStatus::Queued | TaskStatus::Retrying | TaskStatus::WaitingSubtasks
            ));
        }
        // The answer names items by their place in the batch (1-based), not by task:
        // a stale end of a task may share the batch with the end that holds its lease.
        let won: Vec<i64> = sqlx::query_scalar(
            "WITH j AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int8[], \
             $5::int8[], $6::int8[], $7::int4[], $8::text[], $9::jsonb[], $10::text[], \
             $11::timestamptz[], $12::bool[], $13::bool[], $14::bool[], $15::uuid[]) \
             WITH ORDINALITY AS j(id, owner, attempt, tokens_in, tokens_out, cost_nanos, \
             steps, status, result, error, run_at, give_back, terminal, requeued, hook_id, \
             idx)), \
             u AS (UPDATE tasks t SET status = CASE WHEN j.status = 'waiting_subtasks' AND NOT \
             EXISTS (SELECT 1 FROM tasks c WHERE c.parent_task_id = t.id AND c.status IN \
             ('queued', 'running', 'retrying', 'waiting_approval', 'waiting_input', \
             'waiting_subtasks')) THEN 'queued' ELSE j.status END, \
             result = COALESCE(j.result, t.result), error = j.error, \
             run_at = COALESCE(j.run_at, t.run_at), lease_owner = NULL, \
             lease_expires_at = NULL, \
             attempt = CASE WHEN j.give_back THEN t.attempt - 1 ELSE t.attempt END, \
             finished_at = CASE WHEN j.terminal THEN $16 ELSE t.finished_at END, \
             tokens_in = t.tokens_in + j.tokens_in, tokens_out = t.tokens_out + j.tokens_out, \
             cost_nanos = t.cost_nanos + j.cost_nanos, steps = t.steps + j.steps, \
             updated_at = $16 FROM j \
             WHERE t.id = j.id AND t.lease_owner = j.owner AND t.attempt = j.attempt \
             AND t.status = 'running' \
             RETURNING t.id, t.tenant_id, t.callback_url, j.terminal, j.requeued, j.hook_id, \
             j.idx), \
             ev AS (INSERT INTO task_events (task_id, seq, kind, payload, created_at) \
             SELECT u.id, (SELECT COALESCE(MAX(seq), 0) FROM task_events \
             WHERE task_id = u.id) + e.n, e.kind, e.payload, $16 \
             FROM UNNEST($17::int8[], $18::text[], $19::jsonb[], $20::int8[]) \
             AS e(item, kind, payload, n) JOIN u ON u.idx = e.item), \
             wake AS (SELECT pg_notify($21, '') WHERE EXISTS (SELECT 1 FROM u WHERE u.requeued)), \
             hook AS (INSERT INTO webhook_deliveries (id, tenant_id, task_id, event, url, body, \
             status, attempts, next_attempt_at, last_error, created_at, updated_at) \
             SELECT u.hook_id, u.tenant_id, u.id, $22, u.callback_url, NULL, 'pending', 0, $16, \
             NULL, $16, $16 FROM u WHERE u.terminal AND u.callback_url IS NOT NULL \
             ON CONFLICT (task_id, event) DO NOTHING), \
             sess AS (UPDATE sessions s SET updated_at = $16 FROM (SELECT DISTINCT \
             m.session_id, u.tenant_id FROM UNNEST($23::int8[], $24::uuid[]) \
             AS m(item, session_id) JOIN u ON u.idx = m.item) x \
             WHERE s.id = x.session_id AND s.tenant_id = x.tenant_id \
             RETURNING s.id, s.tenant_id), \
             msg AS (INSERT INTO messages (id, tenant_id, session_id, role, content, task_id, \
             created_at) SELECT m.id, u.tenant_id, m.session_id, m.role, m.content, u.id, \
             m.created_at FROM UNNEST($23::int8[], $24::uuid[], $25::uuid[], $26::text[], \
             $27::text[], $28::timestamptz[]) \
             AS m(item, session_id, id, role, content, created_at) \
             JOIN u ON u.idx = m.item \
             JOIN sess ON sess.id = m.session_id AND sess.tenant_id = u.tenant_id) \
             SELECT u.idx FROM u LEFT JOIN wake ON true",
        )
        .bind(items.iter().map(|i| i.lease.task_id).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|i| i.lease.owner.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|i| i.lease.attempt).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|i| i.finish.step.tokens_in)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.finish.step.tokens_out)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.finish.step.cost_nanos)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.finish.step.steps)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.finish.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.finish.result.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.finish.error.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|i| i.finish.run_at).collect::<Vec<_>>())
        .bind(&give_back)
        .bind(
            items
                .iter()
                .map(|i| i.finish.status.is_terminal())
                .collect::<Vec<_>>(),
        )
        .bind(&requeued)
        .bind(items.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(now())
        .bind(&ev_item)
        .bind(&ev_kind)
        .bind(&ev_payload)
        .bind(&ev_n)
        .bind(TASKS_CHANNEL)
        .bind(TASK_FINISHED)
        .bind(&msg_item)
        .bind(&msg_session)
        .bind(&msg_id)
        .bind(&msg_role)
        .bind(&msg_content)
        .bind(&msg_at)
        .fetch_all(pool)
        .await?;
        let mut answers = vec![false; n];
        for idx in won {
            if let Some(a) = usize::try_from(idx - 1)
                .ok()
                .and_then(|i| answers.get_mut(i))
            {
                *a = true;
            }
        }
        Ok(answers)
    }
}
