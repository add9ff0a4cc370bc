//! `/v1/tools`: webhook tools defined per tenant. An employee that lists one's name in
//! `allowed_tools` is offered it; a call is POSTed to its URL, signed with the tenant's
//! webhook secret (see `runtime::tools`).

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
use crate::orchestrator::tools as tool_rules;
use crate::state::AppState;
use crate::store::{WebhookTool, WebhookToolFields};

const TOOL: Resource = Resource::new("no such tool");

fn invalid(e: crate::store::FieldError) -> ApiError {
    ApiError::validation(e.field, e.message)
}

/// A webhook tool to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTool {
    /// 1–64 letters, digits, '_' or '-'; unique in the tenant; not a built-in tool name.
    #[schema(example = "lookup_order")]
    pub name: String,
    /// What the tool does, shown to the model (1–1000 characters).
    #[schema(example = "Look up an order by its number.")]
    pub description: String,
    /// JSON schema (an object) of the arguments.
    pub parameters: Value,
    /// http or https URL the calls are POSTed to.
    #[schema(example = "https://tools.example.com/orders")]
    pub url: String,
    /// Seconds to wait for an answer, 1–60; default 10.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub timeout_seconds: Option<u32>,
}

/// Fields to change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTool {
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    pub url: Option<String>,
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub timeout_seconds: Option<u32>,
}

/// A webhook tool as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToolView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Value,
    pub url: String,
    pub timeout_seconds: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookTool> for ToolView {
    fn from(t: WebhookTool) -> Self {
        Self {
            id: t.id,
            name: t.fields.name,
            description: t.fields.description,
            parameters: t.fields.parameters,
            url: t.fields.url,
            timeout_seconds: t.fields.timeout_ms / 1000,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Create a webhook tool.
#[utoipa::path(post, path = "/v1/tools", tag = "tools",
    request_body = CreateTool,
    responses(
        (status = 201, description = "Created", body = ToolView),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 409, description = "The name is taken in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field (`name`, `parameters`, `url`, …)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTool>,
) -> ApiResult<(StatusCode, Json<ToolView>)> {
    caller.require(Scope::Write)?;
    let fields = WebhookToolFields {
        name: body.name,
        description: body.description,
        parameters: body.parameters,
        url: body.url,
        timeout_ms: tool_rules::timeout_ms(body.timeout_seconds.unwrap_or(10)).map_err(invalid)?,
    };
    tool_rules::validate_webhook_tool(&fields, &state.egress).map_err(invalid)?;
    let t = state
        .store
        .create_webhook_tool(caller.0.tenant_id, &fields)
        .await?;
    tracing::info!(tool_id = %t.id, "webhook tool created");
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// List webhook tools, newest first.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", params(ListParams),
    responses(
        (status = 200, description = "A page of webhook tools", body = Page<ToolView>),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<ToolView>>> {
    resource::list(&caller, &params, |tenant, w| {
        state.store.list_webhook_tools(tenant, w.before, w.limit)
    })
    .await
}

/// Get one webhook tool.
#[utoipa::path(get, path = "/v1/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id")),
    responses(
        (status = 200, description = "The tool", body = ToolView),
        (status = 404, description = "No such tool in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<ToolView>> {
    TOOL.get(&caller, &id, |t| {
        state.store.get_webhook_tool(t.tenant, t.id)
    })
    .await
}

/// Change some fields of a webhook tool.
#[utoipa::path(patch, path = "/v1/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id")),
    request_body = UpdateTool,
    responses(
        (status = 200, description = "Updated", body = ToolView),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such tool in this tenant", body = ErrorBody),
        (status = 409, description = "The new name is taken in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<UpdateTool>,
) -> ApiResult<Json<ToolView>> {
    let Target { tenant, id } = TOOL.target(&caller, Scope::Write, &id)?;
    let mut f = state
        .store
        .get_webhook_tool(tenant, id)
        .await
        .map_err(TOOL.not_found())?
        .fields;
    if let Some(v) = body.name {
        f.name = v;
    }
    if let Some(v) = body.description {
        f.description = v;
    }
    if let Some(v) = body.parameters {
        f.parameters = v;
    }
    if let Some(v) = body.url {
        f.url = v;
    }
    if let Some(v) = body.timeout_seconds {
        f.timeout_ms = tool_rules::timeout_ms(v).map_err(invalid)?;
    }
    tool_rules::validate_webhook_tool(&f, &state.egress).map_err(invalid)?;
    let t = state
        .store
        .update_webhook_tool(tenant, id, &f)
        .await
        .map_err(TOOL.not_found())?;
    Ok(Json(t.into()))
}

/// Delete a webhook tool; employees that list its name are no longer offered it.
#[utoipa::path(delete, path = "/v1/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such tool in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    TOOL.delete(&caller, &id, |t| {
        state.store.delete_webhook_tool(t.tenant, t.id)
    })
    .await
}
