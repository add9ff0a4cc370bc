//! No configured secret ever reaches the output: the real binary runs a full scenario with
//! known secrets configured and debug logging, and everything it writes (both streams of
//! `migrate`, `config`, `keys`, `token` and `serve`) plus every error body is scanned.
//!
//! The only secrets printed on purpose are the ones a command exists to print, each on
//! stdout of that command alone: the key from `keys create` and the token from `token`.
//! (The bootstrap admin key printed once on stderr by `serve` is the other such case; it
//! does not occur here because `API_KEY_WHITELIST` is set.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");
const WHITELIST_KEY: &str = "wl-known-secret-5f2c9e71a0";
const JWT_SECRET: &str = "jwt-known-secret-8d41b6c07e93a2f5";
const OPENAI_KEY: &str = "sk-openai-known-3c8a1f0e9b";
const ANTHROPIC_KEY: &str = "sk-ant-known-71d2e4a9c6";
const REDIS_PASSWORD: &str = "redis-known-pw-0a9b8c";
const DB_PASSWORD: &str = "db-known-pw-4e5f6a";

fn base_env(data_dir: &Path, database_url: &str) -> Vec<(String, String)> {
    [
        ("DATA_DIR", data_dir.to_str().unwrap()),
        ("DATABASE_URL", database_url),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PROMETHEUS_METRICS_PORT", "0"),
        ("LOG_LEVEL", "debug"),
        ("API_KEY_WHITELIST", WHITELIST_KEY),
        ("JWT_SECRET_KEY", JWT_SECRET),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        // Redis is down (closed port): its errors are logged, its URL must not be.
        (
            "REDIS_URL",
            &format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1/0") as &str,
        ),
        ("SHUTDOWN_GRACE_PERIOD", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs a command to completion; returns (status ok, stdout, stderr).
fn run(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The database for the scenario: PostgreSQL with a password in its URL when
/// `TEST_DATABASE_URL` is set (loopback trust auth ignores it), else SQLite, unless
/// `REQUIRE_BACKEND_TESTS=1` asks for PostgreSQL: then a missing URL fails.
async fn database(dir: &Path) -> (String, Option<(String, String)>) {
    let base = match std::env::var("TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                !std::env::var("REQUIRE_BACKEND_TESTS").is_ok_and(|v| v == "1"),
                "REQUIRE_BACKEND_TESTS=1 but TEST_DATABASE_URL is not set"
            );
            return (format!("sqlite://{}/scan.db", dir.display()), None);
        }
    };
    use sqlx::Connection;
    let schema = format!("scan_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // postgres://user@host… → postgres://user:password@host…
    let (scheme, rest) = base.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let sep = if host.contains('?') { '&' } else { '?' };
    let url =
        format!("{scheme}://{user}:{DB_PASSWORD}@{host}{sep}options=-c%20search_path%3D{schema}");
    (url, Some((base, schema)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_output() {
    let dir = std::env::temp_dir().join(format!("de-scan-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (db_url, pg) = database(&dir).await;
    let env = base_env(&dir, &db_url);
    // Everything that must be scanned.
    let mut scanned = String::new();

    let (ok, out, err) = run(&env, &["migrate"]);
    assert!(ok, "migrate: {out} {err}");
    scanned.push_str(&out);
    scanned.push_str(&err);
    let (ok, out, err) = run(&env, &["config"]);
    assert!(ok);
    scanned.push_str(&out);
    scanned.push_str(&err);

    // The commands whose job is to print a secret: only their stdout is exempt.
    let (ok, cli_key, err) = run(
        &env,
        &[
            "keys", "create", "--tenant", "default", "--scope", "write", "--name", "scan",
        ],
    );
    assert!(ok, "keys create: {err}");
    let cli_key = cli_key.trim().to_string();
    assert!(cli_key.starts_with("de_"), "{cli_key}");
    scanned.push_str(&err);
    let (ok, jwt, err) = run(&env, &["token", "--tenant", "default", "--scope", "write"]);
    assert!(ok, "token: {err}");
    let jwt = jwt.trim().to_string();
    assert_eq!(jwt.split('.').count(), 3);
    scanned.push_str(&err);
    let (ok, out, err) = run(&env, &["keys", "list"]);
    assert!(ok);
    scanned.push_str(&out);
    scanned.push_str(&err);

    // The server, both streams captured to files.
    let stdout_path = dir.join("serve.out");
    let stderr_path = dir.join("serve.err");
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let api = loop {
        let text = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("\"listening\"")) {
            let v: Value = serde_json::from_str(line).unwrap();
            break v["api"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no listening line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let c = reqwest::Client::new();
    let url = |p: &str| format!("http://{api}{p}");
    let mut bodies = String::new();
    let record = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, body)
    };

    // A full scenario: create and read employees with each kind of credential…
    let (s, b) = record(
        c.post(url("/v1/employees"))
            .header("X-API-Key", WHITELIST_KEY)
            .json(&json!({"name":"scan","role":"tester","instructions":"be brief"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    bodies.push_str(&b);
    for cred in [cli_key.as_str(), jwt.as_str()] {
        let (s, b) = record(
            c.get(url("/v1/employees"))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        bodies.push_str(&b);
    }
    // …create a key through the API, use it, revoke it, use it again…
    let (s, b) = record(
        c.post(url("/v1/keys"))
            .header("X-API-Key", WHITELIST_KEY)
            .json(&json!({"name":"api-made","scope":"read"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201);
    let created: Value = serde_json::from_str(&b).unwrap();
    let api_key = created["secret"].as_str().unwrap().to_string();
    let api_key_id = created["id"].as_str().unwrap().to_string();
    let (s, _) = record(
        c.get(url("/v1/employees"))
            .header("X-API-Key", &api_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = record(
        c.delete(url(&format!("/v1/keys/{api_key_id}")))
            .header("X-API-Key", WHITELIST_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 204);
    // …and a series of failures: revoked key, tampered and wrong keys and tokens, bad
    // bodies, secrets in the path (which the access log records).
    let tampered_jwt = format!("{}x", &jwt[..jwt.len() - 1]);
    let wrong_key = format!("{}x", &cli_key[..cli_key.len() - 1]);
    let failures = vec![
        c.get(url("/v1/employees")).header("X-API-Key", &api_key),
        c.get(url("/v1/employees")).header("X-API-Key", &wrong_key),
        c.get(url("/v1/employees")).bearer_auth(&tampered_jwt),
        c.get(url("/v1/employees")).bearer_auth(JWT_SECRET),
        c.get(url("/v1/employees"))
            .header("X-API-Key", format!("{WHITELIST_KEY}x")),
        c.get(url(&format!("/v1/employees/{cli_key}")))
            .header("X-API-Key", WHITELIST_KEY),
        c.get(url(&format!("/v1/employees/{jwt}")))
            .header("X-API-Key", WHITELIST_KEY),
        c.post(url("/v1/employees"))
            .header("X-API-Key", WHITELIST_KEY)
            .header("Content-Type", "application/json")
            .body(format!("{{\"name\": \"{OPENAI_KEY}\", ")),
        c.post(url("/v1/employees"))
            .header("X-API-Key", WHITELIST_KEY)
            .json(&json!({"name":"x","role":"y","temperature":ANTHROPIC_KEY})),
        c.post(url("/v1/keys"))
            .bearer_auth(&cli_key)
            .json(&json!({"name":"escalate","scope":"admin"})),
        c.get(url("/v1/employees/ada@example.com"))
            .header("X-API-Key", WHITELIST_KEY),
        c.get(url("/v1/employees")),
    ];
    for req in failures {
        let (s, b) = record(req.send().await.unwrap()).await;
        assert!((400..500).contains(&s), "{s} {b}");
        bodies.push_str(&b);
    }

    // Stop and collect everything.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    std::fs::File::open(&stdout_path)
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    std::fs::File::open(&stderr_path)
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(out.contains("request completed"), "access log present");
    assert!(out.lines().count() > 20, "debug logging produced output");
    scanned.push_str(&out);
    scanned.push_str(&err);
    scanned.push_str(&bodies);

    let (_, cli_secret) = cli_key
        .strip_prefix("de_")
        .unwrap()
        .split_once('_')
        .unwrap();
    let (_, api_secret) = api_key
        .strip_prefix("de_")
        .unwrap()
        .split_once('_')
        .unwrap();
    let jwt_signature = jwt.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("whitelist key", WHITELIST_KEY),
        ("JWT secret", JWT_SECRET),
        ("OpenAI key", OPENAI_KEY),
        ("Anthropic key", ANTHROPIC_KEY),
        ("Redis password", REDIS_PASSWORD),
        ("database password", DB_PASSWORD),
        ("key from the CLI", cli_secret),
        ("key from the API", api_secret),
        ("minted JWT", jwt_signature),
        ("e-mail in a path", "ada@example.com"),
    ] {
        assert!(!scanned.contains(secret), "{what} leaked:\n{scanned}");
    }
    // The scan saw the failures it was meant to see.
    assert!(scanned.contains("\"status_code\":401"));
    assert!(
        scanned.contains("Redis unreachable"),
        "the Redis error was logged"
    );

    let _ = std::fs::remove_dir_all(&dir);
    if let Some((base, schema)) = pg {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await;
    }
}
