//! `/v1/employees`: create, list, get, update (partial, optimistic), delete.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page::{ListParams, Page};
use super::resource::{self, Resource, Target};
use super::{Caller, etag, if_match};
use crate::auth::Scope;
use crate::orchestrator::employees as employee_rules;
use crate::state::AppState;
use crate::store::{DEFAULT_INPUT_TIMEOUT_SECONDS, Employee, EmployeeFields, StoreError};

pub use crate::orchestrator::employees::DEFAULT_MODEL_POLICY;

const EMPLOYEE: Resource = Resource::new("employee not found");

/// A new employee.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEmployee {
    /// Unique in the tenant; letters, digits, `-`, `_`, `.`; 1–64 characters.
    #[schema(example = "support-agent")]
    pub name: String,
    /// What the employee is, in a sentence (system prompt opening); 1–200 characters,
    /// not only spaces.
    #[schema(example = "Customer support agent for ACME", max_length = 200)]
    pub role: String,
    /// At most 32,768 characters.
    #[serde(default)]
    #[schema(max_length = 32768)]
    pub instructions: String,
    /// Ordered fallback chain of `provider/model`; default `["sandbox/sandbox-1"]`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 8)]
    pub model_policy: Option<Vec<String>>,
    /// Built-in and webhook tool names, and MCP tools as `mcp:<server>/<tool>` or
    /// `mcp:<server>/*`; each at most once.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub allowed_tools: Vec<String>,
    /// LLM ⇄ tool steps per task, 1–100; default 10.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_steps: Option<i64>,
    /// Tokens one task may spend, 1–10,000,000; default 100,000.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub token_budget: Option<i64>,
    /// 0–2; default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub redact_prompts: bool,
    /// Allowed tools that pause the task for a human `approve`/`reject` before running;
    /// each must be one of `allowed_tools`.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub approval_tools: Vec<String>,
    /// A JSON schema (an object) the final answer of its tasks must satisfy: the task's
    /// `result.output` is then that JSON; invalid answers get one corrective retry, then
    /// the task fails with `invalid_output`. A task may set its own.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    /// Seconds a task waits for a person's answer to `ask_human` before it fails with
    /// `input_timeout`, 1–2,592,000 (30 days); default 86,400.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub input_timeout_seconds: Option<i64>,
}

/// A partial update: only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEmployee {
    pub name: Option<String>,
    pub role: Option<String>,
    pub instructions: Option<String>,
    pub model_policy: Option<Vec<String>>,
    pub allowed_tools: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub max_steps: Option<i64>,
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub token_budget: Option<i64>,
    pub temperature: Option<f64>,
    pub redact_prompts: Option<bool>,
    pub approval_tools: Option<Vec<String>>,
    /// A schema object to set, or `null` to return to free text.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub input_timeout_seconds: Option<i64>,
    /// The version the change is based on (alternative to `If-Match`); 409 if stale.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub version: Option<i64>,
}

