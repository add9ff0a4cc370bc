//! What the service reports about itself: the log level (or tracing filter), how often
//! the background health probes run, who may scrape the metrics, and where traces go
//! (the standard `OTEL_*` variables, [`TracingConfig`]).

use std::time::Duration;

use serde::Serialize;

use super::parse::{on_off, parse, positive_u32, secs};
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

/// How traces are exported (OTLP over HTTP/protobuf). With no endpoint nothing is
/// traced at all: no span is built for export and no context is stored with tasks.
#[derive(Clone, Debug, Serialize)]
pub struct TracingConfig {
    /// The full URL spans are POSTed to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given,
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`; `None` = tracing off.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_HEADERS` (or `OTEL_EXPORTER_OTLP_TRACES_HEADERS`): `k=v,k2=v2`,
    /// values percent-decoded. Often a collector's credential, so kept secret.
    #[serde(skip)]
    pub headers: Vec<(String, Secret)>,
    /// `OTEL_SERVICE_NAME`, else `service.name` from the resource attributes, else
    /// `digital-employee`.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k2=v2`, values percent-decoded.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: Sampling,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (or `_TRACES_TIMEOUT`), milliseconds, default 10000.
    #[serde(serialize_with = "super::parse::ser_secs")]
    pub timeout: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, default 2048: spans waiting for export; past it new
    /// spans are dropped (and counted), never waited for.
    pub max_queue_size: u32,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512 (at most the queue size).
    pub max_export_batch_size: u32,
    /// `OTEL_BSP_SCHEDULE_DELAY`, milliseconds, default 5000: the longest a span waits
    /// for its batch.
    #[serde(serialize_with = "super::parse::ser_secs")]
    pub schedule_delay: Duration,
    /// `OTEL_GENAI_CAPTURE_CONTENT`, default off: record prompts and completions on
    /// `chat` spans (after the redactor).
    pub capture_content: bool,
}

impl TracingConfig {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }
}

/// Which traces are kept (the names of `OTEL_TRACES_SAMPLER`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    /// The fraction of traces kept, by trace id.
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    /// A caller's sampled flag wins; root traces are kept at this fraction.
    ParentBasedTraceIdRatio(f64),
}

impl TracingConfig {
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => Some(http_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)?),
            (None, Some(base)) => {
                let base = http_url("OTEL_EXPORTER_OTLP_ENDPOINT", base)?;
                Some(format!("{}/v1/traces", base.trim_end_matches('/')))
            }
            (None, None) => None,
        };
        let protocol_var = if get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        } else {
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        };
        if let Some(p) = get(protocol_var)
            && p != "http/protobuf"
        {
            return Err(ConfigError {
                var: protocol_var,
                value: p,
                expected: "http/protobuf (gRPC and http/json exporters are not built in; \
                           an OpenTelemetry Collector accepts http/protobuf on port 4318)",
            });
        }
        let headers_var = if get("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        } else {
            "OTEL_EXPORTER_OTLP_HEADERS"
        };
        let headers = match get(headers_var) {
            None => Vec::new(),
            Some(v) => {
                let pairs: Vec<(String, String)> =
                    key_values(&v).filter(|(k, v)| header_ok(k, v)).collect();
                if pairs.len() != pair_count(&v) {
                    // The value is not echoed: it may hold a credential.
                    return Err(ConfigError {
                        var: headers_var,
                        value: "(not shown)".into(),
                        expected: "comma-separated name=value pairs with valid HTTP header names and values",
                    });
                }
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v)))
                    .collect()
            }
        };
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            None => Vec::new(),
            Some(v) => {
                let pairs: Vec<(String, String)> = key_values(&v).collect();
                if pairs.len() != pair_count(&v) {
                    return Err(ConfigError {
                        var: "OTEL_RESOURCE_ATTRIBUTES",
                        value: v,
                        expected: "comma-separated key=value pairs (values percent-encoded)",
                    });
                }
                pairs
            }
        };
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "digital-employee".into());
        let ratio = || -> Result<f64, ConfigError> {
            let value = get("OTEL_TRACES_SAMPLER_ARG").unwrap_or_else(|| "1.0".into());
            match value.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(ConfigError {
                    var: "OTEL_TRACES_SAMPLER_ARG",
                    value,
                    expected: "a fraction between 0 and 1",
                }),
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => Sampling::ParentBasedAlwaysOn,
            Some("always_on") => Sampling::AlwaysOn,
            Some("always_off") => Sampling::AlwaysOff,
            Some("traceidratio") => Sampling::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => Sampling::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => Sampling::ParentBasedTraceIdRatio(ratio()?),
            Some(other) => {
                return Err(ConfigError {
                    var: "OTEL_TRACES_SAMPLER",
                    value: other.into(),
                    expected: "always_on, always_off, traceidratio, parentbased_always_on, \
                               parentbased_always_off or parentbased_traceidratio",
                });
            }
        };
        let timeout_var = if get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        let timeout = millis(get, timeout_var, "10000")?;
        let max_queue_size = positive_u32(
            get,
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "2048",
            "a positive whole number of spans",
        )?;
        let max_export_batch_size = positive_u32(
            get,
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "512",
            "a positive whole number of spans",
        )?
        .min(max_queue_size);
        Ok(Self {
            endpoint,
            headers,
            service_name,
            resource_attributes,
            sampler,
            timeout,
            max_queue_size,
            max_export_batch_size,
            schedule_delay: millis(get, "OTEL_BSP_SCHEDULE_DELAY", "5000")?,
            capture_content: on_off(get, "OTEL_GENAI_CAPTURE_CONTENT", false)?,
        })
    }
}

