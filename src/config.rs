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
//! | `DB_MAX_CONNECTIONS` | `16` | database pool size |
//! | `REDIS_URL` | unset | `redis://…`; or `REDIS_HOST` + `REDIS_PORT` (`6379`) |
//! | `AI_SERVICE_TIMEOUT` | `30` | seconds per vendor attempt |
//! | `AI_SERVICE_RETRY_COUNT` | `3` | retries per candidate |
//! | `AI_SERVICE_RETRY_DELAY` | `2` | seconds, base of the exponential backoff |
//! | `HEALTH_CHECK_INTERVAL` | `30` | seconds between background health probes |
//! | `JWT_SECRET_KEY` | unset | HS256 signing key (secret) |
//! | `API_KEY_WHITELIST` | empty | comma-separated bootstrap admin keys (secret) |
//! | `OPENAI_API_KEY` | unset | OpenAI key (secret) |
//! | `CLAUDE_API_KEY` / `ANTHROPIC_API_KEY` | unset | Anthropic key (secret) |
//! | `OPENAI_BASE_URL` | `https://api.openai.com/v1` | OpenAI-format endpoint (any compatible server) |
//! | `ANTHROPIC_BASE_URL` | `https://api.anthropic.com` | Anthropic endpoint |
//! | `AI_PROVIDERS` | empty | JSON list of extra providers `[{"name","format":"openai"\|"anthropic","base_url","api_key"?,"api_version"?}]` |
//! | `AI_MODEL_ALIASES` | empty | JSON map alias → fallback chain, e.g. `{"fast":["openai/gpt-4o-mini","anthropic/claude-3-5-haiku-latest"]}` |
//! | `AI_PRICES` | built-in table | JSON map overriding prices (USD per million tokens) |
//! | `AI_RETRY_AFTER_MAX` | `60` | longest `Retry-After` (seconds) honoured before moving on |
//! | `AI_BREAKER_THRESHOLD` | `5` | consecutive failures that open a provider's circuit |
//! | `AI_BREAKER_COOLDOWN` | `30` | seconds before an open circuit lets a probe through |
//! | `AI_CACHE` | `on` | exact-match result cache `on`/`off` |
//! | `AI_CACHE_TTL` | `300` | seconds a cached result lives |
//! | `AI_CACHE_MAX_ENTRIES` | `10000` | in-memory cache capacity |
//! | `MAX_BODY_BYTES` | `1048576` | largest accepted request body |
//! | `SHUTDOWN_GRACE_PERIOD` | `30` | seconds in-flight requests get after SIGTERM |
//! | `SHUTDOWN_DRAIN_DELAY` | `1` | seconds the listener keeps answering (with `Connection: close`) after SIGTERM before it may close |
//! | `RATE_LIMIT_REQUESTS` | `100` | requests per key (or token subject) per window; a key's own `rate_limit` overrides it |
//! | `RATE_LIMIT_WINDOW_SECONDS` | `60` | length of the sliding window, whole seconds |
//! | `RATE_LIMIT_REDIS_FAILURE` | `open` | when Redis is unreachable: `open` (allow, count `rate_limit_redis_errors_total`) or `closed` (503) |
//! | `RATE_LIMIT_KEY_PREFIX` | `de:rl:` | prefix of the rate-limit keys in Redis |
//! | `CORS_ALLOWED_ORIGINS` | empty | comma-separated origins allowed cross-origin (`*` for any); empty = CORS closed |
//! | `REDACT_EXTRA_PATTERNS` | empty | extra regexes redacted from logs: a JSON array of strings, or one regex per line |
//! | `REQUEST_HEADER_TIMEOUT` | `10` | seconds a client gets to send the request headers |
//! | `REQUEST_BODY_TIMEOUT` | `30` | seconds a client gets to send the request body |
//! | `BACKUP_DIR` | `./backups` | where `digital-employee backup` writes `db_backup_*` files and `backup.log` |
//! | `RETENTION_DAYS` | `7` | backups older than this many days are deleted after a backup (`0` keeps all) |
//! | `AWS_S3_BUCKET` | unset | when set, each backup is also uploaded with the `aws` CLI to `s3://BUCKET/backups/` |
//! | `WORKERS_ENABLED` | `on` | run the task worker pool, reaper and scheduler in this replica (`on`/`off`) |
//! | `WORKER_CONCURRENCY` | `16` | tasks one replica runs at once |
//! | `TASK_LEASE_SECONDS` | `30` | lease of a running task; renewed every third of it |
//! | `TASK_POLL_INTERVAL` | `1` | seconds between queue polls when no wake-up arrives |
//! | `TASK_MAX_ATTEMPTS` | `3` | default attempts of a task (1–20) |
//! | `TASK_RETRY_BASE_DELAY` | `2` | seconds, base of the exponential retry backoff |
//! | `TASK_DEADLINE_SECONDS` | `600` | wall-clock limit of one attempt; past it the task fails |
//! | `TASK_COST_CAP_USD` | unset | cost one task may reach (USD); unset = no cap |
//! | `DELEGATION_MAX_DEPTH` | `3` | how deep `delegate` may nest sub-tasks |
//! | `HTTP_TOOL_ALLOWED_HOSTS` | empty | comma-separated hosts (`host` or `host:port`) the `http_request` tool may call |
//! | `HTTP_TOOL_TIMEOUT` | `10` | seconds per `http_request` call |
//! | `HTTP_TOOL_MAX_BYTES` | `65536` | response bytes kept by `http_request` and webhook tools |
//! | `SCHEDULER_INTERVAL` | `1` | seconds between scans for due schedules |
//! | `WEBHOOK_MAX_ATTEMPTS` | `5` | attempts of a completion webhook before it is given up (1–50) |
//! | `WEBHOOK_RETRY_BASE_DELAY` | `2` | seconds, base of the webhook retry backoff (doubles per attempt) |
//! | `WEBHOOK_TIMEOUT` | `10` | seconds one webhook attempt may take |
//! | `WEBHOOK_POLL_INTERVAL` | `1` | seconds between scans for due webhook deliveries |
//!
//! Nothing else in the crate calls `std::env::var`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// A configuration error: names the variable, what it holds and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// A secret value. It is never printed: `Debug`, `Display` and `Serialize` all redact it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call sites that need it are few and obvious.
    pub fn expose(&self) -> &str {
        &self.0
    }
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

