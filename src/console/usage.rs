//! Usage: cost per day as an SVG chart drawn on the server, tables by employee and by
//! model, and the same numbers as CSV — all from the store's usage report, the one
//! `GET /v1/usage` and the `usage` command read.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::tasks::employee_names;
use super::view::{Ctx, Layout, PageError, dollars, page};
use crate::auth::Scope;
use crate::state::AppState;
use crate::store::{UsageGroup, UsageGroupBy, now};

/// The longest period one page or file covers.
const MAX_DAYS: i64 = 366;

#[derive(Debug, Default, Deserialize)]
pub struct Period {
    /// `YYYY-MM-DD`, inclusive; default 29 days before `to`.
    #[serde(default)]
    from: String,
    /// `YYYY-MM-DD`, inclusive; default today (UTC).
    #[serde(default)]
    to: String,
    /// For CSV: `day` (default), `employee`, `model` or `provider`.
    #[serde(default)]
    group_by: String,
}

/// `[from, to)` as instants and the inclusive days, or why the dates are refused.
fn period(p: &Period) -> Result<(NaiveDate, NaiveDate), String> {
    let parse = |s: &str, what: &str| {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|_| format!("{what} must be a date (YYYY-MM-DD)"))
    };
    let to = if p.to.trim().is_empty() {
        now().date_naive()
    } else {
        parse(&p.to, "to")?
    };
    let from = if p.from.trim().is_empty() {
        to - Duration::days(29)
    } else {
        parse(&p.from, "from")?
    };
    if from > to {
        return Err("from must not be after to".into());
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(format!("a period of at most {MAX_DAYS} days"));
    }
    Ok((from, to))
}

fn start(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(now)
}

pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub label: String,
}

/// The chart: one bar per day, heights relative to the costliest day.
pub struct Chart {
    pub bars: Vec<Bar>,
    pub ticks: Vec<(String, String)>,
    pub max: String,
    pub days: usize,
}

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 180.0;
const PAD_L: f64 = 8.0;
const PAD_B: f64 = 20.0;

fn chart(from: NaiveDate, to: NaiveDate, per_day: &[UsageGroup]) -> Chart {
    let cost: HashMap<&str, i64> = per_day
        .iter()
        .filter_map(|g| g.key.as_deref().map(|k| (k, g.cost_nanos)))
        .collect();
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let max = cost.values().copied().max().unwrap_or(0).max(1);
    let slot = (CHART_W - PAD_L) / days.len().max(1) as f64;
    let plot_h = CHART_H - PAD_B;
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let key = d.format("%Y-%m-%d").to_string();
        let c = cost.get(key.as_str()).copied().unwrap_or(0);
        let h = (c as f64 / max as f64) * (plot_h - 4.0);
        let x = PAD_L + i as f64 * slot;
        bars.push(Bar {
            x: format!("{:.1}", x + slot * 0.1),
            y: format!("{:.1}", plot_h - h),
            w: format!("{:.1}", (slot * 0.8).max(1.0)),
            h: format!("{:.1}", h),
            label: format!("{key}: {}", dollars(c)),
        });
        let every = (days.len() / 6).max(1);
        if i % every == 0 {
            ticks.push((
                format!("{:.1}", x + slot / 2.0),
                d.format("%m-%d").to_string(),
            ));
        }
    }
    Chart {
        bars,
        ticks,
        max: dollars(max),
        days: days.len(),
    }
}

pub struct Line {
    pub key: String,
    pub requests: i64,
    pub errors: i64,
    pub tokens: String,
    pub cost: String,
}

