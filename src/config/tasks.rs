//! The Task Orchestrator's and the Agent Runtime's settings: workers, leases, retries,
//! deadlines and cost caps, delegation depth, the HTTP tool, schedules and webhooks.

use std::time::Duration;

use serde::Serialize;

use super::ConfigError;
use super::parse::{on_off, parse, secs, ser_secs};

/// Settings of the Task Orchestrator and the Agent Runtime.
#[derive(Clone, Debug, Serialize)]
pub struct TaskConfig {
    /// `WORKERS_ENABLED`: whether this replica runs workers, reaper and scheduler.
    pub workers_enabled: bool,
    /// `WORKER_CONCURRENCY`: tasks one replica runs at once.
    pub worker_concurrency: u32,
    /// `TENANT_MAX_RUNNING`: top-level tasks one tenant may have running at once across
    /// every replica (0 = no cap; claims are fair across tenants either way).
    pub tenant_max_running: u32,
    /// `TASK_LEASE_SECONDS`: lease of a running task.
    #[serde(serialize_with = "ser_secs")]
    pub lease: Duration,
    /// `TASK_POLL_INTERVAL`: time between queue polls (at least 10 ms).
    #[serde(serialize_with = "ser_secs")]
    pub poll_interval: Duration,
    /// `TASK_MAX_ATTEMPTS`: default attempts of a task.
    pub max_attempts: i32,
    /// `TASK_RETRY_BASE_DELAY`: base of the exponential retry backoff.
    #[serde(serialize_with = "ser_secs")]
    pub retry_base_delay: Duration,
    /// `TASK_DEADLINE_SECONDS`: wall-clock limit of one attempt.
    #[serde(serialize_with = "ser_secs")]
    pub deadline: Duration,
    /// `TASK_COST_CAP_USD` in nano-dollars; `None` = no cap.
    pub cost_cap_nanos: Option<i64>,
    /// `TASK_MAX_DELAY_DAYS`: how far ahead a task's `run_at` may be.
    pub max_delay_days: u32,
    /// `DELEGATION_MAX_DEPTH`: how deep `delegate` may nest sub-tasks.
    pub delegation_max_depth: i32,
    /// `HTTP_TOOL_ALLOWED_HOSTS`, lowercased: hosts the `http_request` tool may call.
    pub http_allowed_hosts: Vec<String>,
    /// `HTTP_TOOL_TIMEOUT`: time per `http_request` call.
    #[serde(serialize_with = "ser_secs")]
    pub http_timeout: Duration,
    /// `HTTP_TOOL_MAX_BYTES`: response bytes kept by the HTTP and webhook tools.
    pub http_max_bytes: usize,
    /// `SCHEDULER_INTERVAL`: time between scans for due schedules (at least 10 ms).
    #[serde(serialize_with = "ser_secs")]
    pub scheduler_interval: Duration,
    /// `WEBHOOK_MAX_ATTEMPTS`: attempts of a completion webhook.
    pub webhook_max_attempts: i32,
    /// `WEBHOOK_RETRY_BASE_DELAY`: base of the webhook retry backoff.
    #[serde(serialize_with = "ser_secs")]
    pub webhook_retry_base_delay: Duration,
    /// `WEBHOOK_TIMEOUT`: time one webhook attempt may take (at least 10 ms).
    #[serde(serialize_with = "ser_secs")]
    pub webhook_timeout: Duration,
    /// `WEBHOOK_POLL_INTERVAL`: time between scans for due deliveries (at least 10 ms).
    #[serde(serialize_with = "ser_secs")]
    pub webhook_poll_interval: Duration,
    /// `SCHEDULE_MIN_INTERVAL_SECONDS`: the shortest gap between two fires of a schedule
    /// (0 = no minimum).
    #[serde(serialize_with = "ser_secs")]
    pub schedule_min_interval: Duration,
    /// `SCHEDULE_MAX_PER_TENANT`: schedules one tenant may have.
    pub schedule_max_per_tenant: u32,
    /// `SSE_MAX_STREAMS_PER_TENANT`: live event streams one tenant may hold per replica.
    pub sse_max_streams_per_tenant: u32,
    /// `SSE_MAX_STREAM_SECONDS`: how long one event stream lives before it ends (the
    /// client resumes with `Last-Event-ID`).
    #[serde(serialize_with = "ser_secs")]
    pub sse_max_stream_duration: Duration,
    /// `SSE_REREAD_SECONDS`: how often a live event stream re-reads the step log when no
    /// wake-up came (one missed, or lost with the notification connection); at least
    /// 0.1 s. Followers are woken by notifications, this is only the safety net.
    #[serde(serialize_with = "ser_secs")]
    pub sse_reread_interval: Duration,
    /// `TASK_RETENTION_DAYS`: tasks that ended longer ago than this many days are deleted
    /// with their events; 0 (the default) keeps every task.
    pub retention_days: u32,
    /// `TASK_PRUNE_BATCH_SIZE`: tasks deleted per transaction.
    pub prune_batch_size: u32,
    /// `TASK_PRUNE_PAUSE`: time between two batches of one pruning pass.
    #[serde(serialize_with = "ser_secs")]
    pub prune_pause: Duration,
    /// `TASK_PRUNE_INTERVAL`: time between pruning passes (at least 10 ms).
    #[serde(serialize_with = "ser_secs")]
    pub prune_interval: Duration,
}

