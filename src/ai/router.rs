//! The router: one call = an ordered fallback chain of `provider/model` candidates.
//!
//! Per candidate: the circuit breaker may skip it; each attempt has the attempt timeout;
//! retryable failures (429, 5xx, timeouts, connection errors, unreadable answers) are
//! retried with exponential backoff plus jitter, honouring `Retry-After` up to a cap;
//! auth and bad-request errors move straight to the next candidate; a context-length
//! error moves to the next candidate with a larger context window. Every attempt is
//! counted in metrics and recorded in `ai_calls` (asynchronously, off the request path).
//!
//! Streams: fallback happens only before the first event reaches the caller; a failure
//! after that ends the stream with an error item, never a silent truncation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use rand::Rng;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::accounting::Outcome;
use super::budget::{self, BudgetExceeded, Budgets, Hold, Refusal};
use super::cache::{self, ResultCache};
use super::error::{AiError, ErrorKind};
use super::pricing::{PriceTable, usd};
use super::provider::{EventStream, Provider};
use super::spans;
use super::types::*;
use crate::store::AiCallRecord;
use crate::telemetry::metrics as m;
use crate::telemetry::traces;
use tracing::Instrument;

#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub attempt_timeout: Duration,
    pub retries: u32,
    pub base_delay: Duration,
    /// Longest `Retry-After` we wait; longer ones move to the next candidate.
    pub max_retry_after: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

/// Who a call is for, so its records land on the right tenant and task, and the
/// budgets of the tenant, key and employee apply to it.
#[derive(Clone, Copy, Debug)]
pub struct CallContext {
    pub tenant_id: Uuid,
    /// The stored API key the call was made with (gateway calls), for its budgets.
    pub key_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    /// The employee the call runs for, so usage can be reported per employee.
    pub employee_id: Option<Uuid>,
}

/// One failed (or skipped) attempt, for the caller's error report.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptReport {
    pub provider: String,
    pub model: String,
    pub status: Option<u16>,
    pub kind: ErrorKind,
    pub reason: String,
}

/// All candidates failed, or a budget refused the call before any was tried.
#[derive(Clone, Debug)]
pub struct RouteError {
    pub attempts: Vec<AttemptReport>,
    /// Set when no vendor was called because of a budget.
    pub refusal: Option<Refusal>,
}

impl RouteError {
    fn refused(r: Refusal) -> Self {
        Self {
            attempts: Vec::new(),
            refusal: Some(r),
        }
    }

    /// The budget that refused the call, if one did.
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match &self.refusal {
            Some(Refusal::Exceeded(b)) => Some(b),
            _ => None,
        }
    }
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.refusal {
            Some(Refusal::Exceeded(b)) => write!(f, "budget exceeded: {b}"),
            Some(Refusal::Unchecked(_)) => {
                write!(
                    f,
                    "the budgets cannot be checked: the database is unavailable"
                )
            }
            None => write!(f, "all AI candidates failed: {}", summary(&self.attempts)),
        }
    }
}

impl std::error::Error for RouteError {}

