//! Liveness and readiness probes (public).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ErrorDetail, current_request_id};
use crate::config::RedisFailure;
use crate::state::{AppState, ProbeResult};

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    pub version: &'static str,
    /// `database`, `schema`, `draining`, and `redis` when `REDIS_URL` is set.
    pub checks: std::collections::BTreeMap<&'static str, Check>,
    /// Present when not ready: the error shape, naming the failing checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: 200 when the database answers, the schema is current and the process is
/// not draining; 503 naming the failing check otherwise. With Redis configured a `redis`
/// check reports whether it answers; it fails readiness only under
/// `RATE_LIMIT_REDIS_FAILURE=closed` (under `open` requests are served unlimited, so
/// taking the replica out of rotation would make things worse).
#[utoipa::path(get, path = "/ready", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "Not ready; `checks` names what failed", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut checks = std::collections::BTreeMap::new();
    let draining = state.lifecycle.is_draining();
    checks.insert(
        "draining",
        Check {
            ok: !draining,
            detail: draining.then(|| "shutting down".to_string()),
        },
    );
    let redis_required = state.config.rate_limit_redis_failure == RedisFailure::Closed;
    let probed = state
        .probes
        .get_or_refresh(PROBE_CACHE_TTL, || {
            dependency_checks(&state, redis_required)
        })
        .await;
    for p in probed {
        checks.insert(
            p.name,
            Check {
                ok: p.ok,
                detail: p.detail,
            },
        );
    }

    let failing: Vec<String> = checks
        .iter()
        .filter(|(name, c)| !c.ok && (**name != "redis" || redis_required))
        .map(|(name, c)| format!("{name}: {}", c.detail.as_deref().unwrap_or("failed")))
        .collect();
    let ready = failing.is_empty();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        version: env!("CARGO_PKG_VERSION"),
        checks,
        error: (!ready).then(|| ErrorDetail {
            kind: "not_ready",
            message: failing.join("; "),
            request_id: current_request_id(),
            field: None,
            attempts: None,
            budget: None,
        }),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// How long a round of dependency checks answers `/ready` before the next one.
const PROBE_CACHE_TTL: Duration = Duration::from_secs(1);

fn probe(name: &'static str, c: Check) -> ProbeResult {
    ProbeResult {
        name,
        ok: c.ok,
        detail: c.detail,
    }
}

/// Database, schema and Redis, asked once (see [`PROBE_CACHE_TTL`]).
async fn dependency_checks(state: &AppState, redis_required: bool) -> Vec<ProbeResult> {
    metrics::counter!(crate::telemetry::metrics::READINESS_CHECKS_TOTAL).increment(1);
    let mut checks = Vec::new();
    let db = tokio::time::timeout(DB_TIMEOUT, state.store.ping()).await;
    let db_ok = matches!(db, Ok(Ok(())));
    checks.push(probe(
        "database",
        Check {
            ok: db_ok,
            detail: match db {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness: database check failed");
                    Some("database did not answer".into())
                }
                Err(_) => Some(format!("no answer within {}s", DB_TIMEOUT.as_secs())),
            },
        },
    ));
    let schema = if db_ok {
        match tokio::time::timeout(DB_TIMEOUT, state.store.schema_status()).await {
            Ok(Ok(s)) if s.is_current() => Check {
                ok: true,
                detail: None,
            },
            Ok(Ok(s)) => Check {
                ok: false,
                detail: Some(format!(
                    "pending migrations {:?}; run `digital-employee migrate`",
                    s.pending
                )),
            },
            _ => Check {
                ok: false,
                detail: Some("could not read the schema version".into()),
            },
        }
    } else {
        Check {
            ok: false,
            detail: Some("database unavailable".into()),
        }
    };
    checks.push(probe("schema", schema));
    match state.rate_limiter.ping().await {
        Ok(None) => {}
        Ok(Some(())) => {
            checks.push(probe(
                "redis",
                Check {
                    ok: true,
                    detail: None,
                },
            ));
        }
        Err(_) => {
            checks.push(probe(
                "redis",
                Check {
                    ok: false,
                    detail: Some(if redis_required {
                        "unreachable; requests are refused (RATE_LIMIT_REDIS_FAILURE=closed)".into()
                    } else {
                        "unreachable; requests are not rate limited (RATE_LIMIT_REDIS_FAILURE=open)"
                            .into()
                    }),
                },
            ));
        }
    }

    checks
}