/// An employee as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmployeeView {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub instructions: String,
    pub model_policy: Vec<String>,
    pub allowed_tools: Vec<String>,
    pub max_steps: i32,
    pub token_budget: i64,
    pub temperature: f64,
    pub redact_prompts: bool,
    pub approval_tools: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub input_timeout_seconds: i64,
    /// Bumped by every update; send it back as `If-Match` or `version`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Employee> for EmployeeView {
    fn from(e: Employee) -> Self {
        let f = e.fields;
        Self {
            id: e.id,
            name: f.name,
            role: f.role,
            instructions: f.instructions,
            model_policy: f.model_policy,
            allowed_tools: f.allowed_tools,
            max_steps: f.max_steps,
            token_budget: f.token_budget,
            temperature: f.temperature,
            redact_prompts: f.redact_prompts,
            approval_tools: f.approval_tools,
            output_schema: f.output_schema,
            input_timeout_seconds: f.input_timeout_seconds,
            version: e.version,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

fn respond(status: StatusCode, e: Employee) -> Response {
    (status, [etag(e.version)], Json(EmployeeView::from(e))).into_response()
}

/// Create an employee.
#[utoipa::path(post, path = "/v1/employees", tag = "employees",
    request_body = CreateEmployee,
    responses(
        (status = 201, description = "Created", body = EmployeeView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 409, description = "Name already used in this tenant", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateEmployee>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let fields = EmployeeFields {
        name: body.name,
        role: body.role,
        instructions: body.instructions,
        model_policy: body
            .model_policy
            .unwrap_or_else(|| vec![DEFAULT_MODEL_POLICY.to_string()]),
        allowed_tools: body.allowed_tools,
        max_steps: checked_i32(body.max_steps.unwrap_or(10), "max_steps")?,
        token_budget: body.token_budget.unwrap_or(100_000),
        // `+ 0.0` turns -0 into 0, so the answer never shows `-0.0`.
        temperature: body.temperature.unwrap_or(0.0) + 0.0,
        redact_prompts: body.redact_prompts,
        approval_tools: body.approval_tools,
        output_schema: body.output_schema,
        input_timeout_seconds: body
            .input_timeout_seconds
            .unwrap_or(DEFAULT_INPUT_TIMEOUT_SECONDS),
    };
    validate(&fields)?;
    let e = state
        .store
        .create_employee(caller.0.tenant_id, &fields)
        .await?;
    tracing::info!(employee_id = %e.id, "employee created");
    Ok(respond(StatusCode::CREATED, e))
}

/// List employees, newest first.
#[utoipa::path(get, path = "/v1/employees", tag = "employees",
    params(ListParams),
    responses(
        (status = 200, description = "A page of employees", body = Page<EmployeeView>),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 422, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<EmployeeView>>> {
    resource::list(&caller, &params, |tenant, w| {
        state.store.list_employees(tenant, w.before, w.limit)
    })
    .await
}

/// Get one employee.
#[utoipa::path(get, path = "/v1/employees/{id}", tag = "employees",
    params(("id" = Uuid, Path, description = "Employee id")),
    responses(
        (status = 200, description = "The employee", body = EmployeeView,
            headers(("ETag" = String, description = "Quoted version"))),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 404, description = "No such employee in this tenant", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> ApiResult<Response> {
    let Target { tenant, id } = EMPLOYEE.target(&caller, Scope::Read, &id)?;
    let e = state
        .store
        .get_employee(tenant, id)
        .await
        .map_err(EMPLOYEE.not_found())?;
    Ok(respond(StatusCode::OK, e))
}

/// Update some fields of an employee.
///
/// Send the version you read as `If-Match: "N"` or `"version": N`; a stale version
/// answers 409 and changes nothing. Without either, the update applies to the current
/// version.
#[utoipa::path(patch, path = "/v1/employees/{id}", tag = "employees",
    params(
        ("id" = Uuid, Path, description = "Employee id"),
        ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\""),
    ),
    request_body = UpdateEmployee,
    responses(
        (status = 200, description = "Updated", body = EmployeeView),
        (status = 400, description = "Malformed JSON or If-Match", body = ErrorBody),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such employee in this tenant", body = ErrorBody),
        (status = 409, description = "Stale version or name taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<UpdateEmployee>,
) -> ApiResult<Response> {
    let Target { tenant, id } = EMPLOYEE.target(&caller, Scope::Write, &id)?;
    let expected = match (if_match(&headers)?, patch.version) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::BadRequest("If-Match and version disagree".into()));
        }
        (a, b) => a.or(b),
    };
    // Without a precondition a concurrent writer may bump the version between our read
    // and write; retry a few times rather than report a conflict the caller never asked
    // to be told about.
    let attempts = if expected.is_some() { 1 } else { 3 };
    let mut last = StoreError::VersionConflict;
    for _ in 0..attempts {
        let current = state
            .store
            .get_employee(tenant, id)
            .await
            .map_err(EMPLOYEE.not_found())?;
        if expected.is_some_and(|v| v != current.version) {
            return Err(StoreError::VersionConflict.into());
        }
        let fields = apply(current.fields.clone(), &patch)?;
        validate(&fields)?;
        match state
            .store
            .update_employee(tenant, id, current.version, &fields)
            .await
        {
            Ok(e) => return Ok(respond(StatusCode::OK, e)),
            Err(StoreError::VersionConflict) => last = StoreError::VersionConflict,
            Err(e) => return Err(EMPLOYEE.error(e)),
        }
    }
    Err(last.into())
}

/// Delete an employee.
#[utoipa::path(delete, path = "/v1/employees/{id}", tag = "employees",
    params(
        ("id" = Uuid, Path, description = "Employee id"),
        ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\""),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such employee in this tenant", body = ErrorBody),
        (status = 409, description = "Stale version", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let Target { tenant, id } = EMPLOYEE.target(&caller, Scope::Write, &id)?;
    state
        .store
        .delete_employee(tenant, id, if_match(&headers)?)
        .await
        .map_err(EMPLOYEE.not_found())?;
    tracing::info!(employee_id = %id, "employee deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn checked_i32(v: i64, field: &str) -> ApiResult<i32> {
    i32::try_from(v).map_err(|_| ApiError::validation(field, "out of range"))
}

fn apply(mut f: EmployeeFields, p: &UpdateEmployee) -> ApiResult<EmployeeFields> {
    if let Some(v) = &p.name {
        f.name = v.clone();
    }
    if let Some(v) = &p.role {
        f.role = v.clone();
    }
    if let Some(v) = &p.instructions {
        f.instructions = v.clone();
    }
    if let Some(v) = &p.model_policy {
        f.model_policy = v.clone();
    }
    if let Some(v) = &p.allowed_tools {
        f.allowed_tools = v.clone();
    }
    if let Some(v) = p.max_steps {
        f.max_steps = checked_i32(v, "max_steps")?;
    }
    if let Some(v) = p.token_budget {
        f.token_budget = v;
    }
    if let Some(v) = p.temperature {
        f.temperature = v + 0.0;
    }
    if let Some(v) = p.redact_prompts {
        f.redact_prompts = v;
    }
    if let Some(v) = &p.approval_tools {
        f.approval_tools = v.clone();
    }
    if let Some(v) = &p.output_schema {
        f.output_schema = (!v.is_null()).then(|| v.clone());
    }
    if let Some(v) = p.input_timeout_seconds {
        f.input_timeout_seconds = v;
    }
    Ok(f)
}

/// Business rules of an employee (`orchestrator::employees::validate`, shared with the
/// web console); the first broken one answers 422 naming its field.
pub fn validate(f: &EmployeeFields) -> ApiResult<()> {
    employee_rules::validate(f).map_err(|e| ApiError::validation(e.field, e.message))
}

/// A field whose presence matters even when it is `null` (a patch that clears it):
/// absent → `None`, anything present (`null` included) → `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> EmployeeFields {
        EmployeeFields {
            name: "ada".into(),
            role: "analyst".into(),
            instructions: String::new(),
            model_policy: vec![
                "openai/gpt-4o-mini".into(),
                "anthropic/claude-3-5-haiku".into(),
            ],
            allowed_tools: vec!["calculator".into()],
            max_steps: 10,
            token_budget: 1000,
            temperature: 0.2,
            redact_prompts: false,
            approval_tools: Vec::new(),
            output_schema: None,
            input_timeout_seconds: DEFAULT_INPUT_TIMEOUT_SECONDS,
        }
    }

    fn field_of(r: ApiResult<()>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate(&fields()).is_ok());
        let mut f = fields();
        f.name = "bad name".into();
        assert_eq!(field_of(validate(&f)), "name");
        let mut f = fields();
        f.model_policy = vec!["openai/gpt".into(), "nomodel".into()];
        assert_eq!(field_of(validate(&f)), "model_policy[1]");
        let mut f = fields();
        f.model_policy.clear();
        assert_eq!(field_of(validate(&f)), "model_policy");
        let mut f = fields();
        f.allowed_tools = vec!["a".into(), "a".into()];
        assert_eq!(field_of(validate(&f)), "allowed_tools[1]");
        f.allowed_tools = vec!["a".into(), "b".into()];
        f.approval_tools = vec!["b".into(), "a".into(), "b".into()];
        assert_eq!(field_of(validate(&f)), "approval_tools[2]");
        f.allowed_tools = vec!["mcp:srv/*".into()];
        f.approval_tools = (0..65).map(|i| format!("mcp:srv/t{i}")).collect();
        assert_eq!(field_of(validate(&f)), "approval_tools");
        f.approval_tools.truncate(64);
        assert!(validate(&f).is_ok());
        let mut f = fields();
        f.temperature = 2.5;
        assert_eq!(field_of(validate(&f)), "temperature");
        let mut f = fields();
        f.max_steps = 0;
        assert_eq!(field_of(validate(&f)), "max_steps");
        let mut f = fields();
        f.token_budget = 0;
        assert_eq!(field_of(validate(&f)), "token_budget");
        let mut f = fields();
        f.role = " ".into();
        assert_eq!(field_of(validate(&f)), "role");
    }
}
