//! The one place that reads the environment.
//!
//! Every variable the service understands, with its default:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `APP_ENV` | `development` | `development`, `testing`, `staging` or `production` |
//! | `HOST` | `0.0.0.0` | address the API and metrics listeners bind to |
//! | `PORT` | `8000` | API port |
//! | `PROMETHEUS_METRICS_PORT` | `9000` | metrics port (`GET /metrics` only) |
//! | `LOG_LEVEL` | `info` | `trace`, `debug`, `info`, `warn`, `error` (any case) or a tracing filter |
//! | `DATA_DIR` | `./data` | where the embedded SQLite database lives |
//! | `DATABASE_URL` | `sqlite://$DATA_DIR/digital-employee.db` | `sqlite://…` or `postgres://…` |
//! | `DB_HOST`, `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASSWORD` | unset, `5432`, `digital_employee`, `user`, empty | PostgreSQL by parts, used when `DB_HOST` is set and `DATABASE_URL` is not |
//! | `DB_MAX_CONNECTIONS` | `16` (PostgreSQL); twice the CPUs, 4 to 16 (SQLite) | database pool size |
//! | `REDIS_URL` | unset | `redis://…`; or `REDIS_HOST` + `REDIS_PORT` (`6379`) |
//! | `AI_SERVICE_TIMEOUT` | `30` | seconds per vendor attempt |
//! | `AI_SERVICE_RETRY_COUNT` | `3` | retries per candidate |
//! | `AI_SERVICE_RETRY_DELAY` | `2` | seconds, base of the exponential backoff |
//! | `HEALTH_CHECK_INTERVAL` | `30` | seconds between background health probes |
//! | `METRICS_BEARER_TOKEN` | unset | when set, `GET /metrics` requires `Authorization: Bearer <token>` (secret) |
//! | `JWT_SECRET_KEY` | unset | HS256 signing key (secret) |
//! | `JWT_SECRET_KEY_PREVIOUS` | unset | the key before a rotation, still accepted for verification (secret) |
//! | `JWT_ISSUER` | unset | when set, required `iss` of accepted tokens (minted tokens carry it) |
//! | `JWT_AUDIENCE` | unset | when set, required `aud` of accepted tokens (minted tokens carry it) |
//! | `JWT_MAX_LIFETIME_SECONDS` | `2592000` | tokens whose `exp − iat` is longer are refused |
//! | `API_KEY_WHITELIST` | empty | comma-separated bootstrap admin keys (secret) |
//! | `OPENAI_API_KEY` | unset | OpenAI key (secret) |
//! | `CLAUDE_API_KEY` / `ANTHROPIC_API_KEY` | unset | Anthropic key (secret) |
//! | `OPENAI_BASE_URL` | `https://api.openai.com/v1` | OpenAI-format endpoint (any compatible server) |
//! | `ANTHROPIC_BASE_URL` | `https://api.anthropic.com` | Anthropic endpoint |
//! | `AI_PROVIDERS` | empty | JSON list of extra providers `[{"name","format":"openai"\|"anthropic","base_url","api_key"?,"api_version"?}]` |
//! | `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (and lowercase), `NO_PROXY` | unset | forward proxy for vendor calls (secret: may hold credentials); `NO_PROXY` hosts bypass it |
//! | `AI_MODEL_ALIASES` | empty | JSON map alias → fallback chain, e.g. `{"fast":["openai/gpt-4o-mini","anthropic/claude-3-5-haiku-latest"]}` |
//! | `AI_PRICES` | built-in table | JSON map overriding prices (USD per million tokens) |
//! | `AI_RETRY_AFTER_MAX` | `60` | longest `Retry-After` (seconds) honoured before moving on |
//! | `AI_BREAKER_THRESHOLD` | `5` | consecutive failures that open a provider's circuit |
//! | `AI_BREAKER_COOLDOWN` | `30` | seconds before an open circuit lets a probe through |
//! | `AI_CACHE` | `on` | exact-match result cache `on`/`off` |
//! | `AI_CACHE_TTL` | `300` | seconds a cached result lives |
//! | `AI_CACHE_MAX_ENTRIES` | `10000` | in-memory cache capacity |
//! | `AI_STREAM_PING_INTERVAL` | `10` | seconds of vendor silence after which a gateway stream sends a keep-alive (`ping` event on `/v1/messages`, an SSE comment on the OpenAI protocols); `0` = never |
//! | `RESPONSES_RETENTION_DAYS` | `30` | days `/v1/responses` answers are kept (0 = not stored) |
//! | `BUDGET_DEFAULT_MAX_TOKENS` | `4096` | output tokens reserved for (and the cap of) a call without `max_tokens` while a budget applies to it |
//! | `BUDGET_HOLD_SECONDS` | `900` | seconds an unsettled budget reservation lives before it is reclaimed (the replica that made it is presumed dead) |
//! | `MAX_BODY_BYTES` | `1048576` | largest accepted request body |
//! | `SHUTDOWN_GRACE_PERIOD` | `30` | seconds in-flight requests get after SIGTERM |
//! | `SHUTDOWN_DRAIN_DELAY` | `1` | seconds the listener keeps answering (with `Connection: close`) after SIGTERM before it may close |
//! | `RATE_LIMIT_REQUESTS` | `100` | requests per key (or token subject) per window; a key's own `rate_limit` overrides it |
//! | `TENANT_RATE_LIMIT_REQUESTS` | 10 × `RATE_LIMIT_REQUESTS` | requests per window of all of a tenant's keys and tokens together |
//! | `TENANT_MAX_KEYS` | `100` | active stored keys one tenant may have (`/v1/keys` answers 409 past it) |
//! | `AUTH_FAILURE_LIMIT` | `20` | failed authentications per client address and window; past it the address gets 429 until the window has passed |
//! | `TRUSTED_PROXIES` | loopback and private ranges | comma-separated ranges of proxies (nginx, the ingress) whose `X-Forwarded-For` names the client; `none` = the peer address is always the client |
//! | `RATE_LIMIT_WINDOW_SECONDS` | `60` | length of the sliding window, whole seconds |
//! | `RATE_LIMIT_REDIS_FAILURE` | `open` | when Redis is unreachable: `open` (allow, count `rate_limit_redis_errors_total`) or `closed` (503) |
//! | `RATE_LIMIT_KEY_PREFIX` | `de:rl:` | prefix of the rate-limit keys in Redis |
//! | `CORS_ALLOWED_ORIGINS` | empty | comma-separated origins allowed cross-origin (`*` for any); empty = CORS closed |
//! | `REDACT_EXTRA_PATTERNS` | empty | extra regexes redacted from logs: a JSON array of strings, or one regex per line |
//! | `EGRESS_ALLOW_CIDRS` | empty | comma-separated ranges (`127.0.0.1/32,10.20.0.0/16`) that webhook tools, completion callbacks and `http_request` may reach although the egress policy refuses internal addresses |
//! | `REQUEST_HEADER_TIMEOUT` | `10` | seconds a client gets to send the request headers |
//! | `REQUEST_BODY_TIMEOUT` | `30` | seconds a client gets to send the request body |
//! | `API_THREADS` | the CPUs | threads that serve the API, each with its own event loop and vendor connections (`0` = serve it on the runtime the workers share) |
//! | `BACKUP_DIR` | `./backups` | where `digital-employee backup` writes `db_backup_*` files and `backup.log` |
//! | `RETENTION_DAYS` | `7` | backups older than this many days are deleted after a backup (`0` keeps all) |
//! | `AWS_S3_BUCKET` | unset | when set, each backup is also uploaded with the `aws` CLI to `s3://BUCKET/backups/` |
//! | `WORKERS_ENABLED` | `on` | run the task worker pool, reaper and scheduler in this replica (`on`/`off`) |
//! | `WORKER_CONCURRENCY` | `16` | tasks one replica runs at once |
//! | `TENANT_MAX_RUNNING` | `0` | top-level tasks one tenant may have running at once, across all replicas (`0` = no cap); claims are fair across tenants either way |
//! | `TASK_LEASE_SECONDS` | `30` | lease of a running task; renewed every third of it |
//! | `TASK_POLL_INTERVAL` | `1` | seconds between queue polls when no wake-up arrives |
//! | `TASK_MAX_ATTEMPTS` | `3` | default attempts of a task (1–20) |
//! | `TASK_RETRY_BASE_DELAY` | `2` | seconds, base of the exponential retry backoff |
//! | `TASK_DEADLINE_SECONDS` | `600` | wall-clock limit of one attempt; past it the task fails |
//! | `TASK_COST_CAP_USD` | unset | cost one task may reach (USD); unset = no cap |
//! | `DELEGATION_MAX_DEPTH` | `3` | how deep `delegate` may nest sub-tasks |
//! | `HTTP_TOOL_ALLOWED_HOSTS` | empty | comma-separated hosts (`host:port`, or `host` for the scheme's default port) the `http_request` tool may call |
//! | `HTTP_TOOL_TIMEOUT` | `10` | seconds per `http_request` call |
//! | `HTTP_TOOL_MAX_BYTES` | `65536` | response bytes kept by `http_request` and webhook tools |
//! | `SCHEDULER_INTERVAL` | `1` | seconds between scans for due schedules |
//! | `SCHEDULE_MIN_INTERVAL_SECONDS` | `60` | shortest gap a schedule's cron may have between two fires (`0` = no minimum) |
//! | `SCHEDULE_MAX_PER_TENANT` | `100` | schedules one tenant may have |
//! | `WEBHOOK_MAX_ATTEMPTS` | `5` | attempts of a completion webhook before it is given up (1–50) |
//! | `WEBHOOK_RETRY_BASE_DELAY` | `2` | seconds, base of the webhook retry backoff (doubles per attempt) |
//! | `WEBHOOK_TIMEOUT` | `10` | seconds one webhook attempt may take |
//! | `WEBHOOK_POLL_INTERVAL` | `1` | seconds between scans for due webhook deliveries |
//! | `TASK_RETENTION_DAYS` | `0` | days an ended task is kept before it is deleted with its events and webhook deliveries (`0` = keep every task) |
//! | `TASK_PRUNE_BATCH_SIZE` | `500` | ended tasks deleted per transaction by the retention |
//! | `TASK_PRUNE_PAUSE` | `1` | seconds between two retention batches |
//! | `TASK_PRUNE_INTERVAL` | `60` | seconds between retention passes once caught up |
//! | `SSE_MAX_STREAMS_PER_TENANT` | `100` | live task event streams one tenant may hold on one replica; past it 429 with `Retry-After` |
//! | `SSE_MAX_STREAM_SECONDS` | `3600` | lifetime of one event stream; it then ends and the client resumes with `Last-Event-ID` |
//! | `SSE_REREAD_SECONDS` | `5` | a live event stream re-reads the step log this often when no wake-up came (followers are woken by the database's notifications; this only catches up a missed one) |
//! | `SESSION_IDLE_TIMEOUT` | `1800` | seconds a web console session may go unused before it ends |
//! | `SESSION_ABSOLUTE_TIMEOUT` | `43200` | seconds after sign-in a web console session ends, used or not |
//! | `COOKIE_SECURE` | `false` | always mark the console's session cookie `Secure` (it is anyway when a trusted proxy reports HTTPS) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | unset | OTLP/HTTP collector base URL (spans go to `…/v1/traces`); unset = tracing off |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | unset | the full traces URL, used as given (wins over the base URL) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` | only `http/protobuf` is built in |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | empty | `name=value,…` sent with each export (secret) |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` | `10000` | milliseconds one export may take |
//! | `OTEL_SERVICE_NAME` | `digital-employee` | the `service.name` of every span |
//! | `OTEL_RESOURCE_ATTRIBUTES` | empty | `key=value,…` added to the resource |
//! | `OTEL_TRACES_SAMPLER` | `parentbased_always_on` | `always_on`, `always_off`, `traceidratio`, `parentbased_*` |
//! | `OTEL_TRACES_SAMPLER_ARG` | `1.0` | the ratio of the `*traceidratio` samplers |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | `2048` | spans waiting for export; past it spans are dropped and counted |
//! | `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | `512` | spans per export request |
//! | `OTEL_BSP_SCHEDULE_DELAY` | `5000` | milliseconds between exports |
//! | `OTEL_GENAI_CAPTURE_CONTENT` | `false` | record prompts and completions on `chat` spans, redacted |
//!
//! Nothing else in the crate calls `std::env::var`.
//!
//! Each area reads its own variables in its own file: `server.rs` (profile, listeners,
//! limits, shutdown), `telemetry.rs` (log level, health probes), `database.rs` (database,
//! pool, Redis, backups), `ai.rs` ([`AiConfig`], [`PriceSpec`]), `security.rs` (keys,
//! rate limit, CORS, redaction), `tasks.rs` ([`TaskConfig`]) and `console.rs`
//! ([`ConsoleConfig`]); [`Config::from_lookup`]
//! composes them, and `parse.rs` holds the readers they share. `config` sits below every
//! other module of the crate and imports none of them.

