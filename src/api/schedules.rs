//! `/v1/schedules`: cron schedules that submit a task to an employee on every tick.
//!
//! The API validates the cron expression and the IANA time zone and computes the next
//! fire; the scheduler of `orchestrator::scheduler` claims each fire exactly once across
//! replicas and creates its task.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{ListParams, Page};
use super::resource::{self, Resource, Target};
use crate::auth::Scope;
use crate::config::TaskConfig;
use crate::orchestrator::resolve_employee;
use crate::orchestrator::scheduler;
use crate::state::AppState;
use crate::store::{Schedule, ScheduleFields};

const SCHEDULE: Resource = Resource::new("no such schedule");

/// A schedule to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Employee id or name (in the caller's tenant).
    #[schema(example = "support-agent")]
    pub employee: String,
    /// 5 fields (`min hour dom month dow`), or 6–7 with seconds first and an optional year.
    #[schema(example = "0 9 * * MON-FRI")]
    pub cron: String,
    /// IANA time zone the expression is read in; default `UTC`.
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
    /// The input of every task it creates: a string, or any JSON.
    #[schema(example = "Send the daily report")]
    pub input: Value,
    /// Priority of its tasks, -100–100; default 0.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub priority: Option<i32>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Fields to change; the next fire is recomputed from now.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    pub employee: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub input: Option<Value>,
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: Uuid,
    pub employee_id: Uuid,
    pub cron: String,
    pub timezone: String,
    /// The input of its tasks (any JSON).
    pub input: Value,
    pub priority: i32,
    pub enabled: bool,
    pub next_fire_at: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        Self {
            id: s.id,
            employee_id: s.fields.employee_id,
            cron: s.fields.cron,
            timezone: s.fields.timezone,
            input: s.fields.input,
            priority: s.fields.priority,
            enabled: s.fields.enabled,
            next_fire_at: s.next_fire_at,
            last_fired_at: s.last_fired_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// The orchestrator's schedule rules (shared with the web console); 422 names the field.
fn validate(f: &ScheduleFields, cfg: &TaskConfig) -> ApiResult<DateTime<Utc>> {
    scheduler::validate(f, cfg).map_err(|e| ApiError::validation(e.field, e.message))
}

/// Create a schedule.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "Created, with its next fire", body = ScheduleView),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 409, description = "The tenant has `SCHEDULE_MAX_PER_TENANT` schedules", body = ErrorBody),
        (status = 422, description = "Invalid field (`cron`, `timezone`, `employee`, …)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSchedule>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    caller.require(Scope::Write)?;
    let tenant = caller.0.tenant_id;
    let mut fields = ScheduleFields {
        employee_id: Uuid::nil(),
        cron: body.cron.trim().to_string(),
        timezone: body.timezone.unwrap_or_else(|| "UTC".into()),
        input: body.input,
        priority: body.priority.unwrap_or(0),
        enabled: body.enabled.unwrap_or(true),
    };
    // The fields are checked before the employee is looked up, as they always were.
    validate(&fields, &state.config.tasks)?;
    fields.employee_id = resolve_employee(&state, tenant, &body.employee).await?.id;
    let s = scheduler::create(&state, tenant, &fields)
        .await
        .map_err(|e| match e {
            scheduler::CreateError::Invalid(f) => ApiError::validation(f.field, f.message),
            e @ scheduler::CreateError::Full(_) => ApiError::Conflict(e.to_string()),
            scheduler::CreateError::Store(e) => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

/// List schedules, newest first.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ListParams),
    responses(
        (status = 200, description = "A page of schedules", body = Page<ScheduleView>),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<ScheduleView>>> {
    resource::list(&caller, &params, |tenant, w| {
        state.store.list_schedules(tenant, w.before, w.limit)
    })
    .await
}

/// Get one schedule.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No such schedule in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<ScheduleView>> {
    SCHEDULE
        .get(&caller, &id, |t| state.store.get_schedule(t.tenant, t.id))
        .await
}

/// Change some fields of a schedule; the next fire is recomputed from now.
#[utoipa::path(patch, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "Schedule id")),
    request_body = UpdateSchedule,
    responses(
        (status = 200, description = "Updated", body = ScheduleView),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such schedule in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<UpdateSchedule>,
) -> ApiResult<Json<ScheduleView>> {
    let Target { tenant, id } = SCHEDULE.target(&caller, Scope::Write, &id)?;
    let current = state
        .store
        .get_schedule(tenant, id)
        .await
        .map_err(SCHEDULE.not_found())?;
    let mut f = current.fields;
    if let Some(c) = body.cron {
        f.cron = c.trim().to_string();
    }
    if let Some(tz) = body.timezone {
        f.timezone = tz;
    }
    if let Some(i) = body.input {
        f.input = i;
    }
    if let Some(p) = body.priority {
        f.priority = p;
    }
    if let Some(e) = body.enabled {
        f.enabled = e;
    }
    let next = validate(&f, &state.config.tasks)?;
    if let Some(e) = &body.employee {
        f.employee_id = resolve_employee(&state, tenant, e).await?.id;
    }
    let s = state
        .store
        .update_schedule(tenant, id, &f, next)
        .await
        .map_err(SCHEDULE.not_found())?;
    Ok(Json(s.into()))
}

/// Delete a schedule; tasks it already created stay.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "Schedule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such schedule in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    SCHEDULE
        .delete(&caller, &id, |t| {
            state.store.delete_schedule(t.tenant, t.id)
        })
        .await
}