fn summary(a: &[AttemptReport]) -> String {
    a.iter()
        .map(|r| {
            format!(
                "{}/{} {}{}",
                r.provider,
                r.model,
                r.kind.as_str(),
                r.status.map(|s| format!(" ({s})")).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A successful routed call.
#[derive(Clone, Debug)]
pub struct Routed {
    pub response: ChatResponse,
    pub provider: String,
    pub model: String,
    pub cost_nanos: i64,
    pub cache_hit: bool,
    /// Failed attempts before the one that answered.
    pub failed_attempts: Vec<AttemptReport>,
}

/// A model a caller can name, as `GET /v1/models` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    pub id: String,
    /// The provider that serves it, or `digital-employee` for an alias.
    pub owned_by: String,
}

/// A successful routed embeddings call.
#[derive(Clone, Debug)]
pub struct RoutedEmbedding {
    pub response: EmbeddingResponse,
    pub provider: String,
    pub model: String,
    pub cost_nanos: i64,
}

/// A routed stream whose first event has already arrived.
pub struct RoutedStream {
    pub provider: String,
    pub model: String,
    pub events: EventStream,
    pub failed_attempts: Vec<AttemptReport>,
}

/// The attempt that succeeded, as the fallback loop hands it back to its caller.
struct Won<'c, T> {
    value: T,
    provider: &'c str,
    model: &'c str,
    /// When the successful attempt started.
    started: Instant,
    /// How long the successful attempt took.
    latency: Duration,
    /// Time spent waiting on vendors and in backoff, over every attempt of the call.
    waited: Duration,
    /// The attempts that failed before it.
    failed: Vec<AttemptReport>,
}

// ---------------------------------------------------------------- circuit breaker

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

#[derive(Debug)]
struct BreakerInner {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    /// When the probe in flight is presumed abandoned (its caller went away, e.g. a
    /// client that dropped a stream): the next call may probe instead.
    probe_expires: Option<Instant>,
}

/// Opens after `threshold` consecutive provider faults; after `cooldown` lets exactly
/// one probe through (half-open); the probe's outcome closes or reopens it. A probe that
/// reports no outcome within another `cooldown` no longer holds the slot, so a caller that
/// vanished mid-probe cannot keep the provider shut.
#[derive(Debug)]
pub struct Breaker {
    provider: String,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<BreakerInner>,
}

impl Breaker {
    fn new(provider: &str, threshold: u32, cooldown: Duration) -> Self {
        metrics::gauge!(m::AI_CIRCUIT_BREAKER_STATE, "provider" => provider.to_string()).set(0.0);
        Self {
            provider: provider.to_string(),
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(BreakerInner {
                failures: 0,
                open_until: None,
                probing: false,
                probe_expires: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        let b = self.lock();
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() >= t || b.probing => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    fn publish(&self, s: BreakerState) {
        let v = match s {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        metrics::gauge!(m::AI_CIRCUIT_BREAKER_STATE, "provider" => self.provider.clone()).set(v);
    }

    /// May a call go to this provider now? Claims the single probe when half-open.
    fn allow(&self) -> bool {
        let mut b = self.lock();
        let now = Instant::now();
        let probe_free = !b.probing || b.probe_expires.is_some_and(|e| now >= e);
        match b.open_until {
            None => true,
            Some(t) if now >= t && probe_free => {
                b.probing = true;
                b.probe_expires = Some(now + self.cooldown);
                drop(b);
                self.publish(BreakerState::HalfOpen);
                true
            }
            Some(_) => false,
        }
    }

    fn success(&self) {
        let mut b = self.lock();
        let was_open = b.open_until.is_some();
        b.failures = 0;
        b.open_until = None;
        b.probing = false;
        drop(b);
        if was_open {
            tracing::info!(provider = %self.provider, "circuit breaker closed");
            self.publish(BreakerState::Closed);
        }
    }

    fn failure(&self) {
        let mut b = self.lock();
        b.failures += 1;
        if b.probing || b.failures >= self.threshold {
            let reopened = b.probing;
            b.probing = false;
            b.open_until = Some(Instant::now() + self.cooldown);
            drop(b);
            tracing::warn!(provider = %self.provider, reopened, "circuit breaker open");
            self.publish(BreakerState::Open);
        }
    }

    /// Ends a probe that neither proved nor disproved the provider (e.g. a bad request).
    fn neutral(&self) {
        let mut b = self.lock();
        if b.probing {
            b.probing = false;
            b.failures = 0;
            b.open_until = None;
            drop(b);
            self.publish(BreakerState::Closed);
        }
    }
}

// ---------------------------------------------------------------- router

pub struct AiRouter {
    providers: HashMap<String, Arc<dyn Provider>>,
    breakers: HashMap<String, Breaker>,
    cfg: RouterConfig,
    prices: PriceTable,
    cache: Option<Arc<dyn ResultCache>>,
    records: Option<mpsc::Sender<AiCallRecord>>,
    aliases: HashMap<String, Vec<String>>,
    /// provider → models the alias chains name: those keep their own metric label.
    alias_models: HashMap<String, HashSet<String>>,
    /// The budget gate; `None` = no budgets are enforced (routers built for tests).
    budgets: Option<Arc<Budgets>>,
}

impl AiRouter {
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        cfg: RouterConfig,
        prices: PriceTable,
        cache: Option<Arc<dyn ResultCache>>,
        records: Option<mpsc::Sender<AiCallRecord>>,
        aliases: HashMap<String, Vec<String>>,
    ) -> Self {
        let breakers = providers
            .iter()
            .map(|p| {
                (
                    p.name().to_string(),
                    Breaker::new(p.name(), cfg.breaker_threshold, cfg.breaker_cooldown),
                )
            })
            .collect();
        let providers = providers
            .into_iter()
            .map(|p| (p.name().to_string(), p))
            .collect();
        let mut alias_models: HashMap<String, HashSet<String>> = HashMap::new();
        for candidate in aliases.values().flatten() {
            let (p, m) = split(candidate);
            alias_models
                .entry(p.to_string())
                .or_default()
                .insert(m.to_string());
        }
        Self {
            providers,
            breakers,
            cfg,
            prices,
            cache,
            records,
            aliases,
            alias_models,
            budgets: None,
        }
    }

    /// Enforces budgets before every vendor call.
    pub fn with_budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// The budget gate, when budgets are enforced.
    pub fn budgets(&self) -> Option<&Arc<Budgets>> {
        self.budgets.as_ref()
    }

    /// Reserves a chat call's maximum cost against the budgets that apply to `ctx`.
    /// Returns the request to send (capped at the default output tokens when it names
    /// none and a budget applies) and the hold to settle.
    async fn admit<'r>(
        &self,
        candidates: &[String],
        req: &'r ChatRequest,
        ctx: &CallContext,
    ) -> Result<(std::borrow::Cow<'r, ChatRequest>, Option<Hold>), RouteError> {
        use std::borrow::Cow;
        let Some(b) = &self.budgets else {
            return Ok((Cow::Borrowed(req), None));
        };
        let (cap, defaulted) = b.output_cap(req);
        let amount = budget::max_chat_cost(&self.prices, candidates, req, cap);
        match b.reserve(ctx, amount).await {
            Ok(None) => Ok((Cow::Borrowed(req), None)),
            Ok(Some(hold)) if defaulted => {
                let mut capped = req.clone();
                capped.max_tokens = Some(cap);
                Ok((Cow::Owned(capped), Some(hold)))
            }
            Ok(Some(hold)) => Ok((Cow::Borrowed(req), Some(hold))),
            Err(r) => Err(RouteError::refused(r)),
        }
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    pub fn provider_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.providers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Every `provider/model` an employee's model policy may name knowingly: the priced
    /// models and the members of the alias chains, of configured providers only; sorted.
    pub fn known_models(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let priced = self.prices.model_names().into_iter().filter_map(|name| {
            if name.contains('/') {
                Some(name.to_string())
            } else {
                self.resolve(name).and_then(|c| c.into_iter().next())
            }
        });
        let aliased = self.aliases.values().flatten().cloned();
        for m in priced.chain(aliased) {
            let configured = m
                .split_once('/')
                .is_some_and(|(p, _)| self.providers.contains_key(p));
            if configured && !out.contains(&m) {
                out.push(m);
            }
        }
        out.sort();
        out
    }

    /// The configured aliases with their chains, sorted by name.
    pub fn aliases(&self) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = self
            .aliases
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        v.sort();
        v
    }

    /// The chain of the alias `name`, if one is configured.
    pub fn alias_chain(&self, name: &str) -> Option<&[String]> {
        self.aliases.get(name).map(Vec::as_slice)
    }

    pub fn breaker_state(&self, provider: &str) -> Option<BreakerState> {
        self.breakers.get(provider).map(Breaker::state)
    }

    /// The models a gateway caller can name, for `GET /v1/models`: every alias (owned by
    /// `digital-employee`), then every price-table model a configured provider serves —
    /// `provider/model` entries as written, bare names under the provider they resolve to.
    /// Sorted by id within each group.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut aliases: Vec<ModelInfo> = self
            .aliases
            .keys()
            .map(|a| ModelInfo {
                id: a.clone(),
                owned_by: "digital-employee".to_string(),
            })
            .collect();
        aliases.sort_by(|a, b| a.id.cmp(&b.id));
        let vendor = self.prices.model_names().into_iter().filter_map(|name| {
            if self.aliases.contains_key(name) {
                return None;
            }
            let chain = self.resolve(name)?;
            let (provider, _) = split(chain.first()?);
            self.providers.contains_key(provider).then(|| ModelInfo {
                id: name.to_string(),
                owned_by: provider.to_string(),
            })
        });
        aliases.extend(vendor);
        aliases
    }

    /// The fallback chain a gateway `model` names: an alias, `provider/model`, or a bare
    /// vendor model name (its provider inferred from the name).
    pub fn resolve(&self, model: &str) -> Option<Vec<String>> {
        if let Some(chain) = self.aliases.get(model) {
            return Some(chain.clone());
        }
        if let Some((p, _)) = model.split_once('/')
            && self.providers.contains_key(p)
        {
            return Some(vec![model.to_string()]);
        }
        let guess = if model.starts_with("claude") {
            "anthropic"
        } else if model.starts_with("gpt-")
            || model.starts_with("o1")
            || model.starts_with("o3")
            || model.starts_with("o4")
            || model.starts_with("chatgpt")
            || model.starts_with("text-embedding")
        {
            "openai"
        } else if model.starts_with("sandbox") {
            "sandbox"
        } else {
            return None;
        };
        self.providers
            .contains_key(guess)
            .then(|| vec![format!("{guess}/{model}")])
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(ra) = retry_after {
            return (ra <= self.cfg.max_retry_after).then_some(ra);
        }
        let base = self.cfg.base_delay.as_secs_f64();
        let exp = base * 2f64.powi(attempt.min(16) as i32);
        let jitter = if base > 0.0 {
            rand::rng().random_range(0.0..base)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64((exp + jitter).min(300.0)))
    }

    /// A non-streaming call over `candidates`; with tracing on, one `chat` span.
    pub async fn chat(
        &self,
        candidates: &[String],
        req: &ChatRequest,
        ctx: CallContext,
    ) -> Result<Routed, RouteError> {
        if !traces::enabled() {
            return self.chat_call(candidates, req, ctx).await;
        }
        let span = spans::start("chat", candidates);
        spans::prompt(&span, req);
        let out = self
            .chat_call(candidates, req, ctx)
            .instrument(span.clone())
            .await;
        spans::chat_done(&span, &out);
        out
    }

    async fn chat_call(
        &self,
        candidates: &[String],
        req: &ChatRequest,
        ctx: CallContext,
    ) -> Result<Routed, RouteError> {
        let started = Instant::now();
        let cache_key = (self.cache.is_some() && cache::cacheable(req))
            .then(|| cache::key(ctx.tenant_id, candidates, req));
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
            if let Some(hit) = cache.get(key).await {
                metrics::counter!(m::AI_CACHE_HITS_TOTAL).increment(1);
                let (provider, model) = split(
                    candidates
                        .first()
                        .map(String::as_str)
                        .unwrap_or("cache/unknown"),
                );
                self.record_hit(ctx, provider, model, false);
                metrics::histogram!(m::AI_GATEWAY_OVERHEAD_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                return Ok(Routed {
                    response: hit,
                    provider: provider.to_string(),
                    model: model.to_string(),
                    cost_nanos: 0,
                    cache_hit: true,
                    failed_attempts: Vec::new(),
                });
            }
            metrics::counter!(m::AI_CACHE_MISSES_TOTAL).increment(1);
        }

        let (call, hold) = self.admit(candidates, req, &ctx).await?;
        let won = match self
            .fallback(candidates, &*call, ctx, false, |provider, call| {
                provider.chat(call)
            })
            .await
        {
            Ok(won) => won,
            Err(e) => {
                if let Some(h) = hold {
                    h.release();
                }
                return Err(e);
            }
        };
        self.breaker(won.provider, Breaker::success);
        let cost = self.record_ok(
            ctx,
            won.provider,
            won.model,
            &won.value.usage,
            won.latency,
            false,
        );
        if let Some(h) = hold {
            h.settle(cost);
        }
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
            cache.put(key, &won.value).await;
        }
        metrics::histogram!(m::AI_GATEWAY_OVERHEAD_SECONDS)
            .record(started.elapsed().saturating_sub(won.waited).as_secs_f64());
        Ok(Routed {
            response: won.value,
            provider: won.provider.to_string(),
            model: won.model.to_string(),
            cost_nanos: cost,
            cache_hit: false,
            failed_attempts: won.failed,
        })
    }

    /// A streaming call: returns once the first event has arrived from some candidate.
    ///
    /// An attempt succeeds only with its first event in hand, so a stream that fails or
    /// ends before it falls back like any failed attempt; what happens after it is
    /// accounted by [`Self::account_stream`].
    pub async fn chat_stream(
        self: &Arc<Self>,
        candidates: &[String],
        req: &ChatRequest,
        ctx: CallContext,
    ) -> Result<RoutedStream, RouteError> {
        if !traces::enabled() {
            return self.chat_stream_call(candidates, req, ctx).await;
        }
        let span = spans::start("chat", candidates);
        spans::prompt(&span, req);
        let out = self
            .chat_stream_call(candidates, req, ctx)
            .instrument(span.clone())
            .await;
        spans::stream_started(&span, &out);
        out
    }

    async fn chat_stream_call(
        self: &Arc<Self>,
        candidates: &[String],
        req: &ChatRequest,
        ctx: CallContext,
    ) -> Result<RoutedStream, RouteError> {
        let (call, hold) = self.admit(candidates, req, &ctx).await?;
        let won = self
            .fallback(candidates, &*call, ctx, true, |provider, call| {
                Box::pin(async move {
                    let mut s = provider.chat_stream(call).await?;
                    match s.next().await {
                        Some(Ok(first)) => Ok((first, s)),
                        Some(Err(e)) => Err(e),
                        None => Err(AiError::new(ErrorKind::StreamBroken, "empty stream")),
                    }
                })
            })
            .await;
        let won = match won {
            Ok(won) => won,
            Err(e) => {
                if let Some(h) = hold {
                    h.release();
                }
                return Err(e);
            }
        };
        let events = self.clone().account_stream(
            ctx,
            (won.provider.to_string(), won.model.to_string()),
            won.started,
            req.estimated_input_tokens(),
            won.value,
            hold,
        );
        Ok(RoutedStream {
            provider: won.provider.to_string(),
            model: won.model.to_string(),
            events,
            failed_attempts: won.failed,
        })
    }

    /// Embeddings over `candidates`: the same fallback, retries, breakers, metrics and
    /// `ai_calls` records as a chat call (input tokens only, priced at the model's input
    /// price). Candidates whose vendor has no embeddings endpoint are skipped as bad
    /// requests.
    pub async fn embed(
        &self,
        candidates: &[String],
        req: &EmbeddingRequest,
        ctx: CallContext,
    ) -> Result<RoutedEmbedding, RouteError> {
        if !traces::enabled() {
            return self.embed_call(candidates, req, ctx).await;
        }
        let span = spans::start("embeddings", candidates);
        let out = self
            .embed_call(candidates, req, ctx)
            .instrument(span.clone())
            .await;
        spans::embed_done(&span, &out);
        out
    }

    async fn embed_call(
        &self,
        candidates: &[String],
        req: &EmbeddingRequest,
        ctx: CallContext,
    ) -> Result<RoutedEmbedding, RouteError> {
        let started = Instant::now();
        let hold = match &self.budgets {
            Some(b) => b
                .reserve(&ctx, budget::max_embed_cost(&self.prices, candidates, req))
                .await
                .map_err(RouteError::refused)?,
            None => None,
        };
        let won = match self
            .fallback(candidates, req, ctx, false, |provider, call| {
                provider.embed(call)
            })
            .await
        {
            Ok(won) => won,
            Err(e) => {
                if let Some(h) = hold {
                    h.release();
                }
                return Err(e);
            }
        };
        self.breaker(won.provider, Breaker::success);
        let cost = self.record_ok(
            ctx,
            won.provider,
            won.model,
            &won.value.usage,
            won.latency,
            false,
        );
        if let Some(h) = hold {
            h.settle(cost);
        }
        metrics::histogram!(m::AI_GATEWAY_OVERHEAD_SECONDS)
            .record(started.elapsed().saturating_sub(won.waited).as_secs_f64());
        Ok(RoutedEmbedding {
            response: won.value,
            provider: won.provider.to_string(),
            model: won.model.to_string(),
            cost_nanos: cost,
        })
    }

    /// The prompt's input tokens as the first usable candidate's vendor counts them: one
    /// attempt under the attempt timeout, not retried, not billed. `None` when that vendor
    /// has no counting endpoint or the count fails (callers estimate).
    pub async fn count_tokens(&self, candidates: &[String], req: &ChatRequest) -> Option<u64> {
        // A closed breaker only: a count is no probe of a provider's health.
        let (provider, model) = candidates.iter().find_map(|c| {
            let (p, m) = split(c);
            let provider = self.providers.get(p).filter(|_| self.can_call(p))?;
            Some((provider.clone(), m))
        })?;
        let mut call = req.clone();
        call.set_model(model);
        match tokio::time::timeout(self.cfg.attempt_timeout, provider.count_tokens(&call)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::warn!(provider = provider.name(), kind = ?e.kind, "token count failed; estimating");
                None
            }
            Err(_) => None,
        }
    }

    /// Walks the fallback chain until one attempt succeeds: the one loop behind
    /// [`Self::chat`] and [`Self::chat_stream`].
    ///
    /// `attempt` makes one attempt at one candidate (its `model` already set to the
    /// candidate's); it runs under the attempt timeout. Every failed attempt is counted,
    /// logged and recorded (with `streamed`) and updates the breaker; retryable failures
    /// are retried with backoff, a context-length failure moves on to a candidate with a
    /// larger window, anything else to the next candidate. The successful attempt is
    /// handed back unaccounted: what success means (a whole answer, or a stream's first
    /// event) is the caller's to record.
    async fn fallback<'c, R, T, F>(
        &self,
        candidates: &'c [String],
        req: &R,
        ctx: CallContext,
        streamed: bool,
        attempt: F,
    ) -> Result<Won<'c, T>, RouteError>
    where
        R: ModelRequest,
        F: for<'a> Fn(&'a dyn Provider, &'a R) -> BoxFuture<'a, Result<T, AiError>>,
    {
        let mut failed = Vec::new();
        let mut waited = Duration::ZERO;
        let mut need_context: Option<u64> = None;
        for cand in candidates {
            let (pname, model) = split(cand);
            let Some(provider) = self.usable(pname, model, need_context, &mut failed) else {
                continue;
            };
            if !failed.is_empty() {
                spans::fallback(pname, model, failed.len());
            }
            let mut call = req.clone();
            call.set_model(model);
            let mut retry = 0;
            loop {
                let t0 = Instant::now();
                let result = match tokio::time::timeout(
                    self.cfg.attempt_timeout,
                    attempt(&*provider, &call),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(timeout_error(self.cfg.attempt_timeout)),
                };
                let latency = t0.elapsed();
                waited += latency;
                let e = match result {
                    Ok(value) => {
                        return Ok(Won {
                            value,
                            provider: pname,
                            model,
                            started: t0,
                            latency,
                            waited,
                            failed,
                        });
                    }
                    Err(e) => e,
                };
                failed.push(self.on_failure(ctx, pname, model, &e, latency, streamed));
                if e.kind == ErrorKind::ContextLength {
                    need_context = Some(self.prices.context_window(pname, model).unwrap_or(0));
                    break;
                }
                if !e.is_retryable() || retry >= self.cfg.retries || !self.can_call(pname) {
                    break;
                }
                let Some(pause) = self.backoff(retry, e.retry_after) else {
                    break;
                };
                spans::retry(pname, model, retry + 1, &format!("{:?}", e.kind));
                let t1 = Instant::now();
                tokio::time::sleep(pause).await;
                waited += t1.elapsed();
                retry += 1;
            }
        }
        Err(RouteError {
            attempts: failed,
            refusal: None,
        })
    }

    /// Wraps a started stream: per-event idle timeout, accounting and breaker update at
    /// the end, and an error item (never a silent end) when it breaks. A stream dropped
    /// before its end (the client went away) is recorded with what it used until then.
    fn account_stream(
        self: Arc<Self>,
        ctx: CallContext,
        (provider, model): (String, String),
        started: Instant,
        estimated_input: u64,
        (first, rest): (StreamEvent, EventStream),
        hold: Option<Hold>,
    ) -> EventStream {
        struct St {
            router: Arc<AiRouter>,
            ctx: CallContext,
            provider: String,
            model: String,
            started: Instant,
            estimated_input: u64,
            rest: EventStream,
            pending: Option<StreamEvent>,
            acc: StreamAccumulator,
            done: bool,
            /// Settled with the real cost at a clean end; a broken or abandoned stream
            /// drops it, which charges its whole amount.
            hold: Option<Hold>,
        }
        impl Drop for St {
            fn drop(&mut self) {
                if !self.done {
                    let used = self.acc.used_so_far(self.estimated_input);
                    let latency = self.started.elapsed();
                    self.router.record_abandoned(
                        self.ctx,
                        &self.provider,
                        &self.model,
                        &used,
                        latency,
                    );
                }
            }
        }
        let st = St {
            router: self,
            ctx,
            provider,
            model,
            started,
            estimated_input,
            rest,
            pending: Some(first),
            acc: StreamAccumulator::default(),
            done: false,
            hold,
        };
        let stream = futures_util::stream::unfold(st, move |mut st| async move {
            if st.done {
                return None;
            }
            if let Some(ev) = st.pending.take() {
                st.acc.push(&ev);
                return Some((Ok(ev), st));
            }
            let timeout = st.router.cfg.attempt_timeout;
            let next = match tokio::time::timeout(timeout, st.rest.next()).await {
                Ok(n) => n,
                Err(_) => Some(Err(AiError::new(
                    ErrorKind::StreamBroken,
                    format!("no stream data for {}s", timeout.as_secs_f64()),
                ))),
            };
            let broken = match next {
                Some(Ok(ev)) => {
                    st.acc.push(&ev);
                    return Some((Ok(ev), st));
                }
                Some(Err(mut e)) => {
                    e.kind = ErrorKind::StreamBroken;
                    e
                }
                None => match std::mem::take(&mut st.acc).finish() {
                    Some(resp) => {
                        st.done = true;
                        st.router.breaker(&st.provider, Breaker::success);
                        let cost = st.router.record_ok(
                            st.ctx,
                            &st.provider,
                            &st.model,
                            &resp.usage,
                            st.started.elapsed(),
                            true,
                        );
                        if let Some(h) = st.hold.take() {
                            h.settle(cost);
                        }
                        return None;
                    }
                    None => AiError::new(
                        ErrorKind::StreamBroken,
                        "the stream ended without finishing",
                    ),
                },
            };
            st.done = true;
            // No fallback is possible any more: the failure is recorded and becomes
            // the stream's last item.
            st.router.on_failure(
                st.ctx,
                &st.provider,
                &st.model,
                &broken,
                st.started.elapsed(),
                true,
            );
            Some((Err(broken), st))
        });
        Box::pin(stream)
    }

    /// The provider for a candidate, or why it is skipped (recorded in `failed`).
    fn usable(
        &self,
        pname: &str,
        model: &str,
        need_context: Option<u64>,
        failed: &mut Vec<AttemptReport>,
    ) -> Option<Arc<dyn Provider>> {
        let skip = |failed: &mut Vec<AttemptReport>, kind, reason: &str| {
            failed.push(AttemptReport {
                provider: pname.to_string(),
                model: model.to_string(),
                status: None,
                kind,
                reason: reason.to_string(),
            });
        };
        let Some(provider) = self.providers.get(pname) else {
            skip(
                failed,
                ErrorKind::UnknownProvider,
                "no such provider is configured",
            );
            return None;
        };
        if let Some(min) = need_context {
            let window = self.prices.context_window(pname, model).unwrap_or(0);
            if window <= min {
                skip(
                    failed,
                    ErrorKind::ContextLength,
                    "context window not larger than the one that overflowed",
                );
                return None;
            }
        }
        if !self.breakers.get(pname).is_none_or(Breaker::allow) {
            skip(failed, ErrorKind::CircuitOpen, "circuit breaker open");
            return None;
        }
        Some(provider.clone())
    }

    fn can_call(&self, pname: &str) -> bool {
        self.breakers
            .get(pname)
            .is_none_or(|b| b.state() == BreakerState::Closed)
    }

    fn breaker(&self, pname: &str, f: impl FnOnce(&Breaker)) {
        if let Some(b) = self.breakers.get(pname) {
            f(b);
        }
    }

    /// Accounts a failed attempt (breaker, log, metrics, `ai_calls` record) and returns
    /// its report for the caller's error.
    fn on_failure(
        &self,
        ctx: CallContext,
        pname: &str,
        model: &str,
        e: &AiError,
        latency: Duration,
        streamed: bool,
    ) -> AttemptReport {
        if e.is_provider_fault() {
            self.breaker(pname, Breaker::failure);
        } else {
            self.breaker(pname, Breaker::neutral);
        }
        tracing::warn!(provider = pname, model, kind = ?e.kind, status = e.status, "AI attempt failed");
        let label = self.label(pname, model);
        metrics::counter!(m::AI_REQUESTS_TOTAL, "service" => pname.to_string(), "model" => label.clone(), "status" => "error")
            .increment(1);
        metrics::histogram!(m::AI_REQUEST_DURATION_SECONDS, "service" => pname.to_string(), "model" => label)
            .record(latency.as_secs_f64());
        self.send(AiCallRecord::new(
            ctx,
            pname,
            model,
            streamed,
            Outcome::Failed { error: e, latency },
        ));
        AttemptReport {
            provider: pname.to_string(),
            model: model.to_string(),
            status: e.status,
            kind: e.kind,
            reason: super::error::vendor_text(&e.message),
        }
    }

    /// Records a success; returns its cost in nano-dollars.
    fn record_ok(
        &self,
        ctx: CallContext,
        pname: &str,
        model: &str,
        u: &Usage,
        latency: Duration,
        streamed: bool,
    ) -> i64 {
        let cost = self.prices.cost(pname, model, u).unwrap_or(0);
        let labels = (pname.to_string(), self.label(pname, model));
        let handles = CALL_METRICS.get(&labels, || {
            (labels.clone(), Arc::new(CallMetrics::register(&labels)))
        });
        handles.answered.increment(1);
        handles.duration.record(latency.as_secs_f64());
        for (i, n) in [
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                handles.tokens(&labels, i).increment(n);
            }
        }
        if cost > 0 {
            // The facade's counters are integers, so spend is a gauge that only grows;
            // `increase()` in the budget alert reads it like a counter. The exact integer
            // cost lives in `ai_calls`.
            handles
                .cost
                .get_or_init(|| metrics::gauge!(m::AI_COST_USD_TOTAL, "service" => labels.0.clone(), "model" => labels.1.clone()))
                .increment(usd(cost));
        }
        self.send(AiCallRecord::new(
            ctx,
            pname,
            model,
            streamed,
            Outcome::Answered {
                usage: u,
                cost_nanos: cost,
                latency,
            },
        ));
        cost
    }

    /// Records a stream its consumer dropped before the end, with what it had used. The
    /// vendor was answering, so its breaker is not charged with a fault.
    fn record_abandoned(
        &self,
        ctx: CallContext,
        pname: &str,
        model: &str,
        u: &Usage,
        latency: Duration,
    ) {
        self.breaker(pname, Breaker::neutral);
        let cost_nanos = self.prices.cost(pname, model, u).unwrap_or(0);
        tracing::info!(
            provider = pname,
            model,
            output_tokens = u.output_tokens,
            "stream dropped by its consumer before the end; recording what it used"
        );
        self.send(AiCallRecord::new(
            ctx,
            pname,
            model,
            true,
            Outcome::Abandoned {
                usage: u,
                cost_nanos,
                latency,
            },
        ));
    }

    fn record_hit(&self, ctx: CallContext, pname: &str, model: &str, streamed: bool) {
        metrics::counter!(m::AI_REQUESTS_TOTAL, "service" => pname.to_string(), "model" => self.label(pname, model), "status" => "cache_hit")
            .increment(1);
        self.send(AiCallRecord::new(
            ctx,
            pname,
            model,
            streamed,
            Outcome::CacheHit,
        ));
    }

    /// The `model` label for `pname/model` (see [`model_label`]).
    fn label(&self, pname: &str, model: &str) -> String {
        model_label(&self.prices, &self.alias_models, pname, model)
    }

    fn send(&self, rec: AiCallRecord) {
        if let Some(tx) = &self.records
            && tx.try_send(rec).is_err()
        {
            metrics::counter!(m::AI_CALL_RECORDS_DROPPED_TOTAL).increment(1);
        }
    }
}

