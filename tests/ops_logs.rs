//! The log analyzer on the log a real server wrote: the binary serves with stdout going
//! to a file, known requests are sent, and the analyzer's counts and percentiles are
//! checked against what was sent and against exact percentiles of the same lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");
const KEY: &str = "logs-test-key-0123456789";

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("de-logs-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits for the "listening" line in the log file and returns the API address.
fn wait_listening(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["message"] == "listening"
            {
                return v["api"].as_str().unwrap().to_string();
            }
        }
        assert!(Instant::now() < deadline, "no 'listening' line: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_matches_what_a_real_server_logged() {
    let dir = temp_dir();
    let log = dir.join("server.log");
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("DATA_DIR", &dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("PROMETHEUS_METRICS_PORT", "0")
        .env("API_KEY_WHITELIST", KEY)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = wait_listening(&log);
    let c = reqwest::Client::new();
    let base = format!("http://{api}");
    let (n_health, n_created, n_list, n_missing, n_unauth) = (40, 25, 30, 15, 10);
    for _ in 0..n_health {
        assert_eq!(
            c.get(format!("{base}/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    for i in 0..n_created {
        let r = c
            .post(format!("{base}/v1/employees"))
            .header("X-API-Key", KEY)
            .json(&serde_json::json!({"name": format!("log-{i}"), "role": "r"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    for _ in 0..n_list {
        let r = c
            .get(format!("{base}/v1/employees?limit=5"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..n_missing {
        let r = c
            .get(format!(
                "{base}/v1/employees/00000000-0000-7000-8000-000000000000"
            ))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    for _ in 0..n_unauth {
        assert_eq!(
            c.get(format!("{base}/v1/employees"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Exact figures from the same file, independently of the analyzer.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["status_code"].is_u64())
        .map(|v| v["response_time"].as_f64().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    let total = n_health + n_created + n_list + n_missing + n_unauth;
    assert_eq!(times.len(), total, "one access line per request");

    // Append junk to a copy and gzip another copy: same figures, junk counted.
    let noisy = dir.join("noisy.log");
    let mut f = std::fs::File::create(&noisy).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.write_all(b"this is not json\n{\"timestamp\":\"never\"}\n{\"truncated\":\n")
        .unwrap();
    drop(f);
    let gz = dir.join("server.log.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();

    for (file, malformed) in [(&log, 0), (&noisy, 3), (&gz, 0)] {
        let out = Command::new(BIN)
            .env_clear()
            .args([
                "analyze-logs",
                "--hours",
                "1",
                "--slow-threshold",
                "0",
                "--log-file",
            ])
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["malformed_lines"], malformed, "{}", file.display());
        assert_eq!(r["total_requests"], total);
        assert_eq!(r["status_codes"]["200"], n_health + n_list);
        assert_eq!(r["status_codes"]["201"], n_created);
        assert_eq!(r["status_codes"]["404"], n_missing);
        assert_eq!(r["status_codes"]["401"], n_unauth);
        assert_eq!(r["server_errors"], 0);
        assert_eq!(r["error_rate"], 0.0);
        assert_eq!(r["outside_window"], 0);
        let hourly: u64 = r["hourly_distribution"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(hourly, r["total_entries"].as_u64().unwrap());
        let rt = &r["response_times"];
        assert_eq!(rt["count"], total);
        assert_eq!(rt["max"].as_f64().unwrap(), *times.last().unwrap());
        assert_eq!(rt["min"].as_f64().unwrap(), times[0]);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        assert!((rt["average"].as_f64().unwrap() - mean).abs() < 1e-9);
        for (key, q) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
            let want = nearest_rank(&times, q);
            let got = rt[key].as_f64().unwrap();
            // The documented bound: 1/256 relative plus 1 µs of quantisation.
            assert!(
                (got - want).abs() <= want / 256.0 + 1e-6,
                "{key}: got {got}, want {want}"
            );
        }
        // Threshold 0: every request is slow; the last ten are kept, newest last.
        assert_eq!(r["slow_requests_total"], total);
        assert_eq!(r["slow_requests"].as_array().unwrap().len(), 10);
        assert_eq!(r["slow_requests"][9]["status_code"], 401);
    }

    // Stdin, table format, report to a file.
    let report = dir.join("report.txt");
    let mut child2 = Command::new(BIN)
        .env_clear()
        .args([
            "analyze-logs",
            "--log-file",
            "-",
            "--format",
            "table",
            "--output",
        ])
        .arg(&report)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child2
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child2.wait().unwrap().success());
    let table = std::fs::read_to_string(&report).unwrap();
    assert!(
        table.contains(&format!("requests               {total}")),
        "{table}"
    );
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
