//! `GET /v1/usage`: AI usage and cost of the caller's tenant, grouped by employee, model,
//! UTC day or provider, from the `ai_calls` rows the router writes.
//!
//! The sums are computed by the store in SQL; this module parses the window, derives the
//! rates and dollar amounts, and adds the totals. `digital-employee usage` shares
//! [`window`] and [`UsageReport::new`], so the command and the API agree to the nano-dollar.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use crate::auth::Scope;
use crate::state::AppState;
use crate::store::{UsageGroup, UsageGroupBy};

/// Length of the window when `from` is not given.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

/// How the report groups calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By employee id; calls not made for an employee (the gateway) have key `null`.
    Employee,
    Model,
    /// By UTC calendar day, key `YYYY-MM-DD`.
    #[default]
    Day,
    Provider,
}

impl From<GroupBy> for UsageGroupBy {
    fn from(g: GroupBy) -> Self {
        match g {
            GroupBy::Employee => UsageGroupBy::Employee,
            GroupBy::Model => UsageGroupBy::Model,
            GroupBy::Day => UsageGroupBy::Day,
            GroupBy::Provider => UsageGroupBy::Provider,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start, included: an RFC 3339 time (`2025-03-01T00:00:00Z`) or a date (`2025-03-01`,
    /// 00:00 UTC). Default: 30 days before `to`.
    pub from: Option<String>,
    /// End, excluded: an RFC 3339 time, or a date meaning the end of that UTC day (the day
    /// is included). Default: now. Must be after `from`.
    pub to: Option<String>,
    /// `employee`, `model`, `day` (UTC) or `provider`; default `day`.
    #[param(inline)]
    pub group_by: Option<GroupBy>,
}

/// The sums of one group (or of all of them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageSums {
    /// AI calls: vendor attempts (each retry and fallback counts) plus cache hits.
    pub requests: i64,
    /// Attempts that returned a completion.
    pub successes: i64,
    /// Attempts that failed.
    pub errors: i64,
    /// Requests answered from the result cache (no vendor call, no cost).
    pub cache_hits: i64,
    /// `errors / requests`; 0 when there were no requests.
    pub error_rate: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Input tokens the vendor served from its prompt cache.
    pub cached_tokens: i64,
    /// Input tokens written to the vendor's prompt cache.
    pub cache_write_tokens: i64,
    /// Output tokens the vendor reports as reasoning (part of `output_tokens`).
    pub reasoning_tokens: i64,
    /// Cost in US dollars (`cost_nanos / 1e9`, for display).
    pub cost_usd: f64,
    /// Cost in nano-dollars, exact.
    pub cost_nanos: i64,
}

impl UsageSums {
    fn add(&mut self, g: &UsageGroup) {
        self.requests = self.requests.saturating_add(g.requests);
        self.successes = self.successes.saturating_add(g.successes);
        self.errors = self.errors.saturating_add(g.errors);
        self.cache_hits = self.cache_hits.saturating_add(g.cache_hits);
        self.input_tokens = self.input_tokens.saturating_add(g.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(g.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(g.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(g.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(g.reasoning_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(g.cost_nanos);
        self.derive();
    }

    fn derive(&mut self) {
        self.error_rate = if self.requests > 0 {
            self.errors as f64 / self.requests as f64
        } else {
            0.0
        };
        self.cost_usd = crate::ai::pricing::usd(self.cost_nanos);
    }
}

/// One group of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageLine {
    /// The employee id, model, `YYYY-MM-DD` or provider; `null` for calls made for no
    /// employee.
    pub key: Option<String>,
    #[serde(flatten)]
    pub sums: UsageSums,
}

/// Usage of a tenant over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub group_by: GroupBy,
    /// Sorted by key (byte order), the `null` key last.
    pub groups: Vec<UsageLine>,
    pub totals: UsageSums,
}

impl UsageReport {
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: GroupBy,
        rows: Vec<UsageGroup>,
    ) -> Self {
        let mut totals = UsageSums::default();
        let groups = rows
            .into_iter()
            .map(|g| {
                totals.add(&g);
                let mut sums = UsageSums::default();
                sums.add(&g);
                UsageLine { key: g.key, sums }
            })
            .collect();
        Self {
            from,
            to,
            group_by,
            groups,
            totals,
        }
    }
}

/// Parses one bound: RFC 3339, or a date (its start, or with `end_of_day` the start of
/// the next day). Truncated to microseconds, the precision both backends keep.
fn parse_bound(field: &str, s: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    let s = s.trim();
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.to_utc()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let start = Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN));
        if end_of_day {
            start + Duration::days(1)
        } else {
            start
        }
    } else {
        return Err(ApiError::validation(
            field,
            "expected an RFC 3339 time (2025-03-01T00:00:00Z) or a date (2025-03-01)",
        ));
    };
    let (min, max) = super::time::bounds();
    if t < min || t > max + Duration::microseconds(1) {
        return Err(ApiError::validation(
            field,
            "must be between 1970-01-01 and 9999-12-31",
        ));
    }
    let t = t.min(max);
    Ok(DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t))
}

