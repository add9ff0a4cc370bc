//! Tasks: the list with filters and cursor pagination, a task's page with its live
//! timeline (the orchestrator's event follower, rendered as HTML fragments over SSE),
//! cancel, and the "give a task" form. Submits, cancels and reads go through
//! `orchestrator::submit`, `orchestrator::cancel` and the store, as the API's do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::markdown;
use super::view::{Ctx, FieldErrors, Layout, PageError, dollars, page, parse_id, see_other, when};
use crate::auth::Scope;
use crate::orchestrator::{self, AnswerError, EmployeeRef, Submit, SubmitError};
use crate::state::AppState;
use crate::store::{CancelOutcome, Employee, Task, TaskEvent, TaskFilter, TaskStatus};

const PAGE_SIZE: u32 = 25;

/// Employee names by id (the first 200 of the tenant), for lists and pickers.
pub async fn employee_names(state: &AppState, tenant: Uuid) -> Result<Vec<Employee>, PageError> {
    Ok(state.store.list_employees(tenant, None, 200).await?.items)
}

fn name_of(names: &HashMap<Uuid, String>, id: Uuid) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| format!("(deleted {})", short(id)))
}

pub fn short(id: Uuid) -> String {
    id.simple().to_string()[24..].to_string()
}

/// One line of text from a task's input.
pub fn preview(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

pub struct TaskRow {
    pub id: String,
    pub short: String,
    pub employee: String,
    pub status: &'static str,
    pub created: String,
    pub cost: String,
    pub input: String,
    pub error: String,
}

pub fn row(t: &Task, names: &HashMap<Uuid, String>) -> TaskRow {
    TaskRow {
        id: t.id.to_string(),
        short: short(t.id),
        employee: name_of(names, t.employee_id),
        status: t.status.as_str(),
        created: when(&t.created_at),
        cost: dollars(t.cost_nanos),
        input: preview(&t.input, 80),
        error: t
            .error
            .as_deref()
            .map(|e| preview(&Value::from(e), 160))
            .unwrap_or_default(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    employee: String,
    /// `YYYY-MM-DD` (UTC), inclusive.
    #[serde(default)]
    from: String,
    /// `YYYY-MM-DD` (UTC), inclusive.
    #[serde(default)]
    to: String,
    #[serde(default)]
    before: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/tasks.html")]
struct TasksPage {
    l: Layout,
    rows: Vec<TaskRow>,
    statuses: Vec<Choice>,
    employees: Vec<Choice>,
    from: String,
    to: String,
    next: Option<String>,
    error: Option<String>,
}

fn day(s: &str, end: bool) -> Result<Option<DateTime<Utc>>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))?;
    let d = if end { d.succ_opt().unwrap_or(d) } else { d };
    Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
}

/// `GET /tasks`: newest first, filtered by status, employee and creation day.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let tenant = ctx.tenant();
    let l = ctx.layout(&state, "tasks", "Tasks").await?;
    let employees = employee_names(&state, tenant).await?;
    let names: HashMap<Uuid, String> = employees
        .iter()
        .map(|e| (e.id, e.fields.name.clone()))
        .collect();
    let mut error = None;
    let status = TaskStatus::parse(&q.status);
    let employee_id = Uuid::parse_str(&q.employee).ok();
    let (created_after, created_before) = match (day(&q.from, false), day(&q.to, true)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            error = Some(e);
            (None, None)
        }
    };
    let filter = TaskFilter {
        status,
        employee_id,
        created_after,
        created_before,
        parent_task_id: None,
    };
    let before = Uuid::parse_str(&q.before).ok();
    let found = state
        .store
        .list_tasks(tenant, &filter, before, PAGE_SIZE)
        .await?;
    let next = found.next_cursor.map(|c| {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &q.status),
            ("employee", &q.employee),
            ("from", &q.from),
            ("to", &q.to),
        ] {
            if !v.is_empty() {
                qs.append_pair(k, v);
            }
        }
        qs.append_pair("before", &c.to_string());
        format!("/tasks?{}", qs.finish())
    });
    let statuses = TaskStatus::ALL
        .iter()
        .map(|s| Choice {
            value: s.as_str().into(),
            label: s.as_str().replace('_', " "),
            selected: status == Some(*s),
        })
        .collect();
    let employees = employees
        .iter()
        .map(|e| Choice {
            value: e.id.to_string(),
            label: e.fields.name.clone(),
            selected: employee_id == Some(e.id),
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &TasksPage {
            l,
            rows: found.items.iter().map(|t| row(t, &names)).collect(),
            statuses,
            employees,
            from: q.from,
            to: q.to,
            next,
            error,
        },
    ))
}

