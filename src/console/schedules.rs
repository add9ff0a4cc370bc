//! Schedules: list, create (with a cron helper showing the next five fire times),
//! enable/disable, delete — under `orchestrator::scheduler`'s rules, as the API.

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::tasks::{Choice, employee_names, preview};
use super::view::{Ctx, FieldErrors, Layout, PageError, page, parse_id, see_other, when};
use crate::auth::Scope;
use crate::orchestrator::scheduler::{self, CreateError};
use crate::state::AppState;
use crate::store::{ScheduleFields, StoreError, now};

pub struct Row {
    pub id: String,
    pub employee: String,
    pub cron: String,
    pub timezone: String,
    pub input: String,
    pub enabled: bool,
    pub next: String,
    pub last: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewSchedule {
    #[serde(default)]
    employee: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    priority: String,
}

/// The next fire times of a cron, or why it is refused.
pub struct Preview {
    pub times: Vec<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/schedules.html")]
struct SchedulesPage {
    l: Layout,
    rows: Vec<Row>,
    employees: Vec<Choice>,
    f: NewSchedule,
    pv: Preview,
    errors: FieldErrors,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "console/cron_preview.html")]
struct PreviewFragment {
    pv: Preview,
}

/// The next five fires of `cron` in `timezone` (UTC when empty), shown in UTC.
fn next_five(cron: &str, timezone: &str) -> Preview {
    let tz = if timezone.trim().is_empty() {
        "UTC"
    } else {
        timezone.trim()
    };
    if cron.trim().is_empty() {
        return Preview {
            times: Vec::new(),
            error: None,
        };
    }
    let mut times = Vec::new();
    let mut after = now();
    for _ in 0..5 {
        match scheduler::next_fire(cron.trim(), tz, after) {
            Ok(t) => {
                times.push(when(&t));
                after = t;
            }
            Err(e) => {
                return Preview {
                    times: Vec::new(),
                    error: Some(e),
                };
            }
        }
    }
    Preview { times, error: None }
}

async fn render(
    state: &AppState,
    ctx: &Ctx,
    f: NewSchedule,
    errors: FieldErrors,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let l = ctx.layout(state, "schedules", "Schedules").await?;
    let employees = employee_names(state, ctx.tenant()).await?;
    let names: HashMap<Uuid, String> = employees
        .iter()
        .map(|e| (e.id, e.fields.name.clone()))
        .collect();
    let rows = state
        .store
        .list_schedules(ctx.tenant(), None, 100)
        .await?
        .items
        .into_iter()
        .map(|s| Row {
            id: s.id.to_string(),
            employee: names
                .get(&s.fields.employee_id)
                .cloned()
                .unwrap_or_default(),
            cron: s.fields.cron,
            timezone: s.fields.timezone,
            input: preview(&s.fields.input, 80),
            enabled: s.fields.enabled,
            next: when(&s.next_fire_at),
            last: s.last_fired_at.as_ref().map(when).unwrap_or_default(),
        })
        .collect();
    let employees = employees
        .into_iter()
        .map(|e| Choice {
            selected: f.employee == e.id.to_string(),
            value: e.id.to_string(),
            label: e.fields.name,
        })
        .collect();
    let pv = next_five(&f.cron, &f.timezone);
    Ok(page(
        status,
        &SchedulesPage {
            l,
            rows,
            employees,
            f,
            pv,
            errors,
            notice,
        },
    ))
}

/// `GET /schedules`.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let f = NewSchedule {
        timezone: "UTC".into(),
        ..Default::default()
    };
    render(
        &state,
        &ctx,
        f,
        FieldErrors::default(),
        None,
        StatusCode::OK,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct PreviewQuery {
    #[serde(default)]
    cron: String,
    #[serde(default)]
    timezone: String,
}

/// `GET /schedules/preview?cron=&timezone=`: the cron helper's fragment.
pub async fn preview_fires(ctx: Ctx, Query(q): Query<PreviewQuery>) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    Ok(page(
        StatusCode::OK,
        &PreviewFragment {
            pv: next_five(&q.cron, &q.timezone),
        },
    ))
}

/// `POST /schedules`.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(f): Form<NewSchedule>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let mut errors = FieldErrors::default();
    let employee_id = match Uuid::parse_str(&f.employee) {
        Ok(id) => match state.store.get_employee(ctx.tenant(), id).await {
            Ok(e) => Some(e.id),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        Err(_) => None,
    };
    if employee_id.is_none() {
        errors.add("employee", "choose an employee");
    }
    let priority = match f.priority.trim() {
        "" => 0,
        p => p.parse().unwrap_or_else(|_| {
            errors.add("priority", "must be a whole number");
            0
        }),
    };
    if !errors.is_empty() {
        return render(
            &state,
            &ctx,
            f,
            errors,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let fields = ScheduleFields {
        employee_id: employee_id.unwrap_or_default(),
        cron: f.cron.trim().to_string(),
        timezone: if f.timezone.trim().is_empty() {
            "UTC".into()
        } else {
            f.timezone.trim().to_string()
        },
        input: Value::String(f.input.clone()),
        priority,
        enabled: true,
    };
    match scheduler::create(&state, ctx.tenant(), &fields).await {
        Ok(_) => Ok(see_other("/schedules")),
        Err(CreateError::Invalid(e)) => {
            errors.add(&e.field, e.message);
            render(
                &state,
                &ctx,
                f,
                errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e @ CreateError::Full(_)) => {
            let msg = Some(e.to_string());
            render(&state, &ctx, f, errors, msg, StatusCode::CONFLICT).await
        }
        Err(CreateError::Store(e)) => Err(e.into()),
    }
}

async fn load(state: &AppState, ctx: &Ctx, id: &str) -> Result<crate::store::Schedule, PageError> {
    let id = parse_id(id, "schedule")?;
    match state.store.get_schedule(ctx.tenant(), id).await {
        Ok(s) => Ok(s),
        Err(StoreError::NotFound) => Err(PageError::NotFound("no such schedule".into())),
        Err(e) => Err(e.into()),
    }
}

/// `POST /schedules/{id}/toggle`: enable or disable; the next fire is recomputed.
pub async fn toggle(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let s = load(&state, &ctx, &id).await?;
    let mut f = s.fields;
    f.enabled = !f.enabled;
    let next = scheduler::validate(&f, &state.config.tasks)
        .map_err(|e| PageError::Conflict(e.to_string()))?;
    state
        .store
        .update_schedule(ctx.tenant(), s.id, &f, next)
        .await?;
    Ok(see_other("/schedules"))
}

/// `POST /schedules/{id}/delete` (the page asks first; tasks it created stay).
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let s = load(&state, &ctx, &id).await?;
    state.store.delete_schedule(ctx.tenant(), s.id).await?;
    Ok(see_other("/schedules"))
}
