//! The web console's settings: session timeouts and the cookie's `Secure` flag.

use std::time::Duration;

use serde::Serialize;

use super::ConfigError;
use super::parse::{on_off, positive_secs, ser_secs};

/// Settings of the web console served at `/`.
#[derive(Clone, Debug, Serialize)]
pub struct ConsoleConfig {
    /// `SESSION_IDLE_TIMEOUT`: a session unused this long ends.
    #[serde(serialize_with = "ser_secs")]
    pub session_idle_timeout: Duration,
    /// `SESSION_ABSOLUTE_TIMEOUT`: a session ends this long after sign-in, used or not.
    #[serde(serialize_with = "ser_secs")]
    pub session_absolute_timeout: Duration,
    /// `COOKIE_SECURE`: always mark the session cookie `Secure` (it is also marked when
    /// a trusted proxy says the request came over HTTPS).
    pub cookie_secure: bool,
}

impl ConsoleConfig {
    /// `SESSION_IDLE_TIMEOUT`, `SESSION_ABSOLUTE_TIMEOUT` and `COOKIE_SECURE`.
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let session_idle_timeout = positive_secs(get, "SESSION_IDLE_TIMEOUT", "1800")?;
        let session_absolute_timeout = positive_secs(get, "SESSION_ABSOLUTE_TIMEOUT", "43200")?;
        if session_absolute_timeout < session_idle_timeout {
            return Err(ConfigError {
                var: "SESSION_ABSOLUTE_TIMEOUT",
                value: format!("{}", session_absolute_timeout.as_secs_f64()),
                expected: "at least SESSION_IDLE_TIMEOUT",
            });
        }
        Ok(Self {
            session_idle_timeout,
            session_absolute_timeout,
            cookie_secure: on_off(get, "COOKIE_SECURE", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::cfg;

    #[test]
    fn defaults_and_checks() {
        let c = cfg(&[]).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.console.session_idle_timeout.as_secs(), 1800);
        assert_eq!(c.console.session_absolute_timeout.as_secs(), 43200);
        assert!(!c.console.cookie_secure);
        let c = cfg(&[("COOKIE_SECURE", "true"), ("SESSION_IDLE_TIMEOUT", "60")])
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(c.console.cookie_secure);
        assert_eq!(c.console.session_idle_timeout.as_secs(), 60);
        let e = cfg(&[("SESSION_IDLE_TIMEOUT", "0")]).err().map(|e| e.var);
        assert_eq!(e, Some("SESSION_IDLE_TIMEOUT"));
        let e = cfg(&[
            ("SESSION_IDLE_TIMEOUT", "600"),
            ("SESSION_ABSOLUTE_TIMEOUT", "60"),
        ])
        .err()
        .map(|e| e.var);
        assert_eq!(e, Some("SESSION_ABSOLUTE_TIMEOUT"));
    }
}
