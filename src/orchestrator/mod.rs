//! The Task Orchestrator: the worker pool of this replica, the lease reaper, wake-ups,
//! the queue-depth sampler, the scheduler (DESIGN §5, ADR 0005) and the retention of
//! ended tasks (ADR 0017).
//!
//! It owns task statuses and leases; the Agent Runtime only reports an [`Outcome`].
//! Every write about a running task goes through the fenced store operations, so a
//! worker that lost its lease (it was presumed dead and the task rescued) writes nothing.
//!
//! Shutdown: [`Workers::stop_claiming`] at once, then [`Workers::drain`] gives in-flight
//! tasks the grace period and releases the rest (lease cleared, back to `queued`, the
//! attempt given back) for another replica.

pub mod chat;
mod claim;
mod control;
pub mod employees;
mod follow;
mod retention;
pub mod scheduler;
mod submit;
pub mod tools;
mod view;
pub mod webhooks;

pub use control::{AnswerError, DecideError, all_events, answer, cancel, decide, question};
pub use follow::follow;
pub use submit::{
    EmployeeRef, Idempotency, PORT_PATTERN, Parent, Submit, SubmitError, Submitted, check_input,
    is_blank, resolve_employee, submit, url_shape_ok, validate,
};
pub use view::TaskView;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::runtime::{self, Limits, Outcome, Run, Sink, SubTask, SubTaskError};
use crate::state::AppState;
use crate::store::{
    Employee, Finish, Lease, NewEvent, StepUpdate, StoreResult, Task, TaskStatus, now,
};
use crate::telemetry::metrics as m;
use crate::telemetry::traces;
use tracing::Instrument;

/// Exponential backoff of a retry: base · 2^(attempt−1), at most an hour.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exp = attempt.clamp(1, 20) - 1;
    base.saturating_mul(1u32 << exp)
        .min(Duration::from_secs(3600))
}

/// The background parts of the orchestrator in one replica.
pub struct Workers {
    stop_claiming: CancellationToken,
    hard_stop: CancellationToken,
    runs: TaskTracker,
}

impl Workers {
    /// Starts the claim loop, reaper, sampler, wake-up listener and scheduler on
    /// `tracker`. Per-task runs are tracked separately so shutdown can wait for them.
    pub fn start(state: &AppState, tracker: &TaskTracker) -> Workers {
        let w = Workers {
            stop_claiming: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            runs: TaskTracker::new(),
        };
        let owner = format!("{}", Uuid::now_v7());
        let cfg = &state.config.tasks;
        if cfg.workers_enabled {
            tracker.spawn(claim_loop(
                state.clone(),
                owner.clone(),
                w.stop_claiming.clone(),
                w.hard_stop.clone(),
                w.runs.clone(),
            ));
            tracker.spawn(reaper(state.clone(), w.stop_claiming.clone()));
            tracker.spawn(scheduler::run(state.clone(), w.stop_claiming.clone()));
            tracker.spawn(webhooks::run(state.clone(), w.stop_claiming.clone()));
        }
        // Every replica listens, workers or not: its SSE followers wait on it.
        if state.config.database_url.is_postgres() {
            tracker.spawn(listen(state.clone(), w.stop_claiming.clone()));
        }
        tracker.spawn(sample_depth(state.clone(), w.stop_claiming.clone()));
        tracker.spawn(retention::run(state.clone(), w.stop_claiming.clone()));
        tracing::info!(
            worker_id = %owner,
            enabled = cfg.workers_enabled,
            concurrency = cfg.worker_concurrency,
            "task workers started"
        );
        w
    }

    /// No new claims from now on.
    pub fn stop_claiming(&self) {
        self.stop_claiming.cancel();
    }

    /// Waits up to `grace` for in-flight tasks, then releases the rest.
    pub async fn drain(&self, grace: Duration) {
        self.stop_claiming.cancel();
        self.runs.close();
        if tokio::time::timeout(grace, self.runs.wait()).await.is_err() {
            tracing::warn!(
                running = self.runs.len(),
                "grace period over with tasks running: releasing them"
            );
            self.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.runs.wait()).await;
        }
    }
}

