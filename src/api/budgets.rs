//! `/v1/budgets` (admin): spend limits of the caller's tenant, of one of its keys or of
//! one of its employees, per UTC day, per UTC month or for ever (ADR 0013).
//!
//! A budget is enforced before every vendor call the gateway, the employees' chats and
//! the tasks make; this file only manages the rows. A new budget counts the spend
//! settled after its creation. Changing the limit keeps the spend.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{ListParams, Page};
use super::resource::{Resource, Target};
use crate::ai::pricing::usd;
use crate::auth::Scope;
use crate::state::AppState;
use crate::store::{Budget, BudgetPeriod, BudgetScope, NewBudget, StoreError};

const BUDGET: Resource = Resource::new("budget not found");

/// Largest limit, USD.
pub const MAX_LIMIT_USD: f64 = 1_000_000_000.0;

/// Whose spend a budget limits.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    Tenant,
    Key,
    Employee,
}

/// The window spend is counted over: a UTC day, a UTC month, or `none` (for ever).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeriodName {
    Day,
    Month,
    None,
}

/// A budget to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBudget {
    /// `tenant` (every call of the tenant), `key` (calls made with one API key) or
    /// `employee` (calls of one employee's tasks and chats).
    pub scope: ScopeName,
    /// The key's or employee's id; required for those scopes, absent for `tenant`.
    #[serde(default)]
    pub subject_id: Option<Uuid>,
    pub period: PeriodName,
    /// Most USD the scope may spend per period, 0–1000000000 (0 refuses every call).
    #[schema(minimum = 0, maximum = 1_000_000_000, example = 25.0)]
    pub limit_usd: f64,
}

/// A change of a budget's limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBudget {
    /// The new limit, USD, 0–1000000000. The spend so far is kept.
    #[schema(minimum = 0, maximum = 1_000_000_000, example = 50.0)]
    pub limit_usd: f64,
}

