//! The approvals inbox: every task of the tenant paused on a tool call, with the call
//! and its arguments; approve or reject (with a reason) through `orchestrator::decide`,
//! the path the API's `/approve` and `/reject` take.

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::tasks::{employee_names, pretty, preview, short};
use super::view::{Ctx, Layout, PageError, page, parse_id, see_other, when};
use crate::auth::Scope;
use crate::orchestrator;
use crate::runtime::OUTCOME_UNKNOWN;
use crate::state::AppState;
use crate::store::{TaskEvent, TaskFilter, TaskStatus};

const INBOX_SIZE: u32 = 50;

pub struct Pending {
    pub id: String,
    pub short: String,
    pub employee: String,
    pub input: String,
    pub tool: String,
    pub arguments: String,
    pub since: String,
    /// The call's idempotency key when an earlier attempt started the call and its result
    /// was never recorded: it may have taken effect already.
    pub unknown_outcome: Option<String>,
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct Inbox {
    l: Layout,
    items: Vec<Pending>,
}

#[derive(Template)]
#[template(path = "console/decided.html")]
struct Decided {
    id: String,
    short: String,
    approved: bool,
}

/// `GET /approvals`.
pub async fn inbox(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let tenant = ctx.tenant();
    let l = ctx.layout(&state, "approvals", "Approvals").await?;
    let names: HashMap<Uuid, String> = employee_names(&state, tenant)
        .await?
        .into_iter()
        .map(|e| (e.id, e.fields.name))
        .collect();
    let filter = TaskFilter {
        status: Some(TaskStatus::WaitingApproval),
        employee_id: None,
        created_after: None,
        created_before: None,
        parent_task_id: None,
    };
    let tasks = state
        .store
        .list_tasks(tenant, &filter, None, INBOX_SIZE)
        .await?
        .items;
    // Each task's latest status change is the one that paused it on the call.
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let calls: HashMap<Uuid, TaskEvent> = state
        .store
        .last_events(&ids, "status")
        .await?
        .into_iter()
        .filter(|e| e.payload["status"] == "waiting_approval")
        .map(|e| (e.task_id, e))
        .collect();
    let items = tasks
        .into_iter()
        .map(|t| {
            let (tool, arguments, since, unknown_outcome) = match calls.get(&t.id) {
                Some(e) => (
                    e.payload["tool"].as_str().unwrap_or_default().to_string(),
                    pretty(&e.payload["arguments"]),
                    when(&e.created_at),
                    (e.payload["reason"] == OUTCOME_UNKNOWN).then(|| {
                        e.payload["idempotency_key"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    }),
                ),
                None => (String::new(), String::new(), when(&t.updated_at), None),
            };
            Pending {
                id: t.id.to_string(),
                short: short(t.id),
                employee: names.get(&t.employee_id).cloned().unwrap_or_default(),
                input: preview(&t.input, 200),
                tool,
                arguments,
                since,
                unknown_outcome,
            }
        })
        .collect();
    Ok(page(StatusCode::OK, &Inbox { l, items }))
}

#[derive(Debug, Default, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    reason: String,
}

async fn decide(
    state: AppState,
    ctx: Ctx,
    id: String,
    approve: bool,
    f: DecisionForm,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let id = parse_id(&id, "task")?;
    let reason = Some(f.reason.trim().to_string()).filter(|r| !r.is_empty());
    let t = orchestrator::decide(&state, ctx.tenant(), id, approve, reason).await?;
    if ctx.htmx {
        return Ok(page(
            StatusCode::OK,
            &Decided {
                id: t.id.to_string(),
                short: short(t.id),
                approved: approve,
            },
        ));
    }
    Ok(see_other("/approvals"))
}

/// `POST /tasks/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Result<Response, PageError> {
    decide(state, ctx, id, true, f).await
}

/// `POST /tasks/{id}/reject`.
pub async fn reject(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Result<Response, PageError> {
    decide(state, ctx, id, false, f).await
}
