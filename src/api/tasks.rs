//! `/v1/tasks`: submit (idempotent), list, get, cancel, approve/reject a paused step, and
//! the step log as JSON or a live, resumable Server-Sent Events stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{self, Page};
use super::resource::Resource;
use crate::auth::Scope;
use crate::orchestrator::{
    self, AnswerError, DecideError, EmployeeRef, Idempotency, Submit, Submitted, TaskView,
};
use crate::state::{AppState, StreamSlot};
use crate::store::{CancelOutcome, TaskEvent, TaskFilter, TaskStatus};

/// A task to run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Employee id or name (in the caller's tenant).
    #[schema(example = "support-agent")]
    pub employee: String,
    /// What to do: a string, or any JSON (sent to the model as JSON text).
    #[schema(value_type = Object, example = "Summarise ticket 42")]
    pub input: Value,
    /// Higher runs first; -100–100, default 0.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub priority: Option<i32>,
    /// Not before this time (RFC 3339); default now. A time up to five minutes past
    /// counts as now; earlier, or further ahead than `TASK_MAX_DELAY_DAYS`, is a 422.
    #[serde(default, deserialize_with = "super::time::optional")]
    pub run_at: Option<DateTime<Utc>>,
    /// 1–20; default `TASK_MAX_ATTEMPTS`.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub max_attempts: Option<i32>,
    /// Conversation to continue (created on first use).
    #[serde(default)]
    pub session_id: Option<Uuid>,
    /// Completion webhook (http or https): receives the final task, signed (see README).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Free JSON object kept with the task.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A JSON schema (an object) the answer must satisfy, instead of the employee's: the
    /// result's `output` is then that JSON; an invalid answer gets one corrective retry,
    /// then the task fails with `invalid_output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only tasks in this status.
    pub status: Option<String>,
    /// Only tasks of this employee (id or name).
    pub employee: Option<String>,
    /// Only tasks created at or after this time (RFC 3339).
    #[serde(default, deserialize_with = "super::time::optional")]
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this time (RFC 3339).
    #[serde(default, deserialize_with = "super::time::optional")]
    pub created_before: Option<DateTime<Utc>>,
    /// Page size, 1–100; default 20.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub data: Vec<TaskEvent>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Only events with a greater `seq` (same as `Last-Event-ID`).
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub after: Option<i64>,
}

/// A human decision on the paused tool call.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A person's answer to the question a task waits on (`ask_human`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// The answer, given to the employee as the result of its question; 1–20,000
    /// characters, not blank.
    #[schema(min_length = 1, max_length = 20000)]
    pub answer: String,
}

/// The longest answer to a task's question, in characters.
pub const MAX_ANSWER_CHARS: usize = 20_000;

impl CreateTask {
    /// The request to `orchestrator::submit` (every front door submits the same way).
    pub(super) fn into_submit(self, tenant_id: Uuid, idempotency: Option<Idempotency>) -> Submit {
        Submit {
            tenant_id,
            employee: EmployeeRef::Key(self.employee),
            input: self.input,
            priority: self.priority,
            run_at: self.run_at,
            max_attempts: self.max_attempts,
            session_id: self.session_id,
            callback_url: self.callback_url,
            metadata: self.metadata,
            output_schema: self.output_schema,
            idempotency,
            parent: None,
        }
    }
}

/// Tasks as a resource: an id of nothing, or of another tenant's task, is this 404.
const TASK: Resource = Resource::new("no such task");

