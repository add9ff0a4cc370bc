//! Metric names and the global Prometheus recorder.
//!
//! The recorder is process-global (the `metrics` facade allows one); it is installed
//! once and every app instance in the process renders the same registry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter `{method, endpoint, status}`; `endpoint` is the route template.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram `{method, endpoint}`, seconds.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Gauge `{version}` = 1.
pub const BUILD_INFO: &str = "digital_employee_build_info";
/// Gauge: authenticated-path requests being served right now (probes excluded).
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";

/// Counter `{service, model, status}`: AI vendor attempts; `status` is `success`,
/// `error` or `cache_hit` (the alert reads `status="error"`).
pub const AI_REQUESTS_TOTAL: &str = "ai_requests_total";
/// Counter `{service, model, type}`: tokens by `input`, `output`, `cached_input`, `cache_write`,
/// `reasoning` (part of `output`).
pub const AI_TOKENS_USED_TOTAL: &str = "ai_tokens_used_total";
/// Histogram `{service, model}`: vendor attempt latency, seconds.
pub const AI_REQUEST_DURATION_SECONDS: &str = "ai_request_duration_seconds";
/// Monotonic gauge `{service, model}`: spend in US dollars (a gauge because the facade's
/// counters are integers; it never decreases).
pub const AI_COST_USD_TOTAL: &str = "ai_cost_usd_total";
/// Gauge `{scope}` (tenant, key, employee): spend in US dollars settled against the
/// budgets of that scope in their current windows, summed over every tenant; sampled
/// from the database.
pub const BUDGET_SPENT_USD: &str = "budget_spent_usd";
/// Gauge `{scope}`: the fullest budget of that scope, (spent + reserved) / limit; the
/// budget alerts fire on it at 0.8 and 1.
pub const BUDGET_USAGE_RATIO: &str = "budget_usage_ratio";
/// Counter `{scope}`: vendor calls refused because a budget of that scope had no room.
pub const BUDGET_REFUSALS_TOTAL: &str = "budget_refusals_total";
/// Counter: settlements that could not be written (their holds expire and are
/// reclaimed, and the spend is missing from the budget).
pub const BUDGET_SETTLE_FAILURES_TOTAL: &str = "budget_settle_failures_total";
/// Gauge `{provider}`: 0 closed, 1 half-open, 2 open.
pub const AI_CIRCUIT_BREAKER_STATE: &str = "ai_circuit_breaker_state";
/// Counters: result-cache hits and misses.
pub const AI_CACHE_HITS_TOTAL: &str = "ai_cache_hits_total";
pub const AI_CACHE_MISSES_TOTAL: &str = "ai_cache_misses_total";
/// Histogram: time a routed call spent outside vendors and backoff (the router's own cost).
pub const AI_GATEWAY_OVERHEAD_SECONDS: &str = "ai_gateway_overhead_seconds";
/// Counter: AI call records dropped because the accounting queue was full.
pub const AI_CALL_RECORDS_DROPPED_TOTAL: &str = "ai_call_records_dropped_total";
/// Counter `{tenant}`: requests refused with 429 by the rate limiter.
pub const RATE_LIMITED_TOTAL: &str = "rate_limited_total";
/// Counter `{policy}`: requests whose rate limit could not be checked because Redis was
/// unreachable (`policy="open"`: let through; `"closed"`: refused with 503).
pub const RATE_LIMIT_REDIS_ERRORS_TOTAL: &str = "rate_limit_redis_errors_total";
/// Rounds of readiness dependency checks (database, schema, Redis) actually run; `/ready`
/// reuses one round for a second.
pub const READINESS_CHECKS_TOTAL: &str = "readiness_checks_total";
/// Failed authentications: `outcome` = `refused` (bad credentials, 401) or `blocked`
/// (the address failed too often, 429 before any check).
pub const AUTH_FAILURES_TOTAL: &str = "auth_failures_total";
/// Task event streams (SSE) open on this replica.
pub const SSE_STREAMS_OPEN: &str = "sse_streams_open";
/// Requests to tenant-chosen targets refused by the egress policy, by `reason`.
pub const EGRESS_REFUSED_TOTAL: &str = "egress_refused_total";
/// Gauge: resident set size of the process, bytes.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// Gauge: open file descriptors of the process.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Gauge: the container's (cgroup) memory limit, bytes; absent when there is none. The
/// `HighMemoryUsage` alert divides the resident memory by it.
pub const MEMORY_LIMIT_BYTES: &str = "digital_employee_memory_limit_bytes";
/// Gauge `{pool, state}`: database pool connections, `state` = `idle` or `in_use`;
/// `pool` = `main` (the `DB_MAX_CONNECTIONS` pool), `hot`, `reports` (PostgreSQL) or
/// `writer` (SQLite).
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
/// Gauge `{pool}`: the pool's upper bound (`DB_MAX_CONNECTIONS` for `main`).
pub const DB_POOL_MAX_CONNECTIONS: &str = "db_pool_max_connections";

