//! Rows and storage operations of the Task Orchestrator and the Agent Runtime: tasks and
//! their step log, sessions and messages, employee memory and schedules.
//!
//! Queue semantics (DESIGN §5, ADR 0005) live in the SQL of these operations:
//! - a claim is one write (PostgreSQL one statement with `FOR UPDATE SKIP LOCKED`;
//!   SQLite one write transaction on the writer thread), fair across tenants (ADR 0008);
//! - every write a worker makes about a running task is **fenced** by [`Lease`]
//!   (`lease_owner` and `attempt`): a worker presumed dead cannot overwrite a newer
//!   attempt, and learns from the `None`/`false` answer that it must stop.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Employee, Page, StoreResult};

/// What one pruning batch removed (see [`TaskStore::prune_finished_tasks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub tasks: u64,
    pub events: u64,
    pub webhook_deliveries: u64,
}

/// The least UUIDv7 of the millisecond `t`: every task created before `t` has a smaller
/// id (task ids are UUIDv7 taken at creation), so the pruning scan walks the primary key
/// up to here instead of needing an index of its own.
pub(crate) fn uuid_v7_floor(t: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid()
}

/// Task statuses (DESIGN §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    WaitingApproval,
    Retrying,
    /// Parked on a question to a human (`ask_human`) until `POST /v1/tasks/{id}/input`.
    WaitingInput,
    /// Parked until its delegated sub-tasks end (no lease, no worker slot).
    WaitingSubtasks,
}

/// The statuses that are not terminal, as an SQL list, for `concat!` into queries.
macro_rules! live_statuses_sql {
    () => {
        "('queued', 'running', 'retrying', 'waiting_approval', 'waiting_input', \
         'waiting_subtasks')"
    };
}
pub(crate) use live_statuses_sql;

impl TaskStatus {
    pub const ALL: [TaskStatus; 9] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::WaitingApproval,
        TaskStatus::Retrying,
        TaskStatus::WaitingInput,
        TaskStatus::WaitingSubtasks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::WaitingApproval => "waiting_approval",
            TaskStatus::Retrying => "retrying",
            TaskStatus::WaitingInput => "waiting_input",
            TaskStatus::WaitingSubtasks => "waiting_subtasks",
        }
    }

    /// Every status name, comma-separated (for error messages).
    pub fn names() -> String {
        TaskStatus::ALL.map(TaskStatus::as_str).join(", ")
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// No further transition happens from a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// A task row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub employee_id: Uuid,
    pub input: Value,
    pub status: TaskStatus,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub parent_task_id: Option<Uuid>,
    /// Delegation depth: 0 for a task submitted by a caller.
    pub depth: i32,
    pub session_id: Option<Uuid>,
    pub callback_url: Option<String>,
    pub metadata: Value,
    /// The schema its answer must satisfy, set at submit (the employee's otherwise).
    pub output_schema: Option<Value>,
    /// The W3C `traceparent` of the submit, when tracing was on: each run continues
    /// that trace, on whichever replica claims it (ADR 0014). Not shown to callers.
    #[serde(default, skip_serializing)]
    pub trace_context: Option<String>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_nanos: i64,
    pub steps: i32,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Task {
    /// The lease this row was claimed with (meaningful while `running`).
    pub fn lease(&self) -> Option<Lease> {
        self.lease_owner.as_ref().map(|owner| Lease {
            task_id: self.id,
            owner: owner.clone(),
            attempt: self.attempt,
        })
    }
}

/// The employee a new task is for, as the submit named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskEmployee {
    Id(Uuid),
    /// Found by name among the tenant's employees when the task is inserted.
    Name(String),
}

/// A task to insert.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub tenant_id: Uuid,
    /// Found among the task's tenant's employees by the insert itself: no other tenant's
    /// employee, nor one deleted meanwhile, can take the task.
    pub employee: TaskEmployee,
    pub input: Value,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub depth: i32,
    pub session_id: Option<Uuid>,
    pub callback_url: Option<String>,
    pub metadata: Value,
    pub output_schema: Option<Value>,
    /// The submit's `traceparent` (tracing on), stored so the run continues its trace.
    pub trace_context: Option<String>,
}

/// The fence of a running task: only the holder of this lease may write its progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub task_id: Uuid,
    pub owner: String,
    pub attempt: i32,
}