/// The report window `[from, to)` from optional `from` / `to` parameters: `to` defaults
/// to `now`, `from` to 30 days before `to`; 422 naming the parameter when one is not a
/// time or `to` is not after `from`.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let from = from.map(|s| parse_bound("from", s, false)).transpose()?;
    let to = match to {
        Some(s) => parse_bound("to", s, true)?,
        None => DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now),
    };
    let from = from.unwrap_or(to - Duration::days(DEFAULT_WINDOW_DAYS));
    if to <= from {
        return Err(ApiError::validation("to", "must be after from"));
    }
    Ok((from, to))
}

/// AI usage and cost of the caller's tenant.
#[utoipa::path(get, path = "/v1/usage", tag = "usage",
    params(UsageParams),
    responses(
        (status = 200, description = "Usage per group and totals", body = UsageReport),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the read scope", body = ErrorBody),
        (status = 422, description = "Invalid parameter (named in `field`)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<UsageReport>> {
    caller.require(Scope::Read)?;
    let (from, to) = window(params.from.as_deref(), params.to.as_deref(), Utc::now())?;
    let group_by = params.group_by.unwrap_or_default();
    let rows = state
        .store
        .usage_report(caller.0.tenant_id, from, to, group_by.into())
        .await?;
    Ok(Json(UsageReport::new(from, to, group_by, rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::Validation { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn windows_default_parse_and_validate() {
        let now = t("2025-03-31T12:00:00.123456789Z");
        let (f, to) = window(None, None, now).unwrap();
        assert_eq!(to, t("2025-03-31T12:00:00.123456Z"));
        assert_eq!(to - f, Duration::days(30));
        // A date `to` includes that whole day; a date `from` starts at 00:00 UTC.
        let (f, to) = window(Some("2025-03-01"), Some("2025-03-01"), now).unwrap();
        assert_eq!(
            (f, to),
            (t("2025-03-01T00:00:00Z"), t("2025-03-02T00:00:00Z"))
        );
        let (f, to) = window(
            Some("2025-03-01T02:00:00+02:00"),
            Some("2025-03-02T00:00:00Z"),
            now,
        )
        .unwrap();
        assert_eq!(
            (f, to),
            (t("2025-03-01T00:00:00Z"), t("2025-03-02T00:00:00Z"))
        );
        let (f, _) = window(None, Some("2025-02-01T00:00:00Z"), now).unwrap();
        assert_eq!(f, t("2025-01-02T00:00:00Z"));

        assert_eq!(
            field(window(Some("yesterday"), None, now).unwrap_err()),
            "from"
        );
        assert_eq!(
            field(window(None, Some("2025-13-01"), now).unwrap_err()),
            "to"
        );
        assert_eq!(
            field(window(Some("1960-01-01"), None, now).unwrap_err()),
            "from"
        );
        assert_eq!(
            field(
                window(
                    Some("2025-03-02T00:00:00Z"),
                    Some("2025-03-01T23:00:00Z"),
                    now
                )
                .unwrap_err()
            ),
            "to"
        );
        assert_eq!(
            field(
                window(
                    Some("2025-03-01T00:00:00Z"),
                    Some("2025-03-01T00:00:00Z"),
                    now
                )
                .unwrap_err()
            ),
            "to"
        );
        // The last representable day is accepted (clamped), never wrapped.
        let (_, to) = window(Some("9999-12-01"), Some("9999-12-31"), now).unwrap();
        assert_eq!(to, t("9999-12-31T23:59:59.999999Z"));
    }

    #[test]
    fn reports_derive_rates_dollars_and_totals() {
        let g = |key: Option<&str>, requests, errors, cost_nanos| UsageGroup {
            key: key.map(str::to_owned),
            requests,
            successes: requests - errors,
            errors,
            input_tokens: 10,
            cost_nanos,
            ..Default::default()
        };
        let r = UsageReport::new(
            t("2025-03-01T00:00:00Z"),
            t("2025-03-02T00:00:00Z"),
            GroupBy::Model,
            vec![g(Some("a"), 4, 1, 1_500_000_000), g(None, 1, 0, 7)],
        );
        assert_eq!(r.groups[0].sums.error_rate, 0.25);
        assert_eq!(r.groups[0].sums.cost_usd, 1.5);
        assert_eq!(r.groups[1].key, None);
        assert_eq!(r.totals.requests, 5);
        assert_eq!(r.totals.input_tokens, 20);
        assert_eq!(r.totals.cost_nanos, 1_500_000_007);
        assert_eq!(r.totals.error_rate, 0.2);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["groups"][1]["key"], serde_json::Value::Null);
        assert_eq!(v["groups"][0]["cost_nanos"], 1_500_000_000);
        assert_eq!(v["group_by"], "model");
        let empty = UsageReport::new(r.from, r.to, GroupBy::Day, vec![]);
        assert_eq!(empty.totals.error_rate, 0.0);
    }
}