impl TaskConfig {
    /// `WORKERS_ENABLED`, `WORKER_CONCURRENCY`, `TENANT_MAX_RUNNING`, `TASK_*`, `DELEGATION_MAX_DEPTH`,
    /// `HTTP_TOOL_*`, `SCHEDULER_INTERVAL`, `SCHEDULE_*`, `WEBHOOK_*`, `SSE_*` and the
    /// retention's `TASK_RETENTION_DAYS`, `TASK_PRUNE_*`.
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let workers_enabled = on_off(get, "WORKERS_ENABLED", true)?;
        let positive = |var: &'static str, default: &str, max: u64| -> Result<u64, ConfigError> {
            let v: u64 = parse(get, var, default, "a positive whole number")?;
            if v == 0 || v > max {
                return Err(ConfigError {
                    var,
                    value: v.to_string(),
                    expected: "a positive whole number within range",
                });
            }
            Ok(v)
        };
        let lease = secs(get, "TASK_LEASE_SECONDS", "30")?;
        if lease < Duration::from_millis(100) {
            return Err(ConfigError {
                var: "TASK_LEASE_SECONDS",
                value: format!("{}", lease.as_secs_f64()),
                expected: "at least 0.1 seconds",
            });
        }
        let poll_interval = secs(get, "TASK_POLL_INTERVAL", "1")?.max(Duration::from_millis(10));
        let cost_cap_nanos = match get("TASK_COST_CAP_USD") {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(usd) if usd.is_finite() && usd >= 0.0 => Some((usd * 1e9) as i64),
                _ => {
                    return Err(ConfigError {
                        var: "TASK_COST_CAP_USD",
                        value: v,
                        expected: "a non-negative amount of US dollars such as 0.50",
                    });
                }
            },
        };
        let retention_days: u32 = parse(
            get,
            "TASK_RETENTION_DAYS",
            "0",
            "a whole number of days (0 = keep every task)",
        )?;
        if retention_days > 36_500 {
            return Err(ConfigError {
                var: "TASK_RETENTION_DAYS",
                value: retention_days.to_string(),
                expected: "at most 36500 days (0 = keep every task)",
            });
        }
        let http_allowed_hosts = get("HTTP_TOOL_ALLOWED_HOSTS")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Self {
            workers_enabled,
            worker_concurrency: positive("WORKER_CONCURRENCY", "16", 4096)? as u32,
            tenant_max_running: parse(
                get,
                "TENANT_MAX_RUNNING",
                "0",
                "a whole number of tasks (0 = no cap)",
            )?,
            lease,
            poll_interval,
            max_attempts: positive("TASK_MAX_ATTEMPTS", "3", 20)? as i32,
            retry_base_delay: secs(get, "TASK_RETRY_BASE_DELAY", "2")?,
            deadline: secs(get, "TASK_DEADLINE_SECONDS", "600")?,
            cost_cap_nanos,
            max_delay_days: positive("TASK_MAX_DELAY_DAYS", "365", 36_500)? as u32,
            delegation_max_depth: positive("DELEGATION_MAX_DEPTH", "3", 16)? as i32,
            http_allowed_hosts,
            http_timeout: secs(get, "HTTP_TOOL_TIMEOUT", "10")?,
            http_max_bytes: positive("HTTP_TOOL_MAX_BYTES", "65536", 16 * 1024 * 1024)? as usize,
            scheduler_interval: secs(get, "SCHEDULER_INTERVAL", "1")?
                .max(Duration::from_millis(10)),
            webhook_max_attempts: positive("WEBHOOK_MAX_ATTEMPTS", "5", 50)? as i32,
            webhook_retry_base_delay: secs(get, "WEBHOOK_RETRY_BASE_DELAY", "2")?,
            webhook_timeout: secs(get, "WEBHOOK_TIMEOUT", "10")?.max(Duration::from_millis(10)),
            webhook_poll_interval: secs(get, "WEBHOOK_POLL_INTERVAL", "1")?
                .max(Duration::from_millis(10)),
            schedule_min_interval: secs(get, "SCHEDULE_MIN_INTERVAL_SECONDS", "60")?,
            schedule_max_per_tenant: positive("SCHEDULE_MAX_PER_TENANT", "100", 1_000_000)? as u32,
            sse_max_streams_per_tenant: positive("SSE_MAX_STREAMS_PER_TENANT", "100", 100_000)?
                as u32,
            sse_max_stream_duration: secs(get, "SSE_MAX_STREAM_SECONDS", "3600")?
                .max(Duration::from_secs(1)),
            sse_reread_interval: secs(get, "SSE_REREAD_SECONDS", "5")?
                .max(Duration::from_millis(100)),
            retention_days,
            prune_batch_size: positive("TASK_PRUNE_BATCH_SIZE", "500", 10_000)? as u32,
            prune_pause: secs(get, "TASK_PRUNE_PAUSE", "1")?,
            prune_interval: secs(get, "TASK_PRUNE_INTERVAL", "60")?.max(Duration::from_millis(10)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::cfg;
    use std::time::Duration;

    #[test]
    fn retention_is_off_unless_set_and_bounded() {
        let t = cfg(&[]).unwrap().tasks;
        assert_eq!(t.retention_days, 0, "every task is kept by default");
        assert_eq!(t.prune_batch_size, 500);
        assert_eq!(t.prune_pause, Duration::from_secs(1));
        assert_eq!(t.prune_interval, Duration::from_secs(60));
        let t = cfg(&[("TASK_RETENTION_DAYS", "30"), ("TASK_PRUNE_INTERVAL", "0")])
            .unwrap()
            .tasks;
        assert_eq!(t.retention_days, 30);
        assert_eq!(t.prune_interval, Duration::from_millis(10));
        for (var, value) in [
            ("TASK_RETENTION_DAYS", "a month"),
            ("TASK_RETENTION_DAYS", "-1"),
            ("TASK_RETENTION_DAYS", "36501"),
            ("TASK_PRUNE_BATCH_SIZE", "0"),
            ("TASK_PRUNE_BATCH_SIZE", "10001"),
            ("TASK_PRUNE_PAUSE", "soon"),
        ] {
            assert_eq!(cfg(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
    }
}