/// One entry of a task's step log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    pub task_id: Uuid,
    /// 1, 2, 3… per task, without gaps; the SSE event id.
    pub seq: i64,
    /// `status`, `llm_call`, `tool_call`, `tool_started`, `tool_result`, `message`,
    /// `approval` or `resumed`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// An event to append (its `seq` is assigned by the store).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub payload: Value,
}

impl NewEvent {
    pub fn new(kind: &'static str, payload: Value) -> Self {
        Self { kind, payload }
    }
    pub fn status(status: TaskStatus, extra: Value) -> Self {
        let mut payload = serde_json::json!({ "status": status.as_str() });
        if let (Some(p), Value::Object(e)) = (payload.as_object_mut(), extra) {
            p.extend(e);
        }
        Self::new("status", payload)
    }
}

/// Progress of one step, written atomically with its events.
#[derive(Clone, Debug, Default)]
pub struct StepUpdate {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_nanos: i64,
    /// Steps (LLM calls) to add.
    pub steps: i32,
    pub events: Vec<NewEvent>,
}

/// How a worker ends its hold on a task.
#[derive(Clone, Debug)]
pub struct Finish {
    /// `succeeded`, `failed`, `cancelled` (terminal), `retrying` (with `run_at`),
    /// `waiting_approval`, `waiting_input` (with `run_at` = the answer's deadline),
    /// `waiting_subtasks` (written as `queued` when no sub-task is unfinished any more) or
    /// `queued` (released); the attempt is given back for the last four.
    pub status: TaskStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// When a `retrying` task is due again.
    pub run_at: Option<DateTime<Utc>>,
    pub step: StepUpdate,
    /// The session turn of a succeeded task in a session (its input and its answer),
    /// written in the same transaction as the end, so a task is never finished without
    /// its turn. Skipped when the session is gone (or is not the task's tenant's).
    pub messages: Vec<SessionMessage>,
}

/// Filters of `GET /v1/tasks`.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub employee_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub parent_task_id: Option<Uuid>,
}

/// What a cancel request did.
#[derive(Clone, Debug)]
pub enum CancelOutcome {
    /// It was not running: cancelled now.
    Cancelled(Task),
    /// It is running: the flag is set, the runtime stops at its next step boundary.
    Requested(Task),
    /// It had already ended; nothing changed.
    AlreadyFinished(Task),
}

