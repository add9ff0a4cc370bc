//! The AI Service Layer's settings: vendor timeouts and retries, vendor keys and
//! endpoints, extra providers, model aliases, price overrides ([`PriceSpec`]), the
//! circuit breaker and the result cache.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::database::DatabaseUrl;
use super::parse::{on_off, parse, positive_secs, positive_u32, secs, ser_secs};
use super::{ConfigError, Secret};

/// Wire format of a configured AI provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderFormat {
    /// The OpenAI chat-completions format (and compatible servers).
    Openai,
    /// The Anthropic messages format.
    Anthropic,
}

/// An extra provider from `AI_PROVIDERS`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderSpec {
    /// Provider name, the `provider` of `provider/model` (`a-z`, `0-9`, `-`, `_`).
    pub name: String,
    /// Wire format it speaks.
    pub format: ProviderFormat,
    /// Endpoint, `http://` or `https://`.
    pub base_url: String,
    /// Credential; empty when the provider needs none.
    #[serde(default, deserialize_with = "de_secret")]
    pub api_key: Secret,
    /// Azure-style API version of the OpenAI format (`api-key` header, `api-version` query).
    #[serde(default)]
    pub api_version: Option<String>,
}

fn de_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    Ok(Secret::new(<String as Deserialize>::deserialize(d)?))
}

/// The price of one model from `AI_PRICES`: USD per million tokens, as configured. The
/// price table of the AI layer converts it to nano-dollars per token.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct PriceSpec {
    /// Plain input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the vendor's prompt cache; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input tokens written to the vendor's prompt cache; defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Output tokens the vendor reports as reasoning; defaults to `output`.
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// Context window in tokens; defaults to 128,000.
    #[serde(default)]
    pub context_window: Option<u64>,
}

/// Settings of the AI Service Layer (vendors, router, cache).
#[derive(Clone, Debug, Serialize)]
pub struct AiConfig {
    /// `AI_SERVICE_TIMEOUT`: time per vendor attempt.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// `AI_SERVICE_RETRY_COUNT`: retries per candidate.
    pub retries: u32,
    /// `AI_SERVICE_RETRY_DELAY`: base of the exponential backoff.
    #[serde(serialize_with = "ser_secs")]
    pub retry_delay: Duration,
    /// `AI_RETRY_AFTER_MAX`: longest `Retry-After` honoured before moving on.
    #[serde(serialize_with = "ser_secs")]
    pub max_retry_after: Duration,
    /// `AI_BREAKER_THRESHOLD`: consecutive failures that open a provider's circuit.
    pub breaker_threshold: u32,
    /// `AI_BREAKER_COOLDOWN`: time before an open circuit lets a probe through.
    #[serde(serialize_with = "ser_secs")]
    pub breaker_cooldown: Duration,
    /// `OPENAI_API_KEY`.
    pub openai_api_key: Secret,
    /// `OPENAI_BASE_URL`, or the OpenAI default.
    pub openai_base_url: String,
    /// Whether `OPENAI_BASE_URL` was set.
    pub openai_base_url_set: bool,
    /// `CLAUDE_API_KEY`, else `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Secret,
    /// `ANTHROPIC_BASE_URL`, or the Anthropic default.
    pub anthropic_base_url: String,
    /// Whether `ANTHROPIC_BASE_URL` was set.
    pub anthropic_base_url_set: bool,
    /// `AI_PROVIDERS`.
    pub extra_providers: Vec<ProviderSpec>,
    /// `AI_MODEL_ALIASES`: alias → fallback chain of `provider/model`.
    pub aliases: HashMap<String, Vec<String>>,
    /// `AI_PRICES`: overrides of the built-in price table.
    #[serde(skip)]
    pub prices: HashMap<String, PriceSpec>,
    /// `AI_CACHE`.
    pub cache_enabled: bool,
    /// `AI_CACHE_TTL`.
    #[serde(serialize_with = "ser_secs")]
    pub cache_ttl: Duration,
    /// `AI_CACHE_MAX_ENTRIES`.
    pub cache_max_entries: u64,
    /// The Redis behind the result cache (`REDIS_URL`); unset = an in-memory cache.
    pub redis_url: Option<DatabaseUrl>,
    /// `RESPONSES_RETENTION_DAYS`: how long `/v1/responses` answers are kept for
    /// `GET /v1/responses/{id}` and `previous_response_id` (0 = not stored).
    pub responses_retention_days: u32,
    /// `BUDGET_DEFAULT_MAX_TOKENS`: the output tokens a call without `max_tokens` is
    /// reserved for, and capped at, while a budget applies to it.
    pub budget_default_max_tokens: u32,
    /// `BUDGET_HOLD_SECONDS`: how long a reservation lives unsettled before it is
    /// reclaimed (its process is presumed dead).
    #[serde(serialize_with = "ser_secs")]
    pub budget_hold: Duration,
    /// `AI_STREAM_PING_INTERVAL`: silence after which a gateway stream sends a keep-alive
    /// (a `ping` event on `/v1/messages`, an SSE comment elsewhere); 0 = never.
    #[serde(serialize_with = "ser_secs")]
    pub stream_ping_interval: Duration,
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` (each also lower-case), `NO_PROXY`: the
    /// forward proxy of vendor calls.
    pub vendor_proxy: VendorProxy,
}

/// A forward proxy for vendor calls, as the environment names it. Proxy URLs may carry
/// credentials, so they are secrets (redacted in `Debug` and in the configuration dump).
#[derive(Clone, Debug, Default, Serialize)]
pub struct VendorProxy {
    /// For `https://` vendors.
    pub https: Option<Secret>,
    /// For `http://` vendors.
    pub http: Option<Secret>,
    /// For both, where the scheme's own is unset.
    pub all: Option<Secret>,
    /// Comma-separated hosts, domains and address ranges reached directly.
    pub no_proxy: Option<String>,
}