async fn claim_loop(
    state: AppState,
    owner: String,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    runs: TaskTracker,
) {
    let cfg = state.config.tasks.clone();
    let slots = Arc::new(Semaphore::new(cfg.worker_concurrency as usize));
    let pacing = claim::Pacing {
        max_batch: 64,
        poll_interval: cfg.poll_interval,
        wake: state.tasks.wake_signal(),
        what: "tasks",
    };
    let claim = |n| {
        let (state, owner) = (state.clone(), owner.clone());
        async move {
            let claimed = state
                .store
                .claim_tasks_with_employees(&owner, n, cfg.lease, cfg.tenant_max_running)
                .await?;
            if !claimed.is_empty() {
                metrics::counter!(m::TASKS_CLAIMED_TOTAL).increment(claimed.len() as u64);
            }
            for (task, _) in &claimed {
                state.tasks.task_changed(task.id);
            }
            Ok(claimed)
        }
    };
    let run = |(task, employee)| execute(state.clone(), task, employee, hard_stop.clone());
    claim::claim_and_run(slots, pacing, &stop, &runs, claim, run).await;
}

/// Records steps of a leased task (fenced) and tells followers.
struct TaskSink<'a> {
    state: &'a AppState,
    lease: &'a Lease,
}

#[async_trait]
impl Sink for TaskSink<'_> {
    async fn step(&self, step: StepUpdate) -> StoreResult<Option<bool>> {
        let r = self.state.store.record_step(self.lease, &step).await;
        self.state.tasks.task_changed(self.lease.task_id);
        r
    }
}

/// Runs one claimed task to its end, renewing the lease meanwhile. With tracing on the
/// attempt is an `invoke_agent` span continuing the trace stored at submit (the parent,
/// whichever replica this is: ADR 0014).
fn execute(
    state: AppState,
    task: Task,
    employee: Option<Employee>,
    hard_stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    // A plain function handing back the attempt's future, in a span or in none: as an
    // async fn it would keep its own copy of the arguments beside the attempt's, and
    // awaiting in two branches (traced, untraced) would reserve room for two attempts,
    // in every running task's allocation (bench/README.md, memory with tasks in flight).
    let span = if traces::enabled() {
        let agent = employee.as_ref().map(|e| e.fields.name.as_str());
        let span = tracing::info_span!(
            "invoke_agent",
            otel.name = %match agent {
                Some(name) => format!("invoke_agent {name}"),
                None => "invoke_agent".to_string(),
            },
            otel.kind = "internal",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.id = %task.employee_id,
            gen_ai.agent.name = agent,
            task.id = %task.id,
            task.attempt = task.attempt,
        );
        if let Some(tp) = &task.trace_context {
            traces::set_parent(&span, tp);
        }
        span
    } else {
        tracing::Span::none()
    };
    execute_attempt(state, task, employee, hard_stop).instrument(span)
}

async fn execute_attempt(
    state: AppState,
    task: Task,
    employee: Option<Employee>,
    hard_stop: CancellationToken,
) {
    let Some(lease) = task.lease() else { return };
    let cfg = &state.config.tasks;
    let started = Instant::now();
    // On the heap: moved into a pinned place inline, the run's future would take its
    // room twice in the task's allocation, and a running task holds it the whole run.
    let mut run = Box::pin(run_task(&state, &task, employee, &lease));
    let mut renew = tokio::time::interval(cfg.lease / 3);
    renew.tick().await;
    let outcome = loop {
        tokio::select! {
            o = run.as_mut() => break Some(o),
            _ = renew.tick() => {
                match state.store.renew_lease(&lease, cfg.lease).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(task_id = %task.id, "lease lost; abandoning the task");
                        break Some((Outcome::LeaseLost, None));
                    }
                    Err(e) => tracing::warn!(task_id = %task.id, error = %e, "lease renewal failed"),
                }
            }
            _ = hard_stop.cancelled() => break None,
        }
    };
    drop(run);
    let Some(outcome) = outcome else {
        // Shutdown: hand the task back for another replica, attempt given back.
        let f = Finish {
            status: TaskStatus::Queued,
            result: None,
            error: None,
            run_at: Some(now()),
            step: StepUpdate {
                events: vec![NewEvent::status(
                    TaskStatus::Queued,
                    json!({"reason": "released at shutdown"}),
                )],
                ..Default::default()
            },
            messages: Vec::new(),
        };
        if let Err(e) = state.store.finish_task(&lease, &f).await {
            tracing::warn!(task_id = %task.id, error = %e, "could not release the task; its lease will expire");
        }
        return;
    };
    let (outcome, tail) = outcome;
    if let Outcome::Failed { .. } = &outcome {
        traces::set_error(&tracing::Span::current(), "task_failed");
    }
    finish(
        &state,
        &task,
        &lease,
        outcome,
        tail.unwrap_or_default(),
        started,
    )
    .await;
    // Under a tenant cap, a claim may have come back short because a tenant was at its
    // cap while its work waited; the claim loop then sleeps until a wake-up or the poll
    // interval. This task's end may have made room, so claim again now.
    if cfg.tenant_max_running > 0 {
        state.tasks.wake();
    }
}

