//! The HTTP API: one route table, auth by default, one error shape.
//!
//! Every request passes the request middleware (request id, in-flight count, JSON
//! access log, metrics labelled by route template) and then the auth middleware, which
//! lets through only the paths on [`PUBLIC_PATHS`] without credentials.

pub mod budgets;
pub mod chat;
pub mod embeddings;
pub mod employee_chat;
pub mod employees;
pub mod error;
pub mod extract;
pub mod health;
pub mod keys;
pub mod mcp;
pub mod mcp_servers;
pub mod messages;
pub mod models;
pub mod openapi;
pub mod page;
pub mod pages;
pub mod resource;
pub mod responses;
pub mod schedules;
pub mod security;
pub mod tasks;
pub mod tenants;
pub mod time;
pub mod tools;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;

use crate::auth::{AuthError, Principal};
use crate::config::Secret;
use crate::state::AppState;
use crate::telemetry::logging::{REQUEST, RequestScope};
use crate::telemetry::metrics as m;
use crate::telemetry::traces;
use error::ApiError;

/// Paths served without credentials. Everything else requires a key.
pub const PUBLIC_PATHS: &[&str] = &["/health", "/ready", "/openapi.json", "/docs"];

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The API router on port 8000.
pub fn router(state: AppState) -> Router {
    router_with_pages(state, Router::new())
}

