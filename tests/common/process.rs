//! The real binary as an operator runs it: a server process with a clean environment,
//! its JSON log lines read as they come.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("de-life-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary with a clean environment (nothing leaks in from the caller's shell).
pub fn bin(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("DATA_DIR", data_dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("PROMETHEUS_METRICS_PORT", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// A `serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub api: String,
    pub metrics: String,
}

impl Server {
    // The child is killed and waited for in `Drop`, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut child = bin(data_dir, env)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no 'listening' line within 60s"));
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("stdout line is not JSON: {line}"));
            if v["message"] == "listening" {
                return Server {
                    child,
                    lines: rx,
                    api: v["api"].as_str().unwrap().to_string(),
                    metrics: v["metrics"].as_str().unwrap().to_string(),
                };
            }
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits for the process to exit, failing after the deadline.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn remaining_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Reads log lines until one satisfies `pred` and returns it, failing after a
    /// deadline (the lines before it are consumed).
    pub fn wait_line(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line of {what} within 30s"));
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && pred(&v)
            {
                return v;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it holds, failing after a deadline.
pub async fn poll<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