/// Deployment profile named by `APP_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    Development,
    Testing,
    Staging,
    Production,
}

/// A database URL whose password is redacted when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
    pub fn is_postgres(&self) -> bool {
        let u = self.expose();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }
    /// The URL with any `user:password@` password replaced, safe to print.
    pub fn redacted(&self) -> String {
        redact_url_password(self.expose())
    }
}

/// The password of `scheme://user:password@host…`, as written and percent-decoded.
fn url_password(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else {
        return Vec::new();
    };
    let rest = &url[scheme_end + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return Vec::new();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return Vec::new();
    };
    let raw = &userinfo[colon + 1..];
    if raw.is_empty() {
        return Vec::new();
    }
    let mut out = vec![raw.to_string()];
    let decoded: String =
        form_urlencoded::parse(format!("p={}", raw.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
    if !decoded.is_empty() && decoded != raw {
        out.push(decoded);
    }
    out
}

/// Replaces the password of `scheme://user:password@host…` with `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// The whole typed configuration, built once at start.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub app_env: AppEnv,
    pub host: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    pub log_level: String,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub db_max_connections: u32,
    pub redis_url: Option<DatabaseUrl>,
    #[serde(serialize_with = "ser_secs")]
    pub ai_service_timeout: Duration,
    pub ai_service_retry_count: u32,
    #[serde(serialize_with = "ser_secs")]
    pub ai_service_retry_delay: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub health_check_interval: Duration,
    pub jwt_secret_key: Secret,
    pub api_key_whitelist: Vec<Secret>,
    pub openai_api_key: Secret,
    pub claude_api_key: Secret,
    pub max_body_bytes: usize,
    #[serde(serialize_with = "ser_secs")]
    pub shutdown_grace_period: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub shutdown_drain_delay: Duration,
    pub backup_dir: PathBuf,
    pub retention_days: u32,
    pub aws_s3_bucket: Option<String>,
    pub rate_limit_requests: u32,
    #[serde(serialize_with = "ser_secs")]
    pub rate_limit_window: Duration,
    pub rate_limit_redis_failure: RedisFailure,
    pub rate_limit_key_prefix: String,
    pub cors_allowed_origins: Vec<String>,
    pub redact_extra_patterns: Vec<String>,
    #[serde(serialize_with = "ser_secs")]
    pub request_header_timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub request_body_timeout: Duration,
    pub ai: AiConfig,
    pub tasks: TaskConfig,
}

/// Settings of the Task Orchestrator and the Agent Runtime.
#[derive(Clone, Debug, Serialize)]
pub struct TaskConfig {
    pub workers_enabled: bool,
    pub worker_concurrency: u32,
    #[serde(serialize_with = "ser_secs")]
    pub lease: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub poll_interval: Duration,
    pub max_attempts: i32,
    #[serde(serialize_with = "ser_secs")]
    pub retry_base_delay: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub deadline: Duration,
    /// Nano-dollars; `None` = no cap.
    pub cost_cap_nanos: Option<i64>,
    pub delegation_max_depth: i32,
    pub http_allowed_hosts: Vec<String>,
    #[serde(serialize_with = "ser_secs")]
    pub http_timeout: Duration,
    pub http_max_bytes: usize,
    #[serde(serialize_with = "ser_secs")]
    pub scheduler_interval: Duration,
    pub webhook_max_attempts: i32,
    #[serde(serialize_with = "ser_secs")]
    pub webhook_retry_base_delay: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub webhook_timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub webhook_poll_interval: Duration,
}

fn task_config(get: &impl Fn(&str) -> Option<String>) -> Result<TaskConfig, ConfigError> {
    let workers_enabled = match get("WORKERS_ENABLED").map(|v| v.to_ascii_lowercase()) {
        None => true,
        Some(v) if matches!(v.as_str(), "on" | "true" | "1" | "yes") => true,
        Some(v) if matches!(v.as_str(), "off" | "false" | "0" | "no") => false,
        Some(v) => {
            return Err(ConfigError {
                var: "WORKERS_ENABLED",
                value: v,
                expected: "on or off",
            });
        }
    };
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
    let http_allowed_hosts = get("HTTP_TOOL_ALLOWED_HOSTS")
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    Ok(TaskConfig {
        workers_enabled,
        worker_concurrency: positive("WORKER_CONCURRENCY", "16", 4096)? as u32,
        lease,
        poll_interval,
        max_attempts: positive("TASK_MAX_ATTEMPTS", "3", 20)? as i32,
        retry_base_delay: secs(get, "TASK_RETRY_BASE_DELAY", "2")?,
        deadline: secs(get, "TASK_DEADLINE_SECONDS", "600")?,
        cost_cap_nanos,
        delegation_max_depth: positive("DELEGATION_MAX_DEPTH", "3", 16)? as i32,
        http_allowed_hosts,
        http_timeout: secs(get, "HTTP_TOOL_TIMEOUT", "10")?,
        http_max_bytes: positive("HTTP_TOOL_MAX_BYTES", "65536", 16 * 1024 * 1024)? as usize,
        scheduler_interval: secs(get, "SCHEDULER_INTERVAL", "1")?.max(Duration::from_millis(10)),
        webhook_max_attempts: positive("WEBHOOK_MAX_ATTEMPTS", "5", 50)? as i32,
        webhook_retry_base_delay: secs(get, "WEBHOOK_RETRY_BASE_DELAY", "2")?,
        webhook_timeout: secs(get, "WEBHOOK_TIMEOUT", "10")?.max(Duration::from_millis(10)),
        webhook_poll_interval: secs(get, "WEBHOOK_POLL_INTERVAL", "1")?
            .max(Duration::from_millis(10)),
    })
}

/// What the rate limiter does when Redis cannot be reached (`RATE_LIMIT_REDIS_FAILURE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFailure {
    /// Let the request through unlimited and count the failure (the default: an outage of
    /// the limiter's store should not become an outage of the API).
    Open,
    /// Refuse the request with 503 until Redis answers again.
    Closed,
}