mod ai;
mod console;
mod database;
mod parse;
mod security;
mod server;
mod tasks;
mod telemetry;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use ai::{AiConfig, PriceSpec, ProviderFormat, ProviderSpec, VendorProxy};
pub use console::ConsoleConfig;
pub use database::{DatabaseUrl, redact_url_password};
pub use security::RedisFailure;
pub use server::AppEnv;
pub use tasks::TaskConfig;
pub use telemetry::{Sampling, TracingConfig};

/// The CPUs this process may run on (1 when the system cannot tell).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

use database::DatabaseSettings;
use parse::ser_secs;
use security::SecuritySettings;
use server::ServerSettings;
use telemetry::TelemetrySettings;

/// A configuration error: names the variable, what it holds and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    /// The variable, e.g. `PORT`.
    pub var: &'static str,
    /// Its value, redacted when it may hold a secret.
    pub value: String,
    /// What a valid value looks like.
    pub expected: &'static str,
}

/// A secret value. It is never printed: `Debug`, `Display` and `Serialize` all redact it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call sites that need it are few and obvious.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"[redacted]\"")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            s.serialize_str("")
        } else {
            s.serialize_str("[redacted]")
        }
    }
}

/// The whole typed configuration, built once at start.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// `APP_ENV`.
    pub app_env: AppEnv,
    /// `HOST`.
    pub host: IpAddr,
    /// `PORT`.
    pub port: u16,
    /// `PROMETHEUS_METRICS_PORT`.
    pub metrics_port: u16,
    /// `LOG_LEVEL`, lowercased.
    pub log_level: String,
    /// `DATA_DIR`.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`, or built from `DB_*`, or the SQLite file in `data_dir`.
    pub database_url: DatabaseUrl,
    /// `DB_MAX_CONNECTIONS`.
    pub db_max_connections: u32,
    /// `REDIS_URL`, or built from `REDIS_HOST`/`REDIS_PORT`.
    pub redis_url: Option<DatabaseUrl>,
    /// `AI_SERVICE_TIMEOUT` (also in [`AiConfig::timeout`]).
    #[serde(serialize_with = "ser_secs")]
    pub ai_service_timeout: Duration,
    /// `AI_SERVICE_RETRY_COUNT` (also in [`AiConfig::retries`]).
    pub ai_service_retry_count: u32,
    /// `AI_SERVICE_RETRY_DELAY` (also in [`AiConfig::retry_delay`]).
    #[serde(serialize_with = "ser_secs")]
    pub ai_service_retry_delay: Duration,
    /// `HEALTH_CHECK_INTERVAL`.
    #[serde(serialize_with = "ser_secs")]
    pub health_check_interval: Duration,
    /// `METRICS_BEARER_TOKEN`: empty = the metrics port answers anyone who reaches it.
    pub metrics_bearer_token: Secret,
    /// `JWT_SECRET_KEY`.
    pub jwt_secret_key: Secret,
    /// `JWT_SECRET_KEY_PREVIOUS`: still accepted for verification during a rotation.
    pub jwt_secret_key_previous: Secret,
    /// `JWT_ISSUER`: when set, tokens must carry this `iss` (and minted ones do).
    pub jwt_issuer: Option<String>,
    /// `JWT_AUDIENCE`: when set, tokens must carry this `aud` (and minted ones do).
    pub jwt_audience: Option<String>,
    /// `JWT_MAX_LIFETIME_SECONDS`: tokens whose `exp - iat` is longer are refused.
    #[serde(serialize_with = "ser_secs")]
    pub jwt_max_lifetime: Duration,
    /// `API_KEY_WHITELIST`.
    pub api_key_whitelist: Vec<Secret>,
    /// `OPENAI_API_KEY` (also in [`AiConfig::openai_api_key`]).
    pub openai_api_key: Secret,
    /// `CLAUDE_API_KEY`, else `ANTHROPIC_API_KEY` (also in [`AiConfig::anthropic_api_key`]).
    pub claude_api_key: Secret,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `SHUTDOWN_GRACE_PERIOD`.
    #[serde(serialize_with = "ser_secs")]
    pub shutdown_grace_period: Duration,
    /// `SHUTDOWN_DRAIN_DELAY`.
    #[serde(serialize_with = "ser_secs")]
    pub shutdown_drain_delay: Duration,
    /// `BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// `RETENTION_DAYS`.
    pub retention_days: u32,
    /// `AWS_S3_BUCKET`.
    pub aws_s3_bucket: Option<String>,
    /// `RATE_LIMIT_REQUESTS`.
    pub rate_limit_requests: u32,
    /// `TENANT_RATE_LIMIT_REQUESTS`: requests per window of all of a tenant's callers
    /// together (default ten times `RATE_LIMIT_REQUESTS`).
    pub tenant_rate_limit_requests: u32,
    /// `TENANT_MAX_KEYS`: active (not revoked) stored keys one tenant may have.
    pub tenant_max_keys: u32,
    /// `AUTH_FAILURE_LIMIT`: failed authentications per client address and window before
    /// the address is refused for the rest of the window.
    pub auth_failure_limit: u32,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client address.
    #[serde(serialize_with = "security::ser_nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `RATE_LIMIT_WINDOW_SECONDS`.
    #[serde(serialize_with = "ser_secs")]
    pub rate_limit_window: Duration,
    /// `RATE_LIMIT_REDIS_FAILURE`.
    pub rate_limit_redis_failure: RedisFailure,
    /// `RATE_LIMIT_KEY_PREFIX`.
    pub rate_limit_key_prefix: String,
    /// `CORS_ALLOWED_ORIGINS`, without trailing slashes.
    pub cors_allowed_origins: Vec<String>,
    /// `REDACT_EXTRA_PATTERNS`.
    pub redact_extra_patterns: Vec<String>,
    /// `EGRESS_ALLOW_CIDRS`: internal ranges tenants' outbound requests may reach.
    #[serde(serialize_with = "security::ser_nets")]
    pub egress_allow_cidrs: Vec<ipnet::IpNet>,
    /// `REQUEST_HEADER_TIMEOUT`.
    #[serde(serialize_with = "ser_secs")]
    pub request_header_timeout: Duration,
    /// `REQUEST_BODY_TIMEOUT`.
    #[serde(serialize_with = "ser_secs")]
    pub request_body_timeout: Duration,
    /// `API_THREADS`: threads that serve the API, each with its own event loop and vendor
    /// connections; `0` serves it on the shared runtime.
    pub api_threads: usize,
    /// The AI Service Layer's settings.
    pub ai: AiConfig,
    /// The Task Orchestrator's and Agent Runtime's settings.
    pub tasks: TaskConfig,
    /// The web console's settings.
    pub console: ConsoleConfig,
    /// Trace export (`OTEL_*`).
    pub tracing: TracingConfig,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_lookup(|k| vars.get(k).cloned())
    }

    /// Builds the configuration from any key lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An empty variable counts as unset, as shells and ConfigMaps often leave them so.
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let app_env = AppEnv::from_lookup(&get)?;
        let ServerSettings {
            host,
            port,
            metrics_port,
            max_body_bytes,
            shutdown_grace_period,
            shutdown_drain_delay,
            request_header_timeout,
            request_body_timeout,
            api_threads,
        } = ServerSettings::from_lookup(&get)?;
        let TelemetrySettings {
            log_level,
            health_check_interval,
            metrics_bearer_token,
        } = TelemetrySettings::from_lookup(&get)?;
        let DatabaseSettings {
            data_dir,
            database_url,
            db_max_connections,
            redis_url,
            backup_dir,
            retention_days,
            aws_s3_bucket,
        } = DatabaseSettings::from_lookup(&get)?;
        let ai = AiConfig::from_lookup(&get, redis_url.clone())?;
        let SecuritySettings {
            jwt_secret_key,
            jwt_secret_key_previous,
            jwt_issuer,
            jwt_audience,
            jwt_max_lifetime,
            api_key_whitelist,
            rate_limit_requests,
            tenant_rate_limit_requests,
            tenant_max_keys,
            auth_failure_limit,
            trusted_proxies,
            rate_limit_window,
            rate_limit_redis_failure,
            rate_limit_key_prefix,
            cors_allowed_origins,
            redact_extra_patterns,
            egress_allow_cidrs,
        } = SecuritySettings::from_lookup(&get, app_env)?;
        let tasks = TaskConfig::from_lookup(&get)?;
        let console = ConsoleConfig::from_lookup(&get)?;
        let tracing = TracingConfig::from_lookup(&get)?;

        Ok(Self {
            app_env,
            host,
            port,
            metrics_port,
            log_level,
            data_dir,
            database_url,
            db_max_connections,
            redis_url,
            ai_service_timeout: ai.timeout,
            ai_service_retry_count: ai.retries,
            ai_service_retry_delay: ai.retry_delay,
            health_check_interval,
            metrics_bearer_token,
            jwt_secret_key,
            jwt_secret_key_previous,
            jwt_issuer,
            jwt_audience,
            jwt_max_lifetime,
            api_key_whitelist,
            openai_api_key: ai.openai_api_key.clone(),
            claude_api_key: ai.anthropic_api_key.clone(),
            max_body_bytes,
            shutdown_grace_period,
            shutdown_drain_delay,
            backup_dir,
            retention_days,
            aws_s3_bucket,
            rate_limit_requests,
            tenant_rate_limit_requests,
            tenant_max_keys,
            auth_failure_limit,
            trusted_proxies,
            rate_limit_window,
            rate_limit_redis_failure,
            rate_limit_key_prefix,
            cors_allowed_origins,
            redact_extra_patterns,
            egress_allow_cidrs,
            request_header_timeout,
            request_body_timeout,
            api_threads,
            ai,
            tasks,
            console,
            tracing,
        })
    }

    /// The values of every configured secret, for the log redactor to remove should one
    /// ever reach a log line: keys, the JWT secret, and the passwords of database and
    /// Redis URLs.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.jwt_secret_key,
            &self.jwt_secret_key_previous,
            &self.metrics_bearer_token,
            &self.openai_api_key,
            &self.claude_api_key,
        ]
        .into_iter()
        .chain(self.api_key_whitelist.iter())
        .chain(self.tracing.headers.iter().map(|(_, v)| v))
        .filter(|s| !s.is_empty())
        .map(|s| s.expose().to_string())
        .collect();
        for url in std::iter::once(&self.database_url).chain(self.redis_url.iter()) {
            out.extend(database::url_password(url.expose()));
        }
        out
    }

    /// True when the database is the embedded SQLite file (the development default).
    pub fn is_embedded_db(&self) -> bool {
        !self.database_url.is_postgres()
    }
}