/// Runs the task's conversation; also returns the last step when the run left it to be
/// written with the task's end.
/// `claimed_with`: the employee when the claim already read it.
async fn run_task(
    state: &AppState,
    task: &Task,
    claimed_with: Option<Employee>,
    lease: &Lease,
) -> (Outcome, Option<StepUpdate>) {
    let read = match claimed_with {
        Some(e) => Ok(e),
        None => {
            state
                .store
                .get_employee(task.tenant_id, task.employee_id)
                .await
        }
    };
    let employee = match read {
        Ok(e) => e,
        Err(crate::store::StoreError::NotFound) => {
            return (
                Outcome::Failed {
                    error: "the employee of this task no longer exists".into(),
                    retryable: false,
                },
                None,
            );
        }
        Err(e) => {
            return (
                Outcome::Failed {
                    error: format!("storage unavailable: {e}"),
                    retryable: true,
                },
                None,
            );
        }
    };
    let history = match task.session_id {
        Some(sid) => match state
            .store
            .list_messages(task.tenant_id, sid, runtime::HISTORY_MESSAGES)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "session history unavailable");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let messages = runtime::conversation(&employee, history, runtime::input_text(&task.input));
    let limits = Limits::for_employee(&employee, &state.config.tasks);
    let queue = TaskQueue(state);
    let mut run = Run::new(
        state,
        &queue,
        &employee,
        Some(task.id),
        task.depth,
        limits,
        messages,
    );
    if task.output_schema.is_some() {
        run.output_schema = task.output_schema.clone();
    }
    run.totals = runtime::Totals {
        tokens_in: task.tokens_in,
        tokens_out: task.tokens_out,
        cost_nanos: task.cost_nanos,
        steps: task.steps,
    };
    // Another attempt (after a crash, a lost lease, a retry or an approval): rebuild
    // the conversation from the step log and go on from the first step not recorded.
    if task.steps > 0 {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            match state.store.list_events(task.id, after, 1000).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    after = page.last().map_or(after, |e| e.seq);
                    events.extend(page);
                }
                Err(e) => {
                    return (
                        Outcome::Failed {
                            error: format!("storage unavailable: {e}"),
                            retryable: true,
                        },
                        None,
                    );
                }
            }
        }
        run.replay(&events);
    }
    let sink = TaskSink { state, lease };
    let outcome = run.run(&sink).await;
    (outcome, run.take_tail())
}