/// The metrics of answered calls of one service and model label. Token counters and the
/// cost gauge are registered on their first non-zero value, so a series appears only once
/// it has something to say.
struct CallMetrics {
    answered: metrics::Counter,
    duration: metrics::Histogram,
    /// By [`TOKEN_KINDS`].
    tokens: [OnceLock<metrics::Counter>; 5],
    cost: OnceLock<metrics::Gauge>,
}

/// The `type` label of `ai_tokens_used_total`, in [`CallMetrics::tokens`] order.
const TOKEN_KINDS: [&str; 5] = [
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
];

impl CallMetrics {
    fn register((svc, mdl): &(String, String)) -> Self {
        Self {
            answered: metrics::counter!(m::AI_REQUESTS_TOTAL, "service" => svc.clone(), "model" => mdl.clone(), "status" => "success"),
            duration: metrics::histogram!(m::AI_REQUEST_DURATION_SECONDS, "service" => svc.clone(), "model" => mdl.clone()),
            tokens: Default::default(),
            cost: OnceLock::new(),
        }
    }

    /// The token counter of kind `i` of [`TOKEN_KINDS`].
    fn tokens(&self, (svc, mdl): &(String, String), i: usize) -> &metrics::Counter {
        self.tokens[i].get_or_init(|| {
            metrics::counter!(m::AI_TOKENS_USED_TOTAL, "service" => svc.clone(), "model" => mdl.clone(), "type" => TOKEN_KINDS[i])
        })
    }
}