fn request_hash(body: &CreateTask) -> String {
    let canonical =
        serde_json::to_vec(&serde_json::to_value(body).unwrap_or(Value::Null)).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

/// Submit a task.
///
/// With `Idempotency-Key`, a second submit with the same key returns the first task
/// (same body) or 409 (different body).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body = CreateTask,
    params(("Idempotency-Key" = Option<String>, Header, description = "At most 200 characters")),
    responses(
        (status = 202, description = "Accepted (or the existing task for this key)", body = TaskView),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 409, description = "Idempotency key reused with another body", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTask>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let idempotency = headers.get("idempotency-key").map(|v| Idempotency {
        key: v.to_str().unwrap_or("").trim().to_string(),
        body_hash: Some(request_hash(&body)),
    });
    let req = body.into_submit(caller.0.tenant_id, idempotency);
    let Submitted { task, created } = orchestrator::submit(&state, req).await?;
    let mut resp = (StatusCode::ACCEPTED, Json(TaskView::from(task))).into_response();
    if !created {
        resp.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// List tasks, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListParams),
    responses(
        (status = 200, description = "A page of tasks", body = Page<TaskView>),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<TaskView>>> {
    caller.require(Scope::Read)?;
    let tenant = caller.0.tenant_id;
    let limit = page::limit(p.limit)?;
    let status = match &p.status {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::validation("status", format!("must be one of {}", TaskStatus::names()))
        })?),
    };
    let before = page::decode(p.cursor.as_deref())?;
    // A filter naming no employee of this tenant matches no task: an empty page.
    let employee_id = match &p.employee {
        None => None,
        Some(e) if e.is_empty() => {
            return Err(ApiError::validation("employee", "must not be empty"));
        }
        Some(e) => match orchestrator::resolve_employee(&state, tenant, e).await {
            Ok(found) => Some(found.id),
            Err(orchestrator::SubmitError::Invalid { .. }) => {
                return Ok(Json(Page {
                    data: Vec::new(),
                    next_cursor: None,
                }));
            }
            Err(other) => return Err(other.into()),
        },
    };
    let filter = TaskFilter {
        status,
        employee_id,
        created_after: p.created_after,
        created_before: p.created_before,
        parent_task_id: None,
    };
    let page = state
        .store
        .list_tasks(tenant, &filter, before, limit)
        .await?;
    Ok(Json(page.into()))
}

/// Get one task: status, result, error, attempts, tokens, cost, timings.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 404, description = "No such task in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<TaskView>> {
    caller.require(Scope::Read)?;
    let t = state
        .store
        .get_task(caller.0.tenant_id, TASK.parse_id(&id)?)
        .await
        .map_err(TASK.not_found())?;
    Ok(Json(t.into()))
}

