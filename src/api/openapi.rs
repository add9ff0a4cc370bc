//! The OpenAPI document, generated from the handlers' annotations, and the docs page.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    chat, embeddings, employee_chat, employees, health, keys, messages, models, responses,
    schedules, tasks, tenants, tools, usage, webhooks,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "digital-employee",
        description = "Run AI digital employees: durable tasks, the LLM/tool loop, vendor fallback and accounting. \
                       Every error answers {\"error\":{\"type\",\"message\",\"request_id\"}}.",
    ),
    paths(
        health::health,
        health::ready,
        employees::create,
        employees::list,
        employees::get,
        employees::update,
        employees::delete,
        employee_chat::chat,
        chat::completions,
        messages::create,
        messages::count_tokens,
        embeddings::create,
        models::list,
        models::get,
        responses::create,
        responses::get,
        responses::delete,
        keys::create,
        keys::list,
        keys::get,
        keys::revoke,
        tenants::create,
        tenants::list,
        tenants::get,
        tasks::create,
        tasks::list,
        tasks::get,
        tasks::cancel,
        tasks::approve,
        tasks::reject,
        tasks::events,
        usage::report,
        schedules::create,
        schedules::list,
        schedules::get,
        schedules::update,
        schedules::delete,
        webhooks::rotate_secret,
        tools::create,
        tools::list,
        tools::get,
        tools::update,
        tools::delete,
    ),
    modifiers(&Security),
    tags(
        (name = "health", description = "Liveness and readiness probes (no auth)"),
        (name = "employees", description = "Digital employees: role, instructions, model policy, tools, limits"),
        (name = "tasks", description = "Durable tasks: submit, follow, cancel, approve"),
        (name = "webhooks", description = "Signing secret of the completion webhooks (admin)"),
        (name = "schedules", description = "Cron schedules that submit a task on every tick"),
        (name = "tools", description = "Webhook tools of the tenant: a JSON-schema and a URL the signed calls are POSTed to"),
        (name = "gateway", description = "OpenAI-compatible chat completions through the AI router"),
        (name = "keys", description = "API keys of a tenant (admin): the secret is shown once, at creation"),
        (name = "tenants", description = "Tenants (admin of the default tenant)"),
        (name = "usage", description = "AI usage and cost of the caller's tenant, from the recorded AI calls"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `/openapi.json` and the browsable page at `/docs`.
pub fn docs_router() -> Router<AppState> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    SwaggerUi::new("/docs").url("/openapi.json", doc).into()
}
