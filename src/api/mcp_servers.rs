//! `/v1/mcp-servers`: the tenant's MCP servers. Employees use their tools as
//! `mcp:<server>/<tool>` (or `mcp:<server>/*`) in `allowed_tools`; the runtime offers them
//! with the schemas the server last listed (see `runtime::tools`, `mcp`).
//!
//! The headers and the bearer token are stored to be sent; no answer shows them (a view
//! names the headers and says whether a token is set). A create or an update refreshes
//! the tool list in the background; `POST …/{id}/refresh` does it at once and answers
//! with the result. A server that is down is reported in `status` and `last_error`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{ListParams, Page};
use super::resource::{self, Resource, Target};
use crate::auth::Scope;
use crate::egress::EgressPolicy;
use crate::mcp::names;
use crate::state::AppState;
use crate::store::{McpServer, McpServerFields, McpToolInfo};

pub(super) const MAX_URL: usize = 2000;
pub(super) const MAX_HEADERS: usize = 20;
pub(super) const MAX_HEADER_VALUE: usize = 4096;
pub(super) const MAX_ALLOWLIST: usize = 200;

const SERVER: Resource = Resource::new("no such MCP server");

/// Headers the platform sets itself; a tenant may not replace them.
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "authorization",
];

/// An MCP server to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServer {
    /// 1–64 letters, digits, '_' or '-'; unique in the tenant: the `<server>` of
    /// `mcp:<server>/<tool>`.
    #[schema(example = "files")]
    pub name: String,
    /// Streamable HTTP endpoint (http or https).
    #[schema(example = "https://mcp.example.com/mcp")]
    pub url: String,
    /// Extra headers sent with every request (secret: never shown again).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Sent as `Authorization: Bearer <token>` (secret: never shown again).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Tools of the server employees may use; absent = all it lists.
    #[serde(default)]
    pub tool_allowlist: Option<Vec<String>>,
    /// Seconds per request to the server, 1–300; default 30.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub timeout_seconds: Option<u32>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn double<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Fields to change; `headers` replaces all headers, `bearer_token: null` (or `""`)
/// removes the token, `tool_allowlist: null` allows every tool again.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMcpServer {
    pub name: Option<String>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    pub bearer_token: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<Vec<String>>)]
    pub tool_allowlist: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub timeout_seconds: Option<u32>,
}

/// One tool the server listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct McpToolView {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    pub input_schema: Value,
    /// The name to put in an employee's `allowed_tools`.
    pub allowed_tools_entry: String,
}

/// An MCP server as the API shows it: never its header values or token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct McpServerView {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    /// Names of the extra headers (their values are not shown).
    pub header_names: Vec<String>,
    pub has_bearer_token: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_allowlist: Option<Vec<String>>,
    pub timeout_seconds: i64,
    /// `pending` (not refreshed yet), `ok`, or `error` (see `last_error`; the tools of
    /// the last good refresh stay usable).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The tools of the last good refresh.
    pub tools: Vec<McpToolView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn tool_view(server: &str, t: McpToolInfo) -> McpToolView {
    McpToolView {
        allowed_tools_entry: names::canonical(server, &t.name),
        name: t.name,
        description: t.description,
        input_schema: t.input_schema,
    }
}

impl From<McpServer> for McpServerView {
    fn from(s: McpServer) -> Self {
        let name = s.fields.name;
        Self {
            id: s.id,
            url: s.fields.url,
            header_names: s.fields.headers.into_keys().collect(),
            has_bearer_token: s.fields.bearer_token.is_some(),
            tool_allowlist: s.fields.tool_allowlist,
            timeout_seconds: s.fields.timeout_ms / 1000,
            status: s.state.status,
            last_error: s.state.last_error,
            tools: s
                .state
                .tools
                .into_iter()
                .map(|t| tool_view(&name, t))
                .collect(),
            refreshed_at: s.state.refreshed_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            name,
        }
    }
}

