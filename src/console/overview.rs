//! The overview: the tenant's tasks by status over the last 24 hours, what is queued,
//! running and waiting now, spend today and this month, the vendors with their breaker
//! state and error rate, and the latest failures.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Datelike, Duration, NaiveDate};
use uuid::Uuid;

use super::tasks::{TaskRow, employee_names, row};
use super::view::{Ctx, Layout, PageError, dollars, page};
use crate::ai::router::BreakerState;
use crate::auth::Scope;
use crate::state::AppState;
use crate::store::{TaskFilter, TaskStatus, UsageGroupBy, now};

pub struct Count {
    pub status: &'static str,
    pub n: i64,
}

pub struct Vendor {
    pub name: String,
    pub breaker: &'static str,
    pub requests: i64,
    pub error_rate: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    l: Layout,
    by_status: Vec<Count>,
    total_24h: i64,
    queued: i64,
    running: i64,
    waiting: i64,
    spend_today: String,
    spend_month: String,
    vendors: Vec<Vendor>,
    failed: Vec<TaskRow>,
}

/// `GET /`.
pub async fn show(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let tenant = ctx.tenant();
    let l = ctx.layout(&state, "overview", "Overview").await?;
    let t = now();
    let counts = state
        .store
        .count_tenant_tasks(tenant, t - Duration::hours(24))
        .await?;
    let n = |s: TaskStatus| {
        counts
            .iter()
            .find(|(k, _, _)| *k == s)
            .map_or(0, |(_, _, all)| *all)
    };
    let by_status: Vec<Count> = TaskStatus::ALL
        .iter()
        .map(|s| Count {
            status: s.as_str(),
            n: counts
                .iter()
                .find(|(k, _, _)| k == s)
                .map_or(0, |(_, recent, _)| *recent),
        })
        .collect();
    let today = t.date_naive();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|x| x.and_utc()).unwrap_or(t);
    let month_start = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap_or(today);
    let until = t + Duration::seconds(1);
    // One report of the month by day gives both figures.
    let month = state
        .store
        .usage_report(tenant, midnight(month_start), until, UsageGroupBy::Day)
        .await?;
    let today_key = today.format("%Y-%m-%d").to_string();
    let spend_today = dollars(
        month
            .iter()
            .filter(|g| g.key.as_deref() == Some(today_key.as_str()))
            .map(|g| g.cost_nanos)
            .sum(),
    );
    let spend_month = dollars(month.iter().map(|g| g.cost_nanos).sum());
    let per_vendor = state
        .store
        .usage_report(
            tenant,
            t - Duration::hours(24),
            until,
            UsageGroupBy::Provider,
        )
        .await?;
    let vendors = state
        .ai
        .provider_names()
        .into_iter()
        .map(|name| {
            let g = per_vendor.iter().find(|g| g.key.as_deref() == Some(&name));
            let (requests, errors) = g.map_or((0, 0), |g| (g.requests, g.errors));
            Vendor {
                breaker: match state.ai.breaker_state(&name) {
                    Some(BreakerState::Open) => "open",
                    Some(BreakerState::HalfOpen) => "half-open",
                    _ => "closed",
                },
                error_rate: if requests == 0 {
                    "–".into()
                } else {
                    format!("{:.1}%", errors as f64 * 100.0 / requests as f64)
                },
                requests,
                name,
            }
        })
        .collect();
    let names: HashMap<Uuid, String> = employee_names(&state, tenant)
        .await?
        .into_iter()
        .map(|e| (e.id, e.fields.name))
        .collect();
    let failed_filter = TaskFilter {
        status: Some(TaskStatus::Failed),
        employee_id: None,
        created_after: None,
        created_before: None,
        parent_task_id: None,
    };
    let failed = state
        .store
        .list_tasks(tenant, &failed_filter, None, 5)
        .await?
        .items
        .iter()
        .map(|t| row(t, &names))
        .collect();
    Ok(page(
        StatusCode::OK,
        &Overview {
            l,
            total_24h: by_status.iter().map(|c| c.n).sum(),
            by_status,
            queued: n(TaskStatus::Queued) + n(TaskStatus::Retrying),
            running: n(TaskStatus::Running),
            waiting: n(TaskStatus::WaitingApproval),
            spend_today,
            spend_month,
            vendors,
            failed,
        },
    ))
}
