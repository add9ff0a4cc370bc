//! One conformance suite for every `Store` implementation: SQLite always, PostgreSQL
//! when `TEST_DATABASE_URL` is set. Both must behave identically.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, TestDb};
use digital_employee::store::{
    AiCallRecord, DEFAULT_TENANT_ID, EmployeeFields, NewApiKey, StoreError, UsageGroup,
    UsageGroupBy,
};
use uuid::Uuid;

backend_tests!(
    migrations_apply_once_and_report_status,
    tenants_are_unique_by_name,
    api_keys_round_trip_by_prefix,
    api_keys_list_revoke_touch_scoped_by_tenant,
    employees_round_trip_exactly,
    employee_names_are_unique_per_tenant,
    updates_are_fenced_by_version,
    deletes_are_fenced_and_scoped,
    listing_pages_newest_first_within_tenant,
    usage_report_groups_and_sums_exactly,
    usage_report_matches_the_calls_for_any_range,
);

fn fields(name: &str) -> EmployeeFields {
    EmployeeFields {
        name: name.to_string(),
        role: "role".into(),
        instructions: "be precise: ünïcödé ✓".into(),
        model_policy: vec!["openai/gpt-4o".into(), "anthropic/claude-sonnet-4".into()],
        allowed_tools: vec!["calculator".into()],
        max_steps: 7,
        token_budget: 123_456,
        temperature: 0.25,
        redact_prompts: true,
        approval_tools: Vec::new(),
        output_schema: None,
        input_timeout_seconds: 86_400,
    }
}

async fn migrations_apply_once_and_report_status(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.store().await;
    let before = store.schema_status().await.unwrap();
    assert!(!before.is_current());
    assert!(before.applied.is_empty());
    assert!(!before.pending.is_empty());
    let applied = store.migrate().await.unwrap();
    assert_eq!(applied, before.pending);
    let after = store.schema_status().await.unwrap();
    assert!(after.is_current());
    assert_eq!(after.applied, before.pending);
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    // The default tenant exists after migrating.
    assert_eq!(
        store.get_tenant(DEFAULT_TENANT_ID).await.unwrap().name,
        "default"
    );
    store.ping().await.unwrap();
}

async fn tenants_are_unique_by_name(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let t = store.create_tenant("acme").await.unwrap();
    assert_eq!(store.get_tenant(t.id).await.unwrap(), t);
    assert!(matches!(
        store.create_tenant("acme").await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        store.get_tenant(Uuid::now_v7()).await,
        Err(StoreError::NotFound)
    ));
}

async fn api_keys_round_trip_by_prefix(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    assert_eq!(store.count_api_keys(DEFAULT_TENANT_ID).await.unwrap(), 0);
    let new = NewApiKey {
        id: Uuid::now_v7(),
        tenant_id: DEFAULT_TENANT_ID,
        name: "ci".into(),
        prefix: "0123456789ab".into(),
        secret_hash: "ab".repeat(32),
        scopes: vec!["write".into(), "read".into()],
        rate_limit: Some(7),
    };
    let rec = store.insert_api_key(&new).await.unwrap();
    assert_eq!(rec.rate_limit, Some(7));
    assert_eq!(rec.scopes, new.scopes);
    let found = store.find_api_key("0123456789ab").await.unwrap();
    assert_eq!(found, rec);
    assert!(found.revoked_at.is_none() && found.last_used_at.is_none());
    assert_eq!(store.count_api_keys(DEFAULT_TENANT_ID).await.unwrap(), 1);
    assert!(matches!(
        store
            .insert_api_key(&NewApiKey {
                id: Uuid::now_v7(),
                ..new.clone()
            })
            .await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        store.find_api_key("ffffffffffff").await,
        Err(StoreError::NotFound)
    ));
}