/// Wire format of a configured AI provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderFormat {
    Openai,
    Anthropic,
}

/// An extra provider from `AI_PROVIDERS`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProviderSpec {
    pub name: String,
    pub format: ProviderFormat,
    pub base_url: String,
    #[serde(default, deserialize_with = "de_secret")]
    pub api_key: Secret,
    #[serde(default)]
    pub api_version: Option<String>,
}

fn de_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Ok(Secret::new(<String as serde::Deserialize>::deserialize(d)?))
}

/// Settings of the AI Service Layer (vendors, router, cache).
#[derive(Clone, Debug, Serialize)]
pub struct AiConfig {
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(serialize_with = "ser_secs")]
    pub retry_delay: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub max_retry_after: Duration,
    pub breaker_threshold: u32,
    #[serde(serialize_with = "ser_secs")]
    pub breaker_cooldown: Duration,
    pub openai_api_key: Secret,
    pub openai_base_url: String,
    pub openai_base_url_set: bool,
    pub anthropic_api_key: Secret,
    pub anthropic_base_url: String,
    pub anthropic_base_url_set: bool,
    pub extra_providers: Vec<ProviderSpec>,
    pub aliases: HashMap<String, Vec<String>>,
    #[serde(skip)]
    pub prices: HashMap<String, crate::ai::pricing::PriceSpec>,
    pub cache_enabled: bool,
    #[serde(serialize_with = "ser_secs")]
    pub cache_ttl: Duration,
    pub cache_max_entries: u64,
    pub redis_url: Option<DatabaseUrl>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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

        let app_env = match get("APP_ENV").map(|v| v.to_ascii_lowercase()) {
            None => AppEnv::Development,
            Some(v) => match v.as_str() {
                "development" | "dev" => AppEnv::Development,
                "testing" | "test" => AppEnv::Testing,
                "staging" => AppEnv::Staging,
                "production" | "prod" => AppEnv::Production,
                _ => {
                    return Err(ConfigError {
                        var: "APP_ENV",
                        value: v,
                        expected: "one of development, testing, staging, production",
                    });
                }
            },
        };
        let host = parse(&get, "HOST", "0.0.0.0", "an IP address such as 0.0.0.0")?;
        let port = parse(&get, "PORT", "8000", "a TCP port number (0-65535)")?;
        let metrics_port = parse(
            &get,
            "PROMETHEUS_METRICS_PORT",
            "9000",
            "a TCP port number (0-65535)",
        )?;
        let log_level = parse_log_level(get("LOG_LEVEL"))?;
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database_url = database_url(&get, &data_dir)?;
        let db_max_connections: u32 = parse(
            &get,
            "DB_MAX_CONNECTIONS",
            "16",
            "a positive number of connections",
        )?;
        if db_max_connections == 0 {
            return Err(ConfigError {
                var: "DB_MAX_CONNECTIONS",
                value: "0".into(),
                expected: "a positive number of connections",
            });
        }
        let redis_url = match (get("REDIS_URL"), get("REDIS_HOST")) {
            (Some(url), _) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(ConfigError {
                        var: "REDIS_URL",
                        value: redact_url_password(&url),
                        expected: "a redis:// or rediss:// URL",
                    });
                }
                Some(DatabaseUrl::new(url))
            }
            (None, Some(host)) => {
                let port: u16 = parse(&get, "REDIS_PORT", "6379", "a TCP port number")?;
                Some(DatabaseUrl::new(format!("redis://{host}:{port}/0")))
            }
            (None, None) => None,
        };
        let ai_service_timeout = secs(&get, "AI_SERVICE_TIMEOUT", "30")?;
        let ai_service_retry_count = parse(
            &get,
            "AI_SERVICE_RETRY_COUNT",
            "3",
            "a non-negative whole number of retries",
        )?;
        let ai_service_retry_delay = secs(&get, "AI_SERVICE_RETRY_DELAY", "2")?;
        let health_check_interval = secs(&get, "HEALTH_CHECK_INTERVAL", "30")?;
        let jwt_secret_key = Secret::new(get("JWT_SECRET_KEY").unwrap_or_default());
        let api_key_whitelist = get("API_KEY_WHITELIST")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
            .collect();
        let openai_api_key = Secret::new(get("OPENAI_API_KEY").unwrap_or_default());
        let claude_api_key = Secret::new(
            get("CLAUDE_API_KEY")
                .or_else(|| get("ANTHROPIC_API_KEY"))
                .unwrap_or_default(),
        );
        let max_body_bytes: usize = parse(
            &get,
            "MAX_BODY_BYTES",
            "1048576",
            "a positive number of bytes",
        )?;
        if max_body_bytes == 0 {
            return Err(ConfigError {
                var: "MAX_BODY_BYTES",
                value: "0".into(),
                expected: "a positive number of bytes",
            });
        }
        let shutdown_grace_period = secs(&get, "SHUTDOWN_GRACE_PERIOD", "30")?;
        let shutdown_drain_delay = secs(&get, "SHUTDOWN_DRAIN_DELAY", "1")?;
        let ai = ai_config(
            &get,
            ai_service_timeout,
            ai_service_retry_count,
            ai_service_retry_delay,
            &openai_api_key,
            &claude_api_key,
            redis_url.clone(),
        )?;
        if matches!(app_env, AppEnv::Staging | AppEnv::Production)
            && !jwt_secret_key.is_empty()
            && jwt_secret_key.expose().len() < 32
        {
            return Err(ConfigError {
                var: "JWT_SECRET_KEY",
                value: "[redacted]".into(),
                expected: "at least 32 bytes in staging and production",
            });
        }
        let rate_limit_requests: u32 = parse(
            &get,
            "RATE_LIMIT_REQUESTS",
            "100",
            "a positive whole number of requests",
        )?;
        if rate_limit_requests == 0 {
            return Err(ConfigError {
                var: "RATE_LIMIT_REQUESTS",
                value: "0".into(),
                expected: "a positive whole number of requests",
            });
        }
        let window: u64 = parse(
            &get,
            "RATE_LIMIT_WINDOW_SECONDS",
            "60",
            "a whole number of seconds between 1 and 86400",
        )?;
        if !(1..=86_400).contains(&window) {
            return Err(ConfigError {
                var: "RATE_LIMIT_WINDOW_SECONDS",
                value: window.to_string(),
                expected: "a whole number of seconds between 1 and 86400",
            });
        }
        let rate_limit_redis_failure = match get("RATE_LIMIT_REDIS_FAILURE")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("open") => RedisFailure::Open,
            Some("closed") => RedisFailure::Closed,
            Some(other) => {
                return Err(ConfigError {
                    var: "RATE_LIMIT_REDIS_FAILURE",
                    value: other.to_string(),
                    expected: "open or closed",
                });
            }
        };
        let rate_limit_key_prefix = get("RATE_LIMIT_KEY_PREFIX").unwrap_or_else(|| "de:rl:".into());
        let cors_allowed_origins = cors_origins(get("CORS_ALLOWED_ORIGINS"))?;
        let redact_extra_patterns = redact_patterns(get("REDACT_EXTRA_PATTERNS"))?;
        let request_header_timeout = positive_secs(&get, "REQUEST_HEADER_TIMEOUT", "10")?;
        let request_body_timeout = positive_secs(&get, "REQUEST_BODY_TIMEOUT", "30")?;
        let backup_dir = PathBuf::from(get("BACKUP_DIR").unwrap_or_else(|| "./backups".into()));
        let retention_days = parse(
            &get,
            "RETENTION_DAYS",
            "7",
            "a non-negative whole number of days (0 keeps every backup)",
        )?;
        let aws_s3_bucket = get("AWS_S3_BUCKET");
        let tasks = task_config(&get)?;

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
            ai_service_timeout,
            ai_service_retry_count,
            ai_service_retry_delay,
            health_check_interval,
            jwt_secret_key,
            api_key_whitelist,
            openai_api_key,
            claude_api_key,
            max_body_bytes,
            shutdown_grace_period,
            shutdown_drain_delay,
            ai,
            rate_limit_requests,
            rate_limit_window: Duration::from_secs(window),
            rate_limit_redis_failure,
            rate_limit_key_prefix,
            cors_allowed_origins,
            redact_extra_patterns,
            request_header_timeout,
            request_body_timeout,
            backup_dir,
            retention_days,
            aws_s3_bucket,
            tasks,
        })
    }

    /// The values of every configured secret, for the log redactor to remove should one
    /// ever reach a log line: keys, the JWT secret, and the passwords of database and
    /// Redis URLs.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.jwt_secret_key,
            &self.openai_api_key,
            &self.claude_api_key,
        ]
        .into_iter()
        .chain(self.api_key_whitelist.iter())
        .filter(|s| !s.is_empty())
        .map(|s| s.expose().to_string())
        .collect();
        for url in std::iter::once(&self.database_url).chain(self.redis_url.iter()) {
            out.extend(url_password(url.expose()));
        }
        out
    }

    /// True when the database is the embedded SQLite file (the development default).
    pub fn is_embedded_db(&self) -> bool {
        !self.database_url.is_postgres()
    }
}

