//! The hardened HTTP surface: security headers, CORS, and the per-caller rate limit.
//!
//! Security headers go on every response of the API port, errors included. The API's
//! Content-Security-Policy allows nothing (JSON needs no scripts, styles or frames); the
//! `/docs` page gets its own policy allowing its scripts and styles from this origin.
//! HSTS is left to the TLS terminator in front of the service.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use crate::auth::Principal;
use crate::auth::ratelimit::Decision;
use crate::config::{Config, RedisFailure};
use crate::state::AppState;
use crate::telemetry::metrics as m;

const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Swagger UI loads its bundle, stylesheet and initializer from this origin, sets inline
/// styles, uses data: images and fetches `/openapi.json`.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Adds the security headers to every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path() == "/docs" || req.uri().path().starts_with("/docs/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A page that sets its own policy (the web console's) keeps it.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if docs { DOCS_CSP } else { API_CSP }),
        );
    }
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The CORS layer when `CORS_ALLOWED_ORIGINS` is set; `None` keeps CORS closed (no
/// `Access-Control-*` headers, so browsers refuse cross-origin reads).
pub fn cors(config: &Config) -> Option<CorsLayer> {
    if config.cors_allowed_origins.is_empty() {
        return None;
    }
    let origin = if config.cors_allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_MATCH,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
                X_RATELIMIT_LIMIT.clone(),
                X_RATELIMIT_REMAINING.clone(),
                X_RATELIMIT_RESET.clone(),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Counts the request against the caller's limit and its tenant's
/// (`TENANT_RATE_LIMIT_REQUESTS`, all the tenant's keys and tokens together); 429 when over
/// either. Called by the auth middleware once the caller is known.
pub async fn rate_limited(
    state: &AppState,
    principal: &Principal,
    req: Request,
    next: Next,
) -> Response {
    let limit = principal
        .rate_limit
        .unwrap_or(state.config.rate_limit_requests);
    let checked = match state.rate_limiter.check(&principal.subject, limit).await {
        // The caller is under its own limit: the tenant's callers together must be too.
        // A key the operator granted at least the tenant's whole allowance is counted
        // on its own limit only (a load or integration key), not against its tenant.
        Ok(d) if d.allowed && limit < state.config.tenant_rate_limit_requests => {
            let tenant = format!("tenant:{}", principal.tenant_id);
            match state
                .rate_limiter
                .check(&tenant, state.config.tenant_rate_limit_requests)
                .await
            {
                Ok(t) if !t.allowed => Ok(t),
                Ok(_) => Ok(d),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    match checked {
        Ok(d) if d.allowed => {
            let mut resp = next.run(req).await;
            put_headers(&mut resp, &d);
            resp
        }
        Ok(d) => {
            metrics::counter!(m::RATE_LIMITED_TOTAL, "tenant" => principal.tenant_id.to_string())
                .increment(1);
            let mut resp = ApiError::RateLimited {
                retry_after: reset_secs(&d),
            }
            .into_response();
            put_headers(&mut resp, &d);
            resp
        }
        Err(_) => {
            let policy = state.config.rate_limit_redis_failure;
            metrics::counter!(m::RATE_LIMIT_REDIS_ERRORS_TOTAL,
                "policy" => match policy { RedisFailure::Open => "open", RedisFailure::Closed => "closed" })
            .increment(1);
            match policy {
                // Unlimited while the shared store is down; no rate-limit headers, as
                // there is no count to report.
                RedisFailure::Open => next.run(req).await,
                RedisFailure::Closed => {
                    let mut resp =
                        ApiError::Unavailable("rate limiter unavailable; retry shortly".into())
                            .into_response();
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    resp
                }
            }
        }
    }
}

/// Whole seconds, rounded up, so a client that waits this long is allowed.
fn reset_secs(d: &Decision) -> u64 {
    let ms = d.reset.as_millis() as u64;
    ms.div_ceil(1000).max(1)
}

fn put_headers(resp: &mut Response, d: &Decision) {
    let h = resp.headers_mut();
    h.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(d.limit));
    h.insert(
        X_RATELIMIT_REMAINING.clone(),
        HeaderValue::from(d.remaining),
    );
    h.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(reset_secs(d)));
}

/// The client's address: the peer's, or — when the peer is one of `TRUSTED_PROXIES` —
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (the left
/// part of the header is the client's to write, so it is never believed).
pub fn client_addr(req: &Request, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?
        .0
        .ip();
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

/// Counts a failed authentication from `ip` in the shared limiter; past
/// `AUTH_FAILURE_LIMIT` in a window the address is refused until the window has passed.
pub async fn count_auth_failure(state: &AppState, ip: std::net::IpAddr) {
    let subject = format!("authfail:{ip}");
    match state
        .rate_limiter
        .check(&subject, state.config.auth_failure_limit)
        .await
    {
        Ok(d) if !d.allowed => {
            tracing::warn!(client = %ip, "too many failed authentications; refusing this address for a while");
            state.auth_failures.block(
                ip,
                std::time::Instant::now() + d.reset.max(std::time::Duration::from_secs(1)),
            );
        }
        Ok(_) => {}
        // The shared store is down: failures go uncounted rather than lock anyone out.
        Err(_) => {}
    }
}