/// A task rescued from an expired lease.
#[derive(Clone, Debug)]
pub struct Rescued {
    pub task_id: Uuid,
    pub tenant_id: Uuid,
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub employee_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionMessage {
    pub id: Uuid,
    pub session_id: Uuid,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub task_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The settable fields of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleFields {
    pub employee_id: Uuid,
    pub cron: String,
    pub timezone: String,
    pub input: Value,
    pub priority: i32,
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[serde(flatten)]
    pub fields: ScheduleFields,
    pub next_fire_at: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl super::HasId for Task {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl super::HasId for Schedule {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// Operations of the orchestrator and runtime; both backends implement them and the
/// conformance suite checks they agree.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// The tenant's employee with this name.
    async fn find_employee_by_name(&self, tenant: Uuid, name: &str) -> StoreResult<Employee>;
    /// Inserts the task and its first `status` event. With an idempotency key already
    /// used in the tenant, inserts nothing and returns the existing task and `false`.
    /// `NotFound` when the tenant has no such employee (and no task with the key).
    async fn create_task(&self, t: &NewTask) -> StoreResult<(Task, bool)>;
    async fn get_task(&self, tenant: Uuid, id: Uuid) -> StoreResult<Task>;
    /// Newest first; `before` is the id of the last row of the previous page.
    async fn list_tasks(
        &self,
        tenant: Uuid,
        filter: &TaskFilter,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Task>>;

    /// Claims up to `n` due tasks for `owner`, with a lease until `now + lease`; bumps
    /// `attempt`; records a `running` event. Fair across tenants (ADR 0008): each
    /// tenant's line is its due tasks by delegation depth (deepest first: a parent is
    /// waiting on them), then priority, then oldest `run_at`; the batch is dealt from the
    /// lines round-robin, a tenant with fewer running top-level tasks first (rank =
    /// running + place in its line; ties by priority, then age). With
    /// `tenant_max_running` > 0 no tenant gets more than that many top-level tasks
    /// (`depth` 0) running, counted across every claimer; sub-tasks are not capped.
    /// Returned in that deal order.
    async fn claim_tasks(
        &self,
        owner: &str,
        n: u32,
        lease: std::time::Duration,
        tenant_max_running: u32,
    ) -> StoreResult<Vec<Task>>;
    /// [`TaskStore::claim_tasks`], with each task's employee when the backend reads it
    /// with the claim (`None`: not read here, or gone; the caller reads it). Both backends
    /// do (PostgreSQL in the claim's statement, SQLite in its transaction).
    async fn claim_tasks_with_employees(
        &self,
        owner: &str,
        n: u32,
        lease: std::time::Duration,
        tenant_max_running: u32,
    ) -> StoreResult<Vec<(Task, Option<Employee>)>> {
        Ok(self
            .claim_tasks(owner, n, lease, tenant_max_running)
            .await?
            .into_iter()
            .map(|t| (t, None))
            .collect())
    }
    /// Extends the lease. `None` when the lease is no longer held (stop working);
    /// otherwise whether a cancel was requested.
    async fn renew_lease(
        &self,
        lease: &Lease,
        duration: std::time::Duration,
    ) -> StoreResult<Option<bool>>;
    /// Adds usage and appends events, fenced. `None` when the lease is lost; otherwise
    /// whether a cancel was requested.
    async fn record_step(&self, lease: &Lease, step: &StepUpdate) -> StoreResult<Option<bool>>;
    /// Ends the worker's hold (see [`Finish`]), fenced; `false` when the lease was lost
    /// and nothing was written (a late completion).
    async fn finish_task(&self, lease: &Lease, finish: &Finish) -> StoreResult<bool>;
    /// Running tasks whose lease expired go to `retrying` (due after `backoff(attempt)`)
    /// or, with attempts used up, to `failed`.
    async fn rescue_expired(
        &self,
        backoff: &(dyn Fn(i32) -> std::time::Duration + Send + Sync),
    ) -> StoreResult<Vec<Rescued>>;
    async fn cancel_task(&self, tenant: Uuid, id: Uuid) -> StoreResult<CancelOutcome>;
    /// Resumes a task waiting for approval (back to `queued`) with an `approval` event.
    /// `None` when the task is not waiting for approval.
    async fn resolve_approval(
        &self,
        tenant: Uuid,
        id: Uuid,
        decision: Value,
    ) -> StoreResult<Option<Task>>;
    /// Resumes a task waiting for a human's answer (back to `queued`) with an `input`
    /// event. `None` when the task is not waiting for input.
    async fn answer_input(&self, tenant: Uuid, id: Uuid, input: Value)
    -> StoreResult<Option<Task>>;
    /// Tasks waiting for input past their deadline (`run_at`) fail with `input_timeout`.
    async fn expire_inputs(&self) -> StoreResult<Vec<Rescued>>;
    /// Tasks in `waiting_subtasks` none of whose sub-tasks is still unfinished go back to
    /// `queued` (with a status event); their ids.
    async fn requeue_parents(&self) -> StoreResult<Vec<Uuid>>;
    /// Records a live stream of task `task`, open until at most `until`, so that appends
    /// to its step log notify every replica (PostgreSQL; ADR 0016); the registration's id,
    /// or `None` where nothing needs recording (SQLite: one process, woken in process).
    /// Also drops registrations past their `until` (left by a process that died).
    async fn follow_task(&self, _task: Uuid, _until: DateTime<Utc>) -> StoreResult<Option<Uuid>> {
        Ok(None)
    }
    /// Removes a registration of [`TaskStore::follow_task`] (the stream closed).
    async fn unfollow_task(&self, _id: Uuid) -> StoreResult<()> {
        Ok(())
    }
    /// Events with `seq > after`, in order.
    async fn list_events(&self, task: Uuid, after: i64, limit: u32) -> StoreResult<Vec<TaskEvent>>;
    /// The latest event of `kind` of each of `tasks` that has one, in one query.
    async fn last_events(&self, tasks: &[Uuid], kind: &str) -> StoreResult<Vec<TaskEvent>>;
    /// Deletes up to `limit` tasks that ended (`succeeded`, `failed`, `cancelled`) before
    /// `before`, with their step log and their webhook deliveries, oldest first, in one
    /// transaction. A task is kept while its parent has not ended (the parent's replay
    /// finds its sub-task by idempotency key) and while a webhook of its is still pending.
    /// `ai_calls` are kept: they are the usage ledger. Safe to run on several replicas at
    /// once (PostgreSQL: the batch's rows are locked with `SKIP LOCKED`).
    async fn prune_finished_tasks(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Pruned>;
    /// Number of tasks per status that is not terminal (statuses with none are absent):
    /// the queue's depth. Ended tasks are counted by `tasks_total` as they end.
    async fn count_tasks_by_status(&self) -> StoreResult<Vec<(TaskStatus, i64)>>;
    /// Tenants with at least `cap` top-level tasks running and another one due: those
    /// the cap of [`TaskStore::claim_tasks`] is holding back now.
    async fn count_tenants_at_cap(&self, cap: u32) -> StoreResult<u64>;
    /// One tenant's tasks per status, in one pass: `(status, created at or after `since`,
    /// all)`; statuses with none are absent.
    async fn count_tenant_tasks(
        &self,
        tenant: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(TaskStatus, i64, i64)>>;
    /// Number of one tenant's tasks in `status` (one index seek).
    async fn count_tenant_tasks_in(&self, tenant: Uuid, status: TaskStatus) -> StoreResult<i64>;

    /// Creates the tenant's session `id` when it is new; errors with `NotFound` when the
    /// tenant's session `id` belongs to another employee. Sessions are keyed by tenant and
    /// id: another tenant's session with the same id is a different session, never seen.
    async fn ensure_session(&self, tenant: Uuid, id: Uuid, employee: Uuid) -> StoreResult<Session>;
    /// The last `limit` messages, oldest first.
    async fn list_messages(
        &self,
        tenant: Uuid,
        session: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<SessionMessage>>;
    async fn append_messages(&self, tenant: Uuid, msgs: &[SessionMessage]) -> StoreResult<()>;

    async fn memory_get(
        &self,
        tenant: Uuid,
        employee: Uuid,
        key: &str,
    ) -> StoreResult<Option<Value>>;
    async fn memory_set(
        &self,
        tenant: Uuid,
        employee: Uuid,
        key: &str,
        value: &Value,
    ) -> StoreResult<()>;

    async fn create_schedule(
        &self,
        tenant: Uuid,
        fields: &ScheduleFields,
        next_fire_at: DateTime<Utc>,
    ) -> StoreResult<Schedule>;
    async fn get_schedule(&self, tenant: Uuid, id: Uuid) -> StoreResult<Schedule>;
    async fn list_schedules(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Schedule>>;
    async fn update_schedule(
        &self,
        tenant: Uuid,
        id: Uuid,
        fields: &ScheduleFields,
        next_fire_at: DateTime<Utc>,
    ) -> StoreResult<Schedule>;
    async fn delete_schedule(&self, tenant: Uuid, id: Uuid) -> StoreResult<()>;
    /// Enabled schedules with `next_fire_at <= now`, across tenants: at most `per_tenant`
    /// of each tenant (its oldest), interleaved (every tenant's first, then every
    /// tenant's second, …), at most `limit` in all, so one tenant's backlog cannot hold
    /// back another's fire.
    async fn due_schedules(
        &self,
        now: DateTime<Utc>,
        per_tenant: u32,
        limit: u32,
    ) -> StoreResult<Vec<Schedule>>;
    /// How many schedules a tenant has (enabled or not).
    async fn count_schedules(&self, tenant: Uuid) -> StoreResult<u64>;
    /// Claims one fire: moves `next_fire_at` from `expected` to `next` only if nobody did
    /// it first. `true` for exactly one of several schedulers.
    async fn claim_fire(
        &self,
        id: Uuid,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

#[cfg(test)]
mod live_status_tests {
    use super::TaskStatus;

    #[test]
    fn the_live_status_list_is_every_status_that_is_not_terminal() {
        let listed: Vec<&str> = live_statuses_sql!()
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .collect();
        let live: Vec<&str> = TaskStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .map(TaskStatus::as_str)
            .collect();
        let mut a = listed.clone();
        let mut b = live.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }
}
