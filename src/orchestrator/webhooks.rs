//! Completion webhooks: when a task with a `callback_url` ends (succeeded, failed or
//! cancelled), its final JSON is POSTed there, signed with the tenant's webhook secret.
//!
//! Deliveries are rows of `webhook_deliveries` (migration 0006), queued when the task
//! ends and polled by [`run`], one loop per replica, so they survive restarts and never
//! hold up a worker. The same loop sweeps for tasks that ended in the last day without a
//! queued delivery (the process stopped in between) and queues theirs. Each attempt is
//! claimed like a task (one statement, with a lease); network errors and non-2xx answers
//! are retried with exponential backoff up to
//! `WEBHOOK_MAX_ATTEMPTS`. Delivery is at least once: a receiver deduplicates by the
//! `X-Digital-Employee-Delivery` id.
//!
//! Signature: `X-Digital-Employee-Signature: sha256=<hex HMAC-SHA256 of the exact body
//! with the tenant's secret>`. The secret is created on first use and rotated (and shown,
//! once) by `POST /v1/webhooks/secret`; every attempt is signed with the secret current
//! at that attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::TaskView;
use crate::auth::signing::{self, ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, new_secret};
use crate::egress::{Refusal, refusal_of};
use crate::state::AppState;
use crate::store::{Delivery, DeliveryResult, NewDelivery, Task, now};
use crate::telemetry::metrics as m;
use crate::telemetry::traces;
use tracing::Instrument;

/// The event of a task's end, in `X-Digital-Employee-Event`.
pub const TASK_FINISHED: &str = "task.finished";
/// Deliveries attempted at once by one replica.
const CONCURRENCY: usize = 16;
/// The sweeper leaves a task this long after its end to the normal path.
const SWEEP_GRACE: Duration = Duration::from_secs(2);
/// How far back the sweeper looks.
const SWEEP_HORIZON: chrono::Duration = chrono::Duration::hours(24);

/// Queues the completion webhook of a task that ended, if it asked for one. `task` is
/// the row as it ended. Failures are logged: the end of the task stands regardless.
pub async fn task_ended(state: &AppState, task: &Task) {
    let Some(url) = task.callback_url.clone() else {
        return;
    };
    if !task.status.is_terminal() {
        return;
    }
    let body = match serde_json::to_string(&TaskView::from(task.clone())) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(task_id = %task.id, error = %e, "cannot serialise the task for its webhook");
            return;
        }
    };
    let new = NewDelivery {
        tenant_id: task.tenant_id,
        task_id: task.id,
        event: TASK_FINISHED.into(),
        url,
        body,
    };
    match state.store.enqueue_delivery(&new).await {
        Ok(true) => state.tasks.webhooks.notify_one(),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(task_id = %task.id, error = %e, "cannot queue the completion webhook")
        }
    }
}

/// Like [`task_ended`] for a task known by id (re-read to get its final row).
pub async fn task_ended_by_id(state: &AppState, tenant: Uuid, id: Uuid) {
    match state.store.get_task(tenant, id).await {
        Ok(t) => task_ended(state, &t).await,
        Err(e) => {
            tracing::warn!(task_id = %id, error = %e, "cannot read an ended task for its webhook")
        }
    }
}

/// The delivery loop of this replica: claims due deliveries and attempts them, at most
/// [`CONCURRENCY`] at a time, until `stop`; then waits briefly for attempts in flight
/// (an attempt cut short is retried by a replica once its lease runs out).
pub async fn run(state: AppState, stop: CancellationToken) {
    let cfg = state.config.tasks.clone();
    let lease = cfg.webhook_timeout + Duration::from_secs(30);
    let inflight = TaskTracker::new();
    let sweep_every =
        (cfg.webhook_poll_interval * 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let sweeper = async {
        let mut tick = tokio::time::interval(sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => sweep(&state).await,
                _ = stop.cancelled() => break,
            }
        }
    };
    let pacing = super::claim::Pacing {
        max_batch: CONCURRENCY as u32,
        poll_interval: cfg.webhook_poll_interval,
        wake: &state.tasks.webhooks,
        what: "webhook deliveries",
    };
    let claim = |n| {
        let state = state.clone();
        async move { state.store.claim_deliveries(n, lease).await }
    };
    let run = |d| {
        let state = state.clone();
        async move { attempt(&state, d).await }
    };
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let deliver = super::claim::claim_and_run(slots, pacing, &stop, &inflight, claim, run);
    tokio::join!(sweeper, deliver);
    inflight.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), inflight.wait()).await;
}

