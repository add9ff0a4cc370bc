//! Readers shared by every area: a value parsed from one variable (with its default),
//! seconds, on/off switches, and the serializer that prints a duration as seconds.
//!
//! Each reader names the variable in its [`ConfigError`], so a bad value is reported as
//! `invalid VAR="value": expected …`.

use std::time::Duration;

use super::ConfigError;

/// `var` parsed as `T`, or `default` when it is unset; `expected` says what a valid value
/// looks like.
/// Like [`parse`] for a whole number that must not be 0 (the same `expected` either way).
pub(super) fn positive_u32(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
    expected: &'static str,
) -> Result<u32, ConfigError> {
    match parse(get, var, default, expected)? {
        0 => Err(ConfigError {
            var,
            value: "0".into(),
            expected,
        }),
        n => Ok(n),
    }
}

pub(super) fn parse<T: std::str::FromStr>(
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

/// Seconds, whole or fractional (`2`, `0.5`), at most a year.
pub(super) fn secs(
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
pub(super) fn positive_secs(
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

/// A switch: `on`, `true`, `1`, `yes` or `off`, `false`, `0`, `no` (any case); `default`
/// when unset.
pub(super) fn on_off(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "on" | "true" | "1" | "yes") => Ok(true),
        Some(v) if matches!(v.as_str(), "off" | "false" | "0" | "no") => Ok(false),
        Some(v) => Err(ConfigError {
            var,
            value: v,
            expected: "on or off",
        }),
    }
}

/// Serializes a duration as (fractional) seconds, as the variables are written.
pub(super) fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
