//! Security: tenant isolation, scopes, key revocation, JWTs, rate limiting (in process and
//! shared through Redis), security headers, CORS and the slow-client timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::{ADMIN_KEY, Backend, TestApp, assert_error};
use digital_employee::auth::Scope;
use digital_employee::auth::jwt::{Claims, JwtKeys};
use digital_employee::config::Secret;
use serde_json::{Value, json};
use uuid::Uuid;

const JWT_SECRET: &str = "integration-jwt-secret-0123456789abcdef";

backend_tests!(
    tenant_isolation_answers_404,
    scopes_are_enforced_on_every_route,
    revoked_key_is_refused_on_the_next_request_by_every_replica,
    bad_jwts_are_refused,
    rate_limit_is_exact_at_the_boundary,
    a_tenant_admin_cannot_lift_its_limits,
);

/// Sends a request with `key` as `X-API-Key`.
fn with_key(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-API-Key", key)
}

/// Creates a key through the API as the whitelist admin; returns (id, secret).
async fn create_key(app: &TestApp, body: Value) -> (String, String) {
    let r = app.post_json("/v1/keys", &body).send().await.unwrap();
    assert_eq!(r.status(), 201, "create key {body}");
    let v: Value = r.json().await.unwrap();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with(&format!("de_{}_", v["prefix"].as_str().unwrap())));
    (v["id"].as_str().unwrap().to_string(), secret)
}

