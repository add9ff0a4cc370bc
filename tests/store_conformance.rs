//! One conformance suite for every `Store` implementation: SQLite always, PostgreSQL
//! when `TEST_DATABASE_URL` is set. Both must behave identically.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, TestDb};
use digital_employee::store::{DEFAULT_TENANT_ID, EmployeeFields, NewApiKey, StoreError};
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