/// Counter: tasks that reached an end, by `status` (succeeded, failed, cancelled).
pub const TASKS_TOTAL: &str = "tasks_total";
/// Histogram: seconds from a task's first start to its end.
pub const TASK_DURATION_SECONDS: &str = "task_duration_seconds";
/// Gauge: tasks per `status`, sampled periodically from the database.
pub const QUEUE_DEPTH: &str = "digital_employee_queue_depth";
/// Gauge: tenants holding `TENANT_MAX_RUNNING` running tasks while more of theirs are
/// due, sampled periodically from the database (0 without a cap).
pub const TENANTS_AT_RUNNING_CAP: &str = "tenants_at_running_cap";
/// Counter `{kind}`: rows deleted by the task retention (`TASK_RETENTION_DAYS`): `tasks`,
/// `task_events`, `webhook_deliveries`.
pub const PRUNED_TOTAL: &str = "digital_employee_pruned_total";
/// Counter: tasks claimed by this replica's workers.
pub const TASKS_CLAIMED_TOTAL: &str = "tasks_claimed_total";
/// Counter: tasks rescued from an expired lease, by the `status` they went to.
pub const TASKS_RESCUED_TOTAL: &str = "tasks_rescued_total";
/// Counter: tasks queued again after a retryable failure.
pub const TASKS_RETRIED_TOTAL: &str = "tasks_retried_total";
/// Counter: tool calls by `tool` and `outcome` (ok, error, invalid, rejected, denied).
pub const TOOL_CALLS_TOTAL: &str = "tool_calls_total";
/// Counter: schedule fires that created a task.
pub const SCHEDULE_FIRES_TOTAL: &str = "schedule_fires_total";
/// Schedule fires that failed for a passing reason and stay due for the next scan.
pub const SCHEDULE_FIRE_ERRORS_TOTAL: &str = "schedule_fire_errors_total";
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "webhook_deliveries_total";
/// Counter `{reason}`: spans not exported: `queue_full` (the export queue was full, the
/// span was dropped at once rather than waited for) or `export_failed` (the collector
/// could not be reached or refused the batch).
pub const OTEL_SPANS_DROPPED_TOTAL: &str = "otel_spans_dropped_total";
/// Counter: spans the collector accepted.
pub const OTEL_SPANS_EXPORTED_TOTAL: &str = "otel_spans_exported_total";

/// The `endpoint` label of requests that matched no route, so raw paths never become
/// label values.
pub const UNMATCHED_ENDPOINT: &str = "unmatched";

/// Fine buckets for the router's own overhead (microseconds matter there).
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

