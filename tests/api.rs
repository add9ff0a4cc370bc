//! The HTTP API against the real app, on SQLite and (when configured) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ADMIN_KEY, Backend, TestApp, assert_error};
use serde_json::{Value, json};

backend_tests!(
    employees_crud,
    list_paginates_newest_first,
    optimistic_concurrency,
    bad_input_gets_json_errors_and_writes_nothing,
    auth_is_required_except_on_public_paths,
    metrics_are_labelled_by_route_template,
    request_ids_are_kept_or_minted,
    replicas_starting_together_mint_one_bootstrap_key,
);

async fn employees_crud(backend: Backend) {
    let app = TestApp::spawn(backend).await.unwrap();
    let created: Value = app
        .post_json(
            "/v1/employees",
            &json!({
                "name": "ada",
                "role": "Research analyst",
                "instructions": "Answer with sources.",
                "model_policy": ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"],
                "allowed_tools": ["calculator", "http_request"],
                "max_steps": 12,
                "token_budget": 5000,
                "temperature": 0.3,
            }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["version"], 1);
    assert_eq!(
        created["model_policy"],
        json!(["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"])
    );
    assert_eq!(created["max_steps"], 12);

    let r = app
        .get(&format!("/v1/employees/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let fetched: Value = r.json().await.unwrap();
    assert_eq!(fetched, created);

    let r = app
        .patch_json(&format!("/v1/employees/{id}"), &json!({"temperature": 0.9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["temperature"], 0.9);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["role"], "Research analyst", "untouched field kept");
    assert_eq!(updated["created_at"], created["created_at"]);

    let list: Value = app
        .get("/v1/employees")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["version"], 2);

    let r = app
        .delete(&format!("/v1/employees/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .get(&format!("/v1/employees/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app
        .delete(&format!("/v1/employees/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;

    // Defaults: the sandbox model and conservative limits.
    let minimal = app.create_employee("minimal").await;
    assert_eq!(minimal["model_policy"], json!(["sandbox/sandbox-1"]));
    assert_eq!(minimal["max_steps"], 10);
    assert_eq!(minimal["temperature"], 0.0);
    app.stop().await.unwrap();
}

async fn list_paginates_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await.unwrap();
    let mut names = Vec::new();
    for i in 0..5 {
        let name = format!("e{i}");
        app.create_employee(&name).await;
        names.push(name);
    }
    names.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            Some(c) => format!("/v1/employees?limit=2&cursor={c}"),
            None => "/v1/employees?limit=2".to_string(),
        };
        let page: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|e| e["name"].as_str().unwrap().to_string()));
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, names, "every employee once, newest first");

    let r = app.get("/v1/employees?limit=0").send().await.unwrap();
    let body = assert_error(r, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], "limit");
    let r = app.get("/v1/employees?cursor=@@@").send().await.unwrap();
    let body = assert_error(r, 422, "validation_error").await;
    assert_eq!(body["error"]["field"], "cursor");
    let r = app.get("/v1/employees?limit=ten").send().await.unwrap();
    assert_error(r, 422, "validation_error").await;
}

async fn optimistic_concurrency(backend: Backend) {
    let app = TestApp::spawn(backend).await.unwrap();
    let e = app.create_employee("grace").await;
    let id = e["id"].as_str().unwrap();
    let path = format!("/v1/employees/{id}");

    // A matching If-Match applies.
    let r = app
        .patch_json(&path, &json!({"role": "v2"}))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");

    // A stale If-Match or body version is refused and changes nothing.
    let r = app
        .patch_json(&path, &json!({"role": "stale"}))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;
    let r = app
        .patch_json(&path, &json!({"role": "stale", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;
    let now: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
    assert_eq!(now["role"], "v2");
    assert_eq!(now["version"], 2);

    // A stale delete is refused too.
    let r = app
        .delete(&path)
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;

    // Concurrent blind updates: each is retried a few times against a moving version, so
    // under heavy contention one may still be refused with 409; none that was answered
    // 200 is lost. Every 200 carries its own version, the versions are consecutive, and
    // the employee ends as the writer with the highest version left it.
    let mut handles = Vec::new();
    for i in 0..8 {
        let client = app.client.clone();
        let url = app.url(&path);
        handles.push(tokio::spawn(async move {
            let r = client
                .patch(url)
                .header("X-API-Key", ADMIN_KEY)
                .json(&json!({"instructions": format!("writer {i}")}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut applied = Vec::new();
    for h in handles {
        let (s, body) = h.await.unwrap();
        match s {
            200 => applied.push((
                body["version"].as_i64().unwrap(),
                body["instructions"].as_str().unwrap().to_string(),
            )),
            409 => assert_eq!(body["error"]["type"], "conflict", "{body}"),
            _ => panic!("status {s}: {body}"),
        }
    }
    assert!(!applied.is_empty(), "no concurrent update applied");
    applied.sort();
    let versions: Vec<i64> = applied.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (3..3 + applied.len() as i64).collect::<Vec<_>>(),
        "each applied update has its own version"
    );
    let now: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
    assert_eq!(now["version"].as_i64().unwrap(), 2 + applied.len() as i64);
    assert_eq!(now["instructions"], applied.last().unwrap().1.as_str());

    // Renaming onto a taken name is a conflict.
    app.create_employee("hopper").await;
    let r = app
        .patch_json(&path, &json!({"name": "hopper"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;
}

async fn bad_input_gets_json_errors_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("MAX_BODY_BYTES", "2048")])
        .await
        .unwrap();
    let count = |app: &TestApp| {
        let req = app.get("/v1/employees?limit=100");
        async move {
            let v: Value = req.send().await.unwrap().json().await.unwrap();
            v["data"].as_array().unwrap().len()
        }
    };
    let url = app.url("/v1/employees");
    let key = ("X-API-Key", ADMIN_KEY);

    let r = app
        .client
        .post(&url)
        .header(key.0, key.1)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;

    let r = app
        .client
        .post(&url)
        .header(key.0, key.1)
        .header("content-type", "text/plain")
        .body("{\"name\":\"x\",\"role\":\"y\"}")
        .send()
        .await
        .unwrap();
    assert_error(r, 415, "unsupported_media_type").await;

    let big = "x".repeat(4096);
    let r = app
        .post_json("/v1/employees", &json!({"name": "big", "role": big}))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;

    for (body, field) in [
        (json!({"role": "no name"}), "name"),
        (json!({"name": "bad name!", "role": "r"}), "name"),
        (
            json!({"name": "ok", "role": "r", "temperature": 3}),
            "temperature",
        ),
        (
            json!({"name": "ok", "role": "r", "max_steps": "many"}),
            "max_steps",
        ),
        (
            json!({"name": "ok", "role": "r", "model_policy": ["gpt4"]}),
            "model_policy[0]",
        ),
        (
            json!({"name": "ok", "role": "r", "unknown_field": 1}),
            "body",
        ),
    ] {
        let r = app.post_json("/v1/employees", &body).send().await.unwrap();
        let err = assert_error(r, 422, "validation_error").await;
        if field != "body" {
            assert_eq!(err["error"]["field"], field, "for {body}");
        }
    }

    app.create_employee("taken").await;
    let r = app
        .post_json("/v1/employees", &json!({"name": "taken", "role": "again"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "conflict").await;

    let r = app.get("/v1/no-such-route").send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app
        .client
        .put(&url)
        .header(key.0, key.1)
        .send()
        .await
        .unwrap();
    assert_error(r, 405, "method_not_allowed").await;
    let r = app.get("/v1/employees/not-a-uuid").send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app
        .patch_json(
            &format!("/v1/employees/{}", uuid::Uuid::now_v7()),
            &json!({"role": "x"}),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app
        .patch_json(
            &format!(
                "/v1/employees/{}",
                app.create_employee("b").await["id"].as_str().unwrap()
            ),
            &json!({"role": "x"}),
        )
        .header("If-Match", "yesterday")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;

    assert_eq!(
        count(&app).await,
        2,
        "only the two valid creates were written"
    );
}

async fn auth_is_required_except_on_public_paths(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, &[]).await.unwrap();
    for path in ["/health", "/ready", "/openapi.json"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} is public");
    }
    let r = app
        .client
        .get(app.url("/v1/employees"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/v1/employees"))
        .header("X-API-Key", "wrong")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/v1/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/v1/employees"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Bearer works too");

    // The OpenAPI document lists every route.
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/health", "/ready", "/v1/employees", "/v1/employees/{id}"] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    let r = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger"));

    // Without a whitelist a bootstrap admin key is created once and works; only its hash
    // is stored.
    app.begin_shutdown();
    let db = common::TestDb::new(backend).await.unwrap();
    app.join().await.unwrap();
    if backend == Backend::Postgres {
        db.migrated_store().await.close().await;
    }
    let mut built = digital_employee::app::App::build(common::test_config(
        &db.url,
        &[("API_KEY_WHITELIST", "")],
    ))
    .await
    .unwrap();
    let key = built.take_bootstrap_key().expect("bootstrap key");
    let fresh = TestApp::start(built, db).await;
    let r = fresh
        .client
        .get(fresh.url("/v1/employees"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (prefix, secret) = key.strip_prefix("de_").unwrap().split_once('_').unwrap();
    let rec = fresh.store.find_api_key(prefix).await.unwrap();
    // What is stored is the SHA-256 of the secret, in hex, and nothing of the secret.
    use sha2::Digest;
    assert_eq!(
        rec.secret_hash,
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    );
    assert!(!rec.secret_hash.contains(secret));
    let tampered = format!("de_{prefix}_{}x", &secret[..secret.len() - 1]);
    let r = fresh
        .client
        .get(fresh.url("/v1/employees"))
        .header("X-API-Key", tampered)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    let db = fresh.stop_keep_db().await;
    let mut again = digital_employee::app::App::build(common::test_config(
        &db.url,
        &[("API_KEY_WHITELIST", "")],
    ))
    .await
    .unwrap();
    assert!(again.take_bootstrap_key().is_none(), "created only once");
    again.state().store.close().await;
}

async fn metrics_are_labelled_by_route_template(backend: Backend) {
    let app = TestApp::spawn(backend).await.unwrap();
    let e = app.create_employee("metered").await;
    let id = e["id"].as_str().unwrap();
    for _ in 0..3 {
        let r = app
            .get(&format!("/v1/employees/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = app.get("/v1/raw/path/123").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let text = app.metrics().await;
    // The counts themselves are checked exactly in tests/metric_deltas.rs.
    assert!(!text.contains(id), "raw ids never become labels");
    assert!(
        !text.contains("/v1/raw/path"),
        "raw paths never become labels"
    );
    assert!(text.contains("digital_employee_build_info{version="));

    // The API port does not serve metrics; the metrics port serves nothing else.
    let r = app.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .get(format!("http://{}/v1/employees", app.metrics_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn request_ids_are_kept_or_minted(backend: Backend) {
    let app = TestApp::spawn(backend).await.unwrap();
    let r = app
        .get("/v1/employees")
        .header("X-Request-Id", "caller-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "caller-chosen-42");
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    let minted = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&minted).is_ok());
    let r = app
        .get("/v1/employees/nope")
        .header("X-Request-Id", "trace-me")
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 404, "not_found").await;
    assert_eq!(body["error"]["request_id"], "trace-me");
}

/// Four replicas starting at once on an empty database: exactly one mints the bootstrap
/// admin key (before, each counted no key and minted its own).
async fn replicas_starting_together_mint_one_bootstrap_key(backend: Backend) {
    let db = common::TestDb::new(backend).await.unwrap();
    db.migrated_store().await.close().await;
    let build = || {
        digital_employee::app::App::build(common::test_config(
            &db.url,
            &[("API_KEY_WHITELIST", "")],
        ))
    };
    let (a, b, c, d) = tokio::join!(build(), build(), build(), build());
    let mut apps = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let minted: Vec<String> = apps
        .iter_mut()
        .filter_map(|a| a.take_bootstrap_key())
        .collect();
    assert_eq!(minted.len(), 1, "bootstrap keys minted: {}", minted.len());
    let store = apps[0].state().store.clone();
    assert_eq!(
        store
            .count_api_keys(digital_employee::store::DEFAULT_TENANT_ID)
            .await
            .unwrap(),
        1
    );
    for a in &apps {
        a.state().store.close().await;
    }

    // The insert itself, raced harder: sixteen at once on another empty database.
    let db = common::TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let tenant = digital_employee::store::DEFAULT_TENANT_ID;
    let issued = futures_util::future::join_all((0..16).map(|_| {
        digital_employee::auth::keys::issue_first(
            &store,
            tenant,
            "bootstrap admin",
            digital_employee::auth::Scope::Admin,
        )
    }))
    .await;
    let minted = issued
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(minted, 1);
    assert_eq!(store.count_api_keys(tenant).await.unwrap(), 1);
    store.close().await;
}
