//! Steering a task that is already queued: cancel it, or decide on the tool call it is
//! paused on. The API (and every later front door) calls these, so the side effects of
//! each — metrics, the completion webhook, wake-ups, live followers — happen in one place.

use serde_json::json;
use uuid::Uuid;

use super::webhooks;
use crate::state::AppState;
use crate::store::{CancelOutcome, StoreError, StoreResult, Task, TaskEvent, TaskStatus};
use crate::telemetry::metrics as m;

/// Cancels a task: at once when it is not running (its end is recorded with its
/// completion webhook), at its next step boundary when it is.
pub async fn cancel(state: &AppState, tenant: Uuid, id: Uuid) -> StoreResult<CancelOutcome> {
    let outcome = state.store.cancel_task(tenant, id).await?;
    if let CancelOutcome::Cancelled(t) = &outcome {
        metrics::counter!(m::TASKS_TOTAL, "status" => "cancelled").increment(1);
        if t.callback_url.is_some() {
            webhooks::wake(state);
        }
        state.tasks.finished.notify_waiters();
        state.tasks.task_changed(id);
    }
    Ok(outcome)
}

/// Why a decision on a paused tool call was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no such task")]
    NotFound,
    /// The task is not waiting for approval (its status, when known).
    #[error("the task is not waiting for approval")]
    NotWaiting(Option<TaskStatus>),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DecideError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => DecideError::NotFound,
            e => DecideError::Store(e),
        }
    }
}

/// Approves (`approve`) or rejects the tool call a task waits on; the task is queued
/// again and resumes on any replica, running the call or telling the model it was refused.
pub async fn decide(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    approve: bool,
    reason: Option<String>,
) -> Result<Task, DecideError> {
    let task = state.store.get_task(tenant, id).await?;
    if task.status != TaskStatus::WaitingApproval {
        return Err(DecideError::NotWaiting(Some(task.status)));
    }
    // The call it waits on: the last waiting_approval status event.
    let events = all_events(state, id).await?;
    let call_id = events
        .iter()
        .rev()
        .find(|e| e.kind == "status" && e.payload["status"] == "waiting_approval")
        .and_then(|e| e.payload["call_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let decision = json!({
        "decision": if approve { "approve" } else { "reject" },
        "call_id": call_id,
        "reason": reason.unwrap_or_default(),
    });
    match state.store.resolve_approval(tenant, id, decision).await? {
        Some(t) => {
            state.tasks.wake();
            state.tasks.task_changed(id);
            Ok(t)
        }
        None => Err(DecideError::NotWaiting(None)),
    }
}

/// Why an answer to a task's question was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no such task")]
    NotFound,
    /// The task is not waiting for input (its status, when known).
    #[error("the task is not waiting for input")]
    NotWaiting(Option<TaskStatus>),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AnswerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AnswerError::NotFound,
            e => AnswerError::Store(e),
        }
    }
}

/// Answers the question a task waits on (`ask_human`); the task is queued again and
/// resumes on any replica with the answer as the tool's result.
pub async fn answer(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    answer: String,
) -> Result<Task, AnswerError> {
    let task = state.store.get_task(tenant, id).await?;
    if task.status != TaskStatus::WaitingInput {
        return Err(AnswerError::NotWaiting(Some(task.status)));
    }
    // The call it waits on: the last waiting_input status event.
    let events = all_events(state, id).await?;
    let call_id = events
        .iter()
        .rev()
        .find(|e| e.kind == "status" && e.payload["status"] == "waiting_input")
        .and_then(|e| e.payload["call_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let input = json!({ "call_id": call_id, "answer": answer });
    match state.store.answer_input(tenant, id, input).await? {
        Some(t) => {
            state.tasks.wake();
            state.tasks.task_changed(id);
            Ok(t)
        }
        None => Err(AnswerError::NotWaiting(None)),
    }
}

/// The question a task waiting for input asks, from its last `waiting_input` event.
pub fn question(events: &[TaskEvent]) -> Option<String> {
    events
        .iter()
        .rev()
        .find(|e| e.kind == "status" && e.payload["status"] == "waiting_input")
        .and_then(|e| e.payload["question"].as_str().map(str::to_owned))
}

/// Every event of a task, in order.
pub async fn all_events(state: &AppState, id: Uuid) -> StoreResult<Vec<TaskEvent>> {
    let mut out: Vec<TaskEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = state.store.list_events(id, after, 1000).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}
