//! Schedules: each due schedule fires exactly once per cron tick, even with several
//! replicas and across crashes.
//!
//! A fire first submits its task with the idempotency key `schedule:<id>:<fire>` (any
//! number of schedulers submitting the same fire get one task), and only then advances
//! the schedule with a conditional `UPDATE schedules SET next_fire_at = <next> WHERE id = ?
//! AND next_fire_at = <the fire>`. A scheduler that crashes between the two leaves the
//! fire due; the next scan submits it again (the same task comes back) and advances it.
//! A submit that fails for a passing reason (storage) leaves the fire due as well; one
//! that can never succeed (the employee is gone) is logged and the schedule moves on.
//! Missed ticks (all replicas down) are not replayed: the next fire is computed from now.
//!
//! Each scan takes at most [`FIRES_PER_TENANT`] due schedules of each tenant, interleaved
//! across tenants, so one tenant's backlog cannot delay another's fire.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{EmployeeRef, Idempotency, Submit, SubmitError, Submitted, submit};
use crate::config::TaskConfig;
use crate::state::AppState;
use crate::store::{FieldError, Schedule, ScheduleFields, now};
use crate::telemetry::metrics as m;

/// Parses a cron expression (5 fields `min hour dom month dow`, or 6–7 with seconds
/// first and an optional year) and a time zone name.
pub fn parse(expr: &str, tz: &str) -> Result<(cron::Schedule, chrono_tz::Tz), String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        _ => return Err("must have 5 fields (min hour dom month dow) or 6-7 with seconds".into()),
    };
    let schedule = cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron: {e}"))?;
    let tz = chrono_tz::Tz::from_str(tz).map_err(|_| format!("unknown time zone '{tz}'"))?;
    Ok((schedule, tz))
}

/// The first fire strictly after `after`, in UTC.
pub fn next_fire(expr: &str, tz: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let (schedule, tz) = parse(expr, tz)?;
    let local = after.with_timezone(&tz);
    let next = schedule
        .after(&local)
        .next()
        .ok_or_else(|| "the expression never fires again".to_string())?;
    let utc = next.with_timezone(&Utc);
    // Both backends keep microseconds; cron ticks are whole seconds anyway.
    Ok(DateTime::from_timestamp_micros(utc.timestamp_micros()).unwrap_or(utc))
}

/// Due schedules one scan fires at most.
const FIRES_PER_SCAN: u32 = 100;
/// Due schedules of one tenant one scan fires at most.
pub const FIRES_PER_TENANT: u32 = 10;
/// Fires sampled to find a cron expression's shortest interval.
const INTERVAL_SAMPLES: usize = 64;

/// The shortest gap between two consecutive fires of `expr` in `tz` among the next few
/// dozen after `after` (enough to see every pattern a cron field can make within a
/// minute, an hour or a day).
pub fn shortest_interval(
    expr: &str,
    tz: &str,
    after: DateTime<Utc>,
) -> Result<Option<std::time::Duration>, String> {
    let (schedule, tz) = parse(expr, tz)?;
    let fires: Vec<_> = schedule
        .after(&after.with_timezone(&tz))
        .take(INTERVAL_SAMPLES)
        .collect();
    Ok(fires
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .min())
}

/// Largest input a schedule may hold.
const MAX_INPUT_BYTES: usize = 256 * 1024;

/// Checks a schedule's fields and computes its first fire after now; the first broken
/// rule names its field.
/// A cron that fires more often than `SCHEDULE_MIN_INTERVAL_SECONDS` is refused.
pub fn validate(f: &ScheduleFields, cfg: &TaskConfig) -> Result<DateTime<Utc>, FieldError> {
    if f.timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(FieldError::new(
            "timezone",
            format!("unknown IANA time zone '{}'", f.timezone),
        ));
    }
    if f.cron.len() > 200 {
        return Err(FieldError::new("cron", "must be at most 200 characters"));
    }
    super::check_input(&f.input).map_err(|m| FieldError::new("input", m))?;
    if f.input.to_string().len() > MAX_INPUT_BYTES {
        return Err(FieldError::new(
            "input",
            format!("must be at most {MAX_INPUT_BYTES} bytes"),
        ));
    }
    if !(-100..=100).contains(&f.priority) {
        return Err(FieldError::new("priority", "must be between -100 and 100"));
    }
    let next = next_fire(&f.cron, &f.timezone, now()).map_err(|e| FieldError::new("cron", e))?;
    let min = cfg.schedule_min_interval;
    if let Some(gap) =
        shortest_interval(&f.cron, &f.timezone, now()).map_err(|e| FieldError::new("cron", e))?
        && gap < min
    {
        return Err(FieldError::new(
            "cron",
            format!(
                "fires every {} s at times; schedules may fire at most every {} s \
                 (SCHEDULE_MIN_INTERVAL_SECONDS)",
                gap.as_secs_f64(),
                min.as_secs_f64()
            ),
        ));
    }
    Ok(next)
}

