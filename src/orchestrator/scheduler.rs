//! Schedules: each due schedule fires once per cron tick, even with several replicas.
//!
//! A fire is claimed with a conditional `UPDATE schedules SET next_fire_at = <next>
//! WHERE id = ? AND next_fire_at = <the fire>`: exactly one scheduler wins. The task it
//! creates also carries the idempotency key `schedule:<id>:<fire>`, so even a scheduler
//! that crashed between the claim and the insert cannot produce a second task. Missed
//! ticks (all replicas down) are not replayed: the next fire is computed from now.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{EmployeeRef, Idempotency, Submit, Submitted, submit};
use crate::state::AppState;
use crate::store::{Schedule, now};
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

pub async fn run(state: AppState, stop: CancellationToken) {
    let every = state.config.tasks.scheduler_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.cancelled() => return,
        }
        match state.store.due_schedules(now(), 100).await {
            Ok(due) => {
                for s in due {
                    if let Err(e) = fire(&state, &s).await {
                        tracing::warn!(schedule_id = %s.id, error = %e, "schedule fire failed");
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
    if !state.store.claim_fire(s.id, s.next_fire_at, next).await? {
        return Ok(()); // another scheduler took this fire
    }
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
    let Submitted { task, created } = submit(state, req).await?;
    if created {
        metrics::counter!(m::SCHEDULE_FIRES_TOTAL).increment(1);
        tracing::info!(schedule_id = %s.id, task_id = %task.id, "schedule fired");
    }
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
}
