//! `/v1/tenants` (admin): the operator (an admin of the default tenant) creates and lists
//! tenants; an admin of any other tenant sees only its own.

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
use super::resource::Resource;
use crate::auth::{Scope, TENANT_NAME_RULE, check_tenant_name};
use crate::state::AppState;
use crate::store::Tenant;

/// Tenants, as `/v1/tenants/{id}` and the `tenant_id` of `/v1/keys` name them.
pub const TENANT: Resource = Resource::new("tenant not found");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Unique; letters, digits, `-`, `_`, `.`; 1–64 characters.
    #[schema(example = "acme")]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        }
    }
}

/// Create a tenant (operator only). Give it an admin key with `POST /v1/keys` and
/// `tenant_id`.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = TenantView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller is not the operator", body = ErrorBody),
        (status = 409, description = "Name already used", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    caller.require(Scope::Admin)?;
    if !caller.0.is_operator() {
        return Err(ApiError::Forbidden(
            "only an admin of the default tenant manages tenants".into(),
        ));
    }
    let name = body.name.as_str();
    if !check_tenant_name(name) {
        return Err(ApiError::validation("name", TENANT_NAME_RULE));
    }
    let t = state.store.create_tenant(name).await?;
    tracing::info!(tenant_id = %t.id, "tenant created");
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// List tenants: all of them for the operator, only its own for another admin.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tenants", body = Page<TenantView>),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller lacks the admin scope", body = ErrorBody),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<TenantView>>> {
    caller.require(Scope::Admin)?;
    let w = params.window()?;
    if caller.0.is_operator() {
        let page = state.store.list_tenants(w.before, w.limit).await?;
        return Ok(Json(page.into()));
    }
    // Another tenant's admin sees a one-row list: its own tenant, on the first page.
    let own = state.store.get_tenant(caller.0.tenant_id).await?;
    let data = if w.before.is_none() {
        vec![own.into()]
    } else {
        Vec::new()
    };
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

/// Get a tenant: any for the operator, only its own for another admin (404 otherwise).
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<TenantView>> {
    caller.require(Scope::Admin)?;
    let id = TENANT.parse_id(&id)?;
    if id != caller.0.tenant_id && !caller.0.is_operator() {
        return Err(TENANT.missing());
    }
    let t = state
        .store
        .get_tenant(id)
        .await
        .map_err(TENANT.not_found())?;
    Ok(Json(t.into()))
}