fn ai_config(
    get: &impl Fn(&str) -> Option<String>,
    timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    openai_api_key: &Secret,
    anthropic_api_key: &Secret,
    redis_url: Option<DatabaseUrl>,
) -> Result<AiConfig, ConfigError> {
    let url = |var: &'static str, default: &str| -> Result<(String, bool), ConfigError> {
        match get(var) {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok((u, true)),
            Some(u) => Err(ConfigError {
                var,
                value: u,
                expected: "an http:// or https:// URL",
            }),
            None => Ok((default.to_string(), false)),
        }
    };
    let (openai_base_url, openai_base_url_set) =
        url("OPENAI_BASE_URL", "https://api.openai.com/v1")?;
    let (anthropic_base_url, anthropic_base_url_set) =
        url("ANTHROPIC_BASE_URL", "https://api.anthropic.com")?;
    let json_var = |var: &'static str,
                    expected: &'static str|
     -> Result<Option<serde_json::Value>, ConfigError> {
        get(var)
            .map(|v| {
                serde_json::from_str(&v).map_err(|_| ConfigError {
                    var,
                    // Never echo a value that may hold keys.
                    value: if var == "AI_PROVIDERS" {
                        "[redacted]".into()
                    } else {
                        v.clone()
                    },
                    expected,
                })
            })
            .transpose()
    };
    const PROVIDERS: &str = "a JSON list of {\"name\",\"format\":\"openai\"|\"anthropic\",\"base_url\",\"api_key\"?,\"api_version\"?}";
    let extra_providers: Vec<ProviderSpec> = match json_var("AI_PROVIDERS", PROVIDERS)? {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v).map_err(|_| ConfigError {
            var: "AI_PROVIDERS",
            value: "[redacted]".into(),
            expected: PROVIDERS,
        })?,
    };
    for p in &extra_providers {
        let name_ok = !p.name.is_empty()
            && p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok || !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
            return Err(ConfigError {
                var: "AI_PROVIDERS",
                value: p.name.clone(),
                expected: "provider names of a-z, 0-9, '-', '_' and http(s) base URLs",
            });
        }
    }
    const ALIASES: &str = "a JSON object mapping an alias to a list of provider/model";
    let aliases: HashMap<String, Vec<String>> = match json_var("AI_MODEL_ALIASES", ALIASES)? {
        None => HashMap::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| ConfigError {
            var: "AI_MODEL_ALIASES",
            value: v.to_string(),
            expected: ALIASES,
        })?,
    };
    if let Some((alias, _)) = aliases
        .iter()
        .find(|(_, chain)| chain.is_empty() || chain.iter().any(|c| !c.contains('/')))
    {
        return Err(ConfigError {
            var: "AI_MODEL_ALIASES",
            value: alias.clone(),
            expected: ALIASES,
        });
    }
    const PRICES: &str = "a JSON object {\"model\": {\"input\": USD, \"output\": USD, \"cached_input\"?: USD}} per million tokens";
    let prices = match json_var("AI_PRICES", PRICES)? {
        None => HashMap::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| ConfigError {
            var: "AI_PRICES",
            value: v.to_string(),
            expected: PRICES,
        })?,
    };
    let cache_enabled = match get("AI_CACHE").map(|v| v.to_ascii_lowercase()) {
        None => true,
        Some(v) if matches!(v.as_str(), "on" | "true" | "1" | "yes") => true,
        Some(v) if matches!(v.as_str(), "off" | "false" | "0" | "no") => false,
        Some(v) => {
            return Err(ConfigError {
                var: "AI_CACHE",
                value: v,
                expected: "on or off",
            });
        }
    };
    Ok(AiConfig {
        timeout,
        retries,
        retry_delay,
        max_retry_after: secs(get, "AI_RETRY_AFTER_MAX", "60")?,
        breaker_threshold: parse(get, "AI_BREAKER_THRESHOLD", "5", "a positive whole number")?,
        breaker_cooldown: secs(get, "AI_BREAKER_COOLDOWN", "30")?,
        openai_api_key: openai_api_key.clone(),
        openai_base_url,
        openai_base_url_set,
        anthropic_api_key: anthropic_api_key.clone(),
        anthropic_base_url,
        anthropic_base_url_set,
        extra_providers,
        aliases,
        prices,
        cache_enabled,
        cache_ttl: secs(get, "AI_CACHE_TTL", "300")?,
        cache_max_entries: parse(
            get,
            "AI_CACHE_MAX_ENTRIES",
            "10000",
            "a whole number of entries",
        )?,
        redis_url,
    })
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    let value = get(var).unwrap_or_else(|| default.to_string());
    value.parse().map_err(|_| ConfigError {
        var,
        value,
        expected,
    })
}

