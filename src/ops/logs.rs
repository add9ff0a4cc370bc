//! The log analyzer behind `digital-employee analyze-logs`.
//!
//! Reads the JSON lines the server writes (`telemetry::logging`), plain, gzip-compressed
//! or from stdin, one line at a time: memory stays bounded whatever the file size.
//!
//! Definitions (also in `docs/operations.md`):
//! - an **entry** is a line that parses as a JSON object with an RFC 3339 `timestamp`
//!   inside the window (`--hours`, counted back from now; `0` = no window). Anything else
//!   that is not blank is **malformed** (counted, skipped); entries before the window are
//!   counted as `outside_window`.
//! - a **request** is an entry with a numeric `status_code` (the access-log line).
//! - **error rate** = requests with `status_code` ≥ 500 ÷ requests. Lines at level
//!   `ERROR` are counted separately as `error_lines`; a failed request usually yields
//!   both (the central error log and the access line), so adding them would count it
//!   twice. `top_errors` groups `ERROR` lines by their `error` field (else `message`).
//! - **response time** statistics use the `response_time` field (seconds) of requests.
//!   Mean, min and max are exact; percentiles come from a log-linear histogram
//!   ([`LatencyHistogram`]) whose answer is within 0.4 % (relative) of the exact
//!   nearest-rank percentile, plus 1 µs of quantisation.
//! - **slow requests**: the last 10 with `response_time` above the threshold.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

/// Lines longer than this are counted as malformed without being held in memory.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Distinct error texts tracked for `top_errors`; later new texts count as `other`.
pub const MAX_DISTINCT_ERRORS: usize = 10_000;
/// Error texts are grouped on their first 300 characters.
const ERROR_KEY_CHARS: usize = 300;
const SLOW_KEPT: usize = 10;

#[derive(Clone, Debug)]
pub struct Options {
    /// Only entries from the last `hours` hours; `0` = everything.
    pub hours: f64,
    /// Seconds above which a request is slow.
    pub slow_threshold: f64,
    /// "Now" for the window (tests pin it).
    pub now: DateTime<Utc>,
}

/// One parsed line: only the fields the analyzer reads, borrowed where possible.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    level: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    path: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    status_code: Option<serde_json::Value>,
    #[serde(default)]
    response_time: Option<f64>,
    #[serde(default)]
    ai_tokens_used: Option<f64>,
}

/// A slow request as reported.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SlowRequest {
    pub timestamp: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status_code: Option<u16>,
    pub response_time: f64,
    pub request_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ResponseTimes {
    pub count: u64,
    pub average: f64,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// The analyzer's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub window_hours: Option<f64>,
    pub window_start: Option<String>,
    pub generated_at: String,
    pub lines_read: u64,
    pub malformed_lines: u64,
    pub outside_window: u64,
    pub total_entries: u64,
    pub total_requests: u64,
    pub server_errors: u64,
    /// `server_errors / total_requests`, 0 when there were no requests.
    pub error_rate: f64,
    pub error_lines: u64,
    pub lines_by_level: BTreeMap<String, u64>,
    pub ai_tokens_used: u64,
    pub response_times: Option<ResponseTimes>,
    pub status_codes: BTreeMap<String, u64>,
    pub top_errors: Vec<ErrorCount>,
    /// `ERROR` lines whose text was not tracked (more than the distinct-text cap).
    pub other_errors: u64,
    /// Entries per hour, keyed `YYYY-MM-DDTHH:00Z`.
    pub hourly_distribution: BTreeMap<String, u64>,
    pub slow_threshold: f64,
    pub slow_requests_total: u64,
    /// The last 10 slow requests, oldest first.
    pub slow_requests: Vec<SlowRequest>,
}

/// Streaming accumulator; feed it lines, then [`Analyzer::finish`].
pub struct Analyzer {
    opts: Options,
    window_start: Option<DateTime<Utc>>,
    lines_read: u64,
    malformed: u64,
    outside: u64,
    entries: u64,
    requests: u64,
    server_errors: u64,
    error_lines: u64,
    levels: BTreeMap<String, u64>,
    tokens: f64,
    latency: LatencyHistogram,
    statuses: BTreeMap<u16, u64>,
    errors: HashMap<String, u64>,
    other_errors: u64,
    hourly: BTreeMap<i64, u64>,
    slow_total: u64,
    slow: VecDeque<SlowRequest>,
}

