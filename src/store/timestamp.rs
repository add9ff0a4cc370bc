//! Times as text: RFC 3339, UTC, microseconds, `Z` — how log lines print them and how
//! SQLite stores them (its text times sort in time order with four-digit years).

use chrono::{DateTime, Utc};

/// Writes `now` as RFC 3339 with microseconds and `Z` (`2026-12-01T09:30:05.123456Z`),
/// digit by digit: the same text as chrono's `to_rfc3339_opts(Micros, true)` (and, for
/// years 0–9999, as `%Y-%m-%dT%H:%M:%S%.6fZ`), without its format machinery: log lines
/// and SQLite's stored times are written this way on every request and every task.
pub fn push_rfc3339_micros(out: &mut Vec<u8>, now: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    fn digits(out: &mut Vec<u8>, n: u32, width: u32) {
        for p in (0..width).rev() {
            out.push(b'0' + (n / 10u32.pow(p) % 10) as u8);
        }
    }
    let year = now.year();
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(
            now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_bytes(),
        );
        return;
    }
    digits(out, year.unsigned_abs(), 4);
    out.push(b'-');
    digits(out, now.month(), 2);
    out.push(b'-');
    digits(out, now.day(), 2);
    out.push(b'T');
    digits(out, now.hour(), 2);
    out.push(b':');
    digits(out, now.minute(), 2);
    out.push(b':');
    // A leap second shows as :60, as chrono shows it.
    let nanos = now.nanosecond();
    digits(out, now.second() + nanos / 1_000_000_000, 2);
    out.push(b'.');
    digits(out, nanos % 1_000_000_000 / 1_000, 6);
    out.push(b'Z');
}

/// [`push_rfc3339_micros`] as a `String`.
pub fn rfc3339_micros(t: &DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(27);
    push_rfc3339_micros(&mut out, t);
    // Only ASCII digits and separators were written (or chrono's own text).
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn timestamps_read_as_chrono_writes_them() {
        let cases = [
            chrono::Utc::now(),
            chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            chrono::Utc
                .with_ymd_and_hms(1999, 12, 31, 23, 59, 59)
                .unwrap()
                + chrono::Duration::microseconds(999_999),
            // A leap second.
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap()
                .and_utc(),
            chrono::Utc.with_ymd_and_hms(12026, 6, 30, 1, 0, 0).unwrap(),
        ];
        for t in cases {
            let mut out = Vec::new();
            push_rfc3339_micros(&mut out, &t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
        }
    }

    #[test]
    fn stored_times_read_as_the_format_string_writes_them() {
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap() + Duration::microseconds(89);
        assert_eq!(
            rfc3339_micros(&t),
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        );
        assert_eq!(rfc3339_micros(&t), "2026-03-04T05:06:07.000089Z");
    }
}
