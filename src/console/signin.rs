//! Sign-in and sign-out. The key or JWT pasted into the form is checked like a
//! request's credential (and a wrong one counts as a failed authentication of the
//! client address); it is never stored or sent back: the browser gets only the session
//! cookie.

use askama::Template;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::assets;
use super::guard::{CSRF_FIELD, SIGNIN_COOKIE};
use super::view::{Ctx, PageError, page, see_other};
use crate::auth::AuthError;
use crate::auth::session::{COOKIE, CookieSecure, Session, SignInRefused, Timeouts, new_id};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignIn {
    css: String,
    token: String,
    csrf_field: &'static str,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    credential: String,
}

fn timeouts(state: &AppState) -> Timeouts {
    Timeouts {
        idle: state.config.console.session_idle_timeout,
        absolute: state.config.console.session_absolute_timeout,
    }
}

fn cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// The form with a fresh one-time token (also set as the `de_signin` cookie).
fn form(status: StatusCode, secure: bool, error: Option<String>) -> Response {
    let token = new_id();
    let mut resp = page(
        status,
        &SignIn {
            css: assets::url("console.css"),
            token: token.clone(),
            csrf_field: CSRF_FIELD,
            error,
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(SIGNIN_COOKIE, &token, "/signin", 3600, secure),
    );
    resp
}

fn secure_of(req: &Request) -> bool {
    req.extensions().get::<CookieSecure>().is_some_and(|c| c.0)
}

/// `GET /signin`: the form, or the overview when already signed in.
pub async fn show(req: Request) -> Response {
    if req.extensions().get::<Session>().is_some() {
        return see_other("/");
    }
    form(StatusCode::OK, secure_of(&req), None)
}

/// `POST /signin`: check the credential, open a session, set its cookie.
pub async fn submit(
    State(state): State<AppState>,
    secure: Option<axum::Extension<CookieSecure>>,
    Form(f): Form<SignInForm>,
) -> Response {
    let secure = secure.is_some_and(|s| s.0.0);
    let credential = f.credential.trim();
    if credential.is_empty() {
        return form(
            StatusCode::UNPROCESSABLE_ENTITY,
            secure,
            Some("paste an API key or a JWT".into()),
        );
    }
    let (principal, expires) = match state.auth.authenticate_for_session(credential).await {
        Ok(p) => p,
        Err(AuthError::Store(e)) => return PageError::from(e).into_response(),
        Err(e) => {
            let mut resp = form(
                StatusCode::UNAUTHORIZED,
                secure,
                Some(format!("{e}: check the key or token and try again")),
            );
            resp.extensions_mut().insert(SignInRefused);
            return resp;
        }
    };
    let t = timeouts(&state);
    let id = match state.auth.open_session(&principal, expires, t).await {
        Ok(id) => id,
        Err(e) => return PageError::from(e).into_response(),
    };
    tracing::info!(tenant = %principal.tenant_id, scope = principal.scope.as_str(), "console session opened");
    let mut resp = see_other("/");
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie(COOKIE, &id, "/", t.absolute.as_secs(), secure),
    );
    h.append(
        header::SET_COOKIE,
        cookie(SIGNIN_COOKIE, "", "/signin", 0, secure),
    );
    resp
}

/// `POST /signout`: end the session on the server and drop the cookie.
pub async fn signout(State(state): State<AppState>, ctx: Ctx) -> Response {
    if let Err(e) = state.auth.close_session(&ctx.session.id_hash).await {
        return PageError::from(e).into_response();
    }
    let mut resp = see_other("/signin");
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie(COOKIE, "", "/", 0, ctx.secure));
    resp
}
