//! Webhook tools: list, create, delete — under `runtime::tools`'s rules, as the API.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::view::{Ctx, FieldErrors, Layout, PageError, page, parse_id, see_other, when};
use crate::auth::Scope;
use crate::orchestrator::tools::{timeout_ms, validate_webhook_tool};
use crate::state::AppState;
use crate::store::{StoreError, WebhookToolFields};

pub struct Row {
    pub id: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub timeout: i64,
    pub updated: String,
}

#[derive(Debug, Deserialize)]
pub struct NewTool {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    timeout_seconds: String,
}

impl Default for NewTool {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            parameters: "{\n  \"type\": \"object\",\n  \"properties\": {}\n}".into(),
            url: String::new(),
            timeout_seconds: "10".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/tools.html")]
struct ToolsPage {
    l: Layout,
    rows: Vec<Row>,
    f: NewTool,
    errors: FieldErrors,
}

async fn render(
    state: &AppState,
    ctx: &Ctx,
    f: NewTool,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let l = ctx.layout(state, "tools", "Webhook tools").await?;
    let rows = state
        .store
        .list_webhook_tools(ctx.tenant(), None, 100)
        .await?
        .items
        .into_iter()
        .map(|t| Row {
            id: t.id.to_string(),
            name: t.fields.name,
            description: t.fields.description,
            url: t.fields.url,
            timeout: t.fields.timeout_ms / 1000,
            updated: when(&t.updated_at),
        })
        .collect();
    Ok(page(status, &ToolsPage { l, rows, f, errors }))
}

/// `GET /tools`.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    render(
        &state,
        &ctx,
        NewTool::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /tools`.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(f): Form<NewTool>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let mut errors = FieldErrors::default();
    let parameters = serde_json::from_str(&f.parameters).unwrap_or_else(|e| {
        errors.add("parameters", format!("is not JSON: {e}"));
        serde_json::Value::Null
    });
    let timeout = match f.timeout_seconds.trim().parse::<u32>() {
        Ok(s) => timeout_ms(s).unwrap_or_else(|e| {
            errors.add(&e.field, e.message);
            0
        }),
        Err(_) => {
            errors.add("timeout_seconds", "must be a whole number of seconds");
            0
        }
    };
    let fields = WebhookToolFields {
        name: f.name.trim().to_string(),
        description: f.description.trim().to_string(),
        parameters,
        url: f.url.trim().to_string(),
        timeout_ms: timeout,
    };
    if errors.is_empty()
        && let Err(e) = validate_webhook_tool(&fields, &state.egress)
    {
        errors.add(&e.field, e.message);
    }
    if !errors.is_empty() {
        return render(&state, &ctx, f, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    match state.store.create_webhook_tool(ctx.tenant(), &fields).await {
        Ok(t) => {
            tracing::info!(tool_id = %t.id, "webhook tool created from the console");
            Ok(see_other("/tools"))
        }
        Err(StoreError::Duplicate(_)) => {
            errors.add("name", "a tool of this name already exists");
            render(&state, &ctx, f, errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /tools/{id}/delete` (the page asks first).
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let id = parse_id(&id, "tool")?;
    match state.store.delete_webhook_tool(ctx.tenant(), id).await {
        Ok(()) => Ok(see_other("/tools")),
        Err(StoreError::NotFound) => Err(PageError::NotFound("no such tool".into())),
        Err(e) => Err(e.into()),
    }
}
