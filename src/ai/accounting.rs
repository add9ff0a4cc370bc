//! `ai_calls` records: how one is built from an attempt ([`AiCallRecord::new`], the only
//! place a record of a call is assembled), and how they are persisted in batches, off the
//! request path.
//!
//! The router `try_send`s each record into a bounded queue (a full queue drops the record
//! and counts it in `ai_call_records_dropped_total` rather than slow a call down). The
//! writer takes whatever has queued up — up to 512 at a time, lingering [`LINGER`] after
//! the first record so a steady trickle of calls becomes one insert rather than one per
//! call — and inserts it in one statement. On shutdown it drains the queue before
//! returning.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::error::AiError;
use super::router::CallContext;
use super::types::Usage;
use crate::store::{AiCallRecord, DynStore};

const QUEUE: usize = 65_536;
const BATCH: usize = 512;
/// How long a batch may wait for more records after its first one.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// How an attempt ended, which decides what its record says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome<'a> {
    /// The vendor answered (for a stream: the stream finished) after `latency`, using
    /// `usage` that cost `cost_nanos`.
    Answered {
        usage: &'a Usage,
        cost_nanos: i64,
        latency: Duration,
    },
    /// The attempt failed after `latency`; the record keeps the error's kind and status.
    Failed {
        error: &'a AiError,
        latency: Duration,
    },
    /// Answered from the result cache: no vendor call, no tokens, no cost.
    CacheHit,
    /// A stream its consumer dropped before the end (a client that went away): an error
    /// of kind `abandoned`, with what was used until then.
    Abandoned {
        usage: &'a Usage,
        cost_nanos: i64,
        latency: Duration,
    },
}

impl AiCallRecord {
    /// The record of one attempt at `provider/model` for `ctx`, stamped now with a fresh
    /// id. `streamed` says whether the attempt was a streaming call.
    pub(crate) fn new(
        ctx: CallContext,
        provider: &str,
        model: &str,
        streamed: bool,
        outcome: Outcome<'_>,
    ) -> Self {
        let (status, error_kind, http_status, latency, usage, cost_nanos) = match outcome {
            Outcome::Answered {
                usage,
                cost_nanos,
                latency,
            } => ("ok", None, None, latency, *usage, cost_nanos),
            Outcome::Failed { error, latency } => (
                "error",
                Some(error.kind.as_str().to_owned()),
                error.status.map(i32::from),
                latency,
                Usage::default(),
                0,
            ),
            Outcome::CacheHit => ("cache_hit", None, None, Duration::ZERO, Usage::default(), 0),
            Outcome::Abandoned {
                usage,
                cost_nanos,
                latency,
            } => (
                "error",
                Some("abandoned".to_owned()),
                None,
                latency,
                *usage,
                cost_nanos,
            ),
        };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        AiCallRecord {
            id: Uuid::now_v7(),
            tenant_id: ctx.tenant_id,
            task_id: ctx.task_id,
            provider: provider.to_string(),
            model: model.to_string(),
            status: status.to_string(),
            error_kind,
            http_status,
            latency_us: i64::try_from(latency.as_micros()).unwrap_or(i64::MAX),
            input_tokens: n(usage.input_tokens),
            output_tokens: n(usage.output_tokens),
            cached_tokens: n(usage.cached_input_tokens),
            cache_write_tokens: n(usage.cache_write_tokens),
            reasoning_tokens: n(usage.reasoning_tokens),
            cost_nanos,
            cache_hit: matches!(outcome, Outcome::CacheHit),
            streamed,
            created_at: crate::store::now(),
            employee_id: ctx.employee_id,
        }
    }
}

pub struct Writer {
    rx: mpsc::Receiver<AiCallRecord>,
    store: DynStore,
}

impl Writer {
    pub fn new(store: DynStore) -> (Self, mpsc::Sender<AiCallRecord>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { rx, store }, tx)
    }

    /// Writes until `stop` is cancelled, then drains what is queued.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                }
                () = stop.cancelled() => break,
            }
            // The rest of a batch is collected once, after the linger, not record by
            // record: while the writer sleeps, a sender does not wake it, so a steady
            // trickle of calls costs one wake-up per batch instead of one per call.
            if buf.len() < BATCH {
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    () = stop.cancelled() => {}
                }
                while buf.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(record) => buf.push(record),
                        Err(_) => break,
                    }
                }
            }
            self.flush(&mut buf).await;
        }
        self.rx.close();
        while self.rx.recv_many(&mut buf, BATCH).await > 0 {
            self.flush(&mut buf).await;
        }
    }

    async fn flush(&self, buf: &mut Vec<AiCallRecord>) {
        if let Err(e) = self.store.insert_ai_calls(buf).await {
            tracing::error!(error = %e, records = buf.len(), "could not record AI calls");
        }
        buf.clear();
    }
}