impl Analyzer {
    pub fn new(opts: Options) -> Self {
        let window_start = (opts.hours > 0.0)
            .then(|| opts.now - ChronoDuration::milliseconds((opts.hours * 3_600_000.0) as i64));
        Analyzer {
            opts,
            window_start,
            lines_read: 0,
            malformed: 0,
            outside: 0,
            entries: 0,
            requests: 0,
            server_errors: 0,
            error_lines: 0,
            levels: BTreeMap::new(),
            tokens: 0.0,
            latency: LatencyHistogram::new(),
            statuses: BTreeMap::new(),
            errors: HashMap::new(),
            other_errors: 0,
            hourly: BTreeMap::new(),
            slow_total: 0,
            slow: VecDeque::with_capacity(SLOW_KEPT),
        }
    }

    /// Counts a line that was too long to look at.
    pub fn oversized_line(&mut self) {
        self.lines_read += 1;
        self.malformed += 1;
    }

    /// Feeds one line (without its newline).
    pub fn line(&mut self, bytes: &[u8]) {
        self.lines_read += 1;
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        let Ok(line) = serde_json::from_slice::<Line<'_>>(trimmed) else {
            self.malformed += 1;
            return;
        };
        let Some(ts) = line
            .timestamp
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
        else {
            self.malformed += 1;
            return;
        };
        if self.window_start.is_some_and(|start| ts < start) {
            self.outside += 1;
            return;
        }
        self.entries += 1;
        *self
            .hourly
            .entry(ts.timestamp().div_euclid(3600))
            .or_default() += 1;
        let level = line.level.as_deref().unwrap_or("UNKNOWN");
        let level_key = if level.bytes().any(|b| b.is_ascii_lowercase()) {
            std::borrow::Cow::Owned(level.to_ascii_uppercase())
        } else {
            std::borrow::Cow::Borrowed(level)
        };
        if let Some(n) = self.levels.get_mut(&*level_key) {
            *n += 1;
        } else {
            self.levels.insert(level_key.into_owned(), 1);
        }
        if let Some(t) = line.ai_tokens_used
            && t.is_finite()
            && t > 0.0
        {
            self.tokens += t;
        }
        if level.eq_ignore_ascii_case("ERROR") {
            self.error_lines += 1;
            let text = line
                .error
                .as_deref()
                .or(line.message.as_deref())
                .unwrap_or("(no message)");
            let key: String = text.chars().take(ERROR_KEY_CHARS).collect();
            if let Some(n) = self.errors.get_mut(&key) {
                *n += 1;
            } else if self.errors.len() < MAX_DISTINCT_ERRORS {
                self.errors.insert(key, 1);
            } else {
                self.other_errors += 1;
            }
        }
        let status = match &line.status_code {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|s| u16::try_from(s).ok()),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let Some(status) = status else { return };
        self.requests += 1;
        *self.statuses.entry(status).or_default() += 1;
        if status >= 500 {
            self.server_errors += 1;
        }
        if let Some(rt) = line.response_time
            && rt.is_finite()
            && rt >= 0.0
        {
            self.latency.record(rt);
            if rt > self.opts.slow_threshold {
                self.slow_total += 1;
                if self.slow.len() == SLOW_KEPT {
                    self.slow.pop_front();
                }
                self.slow.push_back(SlowRequest {
                    timestamp: line.timestamp.as_deref().unwrap_or("").to_string(),
                    method: line.method.map(|m| m.into_owned()),
                    path: line.path.map(|p| p.into_owned()),
                    status_code: Some(status),
                    response_time: rt,
                    request_id: line.request_id.map(|r| r.into_owned()),
                });
            }
        }
    }

    /// Reads every line of `reader`, in bounded memory.
    pub fn read_all(&mut self, reader: impl Read) -> std::io::Result<()> {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut buf = Vec::with_capacity(4096);
        loop {
            match read_line_capped(&mut reader, &mut buf, MAX_LINE_BYTES)? {
                LineRead::Eof => return Ok(()),
                LineRead::Line => self.line(&buf),
                LineRead::TooLong => self.oversized_line(),
            }
        }
    }

    pub fn finish(self) -> Report {
        let mut top: Vec<ErrorCount> = self
            .errors
            .into_iter()
            .map(|(error, count)| ErrorCount { error, count })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
        top.truncate(10);
        let response_times = (self.latency.count() > 0).then(|| ResponseTimes {
            count: self.latency.count(),
            average: self.latency.mean(),
            min: self.latency.min(),
            p50: self.latency.percentile(0.50),
            p95: self.latency.percentile(0.95),
            p99: self.latency.percentile(0.99),
            max: self.latency.max(),
        });
        let hourly = self
            .hourly
            .into_iter()
            .filter_map(|(h, n)| {
                DateTime::from_timestamp(h * 3600, 0)
                    .map(|t| (t.format("%Y-%m-%dT%H:00Z").to_string(), n))
            })
            .collect();
        Report {
            window_hours: (self.opts.hours > 0.0).then_some(self.opts.hours),
            window_start: self.window_start.map(|t| t.to_rfc3339()),
            generated_at: self.opts.now.to_rfc3339(),
            lines_read: self.lines_read,
            malformed_lines: self.malformed,
            outside_window: self.outside,
            total_entries: self.entries,
            total_requests: self.requests,
            server_errors: self.server_errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.server_errors as f64 / self.requests as f64
            },
            error_lines: self.error_lines,
            lines_by_level: self.levels,
            ai_tokens_used: self.tokens.round() as u64,
            response_times,
            status_codes: self
                .statuses
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            top_errors: top,
            other_errors: self.other_errors,
            hourly_distribution: hourly,
            slow_threshold: self.opts.slow_threshold,
            slow_requests_total: self.slow_total,
            slow_requests: self.slow.into_iter().collect(),
        }
    }
}

