//! The instants the API accepts: RFC 3339 only, within 1970-01-01 – 9999-12-31 (UTC).
//!
//! Both stores keep these: SQLite's text times keep their order only with four-digit
//! years, and a five-digit year would not print as RFC 3339 again. Fields take
//! `#[serde(default, deserialize_with = "time::optional")]`, so a time out of range is a
//! 422 naming the field, like any other bad value.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Deserializer};

/// What a 422 says of an instant out of range.
pub const RANGE_MESSAGE: &str =
    "must be an RFC 3339 time between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z";

/// Earliest and latest instants accepted.
pub fn bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    let min = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).single();
    let max = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single();
    (
        min.unwrap_or(DateTime::<Utc>::MIN_UTC),
        max.map(|t| t + Duration::microseconds(999_999))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// Parses an RFC 3339 instant within [`bounds`], truncated to microseconds (the
/// precision both backends keep).
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s.trim()).ok()?.to_utc();
    let (min, max) = bounds();
    if t < min || t > max {
        return None;
    }
    Some(DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t))
}

/// `deserialize_with` for an optional instant (JSON bodies and query strings alike).
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(RANGE_MESSAGE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_four_digit_utc_years_pass() {
        assert!(parse("2030-01-01T00:00:00Z").is_some());
        assert!(parse("1970-01-01T00:00:00Z").is_some());
        assert!(parse("9999-12-31T23:59:59Z").is_some());
        assert!(parse("+10000-01-01T00:00:00Z").is_none());
        assert!(parse("-0001-01-01T00:00:00Z").is_none());
        // Fine as written, but past the end once in UTC.
        assert!(parse("9999-12-31T23:59:59-23:59").is_none());
        assert!(parse("1969-12-31T23:59:59Z").is_none());
        assert!(parse("2030-01-01").is_none());
        let t = parse("2030-01-01T00:00:00.123456789Z").unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_000);
    }
}