/// The API router with `pages` (the web console) served beside it: outside the OpenAPI
/// document and the key check, behind the session gate ([`pages::gate`]) and the same
/// request context, body limits and security headers.
pub fn router_with_pages(state: AppState, pages: Router<AppState>) -> Router {
    use tower::ServiceBuilder;
    use tower::util::option_layer;

    let limit = state.config.max_body_bytes;
    let cors = security::cors(&state.config);
    // Each `Router::layer` call wraps every route in one more boxed service, and every
    // request clones the whole chain of boxes beneath the layer it passes (quadratic in
    // the number of calls). So the layers are composed first, with `ServiceBuilder`, and
    // each group is applied in one call: one box per group, cloned once per request.
    let api_layers =
        ServiceBuilder::new().layer(middleware::from_fn_with_state(state.clone(), guard));
    // Outermost first. `request_context` needs the matched route (its span and metrics
    // are labelled with the template), so these run once a route has matched.
    let edge_layers = ServiceBuilder::new()
        .layer(middleware::from_fn(security::security_headers))
        .layer(option_layer(cors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.request_body_timeout,
        ))
        .map_request(|req: Request<_>| req.map(axum::body::Body::new))
        .layer(DefaultBodyLimit::max(limit));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .nest("/v1", v1())
        .route_service("/mcp", mcp::service(state.clone()))
        .merge(openapi::docs_router(&state.ai.provider_names()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(api_layers)
        .merge(pages.layer(middleware::from_fn_with_state(state.clone(), pages::gate)))
        .layer(edge_layers)
        .with_state(state)
}

fn v1() -> Router<AppState> {
    Router::new()
        .route("/employees", get(employees::list).post(employees::create))
        .route(
            "/employees/{id}",
            get(employees::get)
                .patch(employees::update)
                .delete(employees::delete),
        )
        .route("/employees/{id}/chat", post(employee_chat::chat))
        .route("/chat/completions", post(chat::completions))
        .route("/messages", post(messages::create))
        .route("/messages/count_tokens", post(messages::count_tokens))
        .route("/embeddings", post(embeddings::create))
        .route("/responses", post(responses::create))
        .route(
            "/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route("/models", get(models::list))
        .route("/models/{*id}", get(models::get))
        .route("/budgets", get(budgets::list).post(budgets::create))
        .route(
            "/budgets/{id}",
            get(budgets::get)
                .patch(budgets::update)
                .delete(budgets::delete),
        )
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{id}", get(keys::get).delete(keys::revoke))
        .route("/tenants", get(tenants::list).post(tenants::create))
        .route("/tenants/{id}", get(tenants::get))
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{id}", get(tasks::get))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/approve", post(tasks::approve))
        .route("/tasks/{id}/reject", post(tasks::reject))
        .route("/tasks/{id}/input", post(tasks::input))
        .route("/tasks/{id}/events", get(tasks::events))
        .route("/usage", get(usage::report))
        .route("/webhooks/secret", post(webhooks::rotate_secret))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route(
            "/schedules/{id}",
            get(schedules::get)
                .patch(schedules::update)
                .delete(schedules::delete),
        )
        .route("/tools", get(tools::list).post(tools::create))
        .route(
            "/tools/{id}",
            get(tools::get).patch(tools::update).delete(tools::delete),
        )
        .route(
            "/mcp-servers",
            get(mcp_servers::list).post(mcp_servers::create),
        )
        .route(
            "/mcp-servers/{id}",
            get(mcp_servers::get)
                .patch(mcp_servers::update)
                .delete(mcp_servers::delete),
        )
        .route("/mcp-servers/{id}/refresh", post(mcp_servers::refresh))
}

/// The metrics router on port 9000: `/metrics` and nothing else.
/// `token`, when not empty, must come as `Authorization: Bearer <token>` (compared in
/// constant time); otherwise 401.
pub fn metrics_router(handle: PrometheusHandle, token: Secret) -> Router {
    let token = Arc::new(token);
    Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| {
            let handle = handle.clone();
            let token = token.clone();
            async move {
                if !token.is_empty() {
                    let given = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default();
                    let ok: bool =
                        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.expose().as_bytes())
                            .into();
                    if !ok {
                        return ApiError::Unauthorized(
                            "the metrics need Authorization: Bearer <METRICS_BEARER_TOKEN>".into(),
                        )
                        .into_response();
                    }
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Request id, in-flight tracking, access log and HTTP metrics.
///
/// The request id reaches log lines and errors through the [`REQUEST`] task-local. A
/// span per request is opened only when traces are exported (it is the server span).
async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let sent = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_owned);
    let (header, scope) = match sent {
        Some(id) => (HeaderValue::from_str(&id).ok(), RequestScope::new(id)),
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            (HeaderValue::from_str(&id).ok(), RequestScope::minted(id))
        }
    };
    REQUEST
        .scope(scope, async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let endpoint = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| m::UNMATCHED_ENDPOINT.to_owned());
            let span =
                traces::enabled().then(|| request_span(&method, &endpoint, &path, req.headers()));
            let mut resp = match &span {
                Some(span) => next.run(req).instrument(span.clone()).await,
                None => next.run(req).await,
            };

            let elapsed = started.elapsed().as_secs_f64();
            let status = resp.status().as_u16();
            if let Some(v) = header {
                resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
            }
            if let Some(span) = &span {
                span.record("http.response.status_code", status);
                if status >= 500 {
                    span.record("otel.status_code", "error");
                }
                // The server span's context: a caller links its own span to ours with it.
                if let Some(v) =
                    traces::traceparent_of(span).and_then(|t| HeaderValue::from_str(&t).ok())
                {
                    resp.headers_mut().insert(traces::TRACEPARENT, v);
                }
            }
            // While draining, every connection closes after its response, so a proxy never
            // reuses one that the shutdown is about to cut.
            if state.lifecycle.is_draining() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let (requests, duration) = http_metrics(&method, &endpoint, status);
            requests.increment(1);
            duration.record(elapsed);
            let log = || {
                tracing::info!(
                    method = method.as_str(),
                    path = path.as_str(),
                    status_code = status,
                    response_time = elapsed,
                    "request completed"
                );
            };
            match &span {
                Some(span) => span.in_scope(log),
                None => log(),
            }
            resp
        })
        .await
}

/// Handles of the HTTP metrics of one route, by method and status.
type RouteMetrics = m::Handles<(axum::http::Method, u16), (metrics::Counter, metrics::Histogram)>;

/// The request counter and duration histogram of a request's labels: cached per route
/// template, standard method and status; a non-standard method (any token a client
/// sends) is registered each time, never cached.
fn http_metrics(
    method: &axum::http::Method,
    endpoint: &str,
    status: u16,
) -> (metrics::Counter, metrics::Histogram) {
    static ROUTES: std::sync::LazyLock<m::Handles<String, Arc<RouteMetrics>>> =
        std::sync::LazyLock::new(m::Handles::new);
    let register = || {
        let method = method.as_str().to_owned();
        (
            metrics::counter!(m::HTTP_REQUESTS_TOTAL,
                "method" => method.clone(), "endpoint" => endpoint.to_owned(), "status" => status.to_string()),
            metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS,
                "method" => method, "endpoint" => endpoint.to_owned()),
        )
    };
    use axum::http::Method;
    let standard = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .contains(method);
    if !standard {
        return register();
    }
    ROUTES
        .get(endpoint, || {
            (endpoint.to_owned(), Arc::new(m::Handles::new()))
        })
        .get(&(method.clone(), status), || {
            ((method.clone(), status), register())
        })
}