async fn api_keys_list_revoke_touch_scoped_by_tenant(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let other = store.create_tenant("other").await.unwrap();
    let key = |prefix: &str, tenant: Uuid| NewApiKey {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        name: prefix.into(),
        prefix: prefix.into(),
        secret_hash: "cd".repeat(32),
        scopes: vec!["read".into()],
        rate_limit: None,
    };
    let a1 = store
        .insert_api_key(&key("aaaaaaaaaaa1", DEFAULT_TENANT_ID))
        .await
        .unwrap();
    let a2 = store
        .insert_api_key(&key("aaaaaaaaaaa2", DEFAULT_TENANT_ID))
        .await
        .unwrap();
    let b1 = store
        .insert_api_key(&key("bbbbbbbbbbb1", other.id))
        .await
        .unwrap();

    // Lists are per tenant, newest first, paginated.
    let page = store
        .list_api_keys(DEFAULT_TENANT_ID, None, 1)
        .await
        .unwrap();
    assert_eq!(page.items, vec![a2.clone()]);
    let next = store
        .list_api_keys(DEFAULT_TENANT_ID, page.next_cursor, 1)
        .await
        .unwrap();
    assert_eq!(next.items, vec![a1.clone()]);
    assert!(next.next_cursor.is_none());
    let theirs = store.list_api_keys(other.id, None, 10).await.unwrap();
    assert_eq!(theirs.items, vec![b1.clone()]);

    // Another tenant's key is not found, for get and revoke alike.
    assert!(matches!(
        store.get_api_key(DEFAULT_TENANT_ID, b1.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.revoke_api_key(DEFAULT_TENANT_ID, b1.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .get_api_key(other.id, b1.id)
            .await
            .unwrap()
            .revoked_at
            .is_none()
    );

    // Revocation hides the key from lookups by prefix and keeps its first time.
    let revoked = store
        .revoke_api_key(DEFAULT_TENANT_ID, a1.id)
        .await
        .unwrap();
    let first = revoked.revoked_at.unwrap();
    assert!(matches!(
        store.find_api_key("aaaaaaaaaaa1").await,
        Err(StoreError::NotFound)
    ));
    let again = store
        .revoke_api_key(DEFAULT_TENANT_ID, a1.id)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(first));

    // Usage times are written in a batch; an older time never replaces a newer one, and a
    // pair naming the wrong tenant changes nothing.
    let t1 = digital_employee::store::now();
    let t0 = t1 - chrono::Duration::seconds(60);
    store
        .touch_api_keys(&[
            (DEFAULT_TENANT_ID, a2.id, t1),
            (DEFAULT_TENANT_ID, b1.id, t1),
        ])
        .await
        .unwrap();
    store
        .touch_api_keys(&[(DEFAULT_TENANT_ID, a2.id, t0)])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_api_key(DEFAULT_TENANT_ID, a2.id)
            .await
            .unwrap()
            .last_used_at,
        Some(t1)
    );
    assert!(
        store
            .get_api_key(other.id, b1.id)
            .await
            .unwrap()
            .last_used_at
            .is_none()
    );
    store.touch_api_keys(&[]).await.unwrap();

    // Tenants list newest first; the default tenant (id 1) sorts last.
    let tenants = store.list_tenants(None, 10).await.unwrap();
    assert_eq!(tenants.items.first().map(|t| t.id), Some(other.id));
    assert_eq!(tenants.items.last().map(|t| t.id), Some(DEFAULT_TENANT_ID));
}

async fn employees_round_trip_exactly(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let created = store
        .create_employee(DEFAULT_TENANT_ID, &fields("ada"))
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.created_at, created.updated_at);
    let got = store
        .get_employee(DEFAULT_TENANT_ID, created.id)
        .await
        .unwrap();
    assert_eq!(got, created, "what is read equals what was written");
}

async fn employee_names_are_unique_per_tenant(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let other = store.create_tenant("other").await.unwrap();
    store
        .create_employee(DEFAULT_TENANT_ID, &fields("same"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_employee(DEFAULT_TENANT_ID, &fields("same"))
            .await,
        Err(StoreError::Duplicate("employee name"))
    ));
    // Another tenant may use the name.
    store
        .create_employee(other.id, &fields("same"))
        .await
        .unwrap();
}