/// Ends the task's hold: one fenced write of the outcome together with `tail`, the last
/// step when the run left it unwritten.
async fn finish(
    state: &AppState,
    task: &Task,
    lease: &Lease,
    outcome: Outcome,
    tail: StepUpdate,
    started: Instant,
) {
    let cfg = &state.config.tasks;
    let (status, result, error, run_at, extra) = match &outcome {
        Outcome::LeaseLost => return,
        Outcome::Succeeded { answer, output } => (
            TaskStatus::Succeeded,
            Some(json!({ "output": output.clone().unwrap_or_else(|| json!(answer)) })),
            None,
            None,
            json!({}),
        ),
        Outcome::Cancelled => (
            TaskStatus::Cancelled,
            None,
            Some("cancelled on request".to_string()),
            None,
            json!({"reason": "cancelled on request"}),
        ),
        Outcome::WaitingApproval => (TaskStatus::WaitingApproval, None, None, None, json!({})),
        Outcome::WaitingSubtasks => (
            TaskStatus::WaitingSubtasks,
            None,
            None,
            Some(now()),
            json!({}),
        ),
        // `run_at` of a task waiting for input is the deadline of the answer.
        Outcome::WaitingInput { timeout_seconds } => (
            TaskStatus::WaitingInput,
            None,
            None,
            Some(now() + chrono::Duration::seconds((*timeout_seconds).clamp(1, 31_536_000))),
            json!({}),
        ),
        Outcome::Failed { error, retryable } if *retryable && lease.attempt < task.max_attempts => {
            let delay = backoff(cfg.retry_base_delay, lease.attempt);
            (
                TaskStatus::Retrying,
                None,
                Some(error.clone()),
                Some(now() + chrono::Duration::from_std(delay).unwrap_or_default()),
                json!({"error": error, "retry_in_seconds": delay.as_secs_f64()}),
            )
        }
        Outcome::Failed { error, .. } => (
            TaskStatus::Failed,
            None,
            Some(error.clone()),
            None,
            json!({"error": error}),
        ),
    };
    // A waiting status event was written by the runtime with the call.
    let mut step = tail;
    if !matches!(
        status,
        TaskStatus::WaitingApproval | TaskStatus::WaitingInput | TaskStatus::WaitingSubtasks
    ) {
        step.events.push(NewEvent::status(status, extra));
    }
    let messages = match (&outcome, task.session_id) {
        (Outcome::Succeeded { answer, .. }, Some(sid)) => runtime::session_turn(
            sid,
            runtime::input_text(&task.input),
            answer.clone(),
            Some(task.id),
        )
        .into(),
        _ => Vec::new(),
    };
    let f = Finish {
        status,
        result,
        error,
        run_at,
        step,
        messages,
    };
    match state.store.finish_task(lease, &f).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(task_id = %task.id, "late completion rejected: the lease was lost");
            return;
        }
        Err(e) => {
            tracing::warn!(task_id = %task.id, error = %e, "cannot record the end of a task; its lease will expire");
            return;
        }
    }
    state.tasks.task_changed(task.id);
    match status {
        TaskStatus::Retrying => {
            metrics::counter!(m::TASKS_RETRIED_TOTAL).increment(1);
        }
        // Written as `queued` when its sub-tasks had all ended meanwhile: claim it.
        TaskStatus::WaitingSubtasks => state.tasks.wake(),
        s if s.is_terminal() => {
            metrics::counter!(m::TASKS_TOTAL, "status" => s.as_str()).increment(1);
            let since = task.started_at.unwrap_or(task.created_at);
            let secs = (now() - since).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!(m::TASK_DURATION_SECONDS)
                .record(secs.max(started.elapsed().as_secs_f64()));
            state.tasks.finished.notify_waiters();
            if task.callback_url.is_some() {
                webhooks::wake(state);
            }
            if task.parent_task_id.is_some() {
                requeue_parents(state).await;
            }
        }
        _ => {}
    }
}

/// The queue as the runtime reaches it: sub-tasks go through [`submit`].
pub struct TaskQueue<'a>(pub &'a AppState);

#[async_trait]
impl runtime::Queue for TaskQueue<'_> {
    async fn submit_subtask(&self, sub: SubTask) -> Result<Task, SubTaskError> {
        let state = self.0;
        let callee = sub.employee.id;
        let mut req = Submit::new(
            sub.employee.tenant_id,
            EmployeeRef::Resolved(Box::new(sub.employee)),
            Value::from(sub.input),
        );
        req.metadata = Some(json!({ "delegated_by": sub.delegated_by }));
        if let Some(parent) = sub.parent_task_id {
            req.parent = Some(Parent {
                task_id: parent,
                depth: sub.depth,
            });
            // A parent that runs again (retry, rescue) gets the same sub-task back.
            let digest = hex::encode(Sha256::digest(req.input.to_string().as_bytes()));
            req.idempotency = Some(Idempotency {
                key: format!("delegate:{parent}:{callee}:{digest}"),
                body_hash: None,
            });
        }
        match submit(state, req).await {
            Ok(s) => Ok(s.task),
            Err(SubmitError::Store(e)) => {
                tracing::warn!(error = %e, "cannot queue a sub-task");
                Err(SubTaskError::Unavailable)
            }
            Err(e) => Err(SubTaskError::Refused(e.to_string())),
        }
    }
}

