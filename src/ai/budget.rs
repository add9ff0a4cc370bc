//! Budget enforcement before every vendor call (ADR 0013).
//!
//! The router asks [`Budgets::reserve`] before it calls a vendor: the call's maximum
//! cost — the prompt's estimated tokens at the input price plus `max_tokens` (or
//! `BUDGET_DEFAULT_MAX_TOKENS`, which then also caps the call) at the output price, at
//! the dearest candidate of the fallback chain — is reserved atomically against every
//! budget that applies (the tenant's, the calling key's, the employee's). A refusal
//! becomes [`BudgetExceeded`]. The [`Hold`] it returns is settled with the real cost
//! after the call, released (cost 0) when no vendor answered, and charged at its full
//! amount if dropped unsettled (a call abandoned mid-way may still be billed).
//! Settlements go through a queue to the [`Settler`], off the request path; until one
//! is written its hold still counts, so a late settlement can only make a budget look
//! fuller than it is, never emptier. Holds whose process died are reclaimed after
//! `BUDGET_HOLD_SECONDS` by [`Budgets::sweep`], which also samples the gauges.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pricing::{PriceTable, usd};
use super::router::CallContext;
use super::types::{ChatRequest, EmbeddingInput, EmbeddingRequest};
use crate::store::{Budget, BudgetPeriod, BudgetScope, DynStore, HoldRequest, Reserved};
use crate::telemetry::metrics as m;

/// How long "this tenant has no budget" is believed before the store is asked again.
/// A budget created on another replica binds this replica's calls at most this late.
const PRESENCE_TTL: Duration = Duration::from_secs(1);
const QUEUE: usize = 65_536;

/// Why a call was refused: the budget without room, and when it has room again.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetExceeded {
    pub budget_id: Uuid,
    #[serde(rename = "scope")]
    pub scope: BudgetScope,
    pub period: BudgetPeriod,
    pub limit_usd: f64,
    /// Spent in the current window plus the calls in flight.
    pub used_usd: f64,
    /// The most the refused call could have cost.
    pub needed_usd: f64,
    /// When the window ends and spend starts again from 0; `None` for a budget without
    /// a period.
    pub reset_at: Option<DateTime<Utc>>,
}

impl BudgetExceeded {
    fn new(b: &Budget, needed: i64, now: DateTime<Utc>) -> Self {
        Self {
            budget_id: b.id,
            scope: b.scope,
            period: b.period,
            limit_usd: usd(b.limit_nanos),
            used_usd: usd(b.spent_at(now).saturating_add(b.reserved_nanos)),
            needed_usd: usd(needed),
            reset_at: b.resets_at(now),
        }
    }

    /// Seconds until the reset, at least 1; `None` without a period.
    pub fn retry_after(&self, now: DateTime<Utc>) -> Option<u64> {
        self.reset_at
            .map(|t| u64::try_from((t - now).num_seconds()).unwrap_or(0).max(1))
    }
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} budget {} ({}) allows ${:.6}, ${:.6} is spent or \
             reserved and this call may cost up to ${:.6}",
            self.scope.as_str(),
            self.budget_id,
            self.period.as_str(),
            self.limit_usd,
            self.used_usd,
            self.needed_usd
        )?;
        match self.reset_at {
            Some(t) => write!(f, "; it resets at {}", t.to_rfc3339()),
            None => write!(f, "; it has no period and does not reset"),
        }
    }
}

/// The budgets a call is reserved against, or why it may not run.
pub enum Admission {
    /// No budget applies (the tenant has none): call freely.
    Free,
    /// Reserved; `max_tokens` is the cap the call must be sent with.
    Held { hold: Hold, max_tokens: Option<u32> },
}

/// What a finished hold asks the settler to write.
struct Settle {
    hold_id: Uuid,
    budgets: Vec<Uuid>,
    cost: i64,
    at: DateTime<Utc>,
}

/// A reservation held for one call. Settle it with [`Hold::settle`] or give it back
/// with [`Hold::release`]; dropping it unsettled charges its whole amount.
pub struct Hold {
    id: Uuid,
    budgets: Vec<Uuid>,
    amount: i64,
    tx: mpsc::Sender<Settle>,
    done: bool,
}

impl Hold {
    /// Replaces the reservation by the call's real cost.
    pub fn settle(mut self, cost_nanos: i64) {
        self.finish(cost_nanos);
    }

    /// No vendor answered: nothing is charged.
    pub fn release(mut self) {
        self.finish(0);
    }