/// Answered-call metrics by (service, model label); the labels are bounded by
/// [`model_label`].
static CALL_METRICS: std::sync::LazyLock<m::Handles<(String, String), Arc<CallMetrics>>> =
    std::sync::LazyLock::new(m::Handles::new);

/// Longest model name accepted from a caller.
pub const MAX_MODEL_NAME: usize = 128;
/// What [`valid_model_name`] accepts, for error messages.
pub const MODEL_NAME_RULE: &str = "must be 1-128 characters: letters, digits and . _ : / @ + -";

/// A model name a caller may send: 1–128 characters, each a letter, digit or one of
/// `. _ : / @ + -` (vendor names such as `gpt-4o-mini`, `llama3:8b`,
/// `meta-llama/Llama-3.1-8B-Instruct`, `claude-3-5-haiku@20241022`).
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b))
}

/// The `model` label of a model's metrics: the name when the operator configured it (the
/// price table names it, or an alias chain lists it), `other` for anything else, so a
/// caller cannot mint new series with made-up names.
fn model_label(
    prices: &PriceTable,
    alias_models: &HashMap<String, HashSet<String>>,
    provider: &str,
    model: &str,
) -> String {
    let configured = alias_models
        .get(provider)
        .is_some_and(|models| models.contains(model))
        || prices.names(provider, model);
    if configured {
        model.to_string()
    } else {
        "other".to_string()
    }
}