/// Why a schedule was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A field breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(FieldError),
    /// The tenant has `SCHEDULE_MAX_PER_TENANT` schedules (HTTP 409).
    #[error("this tenant already has {0} schedules (SCHEDULE_MAX_PER_TENANT); delete one first")]
    Full(u32),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Creates a schedule of `tenant` under the rules ([`validate`]) and the per-tenant cap;
/// the API and the web console both create through here.
pub async fn create(
    state: &AppState,
    tenant: uuid::Uuid,
    fields: &ScheduleFields,
) -> Result<Schedule, CreateError> {
    let next = validate(fields, &state.config.tasks).map_err(CreateError::Invalid)?;
    // Checked before the insert: two creates racing at the cap may both pass.
    let cap = state.config.tasks.schedule_max_per_tenant;
    if state.store.count_schedules(tenant).await? >= u64::from(cap) {
        return Err(CreateError::Full(cap));
    }
    let s = state.store.create_schedule(tenant, fields, next).await?;
    tracing::info!(schedule_id = %s.id, "schedule created");
    Ok(s)
}

pub async fn run(state: AppState, stop: CancellationToken) {
    let every = state.config.tasks.scheduler_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.cancelled() => return,
        }
        match state
            .store
            .due_schedules(now(), FIRES_PER_TENANT, FIRES_PER_SCAN)
            .await
        {
            Ok(due) => {
                for s in due {
                    if let Err(e) = fire(&state, &s).await {
                        metrics::counter!(m::SCHEDULE_FIRE_ERRORS_TOTAL).increment(1);
                        tracing::warn!(schedule_id = %s.id, error = %e, "schedule fire failed; it stays due");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due schedules"),
        }
    }
}

async fn fire(state: &AppState, s: &Schedule) -> anyhow::Result<()> {
    let next = next_fire(
        &s.fields.cron,
        &s.fields.timezone,
        now().max(s.next_fire_at),
    )
    .map_err(anyhow::Error::msg)?;
    let mut req = Submit::new(
        s.tenant_id,
        EmployeeRef::Id(s.fields.employee_id),
        s.fields.input.clone(),
    );
    req.priority = Some(s.fields.priority);
    req.metadata = Some(json!({ "schedule_id": s.id, "fire_at": s.next_fire_at }));
    req.idempotency = Some(Idempotency {
        key: format!("schedule:{}:{}", s.id, s.next_fire_at.timestamp_micros()),
        body_hash: None,
    });
    match submit(state, req).await {
        Ok(Submitted { task, created }) => {
            if created {
                metrics::counter!(m::SCHEDULE_FIRES_TOTAL).increment(1);
                tracing::info!(schedule_id = %s.id, task_id = %task.id, "schedule fired");
            }
        }
        // Storage trouble: the fire stays due and the next scan submits it again.
        Err(SubmitError::Store(e)) => return Err(e.into()),
        // It can never be submitted as it is: move on rather than retry every scan.
        Err(e) => {
            tracing::warn!(schedule_id = %s.id, error = %e, "schedule fire refused; skipping this tick")
        }
    }
    // Whoever advances first wins; the others' submits returned the same task.
    state.store.claim_fire(s.id, s.next_fire_at, next).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn five_and_six_field_expressions_in_a_time_zone() {
        let t = DateTime::parse_from_rfc3339("2025-03-01T10:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let n = next_fire("*/5 * * * *", "UTC", t).unwrap();
        assert_eq!(n.to_rfc3339(), "2025-03-01T10:05:00+00:00");
        let n = next_fire("0 0 9 * * *", "Europe/Paris", t).unwrap();
        assert_eq!(n.to_rfc3339(), "2025-03-02T08:00:00+00:00");
        assert!(next_fire("nope", "UTC", t).is_err());
        assert!(next_fire("* * * * *", "Mars/Base", t).is_err());
    }

    #[test]
    fn the_shortest_interval_sees_uneven_patterns() {
        let t = DateTime::parse_from_rfc3339("2025-03-01T10:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let secs = |e: &str| shortest_interval(e, "UTC", t).unwrap().unwrap().as_secs();
        assert_eq!(secs("* * * * *"), 60);
        assert_eq!(secs("*/1 * * * * *"), 1);
        assert_eq!(secs("0 9 * * *"), 86_400);
        // Two fires a minute apart once an hour: the short gap counts.
        assert_eq!(secs("0,1 * * * *"), 60);
        assert_eq!(secs("0 0,30 9 * * *"), 1800);
        assert_eq!(secs("0,30 0 9 * * *"), 30);
    }
}