/// Cancel a task: at once when not running; at its next step boundary when running.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id")),
    responses(
        (status = 202, description = "Cancelled, or cancellation requested", body = TaskView),
        (status = 404, description = "No such task in this tenant", body = ErrorBody),
        (status = 409, description = "The task already ended", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let id = TASK.parse_id(&id)?;
    match orchestrator::cancel(&state, caller.0.tenant_id, id)
        .await
        .map_err(TASK.not_found())?
    {
        CancelOutcome::Cancelled(t) => {
            Ok((StatusCode::ACCEPTED, Json(TaskView::from(t))).into_response())
        }
        CancelOutcome::Requested(t) => {
            Ok((StatusCode::ACCEPTED, Json(TaskView::from(t))).into_response())
        }
        CancelOutcome::AlreadyFinished(t) => Err(ApiError::Conflict(format!(
            "the task already ended ({})",
            t.status.as_str()
        ))),
    }
}

/// Approve the tool call a task is waiting on; the task resumes and runs it.
#[utoipa::path(post, path = "/v1/tasks/{id}/approve", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id")),
    request_body(content = Option<Decision>),
    responses(
        (status = 202, description = "Resumed", body = TaskView),
        (status = 404, description = "No such task in this tenant", body = ErrorBody),
        (status = 409, description = "The task is not waiting for approval", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    decide(state, caller, id, true, decision_body(&body)?).await
}

/// Reject the tool call a task is waiting on; the model is told and continues.
#[utoipa::path(post, path = "/v1/tasks/{id}/reject", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id")),
    request_body(content = Option<Decision>),
    responses(
        (status = 202, description = "Resumed without the call", body = TaskView),
        (status = 404, description = "No such task in this tenant", body = ErrorBody),
        (status = 409, description = "The task is not waiting for approval", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    decide(state, caller, id, false, decision_body(&body)?).await
}

/// Answer the question a task waits on (`waiting_input`); the task resumes with it.
#[utoipa::path(post, path = "/v1/tasks/{id}/input", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id")),
    request_body = TaskInput,
    responses(
        (status = 202, description = "Resumed with the answer", body = TaskView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such task in this tenant", body = ErrorBody),
        (status = 409, description = "The task is not waiting for input", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Missing, blank or too long answer", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn input(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<TaskInput>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let id = TASK.parse_id(&id)?;
    let view = answer_task(&state, caller.0.tenant_id, id, body.answer).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Answers the question of a task of `tenant`, errors as the API answers them.
pub(super) async fn answer_task(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    answer: String,
) -> ApiResult<TaskView> {
    if answer.trim().is_empty() {
        return Err(ApiError::validation("answer", "must not be blank"));
    }
    if answer.chars().count() > MAX_ANSWER_CHARS {
        return Err(ApiError::validation(
            "answer",
            format!("must be at most {MAX_ANSWER_CHARS} characters"),
        ));
    }
    match orchestrator::answer(state, tenant, id, answer).await {
        Ok(t) => Ok(TaskView::from(t)),
        Err(AnswerError::NotFound) => Err(TASK.missing()),
        Err(AnswerError::NotWaiting(Some(status))) => Err(ApiError::Conflict(format!(
            "the task is not waiting for input ({})",
            status.as_str()
        ))),
        Err(e @ AnswerError::NotWaiting(None)) => Err(ApiError::Conflict(e.to_string())),
        Err(AnswerError::Store(e)) => Err(e.into()),
    }
}

/// The optional JSON body of approve/reject.
fn decision_body(b: &[u8]) -> ApiResult<Decision> {
    if b.iter().all(u8::is_ascii_whitespace) || b.trim_ascii() == b"null" {
        Ok(Decision::default())
    } else {
        super::extract::parse_json(b)
    }
}

async fn decide(
    state: AppState,
    caller: Caller,
    id: String,
    approve: bool,
    d: Decision,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let id = TASK.parse_id(&id)?;
    let view = decide_task(&state, caller.0.tenant_id, id, approve, d.reason).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Approves or rejects the paused call of a task of `tenant`, errors as the API answers
/// them (also for the MCP endpoint's tools).
pub(super) async fn decide_task(
    state: &AppState,
    tenant: Uuid,
    id: Uuid,
    approve: bool,
    reason: Option<String>,
) -> ApiResult<TaskView> {
    match orchestrator::decide(state, tenant, id, approve, reason).await {
        Ok(t) => Ok(TaskView::from(t)),
        Err(DecideError::NotFound) => Err(TASK.missing()),
        Err(DecideError::NotWaiting(Some(status))) => Err(ApiError::Conflict(format!(
            "the task is not waiting for approval ({})",
            status.as_str()
        ))),
        Err(e @ DecideError::NotWaiting(None)) => Err(ApiError::Conflict(e.to_string())),
        Err(DecideError::Store(e)) => Err(e.into()),
    }
}

/// The step log: JSON, or with `Accept: text/event-stream` a live stream.
///
/// The stream sends each event with `id: <seq>` and `event: <kind>`, resumes after
/// `Last-Event-ID` (or `?after=`) without gaps or duplicates, and ends once the task has
/// ended and every event has been sent.
#[utoipa::path(get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id"), EventParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq")),
    responses(
        (status = 200, description = "Events in order (or an SSE stream)", body = EventList),
        (status = 404, description = "No such task in this tenant", body = ErrorBody),
        (status = 429, description = "The tenant holds `SSE_MAX_STREAMS_PER_TENANT` live streams; see `Retry-After`", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath,
    ApiQuery(p): ApiQuery<EventParams>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let tenant = caller.0.tenant_id;
    let id = TASK.parse_id(&id)?;
    state
        .store
        .get_task(tenant, id)
        .await
        .map_err(TASK.not_found())?;
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| super::counter(s.trim()))
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event seq".into()))?,
        ),
    };
    let after = last_id.or(p.after).unwrap_or(0).max(0);
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !wants_sse {
        let mut data = orchestrator::all_events(&state, id).await?;
        data.retain(|e| e.seq > after);
        return Ok(Json(EventList { data }).into_response());
    }
    let cfg = &state.config.tasks;
    let max = cfg.sse_max_streams_per_tenant;
    let Some(slot) = state.tasks.open_stream(tenant, max) else {
        return Err(ApiError::TooManyStreams {
            max,
            retry_after: STREAM_RETRY_AFTER.min(cfg.sse_max_stream_duration.as_secs().max(1)),
        });
    };
    let ends_at = tokio::time::Instant::now() + cfg.sse_max_stream_duration;
    Ok(Sse::new(follow(state, tenant, id, after, slot, ends_at))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Seconds a caller over the stream cap is asked to wait.
const STREAM_RETRY_AFTER: u64 = 5;

/// Each event of the task's log as one SSE event: `id` = seq, `event` = kind.
fn follow(
    state: AppState,
    tenant: Uuid,
    id: Uuid,
    after: i64,
    slot: StreamSlot,
    ends_at: tokio::time::Instant,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    use futures_util::StreamExt;
    orchestrator::follow(state, tenant, id, after, slot, ends_at).map(|e| {
        Ok(Event::default()
            .id(e.seq.to_string())
            .event(e.kind.clone())
            .data(serde_json::to_string(&e).unwrap_or_default()))
    })
}