/// Writes per group commit (PostgreSQL batches hold up to 128, the SQLite writer's 256).
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Handles of labelled metrics, registered once per label set and reused: a request
/// then costs an atomic add instead of building labels and looking them up in the
/// recorder's registry. Nothing is kept before the recorder is installed (a handle taken
/// then would stay a no-op): until then every lookup registers anew. Label sets are
/// bounded by the caller (route templates, standard methods, configured models), and the
/// cache stops growing at [`MAX_CACHED`] entries.
pub struct Handles<K, V> {
    map: std::sync::RwLock<std::collections::HashMap<K, V>>,
}

/// The most label sets one cache holds; beyond it, every lookup of a new set registers
/// it anew (the recorder's registry still holds one series per set).
pub const MAX_CACHED: usize = 4096;

impl<K: std::hash::Hash + Eq, V: Clone> Handles<K, V> {
    pub fn new() -> Self {
        Self {
            map: std::sync::RwLock::new(std::collections::HashMap::new()),
        }
    }

    /// The handles of `key` (`Q` borrowed from it), registered with `make` on the first
    /// use and kept once the recorder is installed.
    pub fn get<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> V
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if HANDLE.get().is_none() {
            return make().1;
        }
        if let Some(v) = self.map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return v.clone();
        }
        let (k, v) = make();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() < MAX_CACHED {
            map.entry(k).or_insert_with(|| v.clone());
        }
        v
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Default for Handles<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs the recorder on first call and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(AI_GATEWAY_OVERHEAD_SECONDS.into()),
                        OVERHEAD_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(crate::store::WRITE_BATCH_SIZE.into()),
                        BATCH_SIZE_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours then renders
            // nothing but the process still serves.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(
        BUDGET_SPENT_USD,
        "Spend settled against budgets in their current windows, USD, by scope"
    );
    metrics::describe_gauge!(
        BUDGET_USAGE_RATIO,
        "Fullest budget of each scope: (spent + reserved) / limit"
    );
    metrics::describe_counter!(
        BUDGET_REFUSALS_TOTAL,
        "Vendor calls refused because a budget had no room, by scope"
    );
    metrics::describe_counter!(
        BUDGET_SETTLE_FAILURES_TOTAL,
        "Budget settlements that could not be written"
    );
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests served, by method, route template and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    metrics::describe_gauge!(HTTP_REQUESTS_IN_FLIGHT, "HTTP requests being served");
    metrics::describe_counter!(
        AI_REQUESTS_TOTAL,
        "AI vendor attempts by service, model and status"
    );
    metrics::describe_counter!(AI_TOKENS_USED_TOTAL, "AI tokens by service, model and type");
    metrics::describe_histogram!(
        AI_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "AI vendor attempt latency"
    );
    metrics::describe_gauge!(
        AI_COST_USD_TOTAL,
        "AI spend in US dollars by service and model (only grows)"
    );
    metrics::describe_gauge!(
        AI_CIRCUIT_BREAKER_STATE,
        "Circuit breaker per provider: 0 closed, 1 half-open, 2 open"
    );
    metrics::describe_counter!(AI_CACHE_HITS_TOTAL, "AI result cache hits");
    metrics::describe_counter!(AI_CACHE_MISSES_TOTAL, "AI result cache misses");
    metrics::describe_histogram!(
        AI_GATEWAY_OVERHEAD_SECONDS,
        metrics::Unit::Seconds,
        "Time a routed AI call spent in the router itself"
    );
    metrics::describe_counter!(
        AI_CALL_RECORDS_DROPPED_TOTAL,
        "AI call records dropped because the accounting queue was full"
    );
    metrics::describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused by the rate limiter, by tenant"
    );
    metrics::describe_counter!(
        RATE_LIMIT_REDIS_ERRORS_TOTAL,
        "Requests whose rate limit could not be checked because Redis was unreachable"
    );
    metrics::describe_gauge!(
        SSE_STREAMS_OPEN,
        "Task event streams (SSE) open on this replica"
    );
    metrics::describe_counter!(
        EGRESS_REFUSED_TOTAL,
        "Requests to tenant-chosen targets refused by the egress policy, by reason"
    );
    metrics::describe_counter!(TASKS_TOTAL, "Tasks that ended, by status");
    metrics::describe_histogram!(
        TASK_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Seconds from a task's first start to its end"
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Tasks per status (sampled)");
    metrics::describe_gauge!(
        TENANTS_AT_RUNNING_CAP,
        "Tenants at TENANT_MAX_RUNNING with more tasks due (sampled)"
    );
    metrics::describe_counter!(TASKS_CLAIMED_TOTAL, "Tasks claimed by this replica");
    metrics::describe_histogram!(
        crate::store::WRITE_BATCH_SIZE,
        "Writes per group commit, by kind (PostgreSQL: submit, finish; SQLite: writer)"
    );
    metrics::describe_counter!(TASKS_RESCUED_TOTAL, "Tasks rescued from an expired lease");
    metrics::describe_counter!(
        PRUNED_TOTAL,
        "Rows deleted by the task retention, by kind (tasks, task_events, webhook_deliveries)"
    );
    metrics::describe_counter!(
        TASKS_RETRIED_TOTAL,
        "Tasks queued again after a retryable failure"
    );
    metrics::describe_counter!(TOOL_CALLS_TOTAL, "Tool calls by tool and outcome");
    metrics::describe_counter!(SCHEDULE_FIRES_TOTAL, "Schedule fires that created a task");
    metrics::describe_counter!(
        SCHEDULE_FIRE_ERRORS_TOTAL,
        "Schedule fires that failed (storage) and stay due for the next scan"
    );
    metrics::describe_counter!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Completion webhook attempts by outcome (delivered, retrying, failed)"
    );
    metrics::describe_counter!(
        OTEL_SPANS_DROPPED_TOTAL,
        "Trace spans not exported, by reason (queue_full, export_failed)"
    );
    metrics::describe_counter!(
        OTEL_SPANS_EXPORTED_TOTAL,
        "Trace spans the collector accepted"
    );
    metrics::describe_gauge!(BUILD_INFO, "Always 1; labelled with the running version");
    metrics::describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        metrics::Unit::Bytes,
        "Resident memory of the process"
    );
    metrics::describe_gauge!(PROCESS_OPEN_FDS, "Open file descriptors of the process");
    metrics::describe_gauge!(
        MEMORY_LIMIT_BYTES,
        metrics::Unit::Bytes,
        "Memory limit of the container (cgroup), when it has one"
    );
    metrics::describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections by pool and state (idle, in_use)"
    );
    metrics::describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        "Largest number of connections each database pool may open"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Unlabelled counters are exported from start, at 0, so a scrape (and an alert's
    // `increase()`) sees them before their first event.
    for name in [
        AI_CACHE_HITS_TOTAL,
        AI_CACHE_MISSES_TOTAL,
        AI_CALL_RECORDS_DROPPED_TOTAL,
        TASKS_CLAIMED_TOTAL,
        TASKS_RESCUED_TOTAL,
        TASKS_RETRIED_TOTAL,
        SCHEDULE_FIRES_TOTAL,
        SCHEDULE_FIRE_ERRORS_TOTAL,
        OTEL_SPANS_EXPORTED_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
    // Likewise every outcome of a webhook delivery, so a failure-rate query has both sides.
    for outcome in ["delivered", "retrying", "failed"] {
        metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(0);
    }
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!(OTEL_SPANS_DROPPED_TOTAL, "reason" => reason).increment(0);
    }
    for kind in ["tasks", "task_events", "webhook_deliveries"] {
        metrics::counter!(PRUNED_TOTAL, "kind" => kind).increment(0);
    }
    for outcome in ["refused", "blocked"] {
        metrics::counter!(AUTH_FAILURES_TOTAL, "outcome" => outcome).increment(0);
    }
    // Registered without changing it: several apps may share this process's recorder.
    metrics::gauge!(SSE_STREAMS_OPEN).increment(0.0);
    metrics::gauge!(TENANTS_AT_RUNNING_CAP).increment(0.0);
}
