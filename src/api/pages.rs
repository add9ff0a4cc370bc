//! The gate in front of the routes served beside the API (the web console): the same
//! in-flight tracking, failed-authentication blocking and rate limits as the API, with
//! a session cookie as the credential instead of a key.
//!
//! A request with a live session carries its [`Session`] and [`Principal`] into the page
//! and is counted against the rate limit of the key or token the session was opened
//! with. A request without one goes on unauthenticated (the page itself redirects to the
//! sign-in form or refuses), unless its address is blocked for failed authentications;
//! a page answering with [`SignInRefused`] counts one such failure.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::security;
use crate::auth::session::{COOKIE, CookieSecure, Session, SignInRefused, Timeouts, cookie_value};
use crate::state::AppState;
use crate::telemetry::metrics as m;

/// Session auth and rate limits for page routes.
pub async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let _guard = state.lifecycle.track();
    let client = security::client_addr(&req, &state.config.trusted_proxies);
    let via_https = client.is_some_and(|_| {
        let peer_trusted = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|c| {
                state
                    .config
                    .trusted_proxies
                    .iter()
                    .any(|n| n.contains(&c.0.ip()))
            });
        peer_trusted
            && req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"))
    });
    req.extensions_mut().insert(CookieSecure(
        state.config.console.cookie_secure || via_https,
    ));
    let timeouts = Timeouts {
        idle: state.config.console.session_idle_timeout,
        absolute: state.config.console.session_absolute_timeout,
    };
    let cookies = req.headers().get_all(header::COOKIE);
    let id =
        cookie_value(cookies.iter().filter_map(|v| v.to_str().ok()), COOKIE).map(str::to_owned);
    if let Some(id) = id {
        match state.auth.resume_session(&id, timeouts).await {
            Ok(Some(session)) => {
                let principal = session.principal.clone();
                req.extensions_mut().insert(principal.clone());
                req.extensions_mut().insert::<Session>(session);
                return security::rate_limited(&state, &principal, req, next).await;
            }
            Ok(None) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    if let Some(until) = client.and_then(|ip| state.auth_failures.blocked_until(ip)) {
        metrics::counter!(m::AUTH_FAILURES_TOTAL, "outcome" => "blocked").increment(1);
        let wait = until.saturating_duration_since(std::time::Instant::now());
        return ApiError::TooManyAuthFailures {
            retry_after: wait.as_secs().max(1),
        }
        .into_response();
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<SignInRefused>().is_some() {
        metrics::counter!(m::AUTH_FAILURES_TOTAL, "outcome" => "refused").increment(1);
        if let Some(ip) = client {
            security::count_auth_failure(&state, ip).await;
        }
    }
    resp
}