fn lines(groups: Vec<UsageGroup>, names: &HashMap<String, String>) -> Vec<Line> {
    groups
        .into_iter()
        .map(|g| Line {
            key: match g.key {
                Some(k) => names.get(&k).cloned().unwrap_or(k),
                None => "(gateway calls)".into(),
            },
            requests: g.requests,
            errors: g.errors,
            tokens: format!("{} in / {} out", g.input_tokens, g.output_tokens),
            cost: dollars(g.cost_nanos),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    l: Layout,
    from: String,
    to: String,
    error: Option<String>,
    chart: Chart,
    total: String,
    by_employee: Vec<Line>,
    by_model: Vec<Line>,
}

/// `GET /usage`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(p): Query<Period>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let tenant = ctx.tenant();
    let l = ctx.layout(&state, "usage", "Usage").await?;
    let (error, (from, to)) = match period(&p) {
        Ok(r) => (None, r),
        Err(e) => (Some(e), period(&Period::default()).unwrap_or_default()),
    };
    let (a, b) = (start(from), start(to + Duration::days(1)));
    let per_day = state
        .store
        .usage_report(tenant, a, b, UsageGroupBy::Day)
        .await?;
    let total = dollars(per_day.iter().map(|g| g.cost_nanos).sum());
    let names: HashMap<String, String> = employee_names(&state, tenant)
        .await?
        .into_iter()
        .map(|e| (e.id.to_string(), e.fields.name))
        .collect();
    let by_employee = lines(
        state
            .store
            .usage_report(tenant, a, b, UsageGroupBy::Employee)
            .await?,
        &names,
    );
    let by_model = lines(
        state
            .store
            .usage_report(tenant, a, b, UsageGroupBy::Model)
            .await?,
        &HashMap::new(),
    );
    Ok(page(
        StatusCode::OK,
        &UsagePage {
            l,
            from: from.to_string(),
            to: to.to_string(),
            error,
            chart: chart(from, to, &per_day),
            total,
            by_employee,
            by_model,
        },
    ))
}

fn csv_field(s: &str) -> String {
    // Quote every text field; a leading formula character is defused for spreadsheets.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `GET /usage.csv`: one row per group (`group_by`), with totals of the period.
pub async fn csv(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(p): Query<Period>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let (from, to) = period(&p).map_err(PageError::BadRequest)?;
    let group_by = match p.group_by.as_str() {
        "" | "day" => UsageGroupBy::Day,
        "employee" => UsageGroupBy::Employee,
        "model" => UsageGroupBy::Model,
        "provider" => UsageGroupBy::Provider,
        _ => {
            return Err(PageError::BadRequest(
                "group_by must be day, employee, model or provider".into(),
            ));
        }
    };
    let groups = state
        .store
        .usage_report(
            ctx.tenant(),
            start(from),
            start(to + Duration::days(1)),
            group_by,
        )
        .await?;
    let names: HashMap<Uuid, String> = if group_by == UsageGroupBy::Employee {
        employee_names(&state, ctx.tenant())
            .await?
            .into_iter()
            .map(|e| (e.id, e.fields.name))
            .collect()
    } else {
        HashMap::new()
    };
    let mut out = format!(
        "{},employee_name,requests,successes,errors,cache_hits,input_tokens,output_tokens,cost_usd\n",
        group_by.as_str()
    );
    for g in groups {
        let key = g.key.clone().unwrap_or_default();
        let name = Uuid::parse_str(&key)
            .ok()
            .and_then(|id| names.get(&id).cloned())
            .unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            csv_field(&key),
            csv_field(&name),
            g.requests,
            g.successes,
            g.errors,
            g.cache_hits,
            g.input_tokens,
            g.output_tokens,
            // Exact, from the integer nano-dollars (a float loses digits past $9M).
            crate::ai::pricing::usd_text(g.cost_nanos)
        ));
    }
    let filename = format!(
        "attachment; filename=\"usage-{}-{from}-{to}.csv\"",
        group_by.as_str()
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&filename).unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_bar_per_day_scaled_to_the_costliest() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        let g = |k: &str, c: i64| UsageGroup {
            key: Some(k.into()),
            requests: 1,
            successes: 1,
            errors: 0,
            cache_hits: 0,
            input_tokens: 1,
            output_tokens: 1,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_nanos: c,
        };
        let c = chart(
            d("2025-03-01"),
            d("2025-03-03"),
            &[g("2025-03-01", 1_000), g("2025-03-03", 500)],
        );
        assert_eq!(c.days, 3);
        assert_eq!(c.bars.len(), 3);
        let h: Vec<f64> = c.bars.iter().map(|b| b.h.parse().unwrap_or(-1.0)).collect();
        assert!(h[0] > h[2] && h[2] > 0.0 && h[1] == 0.0, "{h:?}");
        assert!(c.bars[0].label.starts_with("2025-03-01: $"));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=SUM(A1)"), "\"'=SUM(A1)\"");
    }
}