/// One step of the timeline as shown.
pub struct Step {
    pub dom_id: String,
    pub kind: String,
    pub title: String,
    pub facts: Vec<(&'static str, String)>,
    /// Collapsible detail (arguments, results, messages), pretty JSON or text.
    pub body: Option<(&'static str, String)>,
    pub when: String,
}

/// A value for reading: JSON indented; a string holding a JSON object or array (tool
/// arguments arrive so) indented as that JSON; other strings as they are.
pub fn pretty(v: &Value) -> String {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ (Value::Object(_) | Value::Array(_))) => {
                serde_json::to_string_pretty(&inner).unwrap_or_else(|_| s.clone())
            }
            _ => s.clone(),
        },
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What a step of the log says, in words.
pub fn step(e: &TaskEvent) -> Step {
    let p = &e.payload;
    let mut facts: Vec<(&'static str, String)> = Vec::new();
    let mut body = None;
    let title = match e.kind.as_str() {
        "status" => {
            for (k, label) in [("error", "error"), ("reason", "reason"), ("tool", "tool")] {
                let v = text(&p[k]);
                if !v.is_empty() {
                    facts.push((label, v));
                }
            }
            if p.get("arguments").is_some() {
                body = Some(("arguments", pretty(&p["arguments"])));
            }
            format!("Status: {}", text(&p["status"]).replace('_', " "))
        }
        "llm_call" => {
            facts.push((
                "tokens",
                format!(
                    "{} in / {} out",
                    text(&p["tokens_in"]),
                    text(&p["tokens_out"])
                ),
            ));
            facts.push(("cost", dollars(p["cost_nanos"].as_i64().unwrap_or(0))));
            if let Some(ms) = p["latency_ms"].as_u64() {
                facts.push(("latency", format!("{ms} ms")));
            }
            if p["cache_hit"].as_bool() == Some(true) {
                facts.push(("cache", "hit".into()));
            }
            if p["failed_attempts"].as_u64().unwrap_or(0) > 0 {
                facts.push(("failed attempts", text(&p["failed_attempts"])));
            }
            body = Some(("model output", pretty(&p["message"])));
            format!("LLM call: {}/{}", text(&p["provider"]), text(&p["model"]))
        }
        "tool_call" => {
            body = Some(("arguments", pretty(&p["arguments"])));
            format!("Tool call: {}", text(&p["tool"]))
        }
        "tool_started" => {
            facts.push(("call id", text(&p["idempotency_key"])));
            format!("Tool call started: {}", text(&p["tool"]))
        }
        "resumed" => {
            let pending = p["pending_calls"].as_u64().unwrap_or(0);
            if pending > 0 {
                facts.push(("tool calls to make", pending.to_string()));
            }
            format!("Resumed after step {}", text(&p["step"]))
        }
        "tool_result" => {
            body = Some(("result", pretty(&p["content"])));
            format!(
                "Tool result: {} ({})",
                text(&p["tool"]),
                text(&p["outcome"])
            )
        }
        "message" => {
            body = Some(("message", text(&p["content"])));
            format!("Message from {}", text(&p["role"]))
        }
        "approval" => {
            let reason = text(&p["reason"]);
            if !reason.is_empty() {
                facts.push(("reason", reason));
            }
            format!("Decision: {}", text(&p["decision"]))
        }
        other => {
            body = Some(("payload", pretty(p)));
            other.to_string()
        }
    };
    Step {
        dom_id: format!("ev-{}", e.seq),
        kind: e.kind.clone(),
        title,
        facts,
        body,
        when: when(&e.created_at),
    }
}

#[derive(Template)]
#[template(path = "console/timeline_item.html")]
struct StepItem {
    s: Step,
}

/// Everything about a task that changes while it runs (refreshed when it moves).
pub struct Summary {
    pub id: String,
    pub status: &'static str,
    pub ended: bool,
    pub employee: String,
    pub employee_id: String,
    pub attempt: String,
    pub steps: i32,
    pub tokens: String,
    pub cost: String,
    pub created: String,
    pub started: String,
    pub finished: String,
    pub cancel_requested: bool,
    pub result_html: Option<String>,
    pub result_json: Option<String>,
    pub error: Option<String>,
    pub can_cancel: bool,
    /// The question a task waiting for input asks, and whether this viewer may answer.
    pub question: Option<String>,
    pub can_answer: bool,
    pub csrf: String,
}

async fn summary(state: &AppState, ctx: &Ctx, t: &Task) -> Result<Summary, PageError> {
    let employee = match state.store.get_employee(t.tenant_id, t.employee_id).await {
        Ok(e) => e.fields.name,
        Err(crate::store::StoreError::NotFound) => format!("(deleted {})", short(t.employee_id)),
        Err(e) => return Err(e.into()),
    };
    let (result_html, result_json) = match &t.result {
        None => (None, None),
        Some(r) => match r.get("output") {
            Some(Value::String(s)) => (Some(markdown::to_html(s)), None),
            _ => (None, Some(pretty(r))),
        },
    };
    let ended = t.status.is_terminal();
    let question = if t.status == TaskStatus::WaitingInput {
        orchestrator::question(&orchestrator::all_events(state, t.id).await?)
    } else {
        None
    };
    Ok(Summary {
        id: t.id.to_string(),
        status: t.status.as_str(),
        ended,
        employee,
        employee_id: t.employee_id.to_string(),
        attempt: format!("{} of {}", t.attempt, t.max_attempts),
        steps: t.steps,
        tokens: format!("{} in / {} out", t.tokens_in, t.tokens_out),
        cost: dollars(t.cost_nanos),
        created: when(&t.created_at),
        started: t.started_at.as_ref().map(when).unwrap_or_default(),
        finished: t.finished_at.as_ref().map(when).unwrap_or_default(),
        cancel_requested: t.cancel_requested,
        result_html,
        result_json,
        error: t.error.clone(),
        can_cancel: !ended && !t.cancel_requested && ctx.can(Scope::Write),
        can_answer: question.is_some() && ctx.can(Scope::Write),
        question,
        csrf: ctx.session.csrf.clone(),
    })
}

#[derive(Template)]
#[template(path = "console/task.html")]
struct TaskPage {
    l: Layout,
    sm: Summary,
    input: String,
    steps: Vec<Step>,
    live: Option<String>,
}

#[derive(Template)]
#[template(path = "console/task_summary.html")]
struct SummaryFragment {
    sm: Summary,
}

async fn load(state: &AppState, ctx: &Ctx, id: &str) -> Result<Task, PageError> {
    let id = parse_id(id, "task")?;
    match state.store.get_task(ctx.tenant(), id).await {
        Ok(t) => Ok(t),
        Err(crate::store::StoreError::NotFound) => Err(PageError::NotFound("no such task".into())),
        Err(e) => Err(e.into()),
    }
}

/// `GET /tasks/{id}`: the task, its timeline so far, and (while it runs) the live feed.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let t = load(&state, &ctx, &id).await?;
    let l = ctx
        .layout(&state, "tasks", format!("Task {}", short(t.id)))
        .await?;
    let events = orchestrator::all_events(&state, t.id).await?;
    let last = events.last().map_or(0, |e| e.seq);
    let live = (!t.status.is_terminal()).then(|| format!("/tasks/{}/live?after={last}", t.id));
    Ok(page(
        StatusCode::OK,
        &TaskPage {
            l,
            sm: summary(&state, &ctx, &t).await?,
            input: pretty(&t.input),
            steps: events.iter().map(step).collect(),
            live,
        },
    ))
}

/// `GET /tasks/{id}/summary`: the summary block alone (htmx swaps it in).
pub async fn summary_fragment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let t = load(&state, &ctx, &id).await?;
    Ok(page(
        StatusCode::OK,
        &SummaryFragment {
            sm: summary(&state, &ctx, &t).await?,
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    after: Option<i64>,
}

/// `GET /tasks/{id}/live`: new steps as `step` events (HTML fragments, `id` = seq,
/// resumable with `Last-Event-ID`), then `end` once the task has ended. Counted
/// against the tenant's live streams like the API's event stream.
pub async fn live(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let t = load(&state, &ctx, &id).await?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<i64>().ok());
    let after = last_id.or(q.after).unwrap_or(0).max(0);
    let cfg = &state.config.tasks;
    let Some(slot) = state
        .tasks
        .open_stream(ctx.tenant(), cfg.sse_max_streams_per_tenant)
    else {
        return Ok((StatusCode::TOO_MANY_REQUESTS, "too many live streams").into_response());
    };
    let ends_at = tokio::time::Instant::now() + cfg.sse_max_stream_duration;
    let tenant = ctx.tenant();
    let end_state = state.clone();
    let steps = orchestrator::follow(state, tenant, t.id, after, slot, ends_at).map(|e| {
        let html = StepItem { s: step(&e) }.render().unwrap_or_default();
        Ok::<_, Infallible>(
            Event::default()
                .id(e.seq.to_string())
                .event("step")
                .data(html),
        )
    });
    // After the follower stops: `end` only when the task really ended (a stream that
    // reached its lifetime just closes, and the browser reconnects where it left off).
    let end = futures_util::stream::once(async move {
        match end_state.store.get_task(tenant, t.id).await {
            Ok(t) if t.status.is_terminal() => {
                Some(Ok(Event::default().event("end").data(t.status.as_str())))
            }
            _ => None,
        }
    })
    .filter_map(|e| async move { e });
    Ok(Sse::new(steps.chain(end))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `POST /tasks/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let t = load(&state, &ctx, &id).await?;
    match orchestrator::cancel(&state, ctx.tenant(), t.id).await? {
        CancelOutcome::Cancelled(_) | CancelOutcome::Requested(_) => {
            Ok(see_other(&format!("/tasks/{}", t.id)))
        }
        CancelOutcome::AlreadyFinished(t) => Err(PageError::Conflict(format!(
            "the task already ended ({})",
            t.status.as_str()
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    answer: String,
}

/// `POST /tasks/{id}/input`: a person answers the question the task waits on.
pub async fn answer(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<AnswerForm>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let t = load(&state, &ctx, &id).await?;
    let answer = f.answer.trim().to_string();
    if answer.is_empty() {
        return Err(PageError::BadRequest("answer: must not be blank".into()));
    }
    if answer.chars().count() > 20_000 {
        return Err(PageError::BadRequest(
            "answer: must be at most 20000 characters".into(),
        ));
    }
    match orchestrator::answer(&state, ctx.tenant(), t.id, answer).await {
        Ok(_) => Ok(see_other(&format!("/tasks/{}", t.id))),
        Err(AnswerError::NotFound) => Err(PageError::NotFound("no such task".into())),
        Err(AnswerError::NotWaiting(s)) => Err(PageError::Conflict(format!(
            "the task is not waiting for input ({})",
            s.map_or("changed meanwhile", |s| s.as_str())
        ))),
        Err(AnswerError::Store(e)) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    employee: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewTask {
    #[serde(default)]
    employee: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    priority: String,
    /// `YYYY-MM-DDTHH:MM`, UTC.
    #[serde(default)]
    run_at: String,
}

#[derive(Template)]
#[template(path = "console/task_new.html")]
struct NewTaskPage {
    l: Layout,
    employees: Vec<Choice>,
    f: NewTask,
    errors: FieldErrors,
}

async fn new_form(
    state: &AppState,
    ctx: &Ctx,
    f: NewTask,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let l = ctx.layout(state, "tasks", "Give a task").await?;
    let employees = employee_names(state, ctx.tenant())
        .await?
        .into_iter()
        .map(|e| Choice {
            selected: f.employee == e.id.to_string() || f.employee == e.fields.name,
            value: e.id.to_string(),
            label: e.fields.name,
        })
        .collect();
    Ok(page(
        status,
        &NewTaskPage {
            l,
            employees,
            f,
            errors,
        },
    ))
}

/// `GET /tasks/new?employee=`: the "give a task" form.
pub async fn new(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<NewQuery>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let f = NewTask {
        employee: q.employee,
        ..Default::default()
    };
    new_form(&state, &ctx, f, FieldErrors::default(), StatusCode::OK).await
}

/// `POST /tasks`: submit through `orchestrator::submit`; a refused field is shown
/// beside it.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(f): Form<NewTask>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let mut errors = FieldErrors::default();
    let priority = match f.priority.trim() {
        "" => None,
        p => match p.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.add("priority", "must be a whole number");
                None
            }
        },
    };
    let run_at = match f.run_at.trim() {
        "" => None,
        s => match NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M") {
            Ok(t) => Some(t.and_utc()),
            Err(_) => {
                errors.add("run_at", "must be a date and time (UTC)");
                None
            }
        },
    };
    if f.employee.trim().is_empty() {
        errors.add("employee", "choose an employee");
    }
    if !errors.is_empty() {
        return new_form(&state, &ctx, f, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let mut req = Submit::new(
        ctx.tenant(),
        EmployeeRef::Key(f.employee.trim().to_string()),
        Value::String(f.input.clone()),
    );
    req.priority = priority;
    req.run_at = run_at;
    match orchestrator::submit(&state, req).await {
        Ok(s) => Ok(see_other(&format!("/tasks/{}", s.task.id))),
        Err(SubmitError::Invalid { field, message }) => {
            errors.add(field, message);
            new_form(&state, &ctx, f, errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => Err(e.into()),
    }
}
