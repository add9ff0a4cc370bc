//! Vendor call failures, classified by what the router should do next; and the error
//! for a wire request we receive that cannot be converted, naming the field at fault.

use std::time::Duration;

/// What went wrong with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429: retry after a pause (honouring `Retry-After`).
    RateLimited,
    /// 5xx: retry.
    Server,
    /// No answer within the attempt timeout: retry.
    Timeout,
    /// Could not connect or the connection broke: retry.
    Connection,
    /// 401/403: this provider will not serve us; next candidate.
    Auth,
    /// 400/404/422: this request is wrong for this provider; next candidate.
    BadRequest,
    /// The prompt does not fit the model's context window.
    ContextLength,
    /// The vendor answered something we cannot parse.
    Malformed,
    /// A stream failed after it had started.
    StreamBroken,
    /// The provider is skipped while its circuit breaker is open.
    CircuitOpen,
    /// No such provider is configured.
    UnknownProvider,
}

impl ErrorKind {
    /// The kind's name as it is serialized (in `ai_calls.error_kind`, error reports and
    /// API bodies), without going through serde.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Auth => "auth",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::ContextLength => "context_length",
            ErrorKind::Malformed => "malformed",
            ErrorKind::StreamBroken => "stream_broken",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::UnknownProvider => "unknown_provider",
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{kind:?}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct AiError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    /// Safe to show: never contains keys or full vendor payloads.
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl AiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Classifies an HTTP error status (with the vendor's message, truncated).
    pub fn from_status(status: u16, body: &str, retry_after: Option<Duration>) -> Self {
        let lower = body.to_ascii_lowercase();
        let kind = match status {
            429 => ErrorKind::RateLimited,
            401 | 403 => ErrorKind::Auth,
            400 | 413 | 422
                if lower.contains("context_length")
                    || lower.contains("context length")
                    || lower.contains("maximum context")
                    || lower.contains("prompt is too long")
                    || lower.contains("too many tokens") =>
            {
                ErrorKind::ContextLength
            }
            408 => ErrorKind::Timeout,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::BadRequest,
        };
        let mut message: String = body.chars().take(300).collect();
        if message.is_empty() {
            message = format!("HTTP {status}");
        }
        Self {
            kind,
            status: Some(status),
            message,
            retry_after,
        }
    }

    /// Retrying the same candidate may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::RateLimited
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::Malformed
        )
    }

    /// Counts against the provider's circuit breaker (the provider, not the request, failed):
    /// every retryable failure, and a stream that broke after it had started.
    pub fn is_provider_fault(&self) -> bool {
        self.is_retryable() || self.kind == ErrorKind::StreamBroken
    }
}

/// A received wire request (gateway, sandbox) that does not convert to a neutral
/// request. `field` is the path of the offending field (`messages[2].role`,
/// `tool_choice`) so the caller can answer with a validation error on it; `message` says
/// what is wrong with it. Displays as `field: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    pub field: String,
    pub message: String,
}

impl RequestError {
    /// `field` as a path into the wire request (`messages[0].role`).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A vendor's error text as a tenant may see it (in `attempts[].reason` and stream
/// errors): sensitive data and credentials redacted, the operator's account identifiers
/// (`org-…`, `proj_…`, `acct_…`, `user-…`) replaced, at most 200 characters.
pub fn vendor_text(message: &str) -> String {
    static ACCOUNT_ID: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\b(?:org|proj|acct|user|sess|workspace|ws)[-_][A-Za-z0-9_-]{6,}").ok()
    });
    let (clean, _) = crate::auth::redact::redact(message);
    let clean = match ACCOUNT_ID.as_ref() {
        Some(re) => re.replace_all(&clean, "[account]").into_owned(),
        None => clean,
    };
    clean.chars().take(200).collect()
}

/// The longest `Retry-After` taken from a vendor; a larger one (or `1e30`) is clamped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Parses `Retry-After` (seconds or an HTTP date), at most [`MAX_RETRY_AFTER`]. Whatever
/// the vendor sends, this never panics: a value that is not a number or a date is `None`.
pub fn parse_retry_after(v: Option<&http::HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        return Some(
            Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)),
        );
    }
    let when = chrono::DateTime::parse_from_rfc2822(s).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_text_hides_accounts_and_secrets() {
        let raw = "You exceeded your quota for organization org-AbC123xyz789 in project \
                   proj_9fK2mQ7rT1 (key sk-abcdefghijklmnopqrstuvwx1234); contact ops@example.com";
        let shown = vendor_text(raw);
        for leaked in [
            "org-AbC123xyz789",
            "proj_9fK2mQ7rT1",
            "sk-abcdefghijklmnopqrstuvwx1234",
            "ops@example.com",
        ] {
            assert!(!shown.contains(leaked), "{leaked} in {shown}");
        }
        assert!(shown.contains("You exceeded your quota"), "{shown}");
        assert!(vendor_text(&"x".repeat(1000)).chars().count() == 200);
    }

    #[test]
    fn retry_after_never_panics_and_is_clamped() {
        use http::HeaderValue;
        let parse = |s: &str| parse_retry_after(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(parse("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse("0.25"), Some(Duration::from_millis(250)));
        for huge in ["1e30", "inf", "1e309", "18446744073709551616"] {
            assert_eq!(parse(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for bad in ["-1", "NaN", "-inf", "soon", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            parse("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse("Mon, 01 Jan 2001 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            AiError::from_status(429, "", None).kind,
            ErrorKind::RateLimited
        );
        assert_eq!(AiError::from_status(503, "", None).kind, ErrorKind::Server);
        assert_eq!(AiError::from_status(401, "", None).kind, ErrorKind::Auth);
        assert_eq!(
            AiError::from_status(400, "bad", None).kind,
            ErrorKind::BadRequest
        );
        assert_eq!(
            AiError::from_status(400, "{\"code\":\"context_length_exceeded\"}", None).kind,
            ErrorKind::ContextLength
        );
        assert!(AiError::from_status(502, "", None).is_retryable());
        assert!(!AiError::from_status(403, "", None).is_retryable());
    }

    #[test]
    fn kind_names_match_their_serialized_form() {
        let all = [
            ErrorKind::RateLimited,
            ErrorKind::Server,
            ErrorKind::Timeout,
            ErrorKind::Connection,
            ErrorKind::Auth,
            ErrorKind::BadRequest,
            ErrorKind::ContextLength,
            ErrorKind::Malformed,
            ErrorKind::StreamBroken,
            ErrorKind::CircuitOpen,
            ErrorKind::UnknownProvider,
        ];
        for kind in all {
            // A new variant fails to compile here until it is added to `all` as well.
            match kind {
                ErrorKind::RateLimited
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::Auth
                | ErrorKind::BadRequest
                | ErrorKind::ContextLength
                | ErrorKind::Malformed
                | ErrorKind::StreamBroken
                | ErrorKind::CircuitOpen
                | ErrorKind::UnknownProvider => {}
            }
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.as_str())
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let v = http::HeaderValue::from_static("3");
        assert_eq!(parse_retry_after(Some(&v)), Some(Duration::from_secs(3)));
        let v = http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(Some(&v)), Some(Duration::ZERO));
        let v = http::HeaderValue::from_static("soon");
        assert_eq!(parse_retry_after(Some(&v)), None);
    }
}