async fn create_tenant(app: &TestApp, name: &str) -> String {
    let r = app
        .post_json("/v1/tenants", &json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn tenant_isolation_answers_404(backend: Backend) {
    use reqwest::Method;
    let app = TestApp::spawn(backend).await.unwrap();
    let b = create_tenant(&app, "tenant-b").await;
    let (_, b_admin) = create_key(
        &app,
        json!({"name":"b admin","scope":"admin","tenant_id":b}),
    )
    .await;

    // Tenant A (the default tenant) owns an employee and a key.
    let emp = app.create_employee("a-only").await;
    let emp_path = format!("/v1/employees/{}", emp["id"].as_str().unwrap());
    let (a_key_id, a_key) = create_key(&app, json!({"name":"a reader","scope":"read"})).await;
    let key_path = format!("/v1/keys/{a_key_id}");

    // Every read, update and delete of A's resources as B answers 404.
    for (method, path, body) in [
        (Method::GET, emp_path.clone(), None),
        (
            Method::PATCH,
            emp_path.clone(),
            Some(json!({"role": "stolen"})),
        ),
        (Method::DELETE, emp_path.clone(), None),
        (Method::GET, key_path.clone(), None),
        (Method::DELETE, key_path.clone(), None),
        (
            Method::GET,
            format!("/v1/tenants/{}", digital_employee::store::DEFAULT_TENANT_ID),
            None,
        ),
        (
            Method::GET,
            format!(
                "/v1/keys?tenant_id={}",
                digital_employee::store::DEFAULT_TENANT_ID
            ),
            None,
        ),
    ] {
        let mut req = with_key(&app, method.clone(), &path, &b_admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        assert_error(req.send().await.unwrap(), 404, "not_found").await;
    }
    // Creating a key in A's tenant as B: 404 too.
    let r = with_key(&app, Method::POST, "/v1/keys", &b_admin)
        .json(&json!({"name":"x","scope":"read","tenant_id":digital_employee::store::DEFAULT_TENANT_ID}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    // B's lists show nothing of A's.
    let list: Value = with_key(&app, Method::GET, "/v1/employees", &b_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let keys: Value = with_key(&app, Method::GET, "/v1/keys", &b_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["b admin"]);
    assert!(
        keys["data"][0].get("secret").is_none(),
        "lists never carry secrets"
    );
    let tenants: Value = with_key(&app, Method::GET, "/v1/tenants", &b_admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tenants["data"].as_array().unwrap().len(), 1);
    assert_eq!(tenants["data"][0]["id"], b.as_str());
    // Only the operator creates tenants.
    let r = with_key(&app, Method::POST, "/v1/tenants", &b_admin)
        .json(&json!({"name":"c"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;

    // A's resources are untouched, and B can use the same employee name.
    let r = app.get(&emp_path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "tester");
    assert_eq!(
        with_key(&app, Method::GET, "/v1/employees", &a_key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = with_key(&app, Method::POST, "/v1/employees", &b_admin)
        .json(&json!({"name":"a-only","role":"b's own"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The operator sees every tenant.
    let all: Value = app
        .get("/v1/tenants")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
}

async fn scopes_are_enforced_on_every_route(backend: Backend) {
    use reqwest::Method;
    let app = TestApp::spawn(backend).await.unwrap();
    let emp = app.create_employee("scoped").await;
    let emp_path = format!("/v1/employees/{}", emp["id"].as_str().unwrap());
    let (_, read) = create_key(&app, json!({"name":"r","scope":"read"})).await;
    let (_, write) = create_key(&app, json!({"name":"w","scope":"write"})).await;
    let some_key = format!("/v1/keys/{}", Uuid::now_v7());
    let some_tenant = format!("/v1/tenants/{}", Uuid::now_v7());

    // (method, path, body, lowest scope allowed)
    let routes: Vec<(Method, &str, Option<Value>, Scope)> = vec![
        (Method::GET, "/v1/employees", None, Scope::Read),
        (Method::GET, &emp_path, None, Scope::Read),
        (
            Method::POST,
            "/v1/employees",
            Some(json!({"name":"n1","role":"r"})),
            Scope::Write,
        ),
        (
            Method::PATCH,
            &emp_path,
            Some(json!({"role":"r2"})),
            Scope::Write,
        ),
        (Method::GET, "/v1/keys", None, Scope::Admin),
        (
            Method::POST,
            "/v1/keys",
            Some(json!({"name":"k","scope":"read"})),
            Scope::Admin,
        ),
        (Method::GET, &some_key, None, Scope::Admin),
        (Method::DELETE, &some_key, None, Scope::Admin),
        (Method::GET, "/v1/tenants", None, Scope::Admin),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"name":"t1"})),
            Scope::Admin,
        ),
        (Method::GET, &some_tenant, None, Scope::Admin),
    ];
    for (method, path, body, needed) in &routes {
        for (key, has) in [(&read, Scope::Read), (&write, Scope::Write)] {
            let mut req = with_key(&app, method.clone(), path, key);
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.unwrap();
            if has < *needed {
                assert_error(r, 403, "forbidden").await;
            } else {
                assert!(
                    r.status().is_success(),
                    "{method} {path} with {has:?}: {}",
                    r.status()
                );
            }
        }
    }
    // A read key cannot delete; a write key can.
    let r = with_key(&app, Method::DELETE, &emp_path, &read)
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;
    let r = with_key(&app, Method::DELETE, &emp_path, &write)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn revoked_key_is_refused_on_the_next_request_by_every_replica(backend: Backend) {
    use reqwest::Method;
    let app = TestApp::spawn(backend).await.unwrap();
    let (id, key) = create_key(&app, json!({"name":"short-lived","scope":"read"})).await;
    // A second replica on the same database.
    let replica_app = digital_employee::app::App::build(common::test_config(&app.db().url, &[]))
        .await
        .unwrap();
    let replica_addr = replica_app.api_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(replica_app.run(async move {
        let _ = rx.await;
    }));
    let on_replica = |k: &str| {
        app.client
            .get(format!("http://{replica_addr}/v1/employees"))
            .header("X-API-Key", k.to_string())
    };
    common::poll_ok(|| on_replica(&key)).await;
    assert_eq!(
        with_key(&app, Method::GET, "/v1/employees", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = app.delete(&format!("/v1/keys/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_error(
        with_key(&app, Method::GET, "/v1/employees", &key)
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_error(on_replica(&key).send().await.unwrap(), 401, "unauthorized").await;
    // Revoking again is harmless; the key shows when it was revoked.
    assert_eq!(
        app.delete(&format!("/v1/keys/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let v: Value = app
        .get(&format!("/v1/keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["revoked_at"].is_string());
    assert!(v.get("secret").is_none());

    // last_used_at was collected in memory and written at shutdown, without a write per
    // request.
    let _ = tx.send(());
    replica.await.unwrap().unwrap();
    let store = app.store.clone();
    let db = app.stop_keep_db().await;
    let _ = store;
    let store = db.store().await;
    let rec = store
        .get_api_key(
            digital_employee::store::DEFAULT_TENANT_ID,
            id.parse().unwrap(),
        )
        .await
        .unwrap();
    assert!(rec.last_used_at.is_some(), "last_used_at flushed");
    store.close().await;
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn bad_jwts_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("JWT_SECRET_KEY", JWT_SECRET)])
        .await
        .unwrap();
    let keys = JwtKeys::new(&Secret::new(JWT_SECRET)).unwrap();
    let tenant = digital_employee::store::DEFAULT_TENANT_ID;
    let bearer = |t: &str| {
        app.client
            .get(app.url("/v1/employees"))
            .header("Authorization", format!("Bearer {t}"))
    };

    let good = keys
        .mint("ci", tenant, Scope::Read, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(bearer(&good).send().await.unwrap().status(), 200);
    // A read token cannot write.
    let r = app
        .client
        .post(app.url("/v1/employees"))
        .bearer_auth(&good)
        .json(&json!({"name":"x","role":"y"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;

    let parts: Vec<&str> = good.split('.').collect();
    let t = now();
    let claims = |scope: &str, iat: u64, exp: u64, tenant: Uuid| json!({"sub":"ci","tenant":tenant,"scope":scope,"iat":iat,"exp":exp});
    let sign = |header: &Value, payload: &Value, secret: &[u8]| {
        use hmac::{Hmac, Mac};
        let msg = format!("{}.{}", b64(header), b64(payload));
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(msg.as_bytes());
        let sig =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{msg}.{sig}")
    };
    let hs256 = json!({"alg":"HS256","typ":"JWT"});
    let secret = JWT_SECRET.as_bytes();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(&hs256, &claims("read", t - 7200, t - 3600, tenant), secret),
        ),
        (
            "tampered scope",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&claims("admin", t, t + 3600, tenant)),
                parts[2]
            ),
        ),
        (
            "tampered signature",
            format!(
                "{}.{}.{}x",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 1]
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg":"none","typ":"JWT"})),
                b64(&claims("admin", t, t + 3600, tenant))
            ),
        ),
        (
            "alg none with signature",
            format!("{}.{}.{}", b64(&json!({"alg":"none"})), parts[1], parts[2]),
        ),
        (
            // RS/HS confusion: an RS256 header over an HMAC made with the "public key".
            "RS256 header",
            sign(
                &json!({"alg":"RS256","typ":"JWT"}),
                &claims("admin", t, t + 3600, tenant),
                secret,
            ),
        ),
        ("HS512", {
            use hmac::{Hmac, Mac};
            let msg = format!(
                "{}.{}",
                b64(&json!({"alg":"HS512"})),
                b64(&claims("admin", t, t + 3600, tenant))
            );
            let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(secret).unwrap();
            mac.update(msg.as_bytes());
            format!(
                "{msg}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(mac.finalize().into_bytes())
            )
        }),
        (
            "wrong secret",
            sign(
                &hs256,
                &claims("read", t, t + 3600, tenant),
                b"another-secret-another-secret-00",
            ),
        ),
        (
            "no exp",
            sign(
                &hs256,
                &json!({"sub":"ci","tenant":tenant,"scope":"read","iat":t}),
                secret,
            ),
        ),
        (
            "unknown scope",
            sign(&hs256, &claims("root", t, t + 3600, tenant), secret),
        ),
        (
            "unknown tenant",
            sign(&hs256, &claims("read", t, t + 3600, Uuid::now_v7()), secret),
        ),
        ("garbage", "eyJ.eyJ.sig".to_string()),
    ];
    for (what, token) in &cases {
        let r = bearer(token).send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "unauthorized", "{what}");
        let text = body.to_string();
        assert!(!text.contains(token.as_str()), "{what}: token echoed");
    }
    // Sanity: the hand-made signer produces tokens the server accepts.
    let ok = sign(&hs256, &claims("read", t, t + 60, tenant), secret);
    assert_eq!(bearer(&ok).send().await.unwrap().status(), 200);
    let _: Claims = keys.verify(&ok).unwrap();

    // Without JWT_SECRET_KEY no token is accepted.
    let plain = TestApp::spawn(backend).await.unwrap();
    let r = plain
        .client
        .get(plain.url("/v1/employees"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
}

async fn rate_limit_is_exact_at_the_boundary(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RATE_LIMIT_REQUESTS", "5"),
            ("RATE_LIMIT_WINDOW_SECONDS", "60"),
        ],
    )
    .await
    .unwrap();
    for i in 0..5u32 {
        let r = app.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {}", i + 1);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit"], "5");
        assert_eq!(h["x-ratelimit-remaining"], (4 - i).to_string().as_str());
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset));
    }
    let r = app.get("/v1/employees").send().await.unwrap();
    let h = r.headers().clone();
    assert_error(r, 429, "rate_limited").await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["x-ratelimit-limit"], "5");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("x-ratelimit-reset"));
    // Probes are never limited.
    assert_eq!(
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "rate_limited_total{{tenant=\"{}\"}}",
            digital_employee::store::DEFAULT_TENANT_ID
        )),
        "{metrics}"
    );

    // Another key has a window of its own, and its own limit when it carries one. (It is
    // created by the operator through the store: the operator's own window is used up.)
    let issued = digital_employee::auth::keys::issue(
        &app.store,
        digital_employee::store::DEFAULT_TENANT_ID,
        "limited",
        Scope::Read,
        Some(2),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let r = with_key(&app, reqwest::Method::GET, "/v1/employees", &issued.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
    }
    let r = with_key(&app, reqwest::Method::GET, "/v1/employees", &issued.secret)
        .send()
        .await
        .unwrap();
    assert_error(r, 429, "rate_limited").await;
}

/// A tenant's admin can neither mint keys with a higher limit than the deployment's
/// per-key default nor multiply its allowance with many keys: the keys of a tenant share
/// `TENANT_RATE_LIMIT_REQUESTS`, and a tenant has at most `TENANT_MAX_KEYS` active keys.
async fn a_tenant_admin_cannot_lift_its_limits(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RATE_LIMIT_REQUESTS", "5"),
            ("TENANT_RATE_LIMIT_REQUESTS", "6"),
            ("TENANT_MAX_KEYS", "3"),
        ],
    )
    .await
    .unwrap();
    let tenant = create_tenant(&app, "limited-co").await;
    let (_, admin) = create_key(
        &app,
        json!({"name": "admin", "scope": "admin", "tenant_id": tenant}),
    )
    .await;
    let create =
        |body: Value| with_key(&app, reqwest::Method::POST, "/v1/keys", &admin).json(&body);
    // Above the per-key default: the operator only.
    let r = create(json!({"name": "fast", "scope": "read", "rate_limit": 6}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 403, "forbidden").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RATE_LIMIT_REQUESTS")
    );
    let r = create(json!({"name": "slow", "scope": "read", "rate_limit": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let one: Value = r.json().await.unwrap();
    let r = create(json!({"name": "two", "scope": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let two: Value = r.json().await.unwrap();
    // Three active keys (admin, slow, two): the cap.
    let r = create(json!({"name": "four", "scope": "read"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 409, "conflict").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TENANT_MAX_KEYS")
    );

    // The tenant's keys share six requests a window; the admin's four creates used four.
    let keys = [
        one["secret"].as_str().unwrap(),
        two["secret"].as_str().unwrap(),
    ];
    let mut allowed = 0;
    let mut refused = 0;
    for i in 0..6 {
        let r = with_key(&app, reqwest::Method::GET, "/v1/employees", keys[i % 2])
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((allowed, refused), (2, 4), "two keys, one tenant allowance");
    // The operator's own tenant is not affected by another tenant's use.
    assert_eq!(app.get("/v1/employees").send().await.unwrap().status(), 200);
}

/// A client that keeps presenting bad credentials is refused (429) before any check, even
/// with a good key, until the window has passed; behind a trusted proxy the address is
/// the one `X-Forwarded-For` names, and elsewhere that header is not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_authentications_are_refused_per_client_address() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("AUTH_FAILURE_LIMIT", "3"),
            ("RATE_LIMIT_WINDOW_SECONDS", "2"),
            ("TRUSTED_PROXIES", "none"),
        ],
    )
    .await
    .unwrap();
    let attempt = |key: &str, forwarded: &str| {
        app.client
            .get(app.url("/v1/employees"))
            .header("X-API-Key", key)
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    let mut unauthorized = 0;
    loop {
        let r = attempt("de_000000000000_guess", "203.0.113.9")
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => unauthorized += 1,
            429 => break,
            s => panic!("unexpected {s}"),
        }
        assert!(unauthorized <= 10, "never refused");
    }
    assert_eq!(unauthorized, 4, "three failures allowed, the fourth blocks");
    // Blocked before any check: the right key is refused too, and the header (no trusted
    // proxy here) changes nothing.
    let r = attempt(common::ADMIN_KEY, "198.51.100.7").await.unwrap();
    assert_eq!(r.status(), 429, "{:?}", r.headers());
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_error(r, 429, "rate_limited").await;
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("auth_failures_total{outcome=\"blocked\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    // The window passes: the right key works again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while attempt(common::ADMIN_KEY, "x").await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "still blocked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await.unwrap();

    // Behind a trusted proxy each client is counted on its own.
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("AUTH_FAILURE_LIMIT", "1"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await
    .unwrap();
    let attempt = |key: &str, forwarded: &str| {
        app.client
            .get(app.url("/v1/employees"))
            .header("X-API-Key", key)
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    for _ in 0..2 {
        let r = attempt("de_000000000000_guess", "203.0.113.9")
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = attempt(common::ADMIN_KEY, "203.0.113.9").await.unwrap();
    assert_eq!(r.status(), 429);
    // A client can prepend anything; the proxy appends the real address last.
    let r = attempt(common::ADMIN_KEY, "203.0.113.9, 198.51.100.7")
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another client behind the same proxy");
    app.stop().await.unwrap();
}

// --- Redis: shared limits, Redis down. Not per database backend (SQLite each). ---

async fn spawn_redis_app(redis: &str, prefix: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut cfg = vec![
        ("REDIS_URL", redis),
        ("RATE_LIMIT_KEY_PREFIX", prefix),
        ("RATE_LIMIT_WINDOW_SECONDS", "60"),
    ];
    cfg.extend_from_slice(extra);
    TestApp::spawn_with(Backend::Sqlite, &cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_limit_is_exact_at_the_boundary() {
    let Some(redis) = common::redis_url() else {
        return;
    };
    let prefix = common::redis_prefix();
    let app = spawn_redis_app(&redis, &prefix, &[("RATE_LIMIT_REQUESTS", "7")]).await;
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["redis"]["ok"], true, "{ready}");
    for i in 0..7u32 {
        let r = app.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {}", i + 1);
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (6 - i).to_string().as_str()
        );
    }
    let r = app.get("/v1/employees").send().await.unwrap();
    let h = r.headers().clone();
    assert_error(r, 429, "rate_limited").await;
    assert!(h.contains_key("retry-after"));
    assert_eq!(h["x-ratelimit-remaining"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_rate_limit_is_shared_across_two_instances() {
    let Some(redis) = common::redis_url() else {
        return;
    };
    let prefix = common::redis_prefix();
    let limit = 10usize;
    let a = spawn_redis_app(&redis, &prefix, &[("RATE_LIMIT_REQUESTS", "10")]).await;
    let b = spawn_redis_app(&redis, &prefix, &[("RATE_LIMIT_REQUESTS", "10")]).await;
    // 30 concurrent requests with the same key, alternating between the instances, many
    // within the same millisecond: exactly `limit` are allowed in total.
    let mut handles = Vec::new();
    for i in 0..30 {
        let req = if i % 2 == 0 {
            a.get("/v1/employees")
        } else {
            b.get("/v1/employees")
        };
        handles.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for h in handles {
        match h.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, limit, "allowed across both instances");
    assert_eq!(limited, 30 - limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_with_a_metric() {
    // A closed port: nothing listens on port 1.
    let prefix = common::redis_prefix();
    let app = spawn_redis_app(
        "redis://127.0.0.1:1/0",
        &prefix,
        &[("RATE_LIMIT_REQUESTS", "1")],
    )
    .await;
    for _ in 0..3 {
        let r = app.get("/v1/employees").send().await.unwrap();
        assert_eq!(r.status(), 200, "allowed while Redis is down");
        assert!(!r.headers().contains_key("x-ratelimit-remaining"));
    }
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200, "fail-open keeps the replica in rotation");
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"]["ok"], false, "{ready}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("rate_limit_redis_errors_total{policy=\"open\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_with_503() {
    let prefix = common::redis_prefix();
    let db = common::TestDb::new(Backend::Sqlite).await.unwrap();
    let app = digital_employee::app::App::build(common::test_config(
        &db.url,
        &[
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
            ("RATE_LIMIT_KEY_PREFIX", &prefix),
            ("RATE_LIMIT_REDIS_FAILURE", "closed"),
        ],
    ))
    .await
    .unwrap();
    // Not ready by design, so start it without waiting for /ready.
    let addr = app.api_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let mut r = None;
    for _ in 0..100 {
        if let Ok(resp) = client
            .get(format!("http://{addr}/v1/employees"))
            .header("X-API-Key", ADMIN_KEY)
            .send()
            .await
        {
            r = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = r.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error(r, 503, "unavailable").await;
    let r = client
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"]["ok"], false);
    assert!(
        ready["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redis")
    );
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
}

// --- The HTTP surface (backend-independent). ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_response_and_cors_closed_by_default() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let responses = vec![
        app.client.get(app.url("/health")).send().await.unwrap(),
        app.client
            .get(app.url("/v1/employees"))
            .send()
            .await
            .unwrap(),
        app.get("/v1/employees").send().await.unwrap(),
        app.get("/v1/nothing-here").send().await.unwrap(),
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    ];
    for r in &responses {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", r.url());
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
    }
    // The docs page has its own policy that lets its scripts and styles load.
    let r = app.client.get(app.url("/docs/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(
        !html.contains("<script>"),
        "no inline script that the policy would block"
    );
    let js = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);

    // CORS is closed: a preflight gets no Access-Control-Allow-Origin.
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/employees"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = app
        .get("/v1/employees")
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("CORS_ALLOWED_ORIGINS", "https://app.example")],
    )
    .await
    .unwrap();
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/employees"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key, content-type")
    };
    let r = preflight("https://app.example").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("x-api-key"));
    let r = preflight("https://evil.example").send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = app
        .get("/v1/employees")
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-ratelimit-remaining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(Backend::Sqlite, &[("REQUEST_HEADER_TIMEOUT", "2")])
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Half a request line, then silence.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Not cut at once: the server answers a whole request on another connection while
    // the slow one is still open (open, and nothing to read, is WouldBlock).
    // (A client of its own that keeps no idle connection: the server closes idle ones
    // after the same timeout.)
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = once.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the slow connection ended before its timeout: {other:?}"),
    }
    // Then closed by the server, with no response to the half request.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 30 s");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // A normal request on a fresh connection is still served.
    assert_eq!(
        once.get(app.url("/health")).send().await.unwrap().status(),
        200
    );
}
