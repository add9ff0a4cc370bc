//! Completion webhooks: when a task with a `callback_url` ends (succeeded, failed or
//! cancelled), its final JSON is POSTed there, signed with the tenant's webhook secret.
//!
//! Deliveries are rows of `webhook_deliveries` (migration 0006) written by the store in
//! the same statement or transaction as the task's end, whichever path ends it (an
//! outbox, ADR 0016): a task never ends without its delivery, whatever stops the process.
//! Each replica's delivery loop ([`run`]) polls for due rows, so deliveries survive
//! restarts and never hold up a worker. The body is the task as the API shows it, rendered
//! at each attempt from the ended row (which no longer changes), so every attempt sends
//! the same bytes. Each attempt is claimed like a task (one statement, with a lease);
//! network errors and non-2xx answers are retried with exponential backoff up to
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

use super::TaskView;
use crate::auth::signing::{self, ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, new_secret};
use crate::egress::{Refusal, refusal_of};
use crate::state::AppState;
use crate::store::{Delivery, DeliveryResult, StoreError, StoreResult, Task, now};
use crate::telemetry::metrics as m;
use crate::telemetry::traces;
use tracing::Instrument;

pub use crate::store::TASK_FINISHED;
/// Deliveries attempted at once by one replica.
const CONCURRENCY: usize = 16;

/// Wakes this replica's delivery loop: a task with a `callback_url` ended here, so its
/// delivery row was just written. Other replicas find it at their next poll.
pub fn wake(state: &AppState) {
    state.tasks.webhooks.notify_one();
}

/// The delivery loop of this replica: claims due deliveries and attempts them, at most
/// [`CONCURRENCY`] at a time, until `stop`; then waits briefly for attempts in flight
/// (an attempt cut short is retried by a replica once its lease runs out).
pub async fn run(state: AppState, stop: CancellationToken) {
    let cfg = state.config.tasks.clone();
    let lease = cfg.webhook_timeout + Duration::from_secs(30);
    let inflight = TaskTracker::new();
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
    super::claim::claim_and_run(slots, pacing, &stop, &inflight, claim, run).await;
    inflight.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), inflight.wait()).await;
}

/// One attempt of one delivery, and its record; with tracing on, a `webhook_delivery`
/// span in the trace of its task (read from the task's stored context).
async fn attempt(state: &AppState, d: Delivery) {
    let task = state.store.get_task(d.tenant_id, d.task_id).await;
    if !traces::enabled() {
        return attempt_untraced(state, d, task).await;
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
    if let Ok(t) = &task
        && let Some(tp) = &t.trace_context
    {
        traces::set_parent(&span, tp);
    }
    attempt_untraced(state, d, task).instrument(span).await
}

async fn attempt_untraced(state: &AppState, d: Delivery, task: StoreResult<Task>) {
    let cfg = &state.config.tasks;
    let sent = match body_of(&d, task) {
        Ok(body) => send(state, &d, body).await,
        Err(e) => Err(e),
    };
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

/// The body of an attempt: the one stored with the delivery (rows queued before the
/// outbox), or the ended task as the API shows it.
fn body_of(d: &Delivery, task: StoreResult<Task>) -> Result<String, SendError> {
    if let Some(body) = &d.body {
        return Ok(body.clone());
    }
    match task {
        Ok(t) if t.status.is_terminal() => {
            serde_json::to_string(&TaskView::from(t)).map_err(|e| SendError {
                error: format!("cannot serialise the task: {e}"),
                permanent: true,
            })
        }
        // The outbox writes a row only with the end; a row for a task that has not ended
        // cannot be sent as its final JSON (and never will be).
        Ok(t) => Err(SendError {
            error: format!("the task has not ended (status {})", t.status.as_str()),
            permanent: true,
        }),
        Err(StoreError::NotFound) => Err(SendError {
            error: "the task no longer exists".into(),
            permanent: true,
        }),
        Err(e) => Err(SendError::retry(format!("storage unavailable: {e}"))),
    }
}

/// POSTs the body, signed; `Err` with a reason for anything but a 2xx answer. A target
/// the egress policy refuses fails for good (it will not change by retrying).
async fn send(state: &AppState, d: &Delivery, body: String) -> Result<(), SendError> {
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
            body.as_bytes(),
        ))
        .body(body);
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
