//! `/v1/keys` (admin): create (the secret is shown once), list and get (never the
//! secret), revoke.
//!
//! An admin manages the keys of its own tenant. The operator (an admin of the default
//! tenant) may name another tenant with `tenant_id`. A key of another tenant answers 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{self, Page};
use super::resource::Resource;
use super::tenants::TENANT;
use crate::auth::{Scope, keys};
use crate::state::AppState;
use crate::store::ApiKeyRecord;

const KEY: Resource = Resource::new("key not found");

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for; 1–100 characters.
    #[schema(example = "ci pipeline")]
    pub name: String,
    /// `read`, `write` or `admin`; each includes the ones before it.
    #[schema(value_type = String, example = "write")]
    pub scope: Scope,
    /// Tenant of the key; default the caller's. Another tenant only for the operator.
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// Requests per rate-limit window for this key (1–1000000); default
    /// `RATE_LIMIT_REQUESTS`.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub rate_limit: Option<i32>,
}

/// A key as listed: never the secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// The public part of the key (`de_<prefix>_…`), to recognise it.
    pub prefix: String,
    #[schema(example = "write")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub rate_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
    /// Updated in batches, so up to a few seconds behind.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just created, with its secret: shown this once, only its hash is stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The full key to send as `X-API-Key`. It cannot be shown again.
    pub secret: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKeys {
    /// Page size, 1–100; default 20.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Another tenant's keys (operator only).
    pub tenant_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantParam {
    /// The key's tenant when it is not the caller's (operator only).
    pub tenant_id: Option<Uuid>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            prefix: r.prefix,
            scope: r
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .max()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            rate_limit: r.rate_limit,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// The tenant an admin acts on: its own, or (operator only) the one it names, which must
/// exist. Anyone else naming another tenant gets 404, as for any resource not theirs.
async fn target_tenant(state: &AppState, caller: &Caller, asked: Option<Uuid>) -> ApiResult<Uuid> {
    caller.require(Scope::Admin)?;
    let own = caller.0.tenant_id;
    match asked {
        None => Ok(own),
        Some(t) if t == own => Ok(own),
        Some(t) if caller.0.is_operator() => state
            .store
            .get_tenant(t)
            .await
            .map(|_| t)
            .map_err(TENANT.not_found()),
        Some(_) => Err(TENANT.missing()),
    }
}

/// Create a key; the response carries its secret, shown only this once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = CreatedKey),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller lacks the admin scope, or a tenant admin asked for a `rate_limit` above `RATE_LIMIT_REQUESTS`", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "The tenant has `TENANT_MAX_KEYS` active keys", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let tenant = target_tenant(&state, &caller, body.tenant_id).await?;
    let req = keys::KeyRequest {
        tenant_id: tenant,
        name: &body.name,
        scope: body.scope,
        rate_limit: body.rate_limit,
        by_operator: caller.0.is_operator(),
    };
    let cfg = &state.config;
    let issued = keys::create(
        &state.store,
        req,
        cfg.rate_limit_requests,
        cfg.tenant_max_keys,
    )
    .await
    .map_err(|e| match e {
        keys::KeyRefusal::Invalid { field, message } => ApiError::validation(field, message),
        keys::KeyRefusal::Forbidden(m) => ApiError::Forbidden(m),
        keys::KeyRefusal::Full(m) => ApiError::Conflict(m),
        keys::KeyRefusal::Store(e) => e.into(),
    })?;
    let keys::IssuedKey { record, secret } = issued;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: record.into(),
            secret,
        }),
    ))
}

/// List keys, newest first; revoked keys included, secrets never.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(ListKeys),
    responses(
        (status = 200, description = "A page of keys", body = Page<KeyView>),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListKeys>,
) -> ApiResult<Json<Page<KeyView>>> {
    let tenant = target_tenant(&state, &caller, params.tenant_id).await?;
    let w = page::window(params.limit, params.cursor.as_deref())?;
    let page = state.store.list_api_keys(tenant, w.before, w.limit).await?;
    Ok(Json(page.into()))
}

/// Get one key (never its secret).
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "Key id"), TenantParam),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such key in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiQuery(params): ApiQuery<TenantParam>,
) -> ApiResult<Json<KeyView>> {
    let tenant = target_tenant(&state, &caller, params.tenant_id).await?;
    let id = KEY.parse_id(&id)?;
    let key = state
        .store
        .get_api_key(tenant, id)
        .await
        .map_err(KEY.not_found())?;
    Ok(Json(key.into()))
}

/// Revoke a key: refused from the next request on, by every replica. Revoking a revoked
/// key changes nothing and answers 204 again.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "Key id"), TenantParam),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "Caller lacks the admin scope", body = ErrorBody),
        (status = 404, description = "No such key in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiQuery(params): ApiQuery<TenantParam>,
) -> ApiResult<StatusCode> {
    let tenant = target_tenant(&state, &caller, params.tenant_id).await?;
    let id = KEY.parse_id(&id)?;
    let key = state
        .store
        .revoke_api_key(tenant, id)
        .await
        .map_err(KEY.not_found())?;
    tracing::info!(key_id = %key.id, prefix = %key.prefix, tenant_id = %tenant, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
