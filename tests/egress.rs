//! The egress policy end to end: with no `EGRESS_ALLOW_CIDRS`, a tenant cannot point a
//! webhook tool, a completion callback or `http_request` at the internal network, whether
//! by an IP literal (422 at save time) or by a name that resolves to one (refused at
//! connect time, nothing reaches the internal receiver, `egress_refused_total` counts it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::tasks::*;
use common::{Backend, TestApp};
use digital_employee::store::DEFAULT_TENANT_ID;
use serde_json::{Value, json};
use uuid::Uuid;

/// The test config allows loopback; these scenarios close it again.
const CLOSED: &[(&str, &str)] = &[("EGRESS_ALLOW_CIDRS", "")];

/// An "internal service" on loopback that counts every request it receives.
struct Internal {
    port: u16,
    hits: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Internal {
    async fn start() -> Internal {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        let router = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"secret": "internal-only"}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Internal {
            port,
            hits,
            _task: task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn tool_body(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "description": "Fetch a record.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        "url": url,
    })
}

#[tokio::test]
async fn internal_ip_literals_are_refused_when_saved() {
    let app = TestApp::spawn_with(Backend::Sqlite, &with(CLOSED))
        .await
        .unwrap();
    for url in [
        "http://127.0.0.1:9/tool",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://10.1.2.3/",
        "http://[::ffff:192.168.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://2130706433/",
    ] {
        let r = app
            .post_json("/v1/tools", &tool_body("fetch_record", url))
            .send()
            .await
            .unwrap();
        let body = common::assert_error(r, 422, "validation_error").await;
        assert_eq!(body["error"]["field"], "url", "{url}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("egress policy"), "{url}: {msg}");
    }
    app.create_employee("mailer").await;
    let r = app
        .post_json(
            "/v1/tasks",
            &json!({"employee": "mailer", "input": "hi",
                    "callback_url": "http://169.254.169.254/hook"}),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(r, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], "callback_url", "{body}");
    // A public target is still fine.
    let r = app
        .post_json(
            "/v1/tools",
            &tool_body("fetch_record", "https://tools.example.com/x"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_name_resolving_to_loopback_reaches_nothing() {
    let internal = Internal::start().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &with(&[
            ("EGRESS_ALLOW_CIDRS", ""),
            ("WEBHOOK_POLL_INTERVAL", "0.05"),
        ]),
    )
    .await
    .unwrap();
    // A name passes the save-time check; it is refused when the call resolves it.
    let url = format!("http://localhost:{}/admin", internal.port);
    let r = app
        .post_json("/v1/tools", &tool_body("fetch_record", &url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    employee(
        &app,
        json!({"name": "snoop", "role": "r", "allowed_tools": ["fetch_record"]}),
    )
    .await;
    let t = submit(
        &app,
        json!({"employee": "snoop", "input": "Use fetch_record",
               "callback_url": format!("http://localhost:{}/cb", internal.port)}),
    )
    .await;
    let id = id_of(&t);
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "denied", "{result}");
    let error = result["payload"]["content"]["error"].as_str().unwrap();
    assert!(
        error.contains("egress policy") && error.contains("loopback"),
        "{error}"
    );
    assert!(!result.to_string().contains("internal-only"));

    // The completion webhook is given up at once: retrying cannot change the answer.
    let tid = Uuid::parse_str(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        let d = app
            .store
            .list_deliveries(DEFAULT_TENANT_ID, tid)
            .await
            .unwrap();
        if d.len() == 1 && d[0].status == "failed" {
            break d.into_iter().next().unwrap();
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivery.attempts, 1);
    assert!(
        delivery
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("egress policy"),
        "{delivery:?}"
    );

    assert_eq!(internal.hits(), 0, "a request reached the internal service");
    let metrics = app.metrics().await;
    let refused = common::metric(&metrics, "egress_refused_total{reason=\"loopback\"}");
    assert!(refused >= 2.0, "egress_refused_total: {refused}\n{metrics}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_allowed_range_is_reachable() {
    let internal = Internal::start().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &with(&[("EGRESS_ALLOW_CIDRS", "127.0.0.1/32")]),
    )
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{}/record", internal.port);
    let r = app
        .post_json("/v1/tools", &tool_body("fetch_record", &url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    employee(
        &app,
        json!({"name": "clerk", "role": "r", "allowed_tools": ["fetch_record"]}),
    )
    .await;
    let id = id_of(
        &submit(
            &app,
            json!({"employee": "clerk", "input": "Use fetch_record"}),
        )
        .await,
    );
    wait_status(&app, &id, "succeeded").await;
    let ev = events(&app, &id).await;
    let result = ev.iter().find(|e| e["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["outcome"], "ok", "{result}");
    assert_eq!(internal.hits(), 1);
    app.stop().await.unwrap();
}
