//! The health checker behind `digital-employee health-check`.
//!
//! Every selected check runs concurrently under its own timeout and yields one JSON
//! object with at least `healthy`; the report is the specification's
//! `{timestamp, overall_status, checks{name: {healthy, …}}}`. A check that cannot run
//! (timeout, refused connection, missing tool) is unhealthy with an `error` field; a
//! check with nothing to check (no `REDIS_URL`, no AI key) is healthy with `skipped`.
//!
//! Selecting only `app` touches nothing but HTTP, so it serves as the container
//! `HEALTHCHECK` without database credentials or files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::sysinfo;
use crate::config::Config;

/// The checks `--only` can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum CheckKind {
    /// `/health` and `/ready` of `--url`.
    App,
    /// The configured database.
    #[value(alias = "db")]
    Database,
    /// `INFO` of `REDIS_URL` (skipped when unset).
    Redis,
    /// Each AI provider whose key is configured (skipped when none).
    Ai,
    /// CPU, memory, load average.
    System,
    /// Free space of the data directory's file system.
    Disk,
}

impl CheckKind {
    pub const ALL: [CheckKind; 6] = [
        CheckKind::App,
        CheckKind::Database,
        CheckKind::Redis,
        CheckKind::Ai,
        CheckKind::System,
        CheckKind::Disk,
    ];
}

/// Thresholds, endpoints and selection.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    pub only: Vec<CheckKind>,
    pub timeout: Duration,
    pub cpu_threshold: f64,
    pub memory_threshold: f64,
    pub disk_threshold: f64,
    /// PostgreSQL connections in use against `max_connections`, percent.
    pub db_connections_threshold: f64,
    /// File system to check; `None` = the data directory if it exists, else `/`.
    pub disk_path: Option<PathBuf>,
    pub openai_base_url: String,
    pub anthropic_base_url: String,
}

impl Options {
    pub fn new(url: impl Into<String>) -> Self {
        Options {
            url: url.into(),
            only: CheckKind::ALL.to_vec(),
            timeout: Duration::from_secs(5),
            cpu_threshold: 80.0,
            memory_threshold: 80.0,
            disk_threshold: 85.0,
            db_connections_threshold: 80.0,
            disk_path: None,
            openai_base_url: DEFAULT_OPENAI_BASE_URL.into(),
            anthropic_base_url: DEFAULT_ANTHROPIC_BASE_URL.into(),
        }
    }
}

pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";

/// The specification's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub timestamp: String,
    /// `healthy` or `unhealthy`.
    pub overall_status: &'static str,
    pub checks: BTreeMap<String, Value>,
}

impl Report {
    pub fn is_healthy(&self) -> bool {
        self.overall_status == "healthy"
    }

    /// A fixed-width table: one row per check, the details as `key=value`.
    pub fn to_table(&self) -> String {
        let mut out = format!("{:<14} {:<10} details\n", "check", "status");
        for (name, v) in &self.checks {
            let status = match (v.get("healthy"), v.get("skipped")) {
                (_, Some(Value::Bool(true))) => "skipped",
                (Some(Value::Bool(true)), _) => "healthy",
                _ => "UNHEALTHY",
            };
            let details: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "healthy" && *k != "skipped")
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if !n.is_i64() && !n.is_u64() => format!("{k}={f:.3}"),
                        _ => format!("{k}={n}"),
                    },
                    other => format!("{k}={other}"),
                })
                .collect();
            out.push_str(&format!("{name:<14} {status:<10} {}\n", details.join(" ")));
        }
        out.push_str(&format!("overall: {}\n", self.overall_status));
        out
    }
}