async fn updates_are_fenced_by_version(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let e = store
        .create_employee(DEFAULT_TENANT_ID, &fields("v"))
        .await
        .unwrap();
    let mut f = e.fields.clone();
    f.role = "second".into();
    let u = store
        .update_employee(DEFAULT_TENANT_ID, e.id, 1, &f)
        .await
        .unwrap();
    assert_eq!(u.version, 2);
    assert_eq!(u.fields.role, "second");
    assert_eq!(u.created_at, e.created_at);
    assert!(u.updated_at >= e.updated_at);
    f.role = "stale".into();
    assert!(matches!(
        store.update_employee(DEFAULT_TENANT_ID, e.id, 1, &f).await,
        Err(StoreError::VersionConflict)
    ));
    assert!(matches!(
        store
            .update_employee(DEFAULT_TENANT_ID, Uuid::now_v7(), 1, &f)
            .await,
        Err(StoreError::NotFound)
    ));
    let other = store.create_tenant("intruder").await.unwrap();
    assert!(matches!(
        store.update_employee(other.id, e.id, 2, &f).await,
        Err(StoreError::NotFound)
    ));
    let taken = store
        .create_employee(DEFAULT_TENANT_ID, &fields("taken"))
        .await
        .unwrap();
    f.name = taken.fields.name.clone();
    assert!(matches!(
        store.update_employee(DEFAULT_TENANT_ID, e.id, 2, &f).await,
        Err(StoreError::Duplicate(_))
    ));
    let now = store.get_employee(DEFAULT_TENANT_ID, e.id).await.unwrap();
    assert_eq!(now, u, "refused updates changed nothing");
}