/// Rescues tasks whose lease expired (their worker is presumed dead).
async fn reaper(state: AppState, stop: CancellationToken) {
    let cfg = state.config.tasks.clone();
    let every = (cfg.lease / 2).min(cfg.poll_interval.max(Duration::from_millis(100)));
    let base = cfg.retry_base_delay;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.cancelled() => return,
        }
        match state.store.rescue_expired(&|a| backoff(base, a)).await {
            Ok(r) if !r.is_empty() => {
                for t in &r {
                    tracing::warn!(task_id = %t.task_id, to = t.status.as_str(), "rescued a task from an expired lease");
                    metrics::counter!(m::TASKS_RESCUED_TOTAL, "status" => t.status.as_str())
                        .increment(1);
                    if t.status.is_terminal() {
                        metrics::counter!(m::TASKS_TOTAL, "status" => t.status.as_str())
                            .increment(1);
                        state.tasks.finished.notify_waiters();
                        webhooks::wake(&state);
                    }
                    state.tasks.task_changed(t.task_id);
                }
                state.tasks.wake();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lease reaper failed"),
        }
        requeue_parents(&state).await;
        match state.store.expire_inputs().await {
            Ok(r) => {
                for t in &r {
                    tracing::info!(task_id = %t.task_id, "no answer to the task's question in time");
                    metrics::counter!(m::TASKS_TOTAL, "status" => t.status.as_str()).increment(1);
                    state.tasks.task_changed(t.task_id);
                }
                if !r.is_empty() {
                    state.tasks.finished.notify_waiters();
                    webhooks::wake(&state);
                }
            }
            Err(e) => tracing::warn!(error = %e, "input timeouts failed"),
        }
    }
}

/// Queues again the parents whose sub-tasks all ended (after a child's end, and on every
/// reaper pass for ends the direct path missed: a cancel, a rescue, a race with the
/// parent's own parking).
async fn requeue_parents(state: &AppState) {
    match state.store.requeue_parents().await {
        Ok(ids) if !ids.is_empty() => {
            for id in ids {
                state.tasks.task_changed(id);
            }
            state.tasks.wake();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot requeue waiting parents"),
    }
}

/// Samples the queue depth per live status for `digital_employee_queue_depth` (ended
/// tasks are counted by `tasks_total`; counting them here would read the whole table),
/// and the tenants held back by `TENANT_MAX_RUNNING` for `tenants_at_running_cap`.
async fn sample_depth(state: AppState, stop: CancellationToken) {
    let cap = state.config.tasks.tenant_max_running;
    loop {
        if let Ok(counts) = state.store.count_tasks_by_status().await {
            for s in TaskStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
                let n = counts.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
                metrics::gauge!(m::QUEUE_DEPTH, "status" => s.as_str()).set(n as f64);
            }
        }
        if cap > 0
            && let Ok(n) = state.store.count_tenants_at_cap(cap).await
        {
            metrics::gauge!(m::TENANTS_AT_RUNNING_CAP).set(n as f64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = stop.cancelled() => return,
        }
    }
}

/// PostgreSQL `LISTEN de_tasks, de_events` on one connection per replica: a submit or a
/// requeue on any replica wakes this one's claimer; an append to any task's step log
/// wakes this replica's followers of that task. On every (re)connect all followers catch
/// up, since notifications sent while the connection was down are lost.
async fn listen(state: AppState, stop: CancellationToken) {
    use crate::store::postgres::{EVENTS_CHANNEL, TASKS_CHANNEL};
    use sqlx::postgres::PgListener;
    loop {
        let connected = async {
            let mut l = PgListener::connect(state.config.database_url.expose()).await?;
            l.listen_all([TASKS_CHANNEL, EVENTS_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; polling only, retrying in 5s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            },
            _ = stop.cancelled() => return,
        };
        // Whatever was appended while not listening: every follower re-reads its log.
        state.tasks.catch_up_all();
        state.tasks.wake();
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) if n.channel() == EVENTS_CHANNEL => {
                        for id in n.payload().split(',') {
                            match Uuid::parse_str(id) {
                                Ok(id) => state.tasks.task_changed(id),
                                Err(_) => state.tasks.catch_up_all(),
                            }
                        }
                    }
                    Ok(Some(_)) => state.tasks.wake(),
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}