    /// The reserved amount, nano-dollars.
    pub fn amount(&self) -> i64 {
        self.amount
    }

    fn finish(&mut self, cost: i64) {
        if self.done {
            return;
        }
        self.done = true;
        if self.budgets.is_empty() {
            return;
        }
        let s = Settle {
            hold_id: self.id,
            budgets: std::mem::take(&mut self.budgets),
            cost: cost.max(0),
            at: Utc::now(),
        };
        if self.tx.try_send(s).is_err() {
            // The hold stays reserved until it expires and is reclaimed.
            metrics::counter!(m::BUDGET_SETTLE_FAILURES_TOTAL).increment(1);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let amount = self.amount;
        self.finish(amount);
    }
}

/// The budget gate of the router.
pub struct Budgets {
    store: DynStore,
    hold_ttl: Duration,
    default_max_tokens: u32,
    /// tenant → whether it had any budget when last asked.
    presence: moka::future::Cache<Uuid, bool>,
    tx: mpsc::Sender<Settle>,
}

/// Writes settlements; run it until shutdown (it drains its queue before returning).
pub struct Settler {
    rx: mpsc::Receiver<Settle>,
    store: DynStore,
}

impl Settler {
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let s = tokio::select! {
                s = self.rx.recv() => s,
                _ = stop.cancelled() => {
                    self.rx.close();
                    self.rx.recv().await
                }
            };
            let Some(s) = s else { break };
            write_settlement(&self.store, s).await;
        }
    }
}

