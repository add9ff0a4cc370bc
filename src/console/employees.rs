//! Employees: list, create, edit, delete, with the API's rules
//! (`orchestrator::employees::validate`) and the store's conflicts shown beside the
//! fields they are about. Pickers offer the configured models and the tenant's tools.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::form::FormData;
use super::tasks::{TaskRow, row};
use super::view::{Ctx, FieldErrors, Layout, PageError, page, parse_id, see_other, when};
use crate::auth::Scope;
use crate::orchestrator::employees::{DEFAULT_MODEL_POLICY, validate};
use crate::runtime::tools::BUILTIN;
use crate::state::AppState;
use crate::store::{
    DEFAULT_INPUT_TIMEOUT_SECONDS, Employee, EmployeeFields, StoreError, TaskFilter,
};

/// Model policy inputs on the form (first choice and fallbacks).
const POLICY_SLOTS: usize = 3;

pub struct EmployeeRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub models: String,
    pub tools: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "console/employees.html")]
struct ListPage {
    l: Layout,
    rows: Vec<EmployeeRow>,
    next: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    before: String,
}

/// `GET /employees`.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let l = ctx.layout(&state, "employees", "Employees").await?;
    let before = uuid::Uuid::parse_str(&q.before).ok();
    let found = state.store.list_employees(ctx.tenant(), before, 50).await?;
    let rows = found
        .items
        .iter()
        .map(|e| EmployeeRow {
            id: e.id.to_string(),
            name: e.fields.name.clone(),
            role: e.fields.role.clone(),
            models: e.fields.model_policy.join(" → "),
            tools: e.fields.allowed_tools.join(", "),
            updated: when(&e.updated_at),
        })
        .collect();
    let next = found.next_cursor.map(|c| format!("/employees?before={c}"));
    Ok(page(StatusCode::OK, &ListPage { l, rows, next }))
}

pub struct ToolChoice {
    pub name: String,
    pub kind: &'static str,
    pub allowed: bool,
    pub approval: bool,
}

/// The form's values as typed (kept when it comes back with errors).
pub struct Values {
    pub name: String,
    pub role: String,
    pub instructions: String,
    pub policy: Vec<String>,
    pub max_steps: String,
    pub token_budget: String,
    pub temperature: String,
    pub redact_prompts: bool,
    pub version: i64,
}

impl Values {
    fn of(f: &EmployeeFields, version: i64) -> Self {
        let mut policy = f.model_policy.clone();
        policy.resize(POLICY_SLOTS.max(policy.len()), String::new());
        Self {
            name: f.name.clone(),
            role: f.role.clone(),
            instructions: f.instructions.clone(),
            policy,
            max_steps: f.max_steps.to_string(),
            token_budget: f.token_budget.to_string(),
            temperature: f.temperature.to_string(),
            redact_prompts: f.redact_prompts,
            version,
        }
    }
}

fn blank() -> EmployeeFields {
    EmployeeFields {
        name: String::new(),
        role: String::new(),
        instructions: String::new(),
        model_policy: vec![DEFAULT_MODEL_POLICY.to_string()],
        allowed_tools: Vec::new(),
        max_steps: 10,
        token_budget: 100_000,
        temperature: 0.0,
        redact_prompts: false,
        approval_tools: Vec::new(),
        output_schema: None,
        input_timeout_seconds: DEFAULT_INPUT_TIMEOUT_SECONDS,
    }
}

#[derive(Template)]
#[template(path = "console/employee_form.html")]
struct FormPage {
    l: Layout,
    /// `None` for a new employee.
    id: Option<String>,
    v: Values,
    models: Vec<String>,
    /// Configured aliases and the chain each stands for.
    aliases: Vec<(String, String)>,
    tools: Vec<ToolChoice>,
    errors: FieldErrors,
    notice: Option<String>,
    recent: Vec<TaskRow>,
}

struct Draft {
    id: Option<uuid::Uuid>,
    v: Values,
    allowed: Vec<String>,
    approval: Vec<String>,
    errors: FieldErrors,
    notice: Option<String>,
}