/// Runs the selected checks concurrently and assembles the report.
pub async fn run(config: &Config, opts: &Options) -> Report {
    let wants = |k: CheckKind| opts.only.contains(&k);
    let t = opts.timeout;
    let (app, db, redis, ai, system, disk) = tokio::join!(
        maybe(wants(CheckKind::App), t, check_app(opts)),
        maybe(wants(CheckKind::Database), t, check_database(config, opts)),
        maybe(wants(CheckKind::Redis), t, check_redis(config)),
        async {
            if wants(CheckKind::Ai) {
                Some(check_ai(config, opts).await)
            } else {
                None
            }
        },
        maybe(wants(CheckKind::System), t, check_system(opts)),
        maybe(wants(CheckKind::Disk), t, check_disk(config, opts)),
    );
    let mut checks = BTreeMap::new();
    for (name, v) in [
        ("app", app),
        ("database", db),
        ("redis", redis),
        ("system", system),
        ("disk", disk),
    ] {
        if let Some(v) = v {
            checks.insert(name.to_string(), v);
        }
    }
    for (name, v) in ai.into_iter().flatten() {
        checks.insert(name, v);
    }
    let healthy = checks
        .values()
        .all(|v| v.get("healthy") == Some(&Value::Bool(true)));
    Report {
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        overall_status: if healthy { "healthy" } else { "unhealthy" },
        checks,
    }
}

/// Runs `check` when selected, under `timeout`; any error becomes `healthy: false`.
async fn maybe(
    selected: bool,
    timeout: Duration,
    check: impl Future<Output = anyhow::Result<Map<String, Value>>>,
) -> Option<Value> {
    if !selected {
        return None;
    }
    Some(with_timeout(timeout, check).await)
}

async fn with_timeout(
    timeout: Duration,
    check: impl Future<Output = anyhow::Result<Map<String, Value>>>,
) -> Value {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(m)) => Value::Object(m),
        Ok(Err(e)) => json!({"healthy": false, "error": format!("{e:#}")}),
        Err(_) => json!({
            "healthy": false,
            "error": format!("no answer within {:.1}s", timeout.as_secs_f64())
        }),
    }
}

fn skipped(reason: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("healthy".into(), Value::Bool(true));
    m.insert("skipped".into(), Value::Bool(true));
    m.insert("reason".into(), Value::from(reason));
    m
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!(
            "digital-employee-health-check/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .context("building the HTTP client")
}

async fn check_app(opts: &Options) -> anyhow::Result<Map<String, Value>> {
    let client = http_client(opts.timeout)?;
    let base = opts.url.trim_end_matches('/');
    let started = Instant::now();
    let health = client
        .get(format!("{base}/health"))
        .send()
        .await
        .with_context(|| format!("GET {base}/health"))?;
    let response_time = started.elapsed().as_secs_f64();
    let health_status = health.status().as_u16();
    let body: Value = health.json().await.unwrap_or(Value::Null);
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .with_context(|| format!("GET {base}/ready"))?;
    let ready_status = ready.status().as_u16();
    let ready_body: Value = ready.json().await.unwrap_or(Value::Null);

    let mut m = Map::new();
    m.insert(
        "healthy".into(),
        Value::Bool(health_status == 200 && ready_status == 200),
    );
    m.insert("response_time".into(), Value::from(round3(response_time)));
    m.insert("status_code".into(), Value::from(health_status));
    m.insert("ready_status_code".into(), Value::from(ready_status));
    if let Some(v) = body.get("version") {
        m.insert("version".into(), v.clone());
    }
    if ready_status != 200
        && let Some(msg) = ready_body.pointer("/error/message")
    {
        m.insert("error".into(), msg.clone());
    }
    Ok(m)
}

async fn check_database(config: &Config, opts: &Options) -> anyhow::Result<Map<String, Value>> {
    use sqlx::{ConnectOptions, Connection};
    let url = config.database_url.expose();
    let mut m = Map::new();
    let started = Instant::now();
    if config.database_url.is_postgres() {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .context("parsing DATABASE_URL")?
            .application_name("digital-employee-health-check");
        let mut conn = options
            .connect()
            .await
            .with_context(|| format!("connecting to {}", config.database_url.redacted()))?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        let response_time = started.elapsed().as_secs_f64();
        let active: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity")
            .fetch_one(&mut conn)
            .await?;
        let max: String = sqlx::query_scalar("SHOW max_connections")
            .fetch_one(&mut conn)
            .await?;
        let max: i64 = max.trim().parse().unwrap_or(0);
        let _ = conn.close().await;
        let usage = if max > 0 {
            100.0 * active as f64 / max as f64
        } else {
            0.0
        };
        m.insert(
            "healthy".into(),
            Value::Bool(usage < opts.db_connections_threshold),
        );
        m.insert("backend".into(), Value::from("postgres"));
        m.insert("response_time".into(), Value::from(round3(response_time)));
        m.insert("active_connections".into(), Value::from(active));
        m.insert("max_connections".into(), Value::from(max));
        m.insert(
            "connection_usage_percent".into(),
            Value::from(round3(usage)),
        );
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .context("parsing DATABASE_URL")?
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(2));
        let path = options.get_filename().to_path_buf();
        if !path.exists() {
            anyhow::bail!("database file {} does not exist", path.display());
        }
        let mut conn = options
            .connect()
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        let response_time = started.elapsed().as_secs_f64();
        let quick: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_all(&mut conn)
            .await?;
        let _ = conn.close().await;
        let ok = quick.len() == 1 && quick[0] == "ok";
        let file_size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        m.insert("healthy".into(), Value::Bool(ok));
        m.insert("backend".into(), Value::from("sqlite"));
        m.insert("response_time".into(), Value::from(round3(response_time)));
        m.insert("path".into(), Value::from(path.display().to_string()));
        m.insert("size_bytes".into(), Value::from(file_size(&path)));
        m.insert(
            "wal_size_bytes".into(),
            Value::from(file_size(std::path::Path::new(&wal))),
        );
        m.insert(
            "quick_check".into(),
            Value::from(quick.into_iter().take(5).collect::<Vec<_>>().join("; ")),
        );
    }
    Ok(m)
}