/// Seconds, whole or fractional (`2`, `0.5`).
fn secs(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    const EXPECTED: &str = "a non-negative number of seconds such as 30 or 0.5";
    let value = get(var).unwrap_or_else(|| default.to_string());
    let v: f64 = value.parse().map_err(|_| ConfigError {
        var,
        value: value.clone(),
        expected: EXPECTED,
    })?;
    if !v.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&v) {
        return Err(ConfigError {
            var,
            value,
            expected: EXPECTED,
        });
    }
    Ok(Duration::from_secs_f64(v))
}

/// Like [`secs`] but zero is refused (a zero timeout would refuse every request).
fn positive_secs(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let d = secs(get, var, default)?;
    if d.is_zero() {
        return Err(ConfigError {
            var,
            value: "0".into(),
            expected: "a positive number of seconds",
        });
    }
    Ok(d)
}

/// `https://a.example, https://b.example`, or `*`; each an origin without a path.
fn cors_origins(value: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(v) = value else {
        return Ok(Vec::new());
    };
    let origins: Vec<String> = v
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect();
    for o in &origins {
        let ok = o == "*"
            || ((o.starts_with("http://") || o.starts_with("https://"))
                && !o
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/'))
                && axum::http::HeaderValue::from_str(o).is_ok());
        if !ok {
            return Err(ConfigError {
                var: "CORS_ALLOWED_ORIGINS",
                value: v.clone(),
                expected: "comma-separated origins such as https://app.example.com, or *",
            });
        }
    }
    if origins.len() > 1 && origins.iter().any(|o| o == "*") {
        return Err(ConfigError {
            var: "CORS_ALLOWED_ORIGINS",
            value: v,
            expected: "either * alone or a list of origins",
        });
    }
    Ok(origins)
}

