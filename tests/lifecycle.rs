//! The real binary as an operator runs it: start-up, configuration errors, migrations,
//! and a SIGTERM during a slow request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::process::{Server, bin, poll, temp_dir};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "lifecycle-key-0123456789";

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_request_drains_and_exits_zero() {
    let dir = temp_dir();
    let mut server = Server::start(
        &dir,
        &[("API_KEY_WHITELIST", KEY), ("SHUTDOWN_GRACE_PERIOD", "20")],
    );
    let client = reqwest::Client::new();
    let ready_url = format!("http://{}/ready", server.api);
    assert_eq!(client.get(&ready_url).send().await.unwrap().status(), 200);

    // A client that sends the headers and half the body, then stalls.
    let body = br#"{"name":"slow-one","role":"arrives late"}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(&server.api).await.unwrap();
    let head = format!(
        "POST /v1/employees HTTP/1.1\r\nHost: test\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    let metrics_url = format!("http://{}/metrics", server.metrics);
    poll("the request to be in flight", || {
        let req = client.get(&metrics_url).send();
        async move {
            let text = req.await.unwrap().text().await.unwrap();
            text.lines()
                .any(|l| l.starts_with("http_requests_in_flight ") && !l.ends_with(" 0"))
        }
    })
    .await;

    let killed = Command::new("kill")
        .args(["-TERM", &server.pid()])
        .status()
        .unwrap();
    assert!(killed.success());

    poll("/ready to turn 503", || {
        let req = client.get(&ready_url).send();
        async move { req.await.map(|r| r.status() == 503).unwrap_or(false) }
    })
    .await;
    let r = client.get(&ready_url).send().await.unwrap();
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "draining responses close their connection"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["draining"]["ok"], false);
    assert!(server.child.try_wait().unwrap().is_none(), "still serving");

    // The slow request completes normally.
    stream.write_all(rest).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&response).contains("\"slow-one\"") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "response in time");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 201"), "got {text}");

    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let lines = server.remaining_lines();
    assert!(
        lines.iter().any(|l| l.contains("shutdown complete")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_with_no_environment_uses_sqlite_and_creates_a_key() {
    let dir = temp_dir();
    let mut server = Server::start(&dir, &[]);
    assert!(
        dir.join("digital-employee.db").exists(),
        "SQLite file created"
    );
    let wal = sqlx_journal_mode(&dir.join("digital-employee.db")).await;
    assert_eq!(wal, "wal");
    Command::new("kill")
        .args(["-INT", &server.pid()])
        .status()
        .unwrap();
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    // The key is in a file only the owner can read, and printed exactly once.
    let file = dir.join("bootstrap-admin-key");
    let saved = std::fs::read_to_string(&file).unwrap();
    let key = saved.trim();
    let (prefix, secret) = key
        .strip_prefix("de_")
        .and_then(|k| k.split_once('_'))
        .unwrap_or_else(|| panic!("not an API key: {saved}"));
    assert!(prefix.len() >= 8 && secret.len() >= 32, "{saved}");
    assert_eq!(
        stderr.matches(key).count(),
        1,
        "bootstrap key printed once: {stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn sqlx_journal_mode(path: &Path) -> String {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[test]
fn invalid_configuration_stops_start_naming_the_variable() {
    let dir = temp_dir();
    for (var, value) in [
        ("PORT", "eighty"),
        ("AI_SERVICE_RETRY_COUNT", "-3"),
        ("DATABASE_URL", "mysql://nope"),
    ] {
        let out = run(bin(&dir, &[(var, value)]).arg("serve"));
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_command_redacts_secrets() {
    let dir = temp_dir();
    let secrets = [
        ("JWT_SECRET_KEY", "jwt-top-secret-value"),
        ("OPENAI_API_KEY", "sk-live-openai-secret"),
        ("CLAUDE_API_KEY", "sk-ant-claude-secret"),
        ("API_KEY_WHITELIST", "whitelisted-secret-1"),
        ("DB_HOST", "db.internal"),
        ("DB_PASSWORD", "database-password-9"),
    ];
    let out = run(bin(&dir, &secrets).arg("config"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["jwt_secret_key"], "[redacted]");
    assert!(v["database_url"].as_str().unwrap().contains("db.internal"));
    for (_, s) in secrets.iter().filter(|(k, _)| *k != "DB_HOST") {
        assert!(!text.contains(s), "config leaks {s}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn migrate_applies_and_reports_status() {
    let dir = temp_dir();
    let status = run(bin(&dir, &[]).args(["migrate", "status"]));
    assert_eq!(status.status.code(), Some(1), "pending before migrating");
    assert!(String::from_utf8_lossy(&status.stdout).contains("pending:  [1"));
    let apply = run(bin(&dir, &[]).arg("migrate"));
    assert!(apply.status.success(), "{apply:?}");
    assert!(String::from_utf8_lossy(&apply.stdout).contains("applied migrations"));
    let again = run(bin(&dir, &[]).args(["migrate", "apply"]));
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
    let status = run(bin(&dir, &[]).args(["migrate", "status"]));
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("status:   current"));
    let usage = run(bin(&dir, &[]).args(["migrate", "sideways"]));
    assert_eq!(usage.status.code(), Some(2), "usage error");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_refuses_an_outdated_postgres_schema() {
    let Some(_) = common::postgres_url() else {
        return;
    };
    let db = common::TestDb::new(common::Backend::Postgres)
        .await
        .unwrap();
    let err = digital_employee::app::App::build(common::test_config(&db.url, &[]))
        .await
        .err()
        .expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("digital-employee migrate"), "{msg}");
    // After migrating, it starts.
    db.migrated_store().await.close().await;
    let app = digital_employee::app::App::build(common::test_config(&db.url, &[]))
        .await
        .unwrap();
    let app = common::TestApp::start(app, db).await;
    app.stop().await.unwrap();
}
