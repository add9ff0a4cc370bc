//! What the service reports about itself: the log level (or tracing filter), how often
//! the background health probes run, and who may scrape the metrics.

use std::time::Duration;

use super::parse::secs;
use super::{ConfigError, Secret};

/// The logging and health-probe settings; [`Config`](super::Config) keeps them as
/// top-level fields.
pub(super) struct TelemetrySettings {
    pub(super) log_level: String,
    pub(super) health_check_interval: Duration,
    pub(super) metrics_bearer_token: Secret,
}

impl TelemetrySettings {
    /// `LOG_LEVEL`, `HEALTH_CHECK_INTERVAL` and `METRICS_BEARER_TOKEN`.
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            log_level: parse_log_level(get("LOG_LEVEL"))?,
            health_check_interval: secs(get, "HEALTH_CHECK_INTERVAL", "30")?,
            metrics_bearer_token: Secret::new(get("METRICS_BEARER_TOKEN").unwrap_or_default()),
        })
    }
}

/// A level in any case (`WARNING`, `CRITICAL` and `FATAL` accepted as aliases), or any
/// tracing filter directive; lowercased.
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

#[cfg(test)]
mod tests {
    use crate::config::cfg;

    #[test]
    fn uppercase_levels_from_the_specification_are_accepted() {
        assert_eq!(cfg(&[("LOG_LEVEL", "INFO")]).unwrap().log_level, "info");
        assert_eq!(cfg(&[("LOG_LEVEL", "WARNING")]).unwrap().log_level, "warn");
    }
}
