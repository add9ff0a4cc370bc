//! Task retention (`TASK_RETENTION_DAYS`, ADR 0017): tasks that ended longer ago than the
//! retention are deleted with their step log and webhook deliveries, in small batches,
//! by a background loop of each replica, off the request and claim paths.
//!
//! A pass deletes batches of at most `TASK_PRUNE_BATCH_SIZE` tasks with a pause of
//! `TASK_PRUNE_PAUSE` between two batches, until a batch comes back short; the next pass
//! starts `TASK_PRUNE_INTERVAL` later. Replicas may prune at the same time: each batch
//! is one transaction that skips rows another replica holds. What is deleted is counted
//! in `digital_employee_pruned_total{kind}`. The usage ledger (`ai_calls` and its
//! rollups `usage_daily`, `usage_hourly`, `usage_minutely`) is never pruned here, so usage reports do not change.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::store::{Pruned, now};
use crate::telemetry::metrics as m;

/// Runs pruning passes until `stop`; returns at once when retention is off.
pub(super) async fn run(state: AppState, stop: CancellationToken) {
    let cfg = &state.config.tasks;
    if cfg.retention_days == 0 {
        return;
    }
    let retention = chrono::Duration::days(i64::from(cfg.retention_days));
    loop {
        let mut pass = Pruned::default();
        loop {
            let before = now() - retention;
            let batch = match state
                .store
                .prune_finished_tasks(before, cfg.prune_batch_size)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning ended tasks failed; next pass retries");
                    break;
                }
            };
            count(&batch);
            pass.tasks += batch.tasks;
            pass.events += batch.events;
            pass.webhook_deliveries += batch.webhook_deliveries;
            if batch.tasks < u64::from(cfg.prune_batch_size) {
                break;
            }
            if !pause(cfg.prune_pause, &stop).await {
                return;
            }
        }
        if pass.tasks > 0 {
            tracing::info!(
                tasks = pass.tasks,
                events = pass.events,
                webhook_deliveries = pass.webhook_deliveries,
                "pruned ended tasks past the retention"
            );
        }
        if !pause(cfg.prune_interval, &stop).await {
            return;
        }
    }
}

/// Waits `d`; false when `stop` came first.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

fn count(p: &Pruned) {
    for (kind, n) in [
        ("tasks", p.tasks),
        ("task_events", p.events),
        ("webhook_deliveries", p.webhook_deliveries),
    ] {
        metrics::counter!(m::PRUNED_TOTAL, "kind" => kind).increment(n);
    }
}