impl VendorProxy {
    /// Whether any proxy is named.
    pub fn any(&self) -> bool {
        self.https.is_some() || self.http.is_some() || self.all.is_some()
    }

    /// Reads the variables; an upper-case name wins over its lower-case twin.
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| get(name).or_else(|| get(&name.to_lowercase()));
        Self {
            https: var("HTTPS_PROXY").map(Secret::new),
            http: var("HTTP_PROXY").map(Secret::new),
            all: var("ALL_PROXY").map(Secret::new),
            no_proxy: var("NO_PROXY"),
        }
    }
}

impl AiConfig {
    /// `AI_SERVICE_*`, the vendor keys and base URLs, `AI_PROVIDERS`, `AI_MODEL_ALIASES`,
    /// `AI_PRICES`, `AI_RETRY_AFTER_MAX`, `AI_BREAKER_*` and `AI_CACHE*`; `redis_url` comes
    /// from the database settings.
    pub(super) fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        redis_url: Option<DatabaseUrl>,
    ) -> Result<Self, ConfigError> {
        let timeout = secs(get, "AI_SERVICE_TIMEOUT", "30")?;
        let retries = parse(
            get,
            "AI_SERVICE_RETRY_COUNT",
            "3",
            "a non-negative whole number of retries",
        )?;
        let retry_delay = secs(get, "AI_SERVICE_RETRY_DELAY", "2")?;
        let openai_api_key = Secret::new(get("OPENAI_API_KEY").unwrap_or_default());
        let anthropic_api_key = Secret::new(
            get("CLAUDE_API_KEY")
                .or_else(|| get("ANTHROPIC_API_KEY"))
                .unwrap_or_default(),
        );
        let (openai_base_url, openai_base_url_set) =
            base_url(get, "OPENAI_BASE_URL", "https://api.openai.com/v1")?;
        let (anthropic_base_url, anthropic_base_url_set) =
            base_url(get, "ANTHROPIC_BASE_URL", "https://api.anthropic.com")?;
        let extra_providers = extra_providers(get)?;
        let aliases = aliases(get)?;
        let prices = prices(get)?;
        let cache_enabled = on_off(get, "AI_CACHE", true)?;
        Ok(Self {
            timeout,
            retries,
            retry_delay,
            max_retry_after: secs(get, "AI_RETRY_AFTER_MAX", "60")?,
            breaker_threshold: parse(get, "AI_BREAKER_THRESHOLD", "5", "a positive whole number")?,
            breaker_cooldown: secs(get, "AI_BREAKER_COOLDOWN", "30")?,
            openai_api_key,
            openai_base_url,
            openai_base_url_set,
            anthropic_api_key,
            anthropic_base_url,
            anthropic_base_url_set,
            extra_providers,
            aliases,
            prices,
            cache_enabled,
            cache_ttl: secs(get, "AI_CACHE_TTL", "300")?,
            stream_ping_interval: secs(get, "AI_STREAM_PING_INTERVAL", "10")?,
            cache_max_entries: parse(
                get,
                "AI_CACHE_MAX_ENTRIES",
                "10000",
                "a whole number of entries",
            )?,
            redis_url,
            responses_retention_days: parse(
                get,
                "RESPONSES_RETENTION_DAYS",
                "30",
                "a whole number of days (0 = responses are not stored)",
            )?,
            budget_default_max_tokens: positive_u32(
                get,
                "BUDGET_DEFAULT_MAX_TOKENS",
                "4096",
                "a whole number of tokens, 1 or more",
            )?,
            budget_hold: positive_secs(get, "BUDGET_HOLD_SECONDS", "900")?,
            vendor_proxy: VendorProxy::from_lookup(get),
        })
    }
}