/// The span of one request when traces are exported: an HTTP server span named after
/// the route template, continuing the caller's `traceparent`.
fn request_span(
    method: &axum::http::Method,
    endpoint: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        request_id = %error::current_request_id(),
        otel.name = %format!("{method} {endpoint}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %endpoint,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(tp) = headers
        .get(traces::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        traces::set_parent(&span, tp);
    }
    span
}

/// Accepts a caller's request id if it is short printable ASCII; otherwise we mint one.
fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// The API routes' guard: auth by default ([`require_auth`]), and on the Messages paths
/// errors in Anthropic's shape ([`messages::in_anthropic_shape`]). One layer, not two:
/// every layer costs each request a boxed future and a clone of the routes beneath it.
async fn guard(state: State<AppState>, req: Request, next: Next) -> Response {
    if messages::anthropic_path(req.uri().path()) {
        messages::in_anthropic_shape(require_auth(state, req, next).await).await
    } else {
        require_auth(state, req, next).await
    }
}

/// Auth by default: only [`PUBLIC_PATHS`] pass without a valid key.
async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = PUBLIC_PATHS.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    // Requests are counted for draining only once they are known to be real work, so
    // probes never hold up a shutdown.
    if public {
        return next.run(req).await;
    }
    let _guard = state.lifecycle.track();
    let presented = req
        .headers()
        .get(&X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| bearer(req.headers().get(header::AUTHORIZATION)));
    let Some(key) = presented else {
        return ApiError::Unauthorized(AuthError::Missing.to_string()).into_response();
    };
    let client = security::client_addr(&req, &state.config.trusted_proxies);
    if let Some(until) = client.and_then(|ip| state.auth_failures.blocked_until(ip)) {
        metrics::counter!(m::AUTH_FAILURES_TOTAL, "outcome" => "blocked").increment(1);
        let wait = until.saturating_duration_since(std::time::Instant::now());
        return ApiError::TooManyAuthFailures {
            retry_after: wait.as_secs().max(1),
        }
        .into_response();
    }
    match state.auth.authenticate(&key).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal.clone());
            security::rate_limited(&state, &principal, req, next).await
        }
        Err(AuthError::Store(e)) => ApiError::from(e).into_response(),
        Err(e) => {
            metrics::counter!(m::AUTH_FAILURES_TOTAL, "outcome" => "refused").increment(1);
            if let Some(ip) = client {
                security::count_auth_failure(&state, ip).await;
            }
            ApiError::Unauthorized(e.to_string()).into_response()
        }
    }
}

fn bearer(v: Option<&HeaderValue>) -> Option<String> {
    let v = v?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The authenticated caller, for handlers behind the auth middleware.
pub struct Caller(pub Principal);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Unauthorized(AuthError::Missing.to_string()))
    }
}

impl Caller {
    /// 403 unless the caller holds `scope` (or a higher one).
    pub fn require(&self, scope: crate::auth::Scope) -> Result<(), ApiError> {
        if self.0.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this key lacks the {} scope",
                scope.as_str()
            )))
        }
    }
}

/// `ETag` of a versioned resource.
pub fn etag(version: i64) -> (HeaderName, HeaderValue) {
    (
        header::ETAG,
        HeaderValue::from_str(&format!("\"{version}\""))
            .unwrap_or(HeaderValue::from_static("\"0\"")),
    )
}

/// Reads `If-Match: "N"` (also `W/"N"` or `N`); 400 if present but not a version.
pub fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    // Exactly `N`, `"N"`, `W/N` or `W/"N"` with N of 1–18 digits (the documented pattern).
    let s = v.to_str().unwrap_or("");
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s);
    counter(s).map(Some).ok_or_else(|| {
        ApiError::BadRequest("If-Match must be the resource version, e.g. \"3\"".into())
    })
}

/// A version or event sequence number as headers carry it: 1–18 ASCII digits (the
/// pattern the document gives `If-Match` and `Last-Event-ID`).
pub fn counter(s: &str) -> Option<i64> {
    if (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}