async fn write_settlement(store: &DynStore, s: Settle) {
    // A settlement that cannot be written is retried a few times; after that its holds
    // expire and are reclaimed, and the spend is missing from the budget (counted).
    for attempt in 0..3u32 {
        match store
            .settle_budget(s.hold_id, &s.budgets, s.cost, s.at)
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot settle a budget hold");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    metrics::counter!(m::BUDGET_SETTLE_FAILURES_TOTAL).increment(1);
}

impl Budgets {
    pub fn new(
        store: DynStore,
        hold_ttl: Duration,
        default_max_tokens: u32,
    ) -> (Arc<Self>, Settler) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let budgets = Arc::new(Self {
            store: store.clone(),
            hold_ttl,
            default_max_tokens,
            presence: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PRESENCE_TTL)
                .build(),
            tx,
        });
        (budgets, Settler { rx, store })
    }

    /// Forgets what is known of `tenant`'s budgets (after this replica changed them).
    pub async fn invalidate(&self, tenant: Uuid) {
        self.presence.invalidate(&tenant).await;
    }

    /// Reserves `amount` for a call in `ctx`. `Err` when a budget has no room; a store
    /// failure refuses the call too (as unavailable), since it cannot be checked.
    pub async fn reserve(&self, ctx: &CallContext, amount: i64) -> Result<Option<Hold>, Refusal> {
        let has = match self.presence.get(&ctx.tenant_id).await {
            Some(h) => h,
            None => {
                let h = self
                    .store
                    .has_budgets(ctx.tenant_id)
                    .await
                    .map_err(|e| Refusal::Unchecked(e.to_string()))?;
                self.presence.insert(ctx.tenant_id, h).await;
                h
            }
        };
        if !has {
            return Ok(None);
        }
        let now = Utc::now();
        let hold_id = Uuid::now_v7();
        let req = HoldRequest {
            hold_id,
            tenant: ctx.tenant_id,
            key: ctx.key_id,
            employee: ctx.employee_id,
            amount_nanos: amount,
            now,
            expires_at: now
                + chrono::Duration::from_std(self.hold_ttl)
                    .unwrap_or(chrono::Duration::minutes(15)),
        };
        match self.store.reserve_budget(&req).await {
            Ok(Reserved::Held(budgets)) if budgets.is_empty() => Ok(None),
            Ok(Reserved::Held(budgets)) => Ok(Some(Hold {
                id: hold_id,
                budgets,
                amount,
                tx: self.tx.clone(),
                done: false,
            })),
            Ok(Reserved::Refused(b)) => {
                metrics::counter!(m::BUDGET_REFUSALS_TOTAL, "scope" => b.scope.as_str())
                    .increment(1);
                Err(Refusal::Exceeded(BudgetExceeded::new(&b, amount, now)))
            }
            Err(e) => Err(Refusal::Unchecked(e.to_string())),
        }
    }

    /// The output-token cap a call is reserved for: its own `max_tokens`, else the
    /// default (which the call is then sent with).
    pub fn output_cap(&self, req: &ChatRequest) -> (u32, bool) {
        match req.max_tokens {
            Some(n) => (n, false),
            None => (self.default_max_tokens, true),
        }
    }

    /// Reclaims the holds of dead processes and samples the budget gauges.
    pub async fn sweep(&self) {
        // The counters exist from the start, at 0, so alerts and dashboards see them.
        for scope in BudgetScope::ALL {
            metrics::counter!(m::BUDGET_REFUSALS_TOTAL, "scope" => scope.as_str()).increment(0);
        }
        metrics::counter!(m::BUDGET_SETTLE_FAILURES_TOTAL).increment(0);
        let now = Utc::now();
        match self.store.reclaim_budget_holds(now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(budgets = n, "reclaimed expired budget reservations"),
            Err(e) => tracing::warn!(error = %e, "cannot reclaim expired budget reservations"),
        }
        match self.store.budget_gauges(now).await {
            Ok(gauges) => {
                for g in gauges {
                    metrics::gauge!(m::BUDGET_SPENT_USD, "scope" => g.scope.as_str())
                        .set(usd(g.spent_nanos));
                    metrics::gauge!(m::BUDGET_USAGE_RATIO, "scope" => g.scope.as_str())
                        .set(g.max_ratio);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot sample the budget gauges"),
        }
    }
}

/// Why [`Budgets::reserve`] refused.
#[derive(Clone, Debug)]
pub enum Refusal {
    Exceeded(BudgetExceeded),
    /// The budgets could not be read or written (the database is unavailable).
    Unchecked(String),
}

/// The most a chat call can cost over `candidates`: the prompt's tokens (a conservative
/// estimate: three bytes a token, above the four the usual tokenizers average) at the
/// input price plus `max_output` tokens at the output price, at the dearest candidate.
/// Unpriced models cost 0.
pub fn max_chat_cost(
    prices: &PriceTable,
    candidates: &[String],
    req: &ChatRequest,
    max_output: u32,
) -> i64 {
    let input = reserved_input_tokens(req);
    candidates
        .iter()
        .filter_map(|c| {
            let (p, m) = c.split_once('/').unwrap_or(("", c));
            prices.lookup(p, m)
        })
        .map(|price| {
            let n = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
            n(input)
                .saturating_mul(price.input.max(price.cache_write))
                .saturating_add(n(u64::from(max_output)).saturating_mul(price.max_output()))
        })
        .max()
        .unwrap_or(0)
}

/// The most an embeddings call over `candidates` can cost: its input tokens (counted
/// when the caller sent token ids, else three bytes a token) at the input price.
pub fn max_embed_cost(prices: &PriceTable, candidates: &[String], req: &EmbeddingRequest) -> i64 {
    let tokens: u64 = match &req.input {
        EmbeddingInput::Texts(t) => t.iter().map(|s| (s.len() as u64).div_ceil(3) + 8).sum(),
        EmbeddingInput::Tokens(t) => t.iter().map(|v| v.len() as u64).sum(),
    };
    let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
    candidates
        .iter()
        .filter_map(|c| {
            let (p, m) = c.split_once('/').unwrap_or(("", c));
            prices.lookup(p, m)
        })
        .map(|price| tokens.saturating_mul(price.input))
        .max()
        .unwrap_or(0)
}

/// The prompt's tokens as reserved: every byte the estimate counts, at three a token.
fn reserved_input_tokens(req: &ChatRequest) -> u64 {
    // `estimated_input_tokens` counts four bytes a token; scale to three.
    req.estimated_input_tokens().saturating_mul(4).div_ceil(3) + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::types::Message;

    #[test]
    fn the_dearest_candidate_sets_the_reservation() {
        let prices = PriceTable::default();
        let req = ChatRequest::new("", vec![Message::user("x".repeat(400))]);
        let cheap = max_chat_cost(&prices, &["sandbox/sandbox-1".into()], &req, 100);
        let both = max_chat_cost(
            &prices,
            &["sandbox/sandbox-1".into(), "openai/gpt-4o".into()],
            &req,
            100,
        );
        assert!(cheap > 0 && both > cheap);
        // The sandbox bills 101 input tokens for this prompt; the reservation covers more.
        let billed = 101 * 1000 + 100 * 2000;
        assert!(cheap >= billed, "{cheap} < {billed}");
        assert_eq!(max_chat_cost(&prices, &["x/unknown".into()], &req, 100), 0);
    }
}