enum LineRead {
    Eof,
    Line,
    TooLong,
}

/// Reads up to the next `\n` into `buf`; a line over `cap` bytes is consumed without
/// being kept, so one giant line cannot exhaust memory.
fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => LineRead::Eof,
                (true, true) => LineRead::TooLong,
                (true, false) => LineRead::Line,
            });
        }
        any = true;
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > cap {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(available.len());
        r.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Opens `path` for reading: `-` is stdin; gzip is recognised by its magic bytes (so
/// a rotated `.gz` and a plain file both work whatever their names).
pub fn open(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if path.as_os_str() == "-" {
        return Ok(sniff(Box::new(std::io::stdin())));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(sniff(Box::new(file)))
}

/// Wraps `r` in a gzip decoder when it starts with the gzip magic bytes.
fn sniff(r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let is_gzip = matches!(r.fill_buf(), Ok(b) if b.starts_with(&[0x1f, 0x8b]));
    if is_gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    }
}

/// Analyzes one file (or stdin with `-`).
pub fn analyze_path(path: &Path, opts: Options) -> anyhow::Result<Report> {
    let reader = open(path)?;
    let mut a = Analyzer::new(opts);
    a.read_all(reader)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(a.finish())
}

impl Report {
    pub fn to_table(&self) -> String {
        let mut o = String::new();
        let mut kv = |k: &str, v: String| o.push_str(&format!("{k:<22} {v}\n"));
        kv(
            "window",
            match (&self.window_hours, &self.window_start) {
                (Some(h), Some(s)) => format!("last {h} h (since {s})"),
                _ => "whole file".into(),
            },
        );
        kv("lines read", self.lines_read.to_string());
        kv("malformed lines", self.malformed_lines.to_string());
        kv("outside window", self.outside_window.to_string());
        kv("entries", self.total_entries.to_string());
        kv("requests", self.total_requests.to_string());
        kv(
            "server errors (5xx)",
            format!(
                "{} ({:.2} % of requests)",
                self.server_errors,
                self.error_rate * 100.0
            ),
        );
        kv("ERROR lines", self.error_lines.to_string());
        kv("AI tokens used", self.ai_tokens_used.to_string());
        if let Some(rt) = &self.response_times {
            kv(
                "response time (s)",
                format!(
                    "avg {:.4}  p50 {:.4}  p95 {:.4}  p99 {:.4}  max {:.4}  (n={})",
                    rt.average, rt.p50, rt.p95, rt.p99, rt.max, rt.count
                ),
            );
        }
        o.push_str("\nstatus codes\n");
        for (s, n) in &self.status_codes {
            o.push_str(&format!("  {s:<8} {n}\n"));
        }
        o.push_str("\ntop errors\n");
        for e in &self.top_errors {
            o.push_str(&format!("  {:>8}  {}\n", e.count, e.error));
        }
        o.push_str("\nhourly distribution\n");
        for (h, n) in &self.hourly_distribution {
            o.push_str(&format!("  {h}  {n}\n"));
        }
        o.push_str(&format!(
            "\nslow requests (> {} s): {} in total, last {}\n",
            self.slow_threshold,
            self.slow_requests_total,
            self.slow_requests.len()
        ));
        for s in &self.slow_requests {
            o.push_str(&format!(
                "  {}  {:.3}s  {} {} {}  {}\n",
                s.timestamp,
                s.response_time,
                s.method.as_deref().unwrap_or("-"),
                s.path.as_deref().unwrap_or("-"),
                s.status_code.map(|c| c.to_string()).unwrap_or_default(),
                s.request_id.as_deref().unwrap_or("")
            ));
        }
        o
    }
}

/// A log-linear histogram of durations for percentiles in fixed memory.
///
/// Values are kept in whole microseconds. Below 128 µs every microsecond has its own
/// bucket (exact); above, each power of two is split into 128 equal buckets, so a
/// bucket's width is at most 1/128 of its lower bound. A percentile is answered with
/// the bucket's midpoint, which is within 1/256 (0.4 %) of every value in the bucket,
/// and clamped to the exact min and max. 4,608 counters (36 KiB) cover up to 2^42 µs
/// (about 50 days); longer values share the last bucket.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const MAX_EXP: u32 = 41;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        LatencyHistogram {
            buckets: vec![0; (SUB + u64::from(MAX_EXP - SUB_BITS + 1) * SUB) as usize],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: 0.0,
        }
    }

    fn index(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        let exp = (63 - us.leading_zeros()).min(MAX_EXP);
        let us = us.min((1u64 << (MAX_EXP + 1)) - 1);
        let shift = exp - SUB_BITS;
        let sub = (us >> shift) & (SUB - 1);
        (SUB + u64::from(shift) * SUB + sub) as usize
    }

    /// Midpoint of a bucket, in microseconds.
    fn value_of(index: usize) -> f64 {
        let i = index as u64;
        if i < SUB {
            return i as f64;
        }
        let shift = (i - SUB) / SUB;
        let sub = (i - SUB) % SUB;
        let lower = (SUB + sub) << shift;
        let width = 1u64 << shift;
        lower as f64 + (width as f64 - 1.0) / 2.0
    }

    /// Records a duration in seconds.
    pub fn record(&mut self, seconds: f64) {
        let us = (seconds * 1e6).floor().max(0.0) as u64;
        let i = Self::index(us);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.count += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
    }

    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
    pub fn min(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.min }
    }
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Nearest-rank percentile (`q` in 0..=1), in seconds.
    pub fn percentile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let v = Self::value_of(i) / 1e6;
                return v.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn opts(hours: f64) -> Options {
        Options {
            hours,
            slow_threshold: 5.0,
            now: DateTime::parse_from_rfc3339("2025-07-31T12:30:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn req(ts: &str, status: u16, rt: f64) -> String {
        format!(
            r#"{{"timestamp":"{ts}","level":"INFO","message":"request completed","target":"digital_employee::api","request_id":"r-{rt}","method":"GET","path":"/v1/employees","status_code":{status},"response_time":{rt}}}"#
        )
    }

    fn sample() -> String {
        let mut lines = vec![
            req("2025-07-31T11:00:01.000000Z", 200, 0.010),
            req("2025-07-31T11:10:00.000000Z", 200, 0.020),
            req("2025-07-31T12:00:00.000000Z", 404, 0.030),
            req("2025-07-31T12:01:00.000000Z", 500, 6.5),
            req("2025-07-31T12:02:00.000000Z", 503, 7.0),
            r#"{"timestamp":"2025-07-31T12:01:00.000000Z","level":"ERROR","message":"request failed","error":"database error: pool timed out"}"#.into(),
            r#"{"timestamp":"2025-07-31T12:02:00.000000Z","level":"ERROR","message":"request failed","error":"database error: pool timed out"}"#.into(),
            r#"{"timestamp":"2025-07-31T12:03:00.000000Z","level":"ERROR","message":"vendor down"}"#.into(),
            r#"{"timestamp":"2025-07-31T12:04:00.000000Z","level":"INFO","message":"llm call","ai_tokens_used":1500}"#.into(),
            r#"{"timestamp":"2025-07-31T12:05:00.000000Z","level":"INFO","message":"llm call","ai_tokens_used":500}"#.into(),
            // Before a 2-hour window.
            req("2025-07-31T09:00:00.000000Z", 200, 0.5),
            // Malformed in various ways.
            "not json at all".into(),
            r#"{"timestamp":"yesterday","level":"INFO"}"#.into(),
            r#"{"level":"INFO","message":"no timestamp"}"#.into(),
            r#"["an","array"]"#.into(),
            r#"{"timestamp":"2025-07-31T12:06:00Z","level":"INFO","#.into(),
            String::new(),
        ];
        lines.push(String::new());
        lines.join("\n")
    }

    #[test]
    fn counts_a_synthetic_log() {
        let mut a = Analyzer::new(opts(2.0));
        a.read_all(sample().as_bytes()).unwrap();
        let r = a.finish();
        assert_eq!(r.malformed_lines, 5);
        assert_eq!(r.outside_window, 1);
        assert_eq!(r.total_entries, 10);
        assert_eq!(r.total_requests, 5);
        assert_eq!(r.server_errors, 2);
        assert!((r.error_rate - 0.4).abs() < 1e-12);
        assert_eq!(r.error_lines, 3);
        assert_eq!(r.ai_tokens_used, 2000);
        assert_eq!(r.status_codes["200"], 2);
        assert_eq!(r.status_codes["500"], 1);
        assert_eq!(r.top_errors[0].error, "database error: pool timed out");
        assert_eq!(r.top_errors[0].count, 2);
        assert_eq!(r.top_errors[1].error, "vendor down");
        assert_eq!(r.hourly_distribution["2025-07-31T11:00Z"], 2);
        assert_eq!(r.hourly_distribution["2025-07-31T12:00Z"], 8);
        assert_eq!(r.slow_requests_total, 2);
        assert_eq!(r.slow_requests[0].response_time, 6.5);
        assert_eq!(r.slow_requests[1].status_code, Some(503));
        let rt = r.response_times.unwrap();
        assert_eq!(rt.count, 5);
        assert_eq!(rt.max, 7.0);
        assert_eq!(rt.min, 0.010);
        assert!((rt.average - (0.01 + 0.02 + 0.03 + 6.5 + 7.0) / 5.0).abs() < 1e-9);
        assert!((rt.p50 - 0.030).abs() / 0.030 < 0.005, "{}", rt.p50);
        // No window: the old line is counted too.
        let mut all = Analyzer::new(opts(0.0));
        all.read_all(sample().as_bytes()).unwrap();
        assert_eq!(all.finish().total_requests, 6);
    }

    #[test]
    fn reads_gzip_and_keeps_only_the_last_ten_slow_requests() {
        let dir = std::env::temp_dir().join(format!("de-logs-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for i in 0..25 {
            text.push_str(&req(
                &format!("2025-07-31T12:{i:02}:00.000000Z"),
                200,
                10.0 + f64::from(i),
            ));
            text.push('\n');
        }
        text.push_str("garbage\n");
        let gz = dir.join("server.log.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let r = analyze_path(&gz, opts(0.0)).unwrap();
        assert_eq!(r.total_requests, 25);
        assert_eq!(r.malformed_lines, 1);
        assert_eq!(r.slow_requests_total, 25);
        assert_eq!(r.slow_requests.len(), 10);
        assert_eq!(r.slow_requests[0].response_time, 25.0);
        assert_eq!(r.slow_requests[9].response_time, 34.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn oversized_lines_are_malformed_not_fatal() {
        let mut text = vec![b'x'; MAX_LINE_BYTES + 10];
        text.push(b'\n');
        text.extend_from_slice(req("2025-07-31T12:00:00Z", 200, 0.1).as_bytes());
        let mut a = Analyzer::new(opts(0.0));
        a.read_all(&text[..]).unwrap();
        let r = a.finish();
        assert_eq!(r.malformed_lines, 1);
        assert_eq!(r.total_requests, 1);
    }

    #[test]
    fn histogram_percentiles_stay_within_the_error_bound() {
        let mut h = LatencyHistogram::new();
        let mut exact = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            // A deterministic spread from 1 µs to ~100 s.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 10f64.powf(((x >> 11) as f64 / (1u64 << 53) as f64) * 8.0 - 6.0);
            h.record(v);
            exact.push(v);
        }
        exact.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let rank = ((q * exact.len() as f64).ceil() as usize).max(1);
            let want = exact[rank - 1];
            let got = h.percentile(q);
            let err = (got - want).abs();
            assert!(
                err <= want / 256.0 + 1e-6 + 1e-12,
                "q={q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.percentile(1.0), h.max());
    }
}