async fn deletes_are_fenced_and_scoped(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let other = store.create_tenant("other").await.unwrap();
    let e = store
        .create_employee(DEFAULT_TENANT_ID, &fields("d"))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_employee(other.id, e.id, None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .delete_employee(DEFAULT_TENANT_ID, e.id, Some(9))
            .await,
        Err(StoreError::VersionConflict)
    ));
    store
        .delete_employee(DEFAULT_TENANT_ID, e.id, Some(1))
        .await
        .unwrap();
    assert!(matches!(
        store.get_employee(DEFAULT_TENANT_ID, e.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn listing_pages_newest_first_within_tenant(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let other = store.create_tenant("other").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            store
                .create_employee(DEFAULT_TENANT_ID, &fields(&format!("n{i}")))
                .await
                .unwrap()
                .id,
        );
        store
            .create_employee(other.id, &fields(&format!("o{i}")))
            .await
            .unwrap();
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_employees(DEFAULT_TENANT_ID, before, 3)
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        assert!(page.items.iter().all(|e| e.tenant_id == DEFAULT_TENANT_ID));
        seen.extend(page.items.iter().map(|e| e.id));
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let exact = store
        .list_employees(DEFAULT_TENANT_ID, None, 7)
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 7);
    assert!(exact.next_cursor.is_none(), "no empty trailing page");
}

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// An AI call row; `tokens` = (input, output, cached, cache write).
fn call(
    tenant: Uuid,
    employee: Option<Uuid>,
    provider_model: &str,
    status: &str,
    when: &str,
    tokens: (i64, i64, i64, i64),
    cost_nanos: i64,
) -> AiCallRecord {
    let (provider, model) = provider_model.split_once('/').unwrap();
    AiCallRecord {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        task_id: None,
        provider: provider.into(),
        model: model.into(),
        status: status.into(),
        error_kind: (status == "error").then(|| "server".into()),
        http_status: (status == "error").then_some(500),
        latency_us: 1234,
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        cached_tokens: tokens.2,
        cache_write_tokens: tokens.3,
        // A value of its own per row whose sums the groups can state: output − cached.
        reasoning_tokens: tokens.1 - tokens.2,
        cost_nanos,
        cache_hit: status == "cache_hit",
        streamed: false,
        created_at: at(when),
        employee_id: employee,
    }
}

/// A usage group from `[requests, successes, errors, cache hits, input, output, cached,
/// cache write, cost nanos]`.
fn group(key: Option<&str>, n: [i64; 9]) -> UsageGroup {
    UsageGroup {
        key: key.map(str::to_owned),
        requests: n[0],
        successes: n[1],
        errors: n[2],
        cache_hits: n[3],
        input_tokens: n[4],
        output_tokens: n[5],
        cached_tokens: n[6],
        cache_write_tokens: n[7],
        reasoning_tokens: n[5] - n[6],
        cost_nanos: n[8],
    }
}

async fn usage_report_groups_and_sums_exactly(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let t = DEFAULT_TENANT_ID;
    let other = store.create_tenant("other").await.unwrap().id;
    let a = Uuid::from_u128(0xa);
    let b = Uuid::from_u128(0xb);
    let rows = vec![
        // In the window [2025-03-01, 2025-03-03): the lower bound is included.
        call(
            t,
            Some(a),
            "openai/gpt-4o",
            "ok",
            "2025-03-01T00:00:00Z",
            (100, 50, 10, 0),
            1_000_000_001,
        ),
        call(
            t,
            Some(a),
            "openai/gpt-4o",
            "error",
            "2025-03-01T12:00:00Z",
            (0, 0, 0, 0),
            0,
        ),
        // A non-UTC offset is stored as its UTC instant: 2025-03-01T23:59:59.999999Z.
        call(
            t,
            Some(b),
            "anthropic/claude-x",
            "ok",
            "2025-03-02T01:59:59.999999+02:00",
            (200, 80, 0, 30),
            2_500_000_000,
        ),
        call(
            t,
            None,
            "openai/gpt-4o",
            "cache_hit",
            "2025-03-02T01:00:00Z",
            (0, 0, 0, 0),
            0,
        ),
        call(
            t,
            None,
            "sandbox/sandbox-1",
            "ok",
            "2025-03-02T10:00:00Z",
            (7, 3, 0, 0),
            5,
        ),
        call(
            t,
            Some(b),
            "openai/gpt-4o",
            "ok",
            "2025-03-02T23:00:00Z",
            (1, 1, 0, 0),
            3,
        ),
        // Outside: the upper bound is excluded, earlier rows, another tenant.
        call(
            t,
            Some(a),
            "openai/gpt-4o",
            "ok",
            "2025-03-03T00:00:00Z",
            (9, 9, 9, 9),
            999,
        ),
        call(
            t,
            Some(a),
            "openai/gpt-4o",
            "ok",
            "2025-02-28T23:59:59.999999Z",
            (9, 9, 9, 9),
            999,
        ),
        call(
            other,
            Some(a),
            "openai/gpt-4o",
            "ok",
            "2025-03-01T06:00:00Z",
            (9, 9, 9, 9),
            999,
        ),
    ];
    store.insert_ai_calls(&rows).await.unwrap();
    // The employee link round-trips.
    let listed = store.list_ai_calls(t, None, 100).await.unwrap();
    assert_eq!(listed.len(), 8);
    assert!(
        listed.iter().all(|r| rows.contains(r)),
        "rows read back exactly"
    );

    let (from, to) = (at("2025-03-01T00:00:00Z"), at("2025-03-03T00:00:00Z"));
    let report = |g| {
        let store = store.clone();
        async move { store.usage_report(t, from, to, g).await.unwrap() }
    };
    assert_eq!(
        report(UsageGroupBy::Day).await,
        vec![
            group(
                Some("2025-03-01"),
                [3, 2, 1, 0, 300, 130, 10, 30, 3_500_000_001]
            ),
            group(Some("2025-03-02"), [3, 2, 0, 1, 8, 4, 0, 0, 8]),
        ]
    );
    assert_eq!(
        report(UsageGroupBy::Employee).await,
        vec![
            group(
                Some(&a.to_string()),
                [2, 1, 1, 0, 100, 50, 10, 0, 1_000_000_001]
            ),
            group(
                Some(&b.to_string()),
                [2, 2, 0, 0, 201, 81, 0, 30, 2_500_000_003]
            ),
            group(None, [2, 1, 0, 1, 7, 3, 0, 0, 5]),
        ]
    );
    assert_eq!(
        report(UsageGroupBy::Model).await,
        vec![
            group(
                Some("claude-x"),
                [1, 1, 0, 0, 200, 80, 0, 30, 2_500_000_000]
            ),
            group(Some("gpt-4o"), [4, 2, 1, 1, 101, 51, 10, 0, 1_000_000_004]),
            group(Some("sandbox-1"), [1, 1, 0, 0, 7, 3, 0, 0, 5]),
        ]
    );
    assert_eq!(
        report(UsageGroupBy::Provider).await,
        vec![
            group(
                Some("anthropic"),
                [1, 1, 0, 0, 200, 80, 0, 30, 2_500_000_000]
            ),
            group(Some("openai"), [4, 2, 1, 1, 101, 51, 10, 0, 1_000_000_004]),
            group(Some("sandbox"), [1, 1, 0, 0, 7, 3, 0, 0, 5]),
        ]
    );
    // Another tenant sees only its own row; an empty window has no groups.
    let theirs = store
        .usage_report(other, from, to, UsageGroupBy::Provider)
        .await
        .unwrap();
    assert_eq!(
        theirs,
        vec![group(Some("openai"), [1, 1, 0, 0, 9, 9, 9, 9, 999])]
    );
    let none = store
        .usage_report(
            t,
            at("2024-01-01T00:00:00Z"),
            at("2024-02-01T00:00:00Z"),
            UsageGroupBy::Day,
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// What a report must say, computed from the rows themselves.
fn expected_usage(
    rows: &[AiCallRecord],
    tenant: Uuid,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    by: UsageGroupBy,
) -> Vec<UsageGroup> {
    let mut groups: Vec<UsageGroup> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.tenant_id == tenant && r.created_at >= from && r.created_at < to)
    {
        let key = match by {
            UsageGroupBy::Day => Some(r.created_at.format("%Y-%m-%d").to_string()),
            UsageGroupBy::Employee => r.employee_id.map(|e| e.to_string()),
            UsageGroupBy::Model => Some(r.model.clone()),
            UsageGroupBy::Provider => Some(r.provider.clone()),
        };
        let at = match groups.iter().position(|g| g.key == key) {
            Some(i) => i,
            None => {
                groups.push(UsageGroup {
                    key,
                    ..UsageGroup::default()
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        g.requests += 1;
        g.successes += i64::from(r.status == "ok");
        g.errors += i64::from(r.status == "error");
        g.cache_hits += i64::from(r.status == "cache_hit");
        g.input_tokens += r.input_tokens;
        g.output_tokens += r.output_tokens;
        g.cached_tokens += r.cached_tokens;
        g.cache_write_tokens += r.cache_write_tokens;
        g.reasoning_tokens += r.reasoning_tokens;
        g.cost_nanos += r.cost_nanos;
    }
    groups.sort_by(|a, b| match (&a.key, &b.key) {
        (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    groups
}

/// Reports read whole days, hours and minutes from the rollups and partial minutes from
/// the calls: for any range, including ones that cut minutes, hours and days, the result
/// equals the sums over the calls in it, and calls added by later batches land in the
/// same days, hours and minutes.
async fn usage_report_matches_the_calls_for_any_range(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let store = db.migrated_store().await;
    let t = DEFAULT_TENANT_ID;
    let other = store.create_tenant("other").await.unwrap().id;
    let employees = [Some(Uuid::from_u128(0xa)), Some(Uuid::from_u128(0xb)), None];
    let models = ["openai/gpt-4o", "anthropic/claude-x", "sandbox/sandbox-1"];
    let statuses = ["ok", "ok", "error", "cache_hit"];
    let start = at("2025-06-30T21:00:00Z");
    // A fixed pseudo-random spread over seven hours across midnight, hour starts included.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rows = Vec::new();
    for i in 0..240_i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset_ms = if i % 17 == 0 {
            (i % 7) * 3_600_000
        } else {
            i64::try_from(x % (7 * 3_600_000)).unwrap()
        };
        let n = usize::try_from(x % 1000).unwrap();
        let mut r = call(
            if i % 11 == 0 { other } else { t },
            employees[n % 3],
            models[(n / 3) % 3],
            statuses[(n / 9) % 4],
            "2025-01-01T00:00:00Z",
            (i, i / 2, i % 5, i % 3),
            i * 1_000 + 7,
        );
        r.created_at = start + chrono::Duration::milliseconds(offset_ms);
        rows.push(r);
    }
    // Two batches with the same hours and keys: the second adds to the first's sums.
    let (first, second) = rows.split_at(130);
    store.insert_ai_calls(first).await.unwrap();
    store.insert_ai_calls(second).await.unwrap();

    let ranges = [
        ("2025-06-30T21:00:00Z", "2025-07-01T04:00:00Z"),
        ("2025-06-30T21:17:03Z", "2025-07-01T03:42:10Z"),
        ("2025-06-30T22:00:00Z", "2025-06-30T22:30:00Z"),
        ("2025-06-30T22:59:59.999Z", "2025-06-30T23:00:00.001Z"),
        ("2025-06-30T23:30:00Z", "2025-07-01T00:30:00Z"),
        ("2025-06-30T23:00:00Z", "2025-07-01T01:00:00Z"),
        ("2025-07-01T00:00:00Z", "2025-07-01T02:15:00Z"),
        ("2025-06-01T00:00:00Z", "2025-07-01T00:00:00Z"),
        // Cutting minutes: whole minutes inside an hour, a range inside one minute, one
        // across a minute boundary, and hours with cut minutes at both ends.
        ("2025-06-30T22:05:00Z", "2025-06-30T22:50:00Z"),
        ("2025-06-30T22:05:10.5Z", "2025-06-30T22:05:50Z"),
        ("2025-06-30T22:05:10Z", "2025-06-30T22:06:20Z"),
        ("2025-06-30T21:59:30Z", "2025-07-01T02:00:30Z"),
        // Whole days, and days with cut hours and minutes at both ends.
        ("2025-06-29T00:00:00Z", "2025-07-02T00:00:00Z"),
        ("2025-06-29T23:59:59.5Z", "2025-07-01T03:00:01Z"),
    ];
    let far = chrono::Utc::now() + chrono::Duration::hours(2);
    let mut cases: Vec<_> = ranges.iter().map(|(a, b)| (at(a), at(b))).collect();
    // An end in the future: the current hour counts whole.
    cases.push((at("2025-06-30T21:30:00Z"), far));
    // The last time the API accepts: its day is read whole, and stays in year 9999.
    cases.push((
        at("2025-06-30T21:30:00Z"),
        at("9999-12-31T23:59:59.999999Z"),
    ));
    for (from, to) in cases {
        for by in [
            UsageGroupBy::Day,
            UsageGroupBy::Employee,
            UsageGroupBy::Model,
            UsageGroupBy::Provider,
        ] {
            for tenant in [t, other] {
                let got = store.usage_report(tenant, from, to, by).await.unwrap();
                assert_eq!(
                    got,
                    expected_usage(&rows, tenant, from, to, by),
                    "{by:?} over {from}..{to}"
                );
            }
        }
    }
}

/// During a rolling upgrade, replicas of the release before migration 0021 keep writing
/// `ai_calls` (and `usage_hourly`) with statements that know nothing of the day and minute
/// rollups: the table's trigger keeps those whole, so reports read from them still count
/// every call (PostgreSQL; SQLite has one process and migrates it before serving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rollups_count_calls_written_by_an_older_release() {
    use sqlx::Connection;
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let store = db.migrated_store().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // The insert of the release before: the call and its hourly sums, nothing else.
    sqlx::raw_sql(
        "WITH ins AS (INSERT INTO ai_calls (id, tenant_id, task_id, provider, model, status, \
         error_kind, http_status, latency_us, input_tokens, output_tokens, cached_tokens, \
         cache_write_tokens, cost_nanos, cache_hit, streamed, created_at, employee_id) \
         VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', NULL, 'openai', \
         'openai/gpt-4o', 'ok', NULL, 200, 1000, 7, 3, 0, 0, 5000, false, false, \
         '2025-05-10T10:30:30Z', NULL), \
         (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', NULL, 'openai', \
         'openai/gpt-4o', 'error', 'timeout', NULL, 1000, 0, 0, 0, 0, 0, false, false, \
         '2025-05-10T10:31:00Z', NULL) RETURNING *) \
         INSERT INTO usage_hourly SELECT tenant_id, '2025-05-10T10:00:00Z'::timestamptz, \
         '00000000-0000-0000-0000-000000000000'::uuid, provider, model, COUNT(*), \
         COUNT(*) FILTER (WHERE status = 'ok'), COUNT(*) FILTER (WHERE status = 'error'), 0, \
         SUM(input_tokens), SUM(output_tokens), 0, 0, SUM(cost_nanos), 0 FROM ins \
         GROUP BY tenant_id, provider, model",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    // Whole days (the daily rollup), then minutes inside an hour (the minute rollup).
    for (from, to) in [
        ("2025-05-01T00:00:00Z", "2025-06-01T00:00:00Z"),
        ("2025-05-10T10:05:00Z", "2025-05-10T10:45:00Z"),
    ] {
        let got = store
            .usage_report(DEFAULT_TENANT_ID, at(from), at(to), UsageGroupBy::Model)
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{from}..{to}: {got:?}");
        let g = &got[0];
        assert_eq!(g.key.as_deref(), Some("openai/gpt-4o"));
        assert_eq!(
            (
                g.requests,
                g.successes,
                g.errors,
                g.input_tokens,
                g.cost_nanos
            ),
            (2, 1, 1, 7, 5000),
            "{from}..{to}"
        );
    }
}
