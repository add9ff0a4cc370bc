//! What every page shares: the signed-in context ([`Ctx`]), the page frame ([`Layout`]),
//! rendering, and the one error page ([`PageError`]).

use std::collections::HashMap;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use super::assets;
use crate::auth::Scope;
use crate::auth::session::{CookieSecure, Session};
use crate::orchestrator::{DecideError, SubmitError};
use crate::state::AppState;
use crate::store::{StoreError, TaskStatus};

/// The signed-in person: the session and whether its cookie must be `Secure`.
pub struct Ctx {
    pub session: Session,
    pub secure: bool,
    /// The request came from htmx (answer with a fragment).
    pub htmx: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(PageError::SignedOut)?;
        Ok(Ctx {
            session,
            secure: parts.extensions.get::<CookieSecure>().is_some_and(|c| c.0),
            htmx: parts.headers.contains_key("hx-request"),
        })
    }
}

impl Ctx {
    pub fn tenant(&self) -> Uuid {
        self.session.principal.tenant_id
    }

    pub fn can(&self, scope: Scope) -> bool {
        self.session.principal.allows(scope)
    }

    /// 403 unless the session's key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), PageError> {
        if self.can(scope) {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "this key has the {} scope; this needs {}",
                self.session.principal.scope.as_str(),
                scope.as_str()
            )))
        }
    }

    /// The frame of a page: navigation (with the approvals badge), who is signed in.
    pub async fn layout(
        &self,
        state: &AppState,
        nav: &'static str,
        title: impl Into<String>,
    ) -> Result<Layout, PageError> {
        let p = &self.session.principal;
        let tenant = state.store.get_tenant(p.tenant_id).await?;
        let waiting = waiting_count(state, p.tenant_id).await?;
        Ok(Layout {
            title: title.into(),
            nav,
            csrf: self.session.csrf.clone(),
            tenant_name: tenant.name,
            scope: p.scope.as_str(),
            can_write: p.allows(Scope::Write),
            is_admin: p.allows(Scope::Admin),
            waiting: match waiting {
                0 => String::new(),
                n if n >= BADGE_MAX => format!("{}+", BADGE_MAX - 1),
                n => n.to_string(),
            },
            css: assets::url("console.css"),
            js: assets::url("console.js"),
            htmx: assets::url("htmx.js"),
        })
    }
}

/// Above this many waiting tasks the badge shows "999+".
const BADGE_MAX: i64 = 1000;

/// Tasks of the tenant waiting for approval.
pub async fn waiting_count(state: &AppState, tenant: Uuid) -> Result<i64, StoreError> {
    state
        .store
        .count_tenant_tasks_in(tenant, TaskStatus::WaitingApproval)
        .await
}

/// The frame every signed-in page is drawn in.
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub csrf: String,
    pub tenant_name: String,
    pub scope: &'static str,
    pub can_write: bool,
    pub is_admin: bool,
    /// The approvals badge; empty when nothing waits.
    pub waiting: String,
    pub css: String,
    pub js: String,
    pub htmx: String,
}

/// Messages to show beside form fields, by field name.
#[derive(Default, Debug)]
pub struct FieldErrors(pub HashMap<String, String>);

impl FieldErrors {
    pub fn get(&self, field: &str) -> Option<&String> {
        self.0.get(field)
    }
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Files a message under its form field: `model_policy[1]` shows beside
    /// `model_policy`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        let base = field.split(['[', '.']).next().unwrap_or(field);
        self.0
            .entry(base.to_string())
            .or_insert_with(|| message.into());
    }
}

/// A rendered page with `status`.
pub fn page<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => PageError::Internal(anyhow::Error::new(e)).into_response(),
    }
}

/// `303 See Other` to `to` (after a form post).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("sign in first")]
    SignedOut,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the database is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: String,
    css: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            PageError::SignedOut => {
                // htmx follows HX-Redirect; a plain navigation follows the 303.
                let mut r = Redirect::to("/signin").into_response();
                r.headers_mut()
                    .insert("hx-redirect", HeaderValue::from_static("/signin"));
                return r;
            }
            PageError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            PageError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            PageError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            PageError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            PageError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            PageError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "console page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        };
        let message = match &self {
            PageError::Internal(_) => {
                "an internal error occurred; the server log has the details".to_string()
            }
            other => crate::auth::redact::redact(&other.to_string()).0,
        };
        let body = ErrorPage {
            status: status.as_u16(),
            title,
            message,
            css: assets::url("console.css"),
        };
        match body.render() {
            Ok(html) => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                html,
            )
                .into_response(),
            Err(_) => status.into_response(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => PageError::NotFound("not found".into()),
            StoreError::Duplicate(what) => PageError::Conflict(format!("{what} already exists")),
            StoreError::VersionConflict => PageError::Conflict(
                "it was changed since you opened it; reload and try again".into(),
            ),
            e if e.is_unavailable() => PageError::Unavailable,
            e => PageError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<DecideError> for PageError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::NotFound => PageError::NotFound("no such task".into()),
            DecideError::NotWaiting(Some(s)) => PageError::Conflict(format!(
                "the task is not waiting for approval ({})",
                s.as_str()
            )),
            e @ DecideError::NotWaiting(None) => PageError::Conflict(e.to_string()),
            DecideError::Store(e) => e.into(),
        }
    }
}

impl From<SubmitError> for PageError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid { field, message } => {
                PageError::BadRequest(format!("{field}: {message}"))
            }
            SubmitError::BadIdempotencyKey(m) => PageError::BadRequest(m),
            e @ SubmitError::IdempotencyConflict => PageError::Conflict(e.to_string()),
            SubmitError::Store(e) => e.into(),
        }
    }
}

/// A task or employee id from the path; 404 when it is not one.
pub fn parse_id(s: &str, what: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(s).map_err(|_| PageError::NotFound(format!("no such {what}")))
}

/// A time as people read it (UTC, to the second).
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Nano-dollars as dollars for display.
pub fn dollars(nanos: i64) -> String {
    let usd = crate::ai::pricing::usd(nanos);
    if usd != 0.0 && usd.abs() < 0.01 {
        format!("${usd:.6}")
    } else {
        format!("${usd:.2}")
    }
}