/// A JSON array of regexes, or one regex per line; each must compile.
fn redact_patterns(value: Option<String>) -> Result<Vec<String>, ConfigError> {
    const EXPECTED: &str =
        "a JSON array of regular expressions, or one regular expression per line";
    let Some(v) = value else {
        return Ok(Vec::new());
    };
    let patterns: Vec<String> = if v.starts_with('[') {
        serde_json::from_str(&v).map_err(|_| ConfigError {
            var: "REDACT_EXTRA_PATTERNS",
            value: v.clone(),
            expected: EXPECTED,
        })?
    } else {
        v.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    for p in &patterns {
        if p.is_empty() || regex::Regex::new(p).is_err() {
            return Err(ConfigError {
                var: "REDACT_EXTRA_PATTERNS",
                value: p.clone(),
                expected: EXPECTED,
            });
        }
    }
    Ok(patterns)
}

fn parse_log_level(value: Option<String>) -> Result<String, ConfigError> {
    let Some(v) = value else {
        return Ok("info".into());
    };
    let lower = v.to_ascii_lowercase();
    let lower = match lower.as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        _ => lower,
    };
    if tracing_subscriber::EnvFilter::try_new(&lower).is_err() {
        return Err(ConfigError {
            var: "LOG_LEVEL",
            value: v,
            expected: "trace, debug, info, warn or error (or a tracing filter directive)",
        });
    }
    Ok(lower)
}