/// `INFO` over a minimal RESP exchange: one command, so no client library is needed.
async fn check_redis(config: &Config) -> anyhow::Result<Map<String, Value>> {
    let Some(url) = &config.redis_url else {
        return Ok(skipped("REDIS_URL is not set"));
    };
    let target = RedisTarget::parse(url.expose())?;
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("connecting to redis at {}:{}", target.host, target.port))?;
    let mut conn = BufReader::new(stream);
    if let Some(password) = &target.password {
        let mut args = vec!["AUTH"];
        if let Some(user) = &target.user {
            args.push(user);
        }
        args.push(password);
        resp_command(&mut conn, &args).await?;
        let reply = resp_reply(&mut conn).await?;
        if !reply.starts_with("OK") {
            anyhow::bail!("redis AUTH failed");
        }
    }
    resp_command(&mut conn, &["INFO"]).await?;
    let info = resp_reply(&mut conn).await?;
    let response_time = started.elapsed().as_secs_f64();
    let fields: BTreeMap<&str, &str> = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    let mut m = Map::new();
    m.insert("healthy".into(), Value::Bool(true));
    m.insert("response_time".into(), Value::from(round3(response_time)));
    for (key, name) in [
        ("redis_version", "version"),
        ("used_memory_human", "used_memory_human"),
    ] {
        if let Some(v) = fields.get(key) {
            m.insert(name.into(), Value::from(*v));
        }
    }
    for (key, name) in [
        ("used_memory", "used_memory_bytes"),
        ("maxmemory", "maxmemory_bytes"),
        ("connected_clients", "connected_clients"),
        ("uptime_in_seconds", "uptime_seconds"),
    ] {
        if let Some(v) = num(key) {
            m.insert(name.into(), Value::from(v));
        }
    }
    Ok(m)
}

struct RedisTarget {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

impl RedisTarget {
    fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("rediss://") {
            anyhow::bail!("rediss:// (TLS) is not supported by the health check's Redis probe");
        }
        let rest = url
            .strip_prefix("redis://")
            .context("REDIS_URL must start with redis://")?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    (!user.is_empty()).then(|| pct_decode(user)),
                    Some(pct_decode(pass)),
                ),
                None => (None, Some(pct_decode(u))),
            },
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h, p.parse().context("REDIS_URL port")?)
            }
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(RedisTarget {
            host: if host.is_empty() { "127.0.0.1" } else { host }.to_string(),
            port,
            user,
            password,
        })
    }
}

