//! The deployment profile and the listeners: bind address, ports, the largest request
//! body, request read timeouts, the API's threads and graceful shutdown.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::ConfigError;
use super::parse::{parse, positive_secs, secs};

/// Deployment profile named by `APP_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    /// `development` or `dev` (the default).
    Development,
    /// `testing` or `test`.
    Testing,
    /// `staging`.
    Staging,
    /// `production` or `prod`.
    Production,
}

impl AppEnv {
    /// `APP_ENV`; unset means development.
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let Some(v) = get("APP_ENV").map(|v| v.to_ascii_lowercase()) else {
            return Ok(Self::Development);
        };
        match v.as_str() {
            "development" | "dev" => Ok(Self::Development),
            "testing" | "test" => Ok(Self::Testing),
            "staging" => Ok(Self::Staging),
            "production" | "prod" => Ok(Self::Production),
            _ => Err(ConfigError {
                var: "APP_ENV",
                value: v,
                expected: "one of development, testing, staging, production",
            }),
        }
    }
}

/// The listener settings; [`Config`](super::Config) keeps them as top-level fields.
pub(super) struct ServerSettings {
    pub(super) host: IpAddr,
    pub(super) port: u16,
    pub(super) metrics_port: u16,
    pub(super) max_body_bytes: usize,
    pub(super) shutdown_grace_period: Duration,
    pub(super) shutdown_drain_delay: Duration,
    pub(super) request_header_timeout: Duration,
    pub(super) request_body_timeout: Duration,
    pub(super) api_threads: usize,
}

/// The most API threads `API_THREADS` may ask for (a typo guard, not a tuning limit).
const MAX_API_THREADS: usize = 256;

impl ServerSettings {
    /// `HOST`, `PORT`, `PROMETHEUS_METRICS_PORT`, `MAX_BODY_BYTES`, `SHUTDOWN_*` and
    /// `REQUEST_*_TIMEOUT` and `API_THREADS`.
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let host = parse(get, "HOST", "0.0.0.0", "an IP address such as 0.0.0.0")?;
        let port = parse(get, "PORT", "8000", "a TCP port number (0-65535)")?;
        let metrics_port = parse(
            get,
            "PROMETHEUS_METRICS_PORT",
            "9000",
            "a TCP port number (0-65535)",
        )?;
        let max_body_bytes: usize = parse(
            get,
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
        const THREADS: &str = "a number of threads from 0 to 256 (0 = the shared runtime)";
        let api_threads: usize = parse(get, "API_THREADS", &super::cpus().to_string(), THREADS)?;
        if api_threads > MAX_API_THREADS {
            return Err(ConfigError {
                var: "API_THREADS",
                value: api_threads.to_string(),
                expected: THREADS,
            });
        }
        Ok(Self {
            host,
            port,
            metrics_port,
            max_body_bytes,
            shutdown_grace_period: secs(get, "SHUTDOWN_GRACE_PERIOD", "30")?,
            shutdown_drain_delay: secs(get, "SHUTDOWN_DRAIN_DELAY", "1")?,
            request_header_timeout: positive_secs(get, "REQUEST_HEADER_TIMEOUT", "10")?,
            request_body_timeout: positive_secs(get, "REQUEST_BODY_TIMEOUT", "30")?,
            api_threads,
        })
    }
}