/// An `http(s)://` URL, or `default`; and whether the variable was set.
fn base_url(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<(String, bool), ConfigError> {
    match get(var) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok((u, true)),
        Some(u) => Err(ConfigError {
            var,
            value: u,
            expected: "an http:// or https:// URL",
        }),
        None => Ok((default.to_string(), false)),
    }
}

/// `var` parsed as JSON, if set. `AI_PROVIDERS` may hold keys, so its value is never
/// echoed in the error.
fn json_var(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    expected: &'static str,
) -> Result<Option<serde_json::Value>, ConfigError> {
    get(var)
        .map(|v| {
            serde_json::from_str(&v).map_err(|_| ConfigError {
                var,
                value: if var == "AI_PROVIDERS" {
                    "[redacted]".into()
                } else {
                    v.clone()
                },
                expected,
            })
        })
        .transpose()
}

/// `AI_PROVIDERS`: names of `a-z`, `0-9`, `-`, `_` and `http(s)` base URLs.
fn extra_providers(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<ProviderSpec>, ConfigError> {
    const PROVIDERS: &str = "a JSON list of {\"name\",\"format\":\"openai\"|\"anthropic\",\"base_url\",\"api_key\"?,\"api_version\"?}";
    let providers: Vec<ProviderSpec> = match json_var(get, "AI_PROVIDERS", PROVIDERS)? {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v).map_err(|_| ConfigError {
            var: "AI_PROVIDERS",
            value: "[redacted]".into(),
            expected: PROVIDERS,
        })?,
    };
    for p in &providers {
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
    Ok(providers)
}

/// `AI_MODEL_ALIASES`: every chain non-empty and every entry `provider/model`.
fn aliases(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Vec<String>>, ConfigError> {
    const ALIASES: &str = "a JSON object mapping an alias to a list of provider/model";
    let aliases: HashMap<String, Vec<String>> = match json_var(get, "AI_MODEL_ALIASES", ALIASES)? {
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
    Ok(aliases)
}

/// `AI_PRICES`: `provider/model` or `model` → [`PriceSpec`].
fn prices(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, PriceSpec>, ConfigError> {
    const PRICES: &str = "a JSON object {\"model\": {\"input\": USD, \"output\": USD, \"cached_input\"?, \"cache_write\"?, \"reasoning\"?: USD}} per million tokens, none negative";
    match json_var(get, "AI_PRICES", PRICES)? {
        None => Ok(HashMap::new()),
        Some(v) => {
            let bad = || ConfigError {
                var: "AI_PRICES",
                value: v.to_string(),
                expected: PRICES,
            };
            let prices: HashMap<String, PriceSpec> =
                serde_json::from_value(v.clone()).map_err(|_| bad())?;
            let valid = |p: f64| p.is_finite() && p >= 0.0;
            let all_valid = prices.values().all(|s| {
                [s.input, s.output]
                    .into_iter()
                    .chain(s.cached_input)
                    .chain(s.cache_write)
                    .chain(s.reasoning)
                    .all(valid)
            });
            if all_valid { Ok(prices) } else { Err(bad()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cfg;

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
        for bad in [
            r#"{"m":{"input":-1,"output":1}}"#,
            r#"{"m":{"input":1,"output":1,"reasoning":-0.5}}"#,
            r#"{"m":{"input":1}}"#,
        ] {
            assert_eq!(
                cfg(&[("AI_PRICES", bad)]).unwrap_err().var,
                "AI_PRICES",
                "{bad}"
            );
        }
        let c = cfg(&[("AI_PRICES", r#"{"m":{"input":1,"output":2,"reasoning":4}}"#)]).unwrap();
        assert_eq!(c.ai.prices["m"].reasoning, Some(4.0));
    }

    #[test]
    fn vendor_proxy_reads_either_case_upper_first_and_stays_secret() {
        let c = cfg(&[]).unwrap();
        assert!(!c.ai.vendor_proxy.any());
        let c = cfg(&[
            ("HTTPS_PROXY", "http://user:pw@proxy:3128"),
            ("https_proxy", "http://other:3128"),
            ("http_proxy", "http://lower:3128"),
            ("ALL_PROXY", "  "),
            ("no_proxy", "localhost,10.0.0.0/8"),
        ])
        .unwrap();
        let p = &c.ai.vendor_proxy;
        assert!(p.any());
        assert_eq!(
            p.https.as_ref().map(Secret::expose),
            Some("http://user:pw@proxy:3128")
        );
        assert_eq!(
            p.http.as_ref().map(Secret::expose),
            Some("http://lower:3128")
        );
        assert!(p.all.is_none(), "a blank value counts as unset");
        assert_eq!(p.no_proxy.as_deref(), Some("localhost,10.0.0.0/8"));
        assert!(
            !format!("{p:?}").contains("pw@"),
            "proxy URLs stay out of Debug"
        );
    }
}