fn split(candidate: &str) -> (&str, &str) {
    candidate.split_once('/').unwrap_or(("", candidate))
}

fn timeout_error(t: Duration) -> AiError {
    AiError::new(
        ErrorKind::Timeout,
        format!("no answer within {}s", t.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn open(cooldown: Duration) -> Breaker {
        let b = Breaker::new("breaker-test", 1, cooldown);
        b.failure();
        assert_ne!(b.state(), BreakerState::Closed);
        b
    }

    #[test]
    fn only_configured_models_keep_their_label() {
        let prices = PriceTable::default();
        let aliases = HashMap::from([(
            "openai".to_string(),
            HashSet::from(["gpt-custom".to_string()]),
        )]);
        let label = |p, m| model_label(&prices, &aliases, p, m);
        assert_eq!(
            label("sandbox", "sandbox-1"),
            "sandbox-1",
            "the price table names it"
        );
        assert_eq!(
            label("openai", "gpt-custom"),
            "gpt-custom",
            "an alias chain names it"
        );
        assert_eq!(
            label("anthropic", "gpt-custom"),
            "other",
            "another provider's model"
        );
        assert_eq!(label("sandbox", "made-up-7"), "other");
    }

    #[test]
    fn one_probe_at_a_time_and_its_outcome_decides() {
        let b = open(Duration::ZERO);
        assert!(b.allow(), "the cooldown is over: a probe goes through");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);

        let b = open(Duration::from_secs(3600));
        assert!(!b.allow(), "open during the cooldown");
    }

    #[test]
    fn a_probe_whose_caller_vanished_frees_the_slot_after_a_cooldown() {
        let cooldown = Duration::from_millis(200);
        let b = open(cooldown);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.allow() {
            assert!(Instant::now() < deadline, "the breaker never half-opened");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The probe's caller goes away without reporting; meanwhile nobody else probes.
        assert!(!b.allow(), "a second probe while the first is fresh");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.allow() {
            assert!(
                Instant::now() < deadline,
                "the abandoned probe held the slot"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        b.failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "the new probe's failure reopens"
        );
    }

    /// Ends the cooldown of an open breaker now, as the clock would: no test waits for it.
    fn end_cooldown(b: &Breaker) {
        let mut inner = b.lock();
        assert!(inner.open_until.is_some(), "not open");
        inner.open_until = Some(Instant::now());
    }

    #[test]
    fn a_failing_probe_reopens_for_a_whole_cooldown() {
        let b = open(Duration::from_secs(3600));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        end_cooldown(&b);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "the probe");
        assert!(!b.allow(), "no second probe while the first runs");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(), "a new cooldown started with the failed probe");
        // And the next probe, once that cooldown ends, can close it.
        end_cooldown(&b);
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow(), "closed: every call goes through");
    }

    #[test]
    fn only_one_probe_among_concurrent_callers() {
        let b = Arc::new(open(Duration::from_secs(3600)));
        end_cooldown(&b);
        let start = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (b, start) = (b.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    b.allow()
                })
            })
            .collect();
        let probes = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|allowed| *allowed)
            .count();
        assert_eq!(probes, 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn a_neutral_probe_closes_and_a_success_resets_the_count() {
        let b = open(Duration::from_secs(3600));
        end_cooldown(&b);
        assert!(b.allow());
        b.neutral();
        assert_eq!(b.state(), BreakerState::Closed);

        let b = Breaker::new("breaker-test", 3, Duration::from_secs(3600));
        b.failure();
        b.failure();
        b.success();
        b.failure();
        b.failure();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the success reset the count"
        );
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "three in a row open it");
        // A neutral outcome outside a probe changes nothing.
        b.neutral();
        assert_eq!(b.state(), BreakerState::Open);
    }

    fn router_with(providers: &[&str], aliases: &[(&str, &[&str])]) -> AiRouter {
        let engine = Arc::new(crate::ai::sandbox::SandboxEngine::default());
        let providers = providers
            .iter()
            .map(|name| {
                Arc::new(crate::ai::sandbox::SandboxProvider::new(
                    *name,
                    engine.clone(),
                )) as Arc<dyn Provider>
            })
            .collect();
        let aliases = aliases
            .iter()
            .map(|(a, chain)| (a.to_string(), chain.iter().map(|c| c.to_string()).collect()))
            .collect();
        AiRouter::new(
            providers,
            RouterConfig {
                attempt_timeout: Duration::from_secs(5),
                retries: 2,
                base_delay: Duration::from_millis(100),
                max_retry_after: Duration::from_secs(10),
                breaker_threshold: 5,
                breaker_cooldown: Duration::from_secs(30),
            },
            PriceTable::default(),
            None,
            None,
            aliases,
        )
    }

    #[test]
    fn resolve_prefers_an_alias_then_an_explicit_provider_then_the_name() {
        let r = router_with(
            &["openai", "anthropic", "sandbox"],
            &[("fast", &["sandbox/sandbox-1", "openai/gpt-4o-mini"])],
        );
        assert_eq!(
            r.resolve("fast").unwrap(),
            ["sandbox/sandbox-1", "openai/gpt-4o-mini"]
        );
        assert_eq!(r.resolve("anthropic/x-1").unwrap(), ["anthropic/x-1"]);
        assert_eq!(
            r.resolve("claude-sonnet-4").unwrap(),
            ["anthropic/claude-sonnet-4"]
        );
        for m in [
            "gpt-4o",
            "o3-mini",
            "chatgpt-4o-latest",
            "text-embedding-3-small",
        ] {
            assert_eq!(r.resolve(m).unwrap(), [format!("openai/{m}")], "{m}");
        }
        assert_eq!(r.resolve("sandbox-1").unwrap(), ["sandbox/sandbox-1"]);
        assert_eq!(r.resolve("llama3:8b"), None, "no provider guessed");
        assert_eq!(r.resolve("mistral/large"), None, "an unknown provider");

        // A guessed provider that is not configured is no answer either.
        let only_sandbox = router_with(&["sandbox"], &[]);
        assert_eq!(only_sandbox.resolve("gpt-4o"), None);
        assert_eq!(only_sandbox.resolve("claude-sonnet-4"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_a_retry_after_up_to_the_cap() {
        let r = router_with(&["sandbox"], &[]);
        for attempt in 0..4u32 {
            let d = r.backoff(attempt, None).unwrap().as_secs_f64();
            let exp = 0.1 * f64::from(2u32.pow(attempt));
            assert!(d >= exp && d < exp + 0.1, "attempt {attempt}: {d}");
        }
        assert_eq!(r.backoff(40, None).unwrap(), Duration::from_secs(300));
        assert_eq!(
            r.backoff(0, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            r.backoff(0, Some(Duration::from_secs(11))),
            None,
            "longer than the cap: move on"
        );
    }

    #[test]
    fn model_names_follow_the_documented_rule() {
        for ok in [
            "gpt-4o-mini",
            "llama3:8b",
            "meta-llama/Llama-3.1-8B-Instruct",
            "claude-3-5-haiku@20241022",
            "a+b",
        ] {
            assert!(valid_model_name(ok), "{ok}");
        }
        let long = "m".repeat(MAX_MODEL_NAME + 1);
        for bad in ["", "gpt 4o", "model\n", "x;y", "ünï", long.as_str()] {
            assert!(!valid_model_name(bad), "{bad:?}");
        }
        assert!(valid_model_name(&"m".repeat(MAX_MODEL_NAME)));
    }
}