async fn render(
    state: &AppState,
    ctx: &Ctx,
    d: Draft,
    status: StatusCode,
) -> Result<Response, PageError> {
    let title = match &d.id {
        Some(_) => format!("Employee {}", d.v.name),
        None => "New employee".to_string(),
    };
    let l = ctx.layout(state, "employees", title).await?;
    let mut models = state.ai.known_models();
    if !models.iter().any(|m| m == DEFAULT_MODEL_POLICY) {
        models.insert(0, DEFAULT_MODEL_POLICY.to_string());
    }
    let webhook_tools = state
        .store
        .list_webhook_tools(ctx.tenant(), None, 100)
        .await?
        .items;
    // MCP servers offer every tool (`mcp:<server>/*`) and each tool of their last list.
    let mcp: Vec<(String, &'static str)> = state
        .store
        .list_mcp_servers(ctx.tenant(), None, 100)
        .await?
        .items
        .into_iter()
        .flat_map(|m| {
            let server = m.fields.name;
            std::iter::once((format!("mcp:{server}/*"), "MCP server"))
                .chain(
                    m.state
                        .tools
                        .into_iter()
                        .map(move |t| (format!("mcp:{server}/{}", t.name), "MCP")),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    let mut tools: Vec<ToolChoice> = BUILTIN
        .iter()
        .map(|n| (n.to_string(), "built-in"))
        .chain(
            webhook_tools
                .into_iter()
                .map(|t| (t.fields.name, "webhook")),
        )
        .chain(mcp)
        .map(|(name, kind)| ToolChoice {
            allowed: d.allowed.contains(&name),
            approval: d.approval.contains(&name),
            name,
            kind,
        })
        .collect();
    // Names the employee lists that are not (or no longer) defined still show.
    for name in &d.allowed {
        if !tools.iter().any(|t| &t.name == name) {
            tools.push(ToolChoice {
                name: name.clone(),
                kind: "unknown",
                allowed: true,
                approval: d.approval.contains(name),
            });
        }
    }
    let recent = match d.id {
        None => Vec::new(),
        Some(id) => {
            let filter = TaskFilter {
                status: None,
                employee_id: Some(id),
                created_after: None,
                created_before: None,
                parent_task_id: None,
            };
            let names = [(id, d.v.name.clone())].into_iter().collect();
            state
                .store
                .list_tasks(ctx.tenant(), &filter, None, 10)
                .await?
                .items
                .iter()
                .map(|t| row(t, &names))
                .collect()
        }
    };
    Ok(page(
        status,
        &FormPage {
            l,
            id: d.id.map(|i| i.to_string()),
            v: d.v,
            models,
            aliases: state
                .ai
                .aliases()
                .into_iter()
                .map(|(name, chain)| (name, chain.join(" → ")))
                .collect(),
            tools,
            errors: d.errors,
            notice: d.notice,
            recent,
        },
    ))
}

/// A model policy entry naming a configured alias stands for the alias's chain: the
/// employee stores the chain (`provider/model` candidates, as the API requires), each
/// candidate once, in order.
fn expand_aliases(state: &AppState, fields: &mut EmployeeFields) {
    let mut policy: Vec<String> = Vec::with_capacity(fields.model_policy.len());
    for entry in &fields.model_policy {
        let expanded = match state.ai.alias_chain(entry) {
            Some(chain) => chain.to_vec(),
            None => vec![entry.clone()],
        };
        for c in expanded {
            if !policy.contains(&c) {
                policy.push(c);
            }
        }
    }
    fields.model_policy = policy;
}

/// The fields from the form; unparsable numbers are filed as errors.
fn read(f: &FormData, errors: &mut FieldErrors) -> (EmployeeFields, Values) {
    let mut typed_policy = f.values("model_policy");
    typed_policy.resize(POLICY_SLOTS.max(typed_policy.len()), String::new());
    let mut number = |name: &str| -> i64 {
        match f.get(name).parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                errors.add(name, "must be a whole number");
                0
            }
        }
    };
    let max_steps = number("max_steps");
    let token_budget = number("token_budget");
    let max_steps = i32::try_from(max_steps).unwrap_or_else(|_| {
        errors.add("max_steps", "must be between 1 and 100");
        0
    });
    let temperature = match f.get("temperature").parse::<f64>() {
        Ok(t) if t.is_finite() => t,
        _ => {
            errors.add("temperature", "must be a number between 0 and 2");
            0.0
        }
    };
    let fields = EmployeeFields {
        name: f.get("name"),
        role: f.get("role"),
        instructions: f.get("instructions"),
        model_policy: f.all("model_policy"),
        allowed_tools: f.all("allowed_tools"),
        max_steps,
        token_budget,
        temperature,
        redact_prompts: f.checked("redact_prompts"),
        approval_tools: f.all("approval_tools"),
        // Not on the form: an update keeps the stored ones (see `update`).
        output_schema: None,
        input_timeout_seconds: DEFAULT_INPUT_TIMEOUT_SECONDS,
    };
    let values = Values {
        name: fields.name.clone(),
        role: fields.role.clone(),
        instructions: fields.instructions.clone(),
        policy: typed_policy,
        max_steps: f.get("max_steps"),
        token_budget: f.get("token_budget"),
        temperature: f.get("temperature"),
        redact_prompts: fields.redact_prompts,
        version: f.get("version").parse().unwrap_or(0),
    };
    (fields, values)
}

fn draft(id: Option<uuid::Uuid>, e: &EmployeeFields, version: i64) -> Draft {
    Draft {
        id,
        v: Values::of(e, version),
        allowed: e.allowed_tools.clone(),
        approval: e.approval_tools.clone(),
        errors: FieldErrors::default(),
        notice: None,
    }
}

/// `GET /employees/new`.
pub async fn new(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    render(&state, &ctx, draft(None, &blank(), 0), StatusCode::OK).await
}

async fn load(state: &AppState, ctx: &Ctx, id: &str) -> Result<Employee, PageError> {
    let id = parse_id(id, "employee")?;
    match state.store.get_employee(ctx.tenant(), id).await {
        Ok(e) => Ok(e),
        Err(StoreError::NotFound) => Err(PageError::NotFound("no such employee".into())),
        Err(e) => Err(e.into()),
    }
}

/// `GET /employees/{id}`: its settings (a form for writers), recent tasks.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let e = load(&state, &ctx, &id).await?;
    render(
        &state,
        &ctx,
        draft(Some(e.id), &e.fields, e.version),
        StatusCode::OK,
    )
    .await
}

/// A refused save: the form again, with the message beside its field (422), or above
/// the form for a conflict (409).
async fn refused(
    state: &AppState,
    ctx: &Ctx,
    id: Option<uuid::Uuid>,
    fields: &EmployeeFields,
    values: Values,
    err: Result<FieldErrors, String>,
) -> Result<Response, PageError> {
    let (errors, notice, status) = match err {
        Ok(errors) => (errors, None, StatusCode::UNPROCESSABLE_ENTITY),
        Err(notice) => (FieldErrors::default(), Some(notice), StatusCode::CONFLICT),
    };
    let d = Draft {
        id,
        v: values,
        allowed: fields.allowed_tools.clone(),
        approval: fields.approval_tools.clone(),
        errors,
        notice,
    };
    render(state, ctx, d, status).await
}

/// `POST /employees`: create.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    body: Bytes,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let mut errors = FieldErrors::default();
    let (mut fields, values) = read(&FormData::parse(&body), &mut errors);
    expand_aliases(&state, &mut fields);
    if let Err(e) = validate(&fields) {
        errors.add(&e.field, e.message);
    }
    if !errors.is_empty() {
        return refused(&state, &ctx, None, &fields, values, Ok(errors)).await;
    }
    match state.store.create_employee(ctx.tenant(), &fields).await {
        Ok(e) => {
            tracing::info!(employee_id = %e.id, "employee created from the console");
            Ok(see_other(&format!("/employees/{}", e.id)))
        }
        Err(StoreError::Duplicate(_)) => {
            errors.add("name", "an employee of this name already exists");
            refused(&state, &ctx, None, &fields, values, Ok(errors)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /employees/{id}`: save changes, checked against the version the form was
/// opened at.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let e = load(&state, &ctx, &id).await?;
    let mut errors = FieldErrors::default();
    let (mut fields, values) = read(&FormData::parse(&body), &mut errors);
    expand_aliases(&state, &mut fields);
    fields.output_schema = e.fields.output_schema.clone();
    fields.input_timeout_seconds = e.fields.input_timeout_seconds;
    if let Err(err) = validate(&fields) {
        errors.add(&err.field, err.message);
    }
    if !errors.is_empty() {
        return refused(&state, &ctx, Some(e.id), &fields, values, Ok(errors)).await;
    }
    match state
        .store
        .update_employee(ctx.tenant(), e.id, values.version, &fields)
        .await
    {
        Ok(e) => Ok(see_other(&format!("/employees/{}", e.id))),
        Err(StoreError::Duplicate(_)) => {
            errors.add("name", "an employee of this name already exists");
            refused(&state, &ctx, Some(e.id), &fields, values, Ok(errors)).await
        }
        Err(StoreError::VersionConflict) => {
            let msg = "someone changed this employee since you opened it; reload to see their                        version"
                .to_string();
            refused(&state, &ctx, Some(e.id), &fields, values, Err(msg)).await
        }
        Err(err) => Err(err.into()),
    }
}

/// `POST /employees/{id}/delete` (the page asks for confirmation first).
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let e = load(&state, &ctx, &id).await?;
    state
        .store
        .delete_employee(ctx.tenant(), e.id, None)
        .await?;
    tracing::info!(employee_id = %e.id, "employee deleted from the console");
    Ok(see_other("/employees"))
}