/// The configuration built from `(variable, value)` pairs, as the tests of every area
/// build it.
#[cfg(test)]
fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.app_env, AppEnv::Development);
        assert_eq!(c.port, 8000);
        assert_eq!(c.metrics_port, 9000);
        assert_eq!(c.log_level, "info");
        assert!(c.is_embedded_db());
        assert_eq!(
            c.database_url.expose(),
            "sqlite://./data/digital-employee.db"
        );
        assert_eq!(c.ai_service_timeout, Duration::from_secs(30));
        assert_eq!(c.ai_service_retry_count, 3);
        assert_eq!(c.ai_service_retry_delay, Duration::from_secs(2));
        assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
        assert!(c.redis_url.is_none());
        assert_eq!(c.backup_dir, PathBuf::from("./backups"));
        assert_eq!(c.retention_days, 7);
        assert!(c.aws_s3_bucket.is_none());
        assert_eq!(c.rate_limit_requests, 100);
        assert_eq!(c.rate_limit_window, Duration::from_secs(60));
        assert_eq!(c.rate_limit_redis_failure, RedisFailure::Open);
        assert!(c.cors_allowed_origins.is_empty());
        assert!(c.redact_extra_patterns.is_empty());
        assert_eq!(c.request_header_timeout, Duration::from_secs(10));
        assert_eq!(c.api_threads, cpus());
    }

    #[test]
    fn api_threads_takes_zero_to_256() {
        assert_eq!(cfg(&[("API_THREADS", "0")]).unwrap().api_threads, 0);
        assert_eq!(cfg(&[("API_THREADS", "3")]).unwrap().api_threads, 3);
        for bad in ["-1", "257", "two"] {
            let e = cfg(&[("API_THREADS", bad)]).unwrap_err();
            assert_eq!(e.var, "API_THREADS", "{bad}");
            assert!(e.to_string().contains("0 to 256"), "{e}");
        }
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let e = cfg(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.var, "PORT");
        assert!(e.to_string().contains("PORT=\"eighty\""));
        assert_eq!(cfg(&[("APP_ENV", "moon")]).unwrap_err().var, "APP_ENV");
        assert_eq!(
            cfg(&[("AI_SERVICE_TIMEOUT", "-1")]).unwrap_err().var,
            "AI_SERVICE_TIMEOUT"
        );
        assert_eq!(cfg(&[("LOG_LEVEL", "loud[")]).unwrap_err().var, "LOG_LEVEL");
        assert_eq!(
            cfg(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        assert_eq!(
            cfg(&[("MAX_BODY_BYTES", "0")]).unwrap_err().var,
            "MAX_BODY_BYTES"
        );
        assert_eq!(
            cfg(&[("RETENTION_DAYS", "a week")]).unwrap_err().var,
            "RETENTION_DAYS"
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = cfg(&[
            ("JWT_SECRET_KEY", "jwt-very-secret"),
            ("API_KEY_WHITELIST", "key-one, key-two"),
            ("OPENAI_API_KEY", "sk-openai-secret"),
            ("ANTHROPIC_API_KEY", "sk-ant-secret"),
            ("DATABASE_URL", "postgres://u:dbpass123@h/db"),
            ("REDIS_URL", "redis://:redispass@h:6379/0"),
        ])
        .unwrap();
        assert_eq!(c.api_key_whitelist.len(), 2);
        assert_eq!(c.claude_api_key.expose(), "sk-ant-secret");
        let dbg = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for s in [
            "jwt-very-secret",
            "key-one",
            "key-two",
            "sk-openai-secret",
            "sk-ant-secret",
            "dbpass123",
            "redispass",
        ] {
            assert!(!dbg.contains(s), "Debug leaks {s}");
            assert!(!json.contains(s), "JSON leaks {s}");
        }
        assert!(json.contains("postgres://u:***@h/db"));
    }
}