/// Percent-decodes a URL component (invalid escapes are kept as they are).
pub(crate) fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn resp_command<S: tokio::io::AsyncWrite + Unpin>(
    conn: &mut S,
    args: &[&str],
) -> anyhow::Result<()> {
    let mut buf = format!("*{}\r\n", args.len());
    for a in args {
        buf.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(buf.as_bytes()).await?;
    conn.flush().await?;
    Ok(())
}

/// Reads a simple-string, error or bulk-string reply.
async fn resp_reply<S: tokio::io::AsyncBufRead + Unpin>(conn: &mut S) -> anyhow::Result<String> {
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') => Ok(line[1..].to_string()),
        Some(b'-') => anyhow::bail!("redis error: {}", &line[1..]),
        Some(b'$') => {
            let len: i64 = line[1..].parse().context("redis bulk length")?;
            if len < 0 {
                return Ok(String::new());
            }
            let len = usize::try_from(len).context("redis bulk length")?;
            if len > 16 * 1024 * 1024 {
                anyhow::bail!("redis reply too large ({len} bytes)");
            }
            let mut data = vec![0u8; len + 2];
            conn.read_exact(&mut data).await?;
            data.truncate(len);
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        _ => anyhow::bail!("unexpected redis reply {line:?}"),
    }
}

/// One reachability probe of an AI vendor.
///
/// Seam for the AI service layer: until its providers exist, each configured key gets a
/// `GET {base}/models` — cheap, spends no tokens, and proves DNS, TLS, the key and the
/// vendor's front door. When providers land, replace [`ai_probes`] with one probe per
/// configured provider built from the provider itself.
#[derive(Clone, Debug)]
pub struct AiProbe {
    pub name: String,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

pub fn ai_probes(config: &Config, opts: &Options) -> Vec<AiProbe> {
    let mut probes = Vec::new();
    if !config.openai_api_key.is_empty() {
        probes.push(AiProbe {
            name: "ai_openai".into(),
            url: format!("{}/models", opts.openai_base_url.trim_end_matches('/')),
            headers: vec![(
                "authorization",
                format!("Bearer {}", config.openai_api_key.expose()),
            )],
        });
    }
    if !config.claude_api_key.is_empty() {
        probes.push(AiProbe {
            name: "ai_anthropic".into(),
            url: format!("{}/models", opts.anthropic_base_url.trim_end_matches('/')),
            headers: vec![
                ("x-api-key", config.claude_api_key.expose().to_string()),
                ("anthropic-version", "2023-06-01".to_string()),
            ],
        });
    }
    probes
}

async fn check_ai(config: &Config, opts: &Options) -> Vec<(String, Value)> {
    let probes = ai_probes(config, opts);
    if probes.is_empty() {
        return vec![(
            "ai".into(),
            Value::Object(skipped(
                "no AI provider key configured (OPENAI_API_KEY, CLAUDE_API_KEY)",
            )),
        )];
    }
    let checks: Vec<_> = probes
        .into_iter()
        .map(|p| {
            Box::pin(async move {
                let name = p.name.clone();
                (
                    name,
                    with_timeout(opts.timeout, probe_ai(p, opts.timeout)).await,
                )
            })
        })
        .collect();
    join_vec(checks).await
}

async fn probe_ai(p: AiProbe, timeout: Duration) -> anyhow::Result<Map<String, Value>> {
    let client = http_client(timeout)?;
    let mut req = client.get(&p.url);
    for (k, v) in &p.headers {
        req = req.header(*k, v);
    }
    let started = Instant::now();
    let resp = req.send().await.with_context(|| format!("GET {}", p.url))?;
    let status = resp.status().as_u16();
    // 429 means the vendor answered and the key is known: reachable, just busy.
    let healthy = resp.status().is_success() || status == 429;
    let mut m = Map::new();
    m.insert("healthy".into(), Value::Bool(healthy));
    m.insert(
        "response_time".into(),
        Value::from(round3(started.elapsed().as_secs_f64())),
    );
    m.insert("status_code".into(), Value::from(status));
    if status == 429 {
        m.insert(
            "note".into(),
            Value::from("rate limited (counts as reachable)"),
        );
    } else if status == 401 || status == 403 {
        m.insert("error".into(), Value::from("the API key was rejected"));
    } else if !healthy {
        m.insert("error".into(), Value::from(format!("HTTP {status}")));
    }
    Ok(m)
}

/// Awaits futures concurrently, keeping their order (no extra dependency for one use).
async fn join_vec<F: Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut results: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if results[i].is_none() {
                match std::pin::Pin::new(&mut *f).poll(cx) {
                    Poll::Ready(v) => results[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

async fn check_system(opts: &Options) -> anyhow::Result<Map<String, Value>> {
    let cpu = sysinfo::cpu_percent(Duration::from_millis(500)).await?;
    let (total, available) = sysinfo::memory()?;
    let mem = if total > 0 {
        100.0 * (total - available.min(total)) as f64 / total as f64
    } else {
        0.0
    };
    let load = sysinfo::load_average()?;
    let cpus = crate::config::cpus();
    let mut m = Map::new();
    m.insert(
        "healthy".into(),
        Value::Bool(cpu < opts.cpu_threshold && mem < opts.memory_threshold),
    );
    m.insert("cpu_percent".into(), Value::from(round3(cpu)));
    m.insert("memory_percent".into(), Value::from(round3(mem)));
    m.insert("memory_total_bytes".into(), Value::from(total));
    m.insert("memory_available_bytes".into(), Value::from(available));
    m.insert("load_average_1m".into(), Value::from(load[0]));
    m.insert("load_average_5m".into(), Value::from(load[1]));
    m.insert("load_average_15m".into(), Value::from(load[2]));
    m.insert("cpu_count".into(), Value::from(cpus));
    Ok(m)
}

async fn check_disk(config: &Config, opts: &Options) -> anyhow::Result<Map<String, Value>> {
    let path = match &opts.disk_path {
        Some(p) => p.clone(),
        None if config.data_dir.exists() => config.data_dir.clone(),
        None => PathBuf::from("/"),
    };
    let d = sysinfo::disk_usage(&path)?;
    const GB: f64 = 1024.0 * 1024.0 * 1024.0;
    let mut m = Map::new();
    m.insert(
        "healthy".into(),
        Value::Bool(d.used_percent < opts.disk_threshold),
    );
    m.insert("path".into(), Value::from(path.display().to_string()));
    m.insert("used_percent".into(), Value::from(round3(d.used_percent)));
    m.insert(
        "free_gb".into(),
        Value::from(round3(d.free_bytes as f64 / GB)),
    );
    m.insert(
        "total_gb".into(),
        Value::from(round3(d.total_bytes as f64 / GB)),
    );
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_parse() {
        let t = RedisTarget::parse("redis://127.0.0.1:6380/0").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 6380));
        assert!(t.password.is_none());
        let t = RedisTarget::parse("redis://:p%40ss@redis-service/0").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("redis-service", 6379));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert!(t.user.is_none());
        let t = RedisTarget::parse("redis://app:pw@h:1").unwrap();
        assert_eq!(t.user.as_deref(), Some("app"));
        assert!(RedisTarget::parse("rediss://h").is_err());
    }

    #[tokio::test]
    async fn resp_replies_parse() {
        let mut r = BufReader::new(&b"$12\r\nhello\r\nworld\r\n+OK\r\n-ERR no\r\n"[..]);
        assert_eq!(resp_reply(&mut r).await.unwrap(), "hello\r\nworld");
        assert_eq!(resp_reply(&mut r).await.unwrap(), "OK");
        assert!(resp_reply(&mut r).await.is_err());
    }

    #[test]
    fn table_marks_unhealthy_checks() {
        let mut checks = BTreeMap::new();
        checks.insert(
            "app".to_string(),
            json!({"healthy": true, "response_time": 0.0123}),
        );
        checks.insert(
            "disk".to_string(),
            json!({"healthy": false, "used_percent": 91.5}),
        );
        checks.insert(
            "redis".to_string(),
            json!({"healthy": true, "skipped": true}),
        );
        let r = Report {
            timestamp: "t".into(),
            overall_status: "unhealthy",
            checks,
        };
        let t = r.to_table();
        assert!(t.contains("UNHEALTHY"), "{t}");
        assert!(t.contains("skipped"), "{t}");
        assert!(t.contains("response_time=0.012"), "{t}");
    }
}
