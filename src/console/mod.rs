//! The web console: server-rendered pages at `/` for the people who steer digital
//! employees (overview, tasks with a live timeline, approvals, employees, chat,
//! schedules, webhook tools, usage, keys and tenants).
//!
//! It sits beside `api` and calls what the API calls — `orchestrator::submit`,
//! `cancel`, `decide`, the follower of the step log, the shared validation rules and
//! the store — so there is one copy of every business rule. Pages are rendered with
//! askama templates (checked at compile time, escaped by default); the only scripts are
//! a vendored htmx and `console.js`, embedded with the stylesheet under content-hashed
//! names. The route table is outside the OpenAPI document; the API's router puts these
//! routes behind its session gate (`api::pages::gate`: in-flight tracking, failed
//! sign-in blocking, rate limits) and this module's [`guard`] (CSP, CSRF).

mod admin;
mod approvals;
mod assets;
mod chat;
mod employees;
mod form;
mod guard;
mod markdown;
mod overview;
mod schedules;
mod signin;
mod tasks;
mod tools;
mod usage;
mod view;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::state::AppState;

pub use assets::script_bytes;
pub use guard::CONSOLE_CSP;

/// The console's routes, for `api::router_with_pages`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::show))
        .route("/signin", get(signin::show).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/assets/{file}", get(assets::serve))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/new", get(tasks::new))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/summary", get(tasks::summary_fragment))
        .route("/tasks/{id}/live", get(tasks::live))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/approve", post(approvals::approve))
        .route("/tasks/{id}/input", post(tasks::answer))
        .route("/tasks/{id}/reject", post(approvals::reject))
        .route("/approvals", get(approvals::inbox))
        .route("/employees", get(employees::list).post(employees::create))
        .route("/employees/new", get(employees::new))
        .route(
            "/employees/{id}",
            get(employees::show).post(employees::update),
        )
        .route("/employees/{id}/delete", post(employees::delete))
        .route("/chat", get(chat::show).post(chat::say))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route("/schedules/preview", get(schedules::preview_fires))
        .route("/schedules/{id}/toggle", post(schedules::toggle))
        .route("/schedules/{id}/delete", post(schedules::delete))
        .route("/tools", get(tools::list).post(tools::create))
        .route("/tools/{id}/delete", post(tools::delete))
        .route("/usage", get(usage::show))
        .route("/usage.csv", get(usage::csv))
        .route("/keys", get(admin::keys).post(admin::create_key))
        .route("/keys/{id}/revoke", post(admin::revoke_key))
        .route("/tenants", get(admin::tenants).post(admin::create_tenant))
        .layer(middleware::from_fn(guard::layer))
}