/// A budget and its state in the current window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scope: ScopeName,
    /// The key or employee; null for a tenant budget.
    pub subject_id: Option<Uuid>,
    pub period: PeriodName,
    pub limit_usd: f64,
    /// Settled in the current window.
    pub spent_usd: f64,
    /// Maximum cost of the calls in flight.
    pub reserved_usd: f64,
    /// `limit_usd - spent_usd - reserved_usd`, never below 0.
    pub remaining_usd: f64,
    /// Start of the current window.
    pub window_start: DateTime<Utc>,
    /// When the current window ends and the spend starts again from 0; null without a
    /// period.
    pub reset_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Budget> for BudgetView {
    fn from(b: Budget) -> Self {
        let now = Utc::now();
        let spent = b.spent_at(now);
        let remaining = b
            .limit_nanos
            .saturating_sub(spent)
            .saturating_sub(b.reserved_nanos)
            .max(0);
        Self {
            id: b.id,
            tenant_id: b.tenant_id,
            scope: match b.scope {
                BudgetScope::Tenant => ScopeName::Tenant,
                BudgetScope::Key => ScopeName::Key,
                BudgetScope::Employee => ScopeName::Employee,
            },
            subject_id: b.subject_id,
            period: match b.period {
                BudgetPeriod::Day => PeriodName::Day,
                BudgetPeriod::Month => PeriodName::Month,
                BudgetPeriod::None => PeriodName::None,
            },
            limit_usd: usd(b.limit_nanos),
            spent_usd: usd(spent),
            reserved_usd: usd(b.reserved_nanos.max(0)),
            remaining_usd: usd(remaining),
            window_start: b.current_window(now),
            reset_at: b.resets_at(now),
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}

/// A limit in USD as nano-dollars, or the 422 naming `limit_usd`.
fn limit_nanos(v: f64) -> ApiResult<i64> {
    if !v.is_finite() || !(0.0..=MAX_LIMIT_USD).contains(&v) {
        return Err(ApiError::validation(
            "limit_usd",
            "must be a number of US dollars from 0 to 1000000000",
        ));
    }
    Ok((v * 1e9).round() as i64)
}

/// Create a budget.
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets",
    request_body = CreateBudget,
    responses(
        (status = 201, description = "Created", body = BudgetView),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 409, description = "The tenant already has a budget of this scope, subject and period", body = ErrorBody),
        (status = 422, description = "Invalid field: a limit out of range, a subject_id missing, superfluous, or naming no key or employee of the tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBudget>,
) -> ApiResult<(StatusCode, Json<BudgetView>)> {
    caller.require(Scope::Admin)?;
    let tenant = caller.0.tenant_id;
    let limit = limit_nanos(body.limit_usd)?;
    let scope = match body.scope {
        ScopeName::Tenant => BudgetScope::Tenant,
        ScopeName::Key => BudgetScope::Key,
        ScopeName::Employee => BudgetScope::Employee,
    };
    let subject_missing = || {
        ApiError::validation(
            "subject_id",
            format!("must name a {} of this tenant", scope.as_str()),
        )
    };
    match (scope, body.subject_id) {
        (BudgetScope::Tenant, Some(_)) => {
            return Err(ApiError::validation(
                "subject_id",
                "must be absent for a tenant budget",
            ));
        }
        (BudgetScope::Tenant, None) => {}
        (_, None) => return Err(subject_missing()),
        (BudgetScope::Key, Some(id)) => match state.store.get_api_key(tenant, id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(subject_missing()),
            Err(e) => return Err(e.into()),
        },
        (BudgetScope::Employee, Some(id)) => match state.store.get_employee(tenant, id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(subject_missing()),
            Err(e) => return Err(e.into()),
        },
    }
    let b = state
        .store
        .create_budget(
            tenant,
            &NewBudget {
                id: Uuid::now_v7(),
                scope,
                subject_id: body.subject_id,
                period: match body.period {
                    PeriodName::Day => BudgetPeriod::Day,
                    PeriodName::Month => BudgetPeriod::Month,
                    PeriodName::None => BudgetPeriod::None,
                },
                limit_nanos: limit,
                now: Utc::now(),
            },
        )
        .await?;
    if let Some(gate) = state.ai.budgets() {
        gate.invalidate(tenant).await;
    }
    tracing::info!(budget_id = %b.id, scope = scope.as_str(), "budget created");
    Ok((StatusCode::CREATED, Json(b.into())))
}

/// List the tenant's budgets, newest first.
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets", params(ListParams),
    responses(
        (status = 200, description = "A page of budgets", body = Page<BudgetView>),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<BudgetView>>> {
    caller.require(Scope::Admin)?;
    let w = params.window()?;
    Ok(Json(
        state
            .store
            .list_budgets(caller.0.tenant_id, w.before, w.limit)
            .await?
            .into(),
    ))
}

/// Get one budget with its spend in the current window.
#[utoipa::path(get, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = Uuid, Path, description = "Budget id")),
    responses(
        (status = 200, description = "The budget", body = BudgetView),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such budget in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<BudgetView>> {
    let Target { tenant, id } = BUDGET.target(&caller, Scope::Admin, &id)?;
    let b = state
        .store
        .get_budget(tenant, id)
        .await
        .map_err(BUDGET.not_found())?;
    Ok(Json(b.into()))
}

/// Change a budget's limit.
#[utoipa::path(patch, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = Uuid, Path, description = "Budget id")),
    request_body = UpdateBudget,
    responses(
        (status = 200, description = "Updated", body = BudgetView),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such budget in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<UpdateBudget>,
) -> ApiResult<Json<BudgetView>> {
    let Target { tenant, id } = BUDGET.target(&caller, Scope::Admin, &id)?;
    let limit = limit_nanos(body.limit_usd)?;
    let b = state
        .store
        .set_budget_limit(tenant, id, limit, Utc::now())
        .await
        .map_err(BUDGET.not_found())?;
    Ok(Json(b.into()))
}

/// Delete a budget; its scope spends without this limit from now on.
#[utoipa::path(delete, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = Uuid, Path, description = "Budget id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such budget in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    let Target { tenant, id } = BUDGET.target(&caller, Scope::Admin, &id)?;
    state
        .store
        .delete_budget(tenant, id)
        .await
        .map_err(BUDGET.not_found())?;
    if let Some(gate) = state.ai.budgets() {
        gate.invalidate(tenant).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
