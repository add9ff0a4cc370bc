//! Who may call, how often, from which origins, and what never reaches a log: the JWT
//! signing key, the bootstrap API keys, rate limiting, CORS and extra redaction patterns.

use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::parse::{parse, positive_u32};
use super::{AppEnv, ConfigError, Secret};

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

/// The access-control settings; [`Config`](super::Config) keeps them as top-level fields.
pub(super) struct SecuritySettings {
    pub(super) jwt_secret_key: Secret,
    pub(super) jwt_secret_key_previous: Secret,
    pub(super) jwt_issuer: Option<String>,
    pub(super) jwt_audience: Option<String>,
    pub(super) jwt_max_lifetime: Duration,
    pub(super) api_key_whitelist: Vec<Secret>,
    pub(super) rate_limit_requests: u32,
    pub(super) tenant_rate_limit_requests: u32,
    pub(super) tenant_max_keys: u32,
    pub(super) auth_failure_limit: u32,
    pub(super) trusted_proxies: Vec<IpNet>,
    pub(super) rate_limit_window: Duration,
    pub(super) rate_limit_redis_failure: RedisFailure,
    pub(super) rate_limit_key_prefix: String,
    pub(super) cors_allowed_origins: Vec<String>,
    pub(super) redact_extra_patterns: Vec<String>,
    pub(super) egress_allow_cidrs: Vec<IpNet>,
}

impl SecuritySettings {
    /// `JWT_SECRET_KEY` (at least 32 bytes in staging and production), `API_KEY_WHITELIST`,
    /// `RATE_LIMIT_*`, `CORS_ALLOWED_ORIGINS` and `REDACT_EXTRA_PATTERNS`.
    pub(super) fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        app_env: AppEnv,
    ) -> Result<Self, ConfigError> {
        let jwt_secret_key = Secret::new(get("JWT_SECRET_KEY").unwrap_or_default());
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
        let jwt_secret_key_previous =
            Secret::new(get("JWT_SECRET_KEY_PREVIOUS").unwrap_or_default());
        let nonempty =
            |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let jwt_max_lifetime = super::parse::secs(get, "JWT_MAX_LIFETIME_SECONDS", "2592000")?;
        if jwt_max_lifetime < Duration::from_secs(1) {
            return Err(ConfigError {
                var: "JWT_MAX_LIFETIME_SECONDS",
                value: format!("{}", jwt_max_lifetime.as_secs_f64()),
                expected: "at least 1 second",
            });
        }
        let api_key_whitelist = get("API_KEY_WHITELIST")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
            .collect();
        let requests = "a positive whole number of requests";
        let rate_limit_requests = positive_u32(get, "RATE_LIMIT_REQUESTS", "100", requests)?;
        let tenant_default = rate_limit_requests.saturating_mul(10).to_string();
        let tenant_rate_limit_requests =
            positive_u32(get, "TENANT_RATE_LIMIT_REQUESTS", &tenant_default, requests)?;
        let tenant_max_keys = positive_u32(
            get,
            "TENANT_MAX_KEYS",
            "100",
            "a positive whole number of keys",
        )?;
        let auth_failure_limit = positive_u32(
            get,
            "AUTH_FAILURE_LIMIT",
            "20",
            "a positive whole number of failed authentications",
        )?;
        let window: u64 = parse(
            get,
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
        Ok(Self {
            jwt_secret_key,
            jwt_secret_key_previous,
            jwt_issuer: nonempty(get("JWT_ISSUER")),
            jwt_audience: nonempty(get("JWT_AUDIENCE")),
            jwt_max_lifetime,
            api_key_whitelist,
            rate_limit_requests,
            tenant_rate_limit_requests,
            tenant_max_keys,
            auth_failure_limit,
            trusted_proxies: cidrs(
                "TRUSTED_PROXIES",
                Some(get("TRUSTED_PROXIES").unwrap_or_else(|| DEFAULT_TRUSTED_PROXIES.into())),
            )?,
            rate_limit_window: Duration::from_secs(window),
            rate_limit_redis_failure,
            rate_limit_key_prefix: get("RATE_LIMIT_KEY_PREFIX").unwrap_or_else(|| "de:rl:".into()),
            cors_allowed_origins: cors_origins(get("CORS_ALLOWED_ORIGINS"))?,
            redact_extra_patterns: redact_patterns(get("REDACT_EXTRA_PATTERNS"))?,
            egress_allow_cidrs: cidrs("EGRESS_ALLOW_CIDRS", get("EGRESS_ALLOW_CIDRS"))?,
        })
    }
}

/// Proxies believed by default: loopback and the private ranges, where nginx, a load
/// balancer or an ingress controller sits in front of the service.
const DEFAULT_TRUSTED_PROXIES: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

/// `127.0.0.1/32, 10.20.0.0/16, fd00::/8` (a bare address means that address alone): for
/// `EGRESS_ALLOW_CIDRS`, ranges tenants' outbound requests may reach besides the public
/// internet; for `TRUSTED_PROXIES`, the proxies whose `X-Forwarded-For` is believed.
/// `none` is the empty list (an empty variable counts as unset, so takes the default).
fn cidrs(var: &'static str, value: Option<String>) -> Result<Vec<IpNet>, ConfigError> {
    let Some(v) = value else {
        return Ok(Vec::new());
    };
    if v.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| ConfigError {
                    var,
                    value: c.to_string(),
                    expected: "comma-separated CIDR ranges such as 127.0.0.1/32,10.20.0.0/16",
                })
        })
        .collect()
}

/// Ranges as their text, for `digital-employee config`.
pub(super) fn ser_nets<S: serde::Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cfg;

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
            ("EGRESS_ALLOW_CIDRS", "127.0.0.1/33"),
            ("EGRESS_ALLOW_CIDRS", "10.0.0.0/8,intranet"),
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
        let c = cfg(&[("EGRESS_ALLOW_CIDRS", "127.0.0.1, 10.20.1.7/16 ,fd00::/8")]).unwrap();
        let nets: Vec<String> = c.egress_allow_cidrs.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.20.0.0/16", "fd00::/8"]);
        let e = cfg(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET_KEY", "short-secret"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "JWT_SECRET_KEY");
        assert!(!e.to_string().contains("short-secret"));
    }
}