fn database_url(
    get: &impl Fn(&str) -> Option<String>,
    data_dir: &std::path::Path,
) -> Result<DatabaseUrl, ConfigError> {
    if let Some(url) = get("DATABASE_URL") {
        let ok = url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !ok {
            return Err(ConfigError {
                var: "DATABASE_URL",
                value: redact_url_password(&url),
                expected: "a sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB URL",
            });
        }
        return Ok(DatabaseUrl::new(url));
    }
    if let Some(host) = get("DB_HOST") {
        let port: u16 = parse(get, "DB_PORT", "5432", "a TCP port number (0-65535)")?;
        let name = get("DB_NAME").unwrap_or_else(|| "digital_employee".into());
        let user = get("DB_USER").unwrap_or_else(|| "user".into());
        let password = get("DB_PASSWORD").unwrap_or_default();
        let auth = if password.is_empty() {
            pct(&user)
        } else {
            format!("{}:{}", pct(&user), pct(&password))
        };
        return Ok(DatabaseUrl::new(format!(
            "postgres://{auth}@{host}:{port}/{}",
            pct(&name)
        )));
    }
    let path = data_dir.join("digital-employee.db");
    Ok(DatabaseUrl::new(format!("sqlite://{}", path.display())))
}

/// Percent-encodes a URL userinfo or path component.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

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
    }

    #[test]
    fn security_settings_are_validated() {
        for (var, value) in [
            ("RATE_LIMIT_REQUESTS", "0"),
            ("RATE_LIMIT_REQUESTS", "many"),
            ("RATE_LIMIT_WINDOW_SECONDS", "0"),
            ("RATE_LIMIT_REDIS_FAILURE", "maybe"),
            ("CORS_ALLOWED_ORIGINS", "app.example.com"),
            ("CORS_ALLOWED_ORIGINS", "https://a.example/path"),
            ("CORS_ALLOWED_ORIGINS", "*,https://a.example"),
            ("REDACT_EXTRA_PATTERNS", "(unclosed"),
            ("REDACT_EXTRA_PATTERNS", "[\"ok\", 3]"),
            ("REQUEST_HEADER_TIMEOUT", "0"),
        ] {
            assert_eq!(cfg(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
        let c = cfg(&[
            ("RATE_LIMIT_REDIS_FAILURE", "CLOSED"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://a.example/, http://localhost:3000",
            ),
            ("REDACT_EXTRA_PATTERNS", "[\"ORD-\\\\d+\", \"x{2,3}\"]"),
        ])
        .unwrap();
        assert_eq!(c.rate_limit_redis_failure, RedisFailure::Closed);
        assert_eq!(
            c.cors_allowed_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
        assert_eq!(c.redact_extra_patterns, vec!["ORD-\\d+", "x{2,3}"]);
        let e = cfg(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET_KEY", "short-secret"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "JWT_SECRET_KEY");
        assert!(!e.to_string().contains("short-secret"));
    }

    #[test]
    fn db_parts_build_a_postgres_url() {
        let c = cfg(&[
            ("DB_HOST", "postgresql-service"),
            ("DB_USER", "app"),
            ("DB_PASSWORD", "p@ss/word"),
        ])
        .unwrap();
        assert!(c.database_url.is_postgres());
        assert_eq!(
            c.database_url.expose(),
            "postgres://app:p%40ss%2Fword@postgresql-service:5432/digital_employee"
        );
        assert!(!format!("{c:?}").contains("p%40ss"));
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
    fn ai_settings_parse_and_name_bad_values() {
        let c = cfg(&[
            ("AI_PROVIDERS", r#"[{"name":"local","format":"openai","base_url":"http://127.0.0.1:9/v1","api_key":"sk-local-secret"}]"#),
            ("AI_MODEL_ALIASES", r#"{"fast":["local/llama","sandbox/sandbox-1"]}"#),
            ("AI_PRICES", r#"{"local/llama":{"input":0.1,"output":0.2}}"#),
            ("AI_CACHE", "off"),
        ])
        .unwrap();
        assert_eq!(c.ai.extra_providers[0].format, ProviderFormat::Openai);
        assert_eq!(c.ai.aliases["fast"].len(), 2);
        assert!(!c.ai.cache_enabled);
        assert!(!format!("{c:?}").contains("sk-local-secret"));
        let e = cfg(&[("AI_PROVIDERS", r#"[{"name":"x","api_key":"sk-leak"}]"#)]).unwrap_err();
        assert_eq!(e.var, "AI_PROVIDERS");
        assert!(!e.to_string().contains("sk-leak"));
        assert_eq!(
            cfg(&[("AI_MODEL_ALIASES", r#"{"a":["nomodel"]}"#)])
                .unwrap_err()
                .var,
            "AI_MODEL_ALIASES"
        );
        assert_eq!(
            cfg(&[("OPENAI_BASE_URL", "ftp://x")]).unwrap_err().var,
            "OPENAI_BASE_URL"
        );
        assert_eq!(cfg(&[("AI_CACHE", "maybe")]).unwrap_err().var, "AI_CACHE");
    }

    #[test]
    fn uppercase_levels_from_the_specification_are_accepted() {
        assert_eq!(cfg(&[("LOG_LEVEL", "INFO")]).unwrap().log_level, "info");
        assert_eq!(cfg(&[("LOG_LEVEL", "WARNING")]).unwrap().log_level, "warn");
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

    #[test]
    fn url_redaction_keeps_urls_without_password() {
        assert_eq!(redact_url_password("sqlite://./x.db"), "sqlite://./x.db");
        assert_eq!(
            redact_url_password("postgres://u@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(
            redact_url_password("postgres://u:p@h:5/db?x=1"),
            "postgres://u:***@h:5/db?x=1"
        );
    }
}