fn timeout_ms(seconds: u32) -> ApiResult<i64> {
    if !(1..=300).contains(&seconds) {
        return Err(ApiError::validation(
            "timeout_seconds",
            "must be between 1 and 300",
        ));
    }
    Ok(i64::from(seconds) * 1000)
}

/// Business rules of an MCP server; the first broken one answers 422 naming its field.
fn validate(f: &McpServerFields, egress: &EgressPolicy) -> ApiResult<()> {
    if !names::valid_server_name(&f.name) {
        return Err(ApiError::validation(
            "name",
            "must be 1-64 characters of letters, digits, '_' or '-'",
        ));
    }
    let parsed = reqwest::Url::parse(&f.url).ok().filter(|u| {
        f.url.len() <= MAX_URL
            && crate::orchestrator::url_shape_ok(&f.url)
            && matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
    });
    let Some(url) = parsed else {
        return Err(ApiError::validation(
            "url",
            format!("must be an absolute http or https URL of at most {MAX_URL} characters"),
        ));
    };
    // An internal IP literal is refused now; a name is checked whenever it resolves.
    if let Err(r) = egress.check_url(&url) {
        return Err(ApiError::validation("url", r.message()));
    }
    if f.headers.len() > MAX_HEADERS {
        return Err(ApiError::validation(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (k, v) in &f.headers {
        let name_ok = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok();
        if !name_ok || RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(ApiError::validation(
                "headers",
                format!(
                    "'{k}' is not a header name a server may be given (use bearer_token for Authorization)"
                ),
            ));
        }
        if v.chars().count() > MAX_HEADER_VALUE
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            return Err(ApiError::validation(
                "headers",
                format!("the value of '{k}' is not a valid header value"),
            ));
        }
    }
    if let Some(t) = &f.bearer_token
        && (t.is_empty()
            || t.chars().count() > MAX_HEADER_VALUE
            || reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err())
    {
        return Err(ApiError::validation(
            "bearer_token",
            "must be a non-empty header-safe token",
        ));
    }
    if let Some(list) = &f.tool_allowlist {
        if list.len() > MAX_ALLOWLIST {
            return Err(ApiError::validation(
                "tool_allowlist",
                format!("at most {MAX_ALLOWLIST} tools"),
            ));
        }
        if let Some(bad) = list.iter().find(|t| !names::valid_tool_name(t)) {
            return Err(ApiError::validation(
                "tool_allowlist",
                format!("'{bad}' is not an MCP tool name"),
            ));
        }
    }
    Ok(())
}

/// Register an MCP server.
///
/// The answer comes at once with `status: pending`; the tool list is read in the
/// background (see `GET`, or `POST …/refresh` to wait for it).
#[utoipa::path(post, path = "/v1/mcp-servers", tag = "mcp",
    request_body = CreateMcpServer,
    responses(
        (status = 201, description = "Created", body = McpServerView),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 409, description = "The name is taken in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field (`name`, `url`, `headers`, …)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateMcpServer>,
) -> ApiResult<(StatusCode, Json<McpServerView>)> {
    caller.require(Scope::Write)?;
    let fields = McpServerFields {
        name: body.name,
        url: body.url,
        headers: body.headers.unwrap_or_default(),
        bearer_token: body.bearer_token,
        tool_allowlist: body.tool_allowlist,
        timeout_ms: timeout_ms(body.timeout_seconds.unwrap_or(30))?,
    };
    validate(&fields, &state.egress)?;
    let s = state
        .store
        .create_mcp_server(caller.0.tenant_id, &fields)
        .await?;
    tracing::info!(mcp_server_id = %s.id, "MCP server registered");
    state.mcp.refresh_later(s.clone());
    Ok((StatusCode::CREATED, Json(s.into())))
}

/// List MCP servers, newest first.
#[utoipa::path(get, path = "/v1/mcp-servers", tag = "mcp", params(ListParams),
    responses(
        (status = 200, description = "A page of MCP servers", body = Page<McpServerView>),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<McpServerView>>> {
    resource::list(&caller, &params, |tenant, w| {
        state.store.list_mcp_servers(tenant, w.before, w.limit)
    })
    .await
}

/// Get one MCP server: its state, last error and cached tools.
#[utoipa::path(get, path = "/v1/mcp-servers/{id}", tag = "mcp",
    params(("id" = Uuid, Path, description = "MCP server id")),
    responses(
        (status = 200, description = "The server", body = McpServerView),
        (status = 404, description = "No such MCP server in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<McpServerView>> {
    SERVER
        .get(&caller, &id, |t| state.store.get_mcp_server(t.tenant, t.id))
        .await
}

/// Change some fields of an MCP server; its tools are read again in the background.
#[utoipa::path(patch, path = "/v1/mcp-servers/{id}", tag = "mcp",
    params(("id" = Uuid, Path, description = "MCP server id")),
    request_body = UpdateMcpServer,
    responses(
        (status = 200, description = "Updated", body = McpServerView),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such MCP server in this tenant", body = ErrorBody),
        (status = 409, description = "The new name is taken in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<UpdateMcpServer>,
) -> ApiResult<Json<McpServerView>> {
    let Target { tenant, id } = SERVER.target(&caller, Scope::Write, &id)?;
    let mut f = state
        .store
        .get_mcp_server(tenant, id)
        .await
        .map_err(SERVER.not_found())?
        .fields;
    if let Some(v) = body.name {
        f.name = v;
    }
    if let Some(v) = body.url {
        f.url = v;
    }
    if let Some(v) = body.headers {
        f.headers = v;
    }
    if let Some(v) = body.bearer_token {
        f.bearer_token = v.filter(|t| !t.is_empty());
    }
    if let Some(v) = body.tool_allowlist {
        f.tool_allowlist = v;
    }
    if let Some(v) = body.timeout_seconds {
        f.timeout_ms = timeout_ms(v)?;
    }
    validate(&f, &state.egress)?;
    let s = state
        .store
        .update_mcp_server(tenant, id, &f)
        .await
        .map_err(SERVER.not_found())?;
    state.mcp.refresh_later(s.clone());
    Ok(Json(s.into()))
}

/// Delete an MCP server; employees that list its tools are no longer offered them.
#[utoipa::path(delete, path = "/v1/mcp-servers/{id}", tag = "mcp",
    params(("id" = Uuid, Path, description = "MCP server id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such MCP server in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    SERVER
        .delete(&caller, &id, |t| {
            state.store.delete_mcp_server(t.tenant, t.id)
        })
        .await
}

/// Read the server's tool list now and answer with the result (a server that is down
/// answers 200 with `status: error` and `last_error`).
#[utoipa::path(post, path = "/v1/mcp-servers/{id}/refresh", tag = "mcp",
    params(("id" = Uuid, Path, description = "MCP server id")),
    responses(
        (status = 200, description = "The server after the refresh", body = McpServerView),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such MCP server in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<McpServerView>> {
    let Target { tenant, id } = SERVER.target(&caller, Scope::Write, &id)?;
    let s = state
        .store
        .get_mcp_server(tenant, id)
        .await
        .map_err(SERVER.not_found())?;
    let s = state.mcp.refresh(&s).await.map_err(SERVER.not_found())?;
    Ok(Json(s.into()))
}

/// These routes in the OpenAPI document (merged by `openapi::ApiDoc`'s modifiers).
#[derive(OpenApi)]
#[openapi(
    paths(create, list, get, update, delete, refresh),
    tags((name = "mcp", description = "MCP servers of the tenant: employees use their tools as mcp:<server>/<tool>")),
)]
pub struct Doc;

impl Modify for Doc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(Doc::openapi());
    }
}