/// Queues the webhooks of tasks that ended without one in the last day: the process
/// stopped between a task's end and the queueing of its webhook. Queueing is idempotent
/// (one delivery per task and event), so racing the normal path is harmless.
async fn sweep(state: &AppState) {
    let until = now() - chrono::Duration::from_std(SWEEP_GRACE).unwrap_or_default();
    match state
        .store
        .ended_without_webhook(until - SWEEP_HORIZON, until, 100)
        .await
    {
        Ok(missed) => {
            for (tenant, id) in missed {
                tracing::warn!(task_id = %id, "queueing a completion webhook that was never queued");
                task_ended_by_id(state, tenant, id).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "webhook sweep failed"),
    }
}

/// One attempt of one delivery, and its record; with tracing on, a `webhook_delivery`
/// span in the trace of its task (read from the task's stored context).
async fn attempt(state: &AppState, d: Delivery) {
    if !traces::enabled() {
        return attempt_untraced(state, d).await;
    }
    let span = tracing::info_span!(
        "webhook_delivery",
        otel.name = "webhook_delivery",
        otel.kind = "client",
        task.id = %d.task_id,
        webhook.event = %d.event,
        webhook.attempt = d.attempts,
        webhook.outcome = tracing::field::Empty,
    );
    if let Ok(task) = state.store.get_task(d.tenant_id, d.task_id).await
        && let Some(tp) = &task.trace_context
    {
        traces::set_parent(&span, tp);
    }
    attempt_untraced(state, d).instrument(span).await
}

async fn attempt_untraced(state: &AppState, d: Delivery) {
    let cfg = &state.config.tasks;
    let sent = send(state, &d).await;
    let (result, outcome) = match sent {
        Ok(()) => (DeliveryResult::Delivered, "delivered"),
        Err(SendError { error, permanent })
            if permanent || d.attempts >= cfg.webhook_max_attempts =>
        {
            tracing::warn!(delivery_id = %d.id, task_id = %d.task_id, attempts = d.attempts, %error,
                "webhook delivery failed for good");
            (DeliveryResult::Failed { error }, "failed")
        }
        Err(SendError { error, .. }) => {
            let delay = super::backoff(cfg.webhook_retry_base_delay, d.attempts);
            tracing::info!(delivery_id = %d.id, task_id = %d.task_id, attempt = d.attempts, %error,
                retry_in_seconds = delay.as_secs_f64(), "webhook delivery failed; will retry");
            let at = now() + chrono::Duration::from_std(delay).unwrap_or_default();
            (DeliveryResult::Retry { at, error }, "retrying")
        }
    };
    metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
    if traces::enabled() {
        let span = tracing::Span::current();
        span.record("webhook.outcome", outcome);
        if outcome != "delivered" {
            traces::set_error(&span, "webhook_not_delivered");
        }
    }
    match state.store.finish_delivery(d.id, d.attempts, &result).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(delivery_id = %d.id, "a newer attempt owns this delivery; result dropped")
        }
        Err(e) => {
            tracing::warn!(delivery_id = %d.id, error = %e, "cannot record a webhook attempt; it will be retried")
        }
    }
}

/// Why an attempt did not deliver; a `permanent` failure is not retried.
struct SendError {
    error: String,
    permanent: bool,
}

impl SendError {
    fn retry(error: String) -> Self {
        Self {
            error,
            permanent: false,
        }
    }
}

/// POSTs the body, signed; `Err` with a reason for anything but a 2xx answer. A target
/// the egress policy refuses fails for good (it will not change by retrying).
async fn send(state: &AppState, d: &Delivery) -> Result<(), SendError> {
    let refused = |r: Refusal| SendError {
        error: format!("refused by the egress policy: {}", r.message()),
        permanent: true,
    };
    let url = reqwest::Url::parse(&d.url).map_err(|_| refused(Refusal::Scheme))?;
    state.egress.check_request(&url).map_err(refused)?;
    let secret = state
        .store
        .webhook_secret(d.tenant_id, &new_secret())
        .await
        .map_err(|e| SendError::retry(format!("storage unavailable: {e}")))?;
    let req = state
        .tasks
        .http
        .post(url)
        .timeout(state.config.tasks.webhook_timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "digital-employee-webhooks")
        .header(EVENT_HEADER, &d.event)
        .header(DELIVERY_HEADER, d.id.to_string())
        .header(ATTEMPT_HEADER, d.attempts.to_string())
        // The delivery's id is the Standard Webhooks `webhook-id`: the same on every retry.
        .headers(signing::headers(
            &secret,
            &d.id.to_string(),
            d.body.as_bytes(),
        ))
        .body(d.body.clone());
    let req = traces::propagate(req);
    let resp = req.send().await.map_err(|e| match refusal_of(&e) {
        Some(r) => refused(r),
        None => SendError::retry(format!("request failed: {}", e.without_url())),
    })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(SendError::retry(format!(
            "the receiver answered HTTP {}",
            resp.status().as_u16()
        )))
    }
}