/// A positive number of milliseconds (the unit of the `OTEL_*` durations).
fn millis(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let ms: u64 = parse(get, var, default, "a positive whole number of milliseconds")?;
    if ms == 0 {
        return Err(ConfigError {
            var,
            value: "0".into(),
            expected: "a positive whole number of milliseconds",
        });
    }
    Ok(Duration::from_millis(ms))
}

/// An absolute `http` or `https` URL.
fn http_url(var: &'static str, value: String) -> Result<String, ConfigError> {
    match url::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(value),
        _ => Err(ConfigError {
            var,
            value,
            expected: "an http:// or https:// URL such as http://otel-collector:4318",
        }),
    }
}

/// The `key=value` pairs of a W3C-baggage-like list; a pair without `=` or with an empty
/// key is left out (callers compare counts to refuse it).
fn key_values(v: &str) -> impl Iterator<Item = (String, String)> + '_ {
    v.split(',')
        .filter(|p| !p.trim().is_empty())
        .filter_map(|pair| {
            let (k, val) = pair.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            let val = percent_decode(val.trim())?;
            Some((k.to_string(), val))
        })
}

fn pair_count(v: &str) -> usize {
    v.split(',').filter(|p| !p.trim().is_empty()).count()
}

fn percent_decode(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = v.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn header_ok(name: &str, value: &str) -> bool {
    reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && reqwest::header::HeaderValue::from_str(value).is_ok()
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
    fn tracing_is_off_without_an_endpoint_and_reads_the_standard_variables() {
        let off = cfg(&[]).unwrap().tracing;
        assert!(!off.enabled());
        assert_eq!(off.service_name, "digital-employee");
        let on = cfg(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=api,deployment.environment=prod%20eu",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tok"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_GENAI_CAPTURE_CONTENT", "true"),
        ])
        .unwrap()
        .tracing;
        assert_eq!(
            on.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(on.service_name, "api");
        assert_eq!(on.resource_attributes[1].1, "prod eu");
        assert_eq!(on.headers[0].1.expose(), "Bearer tok");
        assert_eq!(on.sampler, super::Sampling::ParentBasedTraceIdRatio(0.25));
        assert!(on.capture_content);
        let traces = cfg(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t.example/x")])
            .unwrap()
            .tracing;
        assert_eq!(traces.endpoint.as_deref(), Some("https://t.example/x"));
    }

    #[test]
    fn bad_tracing_values_name_the_variable() {
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad header=x"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ] {
            let e = cfg(&[(var, value)]).err().unwrap();
            assert_eq!(e.var, var);
        }
        let e = cfg(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .err()
        .unwrap();
        assert_eq!(e.var, "OTEL_TRACES_SAMPLER_ARG");
        let e = cfg(&[("OTEL_EXPORTER_OTLP_HEADERS", "x-token=s3cret,broken")])
            .err()
            .unwrap();
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn uppercase_levels_from_the_specification_are_accepted() {
        assert_eq!(cfg(&[("LOG_LEVEL", "INFO")]).unwrap().log_level, "info");
        assert_eq!(cfg(&[("LOG_LEVEL", "WARNING")]).unwrap().log_level, "warn");
    }
}
