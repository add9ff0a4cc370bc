//! The embedded SQLite backend (the development default).
//!
//! WAL journal so readers never block the writer; `synchronous=NORMAL` (durable across
//! process crashes, the WAL is fsynced at checkpoints); a busy timeout so concurrent
//! writers queue instead of failing. Ids and times are stored as text.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, migrate::Migrator};
use uuid::Uuid;

use super::*;

mod budgets;
mod mcp;
mod responses;
mod sessions;
mod tasks;
mod webhooks;
mod writer;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Reads go to a pool of connections (WAL readers never block). Every task write goes
/// to the group-commit [`writer::Writer`] thread; the other writes go to a pool of
/// exactly one connection. Both take the same [`writer::Gate`] first, so writers queue
/// in this process instead of meeting SQLite's busy handler, whose back-off sleeps (up
/// to 100 ms a try) would dominate tail latency.
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    gate: writer::Gate,
    hot: writer::Writer,
    /// A `sqlite::memory:` database lives in a private file removed with the store.
    scratch: Option<std::path::PathBuf>,
}

/// The async driver's write connection, held with the [`writer::Gate`].
struct WriteConn {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl std::ops::Deref for WriteConn {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(path) = &self.scratch {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl SqliteStore {
    /// Inserts a key; with `only_first`, only when its tenant has none (one statement on
    /// the single write connection, so the check and the insert cannot interleave with
    /// another writer). `None` when nothing was inserted.
    async fn insert_key(
        &self,
        key: &NewApiKey,
        only_first: bool,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        macro_rules! insert {
            () => {
                "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes, \
                 created_at, rate_limit) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
            };
        }
        let sql = if only_first {
            concat!(
                insert!(),
                " WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = ?)"
            )
        } else {
            insert!()
        };
        let created_at = now();
        let mut query = sqlx::query(sql)
            .bind(key.id.to_string())
            .bind(key.tenant_id.to_string())
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.secret_hash)
            .bind(to_json(&key.scopes))
            .bind(ts(&created_at))
            .bind(key.rate_limit);
        if only_first {
            query = query.bind(key.tenant_id.to_string());
        }
        let done = query
            .execute(&mut *self.w().await?)
            .await
            .map_err(|e| map_unique(e, "api key prefix"))?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(ApiKeyRecord {
            id: key.id,
            tenant_id: key.tenant_id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            secret_hash: key.secret_hash.clone(),
            scopes: key.scopes.clone(),
            created_at,
            last_used_at: None,
            revoked_at: None,
            rate_limit: key.rate_limit,
        }))
    }

    pub async fn connect(opts: &ConnectOptions) -> StoreResult<Self> {
        let url = opts.url.as_str();
        let mut options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // An in-memory database would exist once per connection: it becomes a private
        // file instead (same lifetime: removed when the store is dropped).
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let scratch = in_memory.then(|| {
            std::env::temp_dir().join(format!(
                "digital-employee-{}.sqlite",
                Uuid::now_v7().simple()
            ))
        });
        if let Some(path) = &scratch {
            options = options.filename(path);
        }
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create data directory {}: {e}", parent.display()),
                )))
            })?;
        }
        options = options.pragma("temp_store", "memory");
        // Each reader keeps at most 512 KiB of pages (SQLite's default is 2 MiB per
        // connection, 64 MiB across 32 readers): the index tops a read walks stay cached,
        // the rest is a read from the operating system's cache of the file.
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone().pragma("cache_size", READER_CACHE))
            .await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let gate = writer::Gate::default();
        let hot = writer::Writer::start(options.get_filename(), gate.clone())?;
        Ok(Self {
            pool,
            writer,
            gate,
            hot,
            scratch,
        })
    }

    /// The async driver's write connection, exclusive of the writer thread's batches.
    async fn w(&self) -> StoreResult<WriteConn> {
        let gate = self.gate.clone().lock_owned().await;
        Ok(WriteConn {
            conn: self.writer.acquire().await?,
            _gate: gate,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// `PRAGMA cache_size` of each reader connection: negative is KiB.
const READER_CACHE: &str = "-512";

fn ts(t: &DateTime<Utc>) -> String {
    super::timestamp::rfc3339_micros(t)
}

fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

fn parse_id(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("id {s:?}: {e}")))
}

fn json_list(s: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("list {s:?}: {e}")))
}

fn to_json(v: &[String]) -> String {
    serde_json::Value::from(v.to_vec()).to_string()
}

fn tenant_row(r: &SqliteRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: parse_id(r.try_get("id")?)?,
        name: r.try_get("name")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
    })
}

fn key_row(r: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    let opt_ts = |col: &str| -> StoreResult<Option<DateTime<Utc>>> {
        r.try_get::<Option<String>, _>(col)?
            .map(|s| parse_ts(&s))
            .transpose()
    };
    Ok(ApiKeyRecord {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        secret_hash: r.try_get("secret_hash")?,
        scopes: json_list(r.try_get("scopes")?)?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        last_used_at: opt_ts("last_used_at")?,
        revoked_at: opt_ts("revoked_at")?,
        rate_limit: r.try_get("rate_limit")?,
    })
}

fn employee_row(r: &SqliteRow) -> StoreResult<Employee> {
    Ok(Employee {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        fields: EmployeeFields {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            instructions: r.try_get("instructions")?,
            model_policy: json_list(r.try_get("model_policy")?)?,
            allowed_tools: json_list(r.try_get("allowed_tools")?)?,
            max_steps: r.try_get("max_steps")?,
            token_budget: r.try_get("token_budget")?,
            temperature: r.try_get("temperature")?,
            redact_prompts: r.try_get("redact_prompts")?,
            approval_tools: json_list(r.try_get("approval_tools")?)?,
            output_schema: r
                .try_get::<Option<String>, _>("output_schema")?
                .map(|s| {
                    serde_json::from_str(&s)
                        .map_err(|e| StoreError::Corrupt(format!("output_schema: {e}")))
                })
                .transpose()?,
            input_timeout_seconds: r.try_get("input_timeout_seconds")?,
        },
        version: r.try_get("version")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        updated_at: parse_ts(r.try_get("updated_at")?)?,
    })
}

/// The api key columns, as a macro so queries stay `&'static str` literals.
macro_rules! key_cols {
    () => {
        "id, tenant_id, name, prefix, secret_hash, scopes, created_at, last_used_at, \
         revoked_at, rate_limit"
    };
}

/// The employee columns, as a macro so queries stay `&'static str` literals.
macro_rules! employee_cols {
    () => {
        "id, tenant_id, name, role, instructions, model_policy, allowed_tools, \
         max_steps, token_budget, temperature, redact_prompts, version, created_at, updated_at, \
         approval_tools, output_schema, input_timeout_seconds"
    };
}

impl SqliteStore {
    /// An employee by its name in a tenant, in one query.
    pub(crate) async fn employee_by_name(&self, tenant: Uuid, name: &str) -> StoreResult<Employee> {
        let row = sqlx::query(concat!(
            "SELECT ",
            employee_cols!(),
            " FROM employees WHERE tenant_id = ? AND name = ?"
        ))
        .bind(tenant.to_string())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        employee_row(&row)
    }
}

/// The ai_calls columns, as a macro so queries stay `&'static str` literals.
macro_rules! ai_call_cols {
    () => {
        "id, tenant_id, task_id, provider, model, status, error_kind, http_status, latency_us, \
         input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_nanos, cache_hit, \
         streamed, created_at, employee_id, reasoning_tokens"
    };
}

fn ai_call_row(r: &SqliteRow) -> StoreResult<AiCallRecord> {
    Ok(AiCallRecord {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        task_id: r
            .try_get::<Option<String>, _>("task_id")?
            .map(|s| parse_id(&s))
            .transpose()?,
        provider: r.try_get("provider")?,
        model: r.try_get("model")?,
        status: r.try_get("status")?,
        error_kind: r.try_get("error_kind")?,
        http_status: r.try_get("http_status")?,
        latency_us: r.try_get("latency_us")?,
        input_tokens: r.try_get("input_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        cached_tokens: r.try_get("cached_tokens")?,
        cache_write_tokens: r.try_get("cache_write_tokens")?,
        reasoning_tokens: r.try_get("reasoning_tokens")?,
        cost_nanos: r.try_get("cost_nanos")?,
        cache_hit: r.try_get("cache_hit")?,
        streamed: r.try_get("streamed")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        employee_id: r
            .try_get::<Option<String>, _>("employee_id")?
            .map(|s| parse_id(&s))
            .transpose()?,
    })
}

fn usage_row(r: &SqliteRow) -> StoreResult<UsageGroup> {
    Ok(UsageGroup {
        key: r.try_get("key")?,
        requests: r.try_get("requests")?,
        successes: r.try_get("successes")?,
        errors: r.try_get("errors")?,
        cache_hits: r.try_get("cache_hits")?,
        input_tokens: r.try_get("input_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        cached_tokens: r.try_get("cached_tokens")?,
        cache_write_tokens: r.try_get("cache_write_tokens")?,
        reasoning_tokens: r.try_get("reasoning_tokens")?,
        cost_nanos: r.try_get("cost_nanos")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        let applied = if exists.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(schema_status_from(Backend::Sqlite, &MIGRATOR, applied))
    }

    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        let before = self.schema_status().await?;
        let _exclusive = self.gate.lock().await;
        MIGRATOR.run(&self.writer).await?;
        Ok(before.pending)
    }

    async fn close(&self) {
        self.hot.close().await;
        self.writer.close().await;
        self.pool.close().await;
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats::of("main", &self.pool),
            PoolStats::of("writer", &self.writer),
        ]
    }

    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant> {
        let t = Tenant {
            id: Uuid::now_v7(),
            name: name.to_string(),
            created_at: now(),
        };
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
            .bind(t.id.to_string())
            .bind(&t.name)
            .bind(ts(&t.created_at))
            .execute(&mut *self.w().await?)
            .await
            .map_err(|e| map_unique(e, "tenant name"))?;
        Ok(t)
    }

    async fn get_tenant(&self, id: Uuid) -> StoreResult<Tenant> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        tenant_row(&row)
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
        self.insert_key(key, false)
            .await?
            .ok_or_else(|| StoreError::Engine("the key insert wrote no row".into()))
    }

    async fn insert_first_api_key(&self, key: &NewApiKey) -> StoreResult<Option<ApiKeyRecord>> {
        self.insert_key(key, true).await
    }

    async fn find_api_key(&self, prefix: &str) -> StoreResult<ApiKeyRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM api_keys WHERE prefix = ? AND revoked_at IS NULL"
        ))
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        key_row(&row)
    }

    async fn count_api_keys(&self, tenant: Uuid) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE tenant_id = ?")
                .bind(tenant.to_string())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn count_active_api_keys(&self, tenant: Uuid) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE tenant_id = ? AND revoked_at IS NULL",
        )
        .bind(tenant.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_tenants(&self, before: Option<Uuid>, limit: u32) -> StoreResult<Page<Tenant>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM tenants WHERE (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(tenant_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn list_api_keys(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<ApiKeyRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM api_keys WHERE tenant_id = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows.iter().map(key_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn get_api_key(&self, tenant: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_cols!(),
            " FROM api_keys WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        key_row(&row)
    }

    async fn revoke_api_key(&self, tenant: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord> {
        let row = sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) \
             WHERE tenant_id = ? AND id = ? RETURNING ",
            key_cols!(),
            ""
        ))
        .bind(ts(&now()))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *self.w().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        key_row(&row)
    }

    async fn touch_api_keys(&self, used: &[(Uuid, Uuid, DateTime<Utc>)]) -> StoreResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        let mut w = self.w().await?;
        let mut tx = w.begin().await?;
        for (tenant, id, at) in used {
            // Text timestamps of one fixed format compare in time order.
            sqlx::query(
                "UPDATE api_keys SET last_used_at = ? WHERE tenant_id = ? AND id = ? \
                 AND (last_used_at IS NULL OR last_used_at < ?)",
            )
            .bind(ts(at))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(ts(at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_employee(
        &self,
        tenant: Uuid,
        fields: &EmployeeFields,
    ) -> StoreResult<Employee> {
        let t = now();
        let e = Employee {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            fields: fields.clone(),
            version: 1,
            created_at: t,
            updated_at: t,
        };
        sqlx::query(concat!(
            "INSERT INTO employees (",
            employee_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(e.id.to_string())
        .bind(tenant.to_string())
        .bind(&fields.name)
        .bind(&fields.role)
        .bind(&fields.instructions)
        .bind(to_json(&fields.model_policy))
        .bind(to_json(&fields.allowed_tools))
        .bind(fields.max_steps)
        .bind(fields.token_budget)
        .bind(fields.temperature)
        .bind(fields.redact_prompts)
        .bind(e.version)
        .bind(ts(&t))
        .bind(ts(&t))
        .bind(to_json(&fields.approval_tools))
        .bind(fields.output_schema.as_ref().map(|v| v.to_string()))
        .bind(fields.input_timeout_seconds)
        .execute(&mut *self.w().await?)
        .await
        .map_err(|err| map_unique(err, "employee name"))?;
        Ok(e)
    }

    async fn get_employee(&self, tenant: Uuid, id: Uuid) -> StoreResult<Employee> {
        let row = sqlx::query(concat!(
            "SELECT ",
            employee_cols!(),
            " FROM employees WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        employee_row(&row)
    }

    async fn list_employees(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Employee>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            employee_cols!(),
            " FROM employees WHERE tenant_id = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(employee_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn update_employee(
        &self,
        tenant: Uuid,
        id: Uuid,
        version: i64,
        fields: &EmployeeFields,
    ) -> StoreResult<Employee> {
        let t = now();
        let row = sqlx::query(concat!(
            "UPDATE employees SET name = ?, role = ?, instructions = ?, model_policy = ?, \
             allowed_tools = ?, max_steps = ?, token_budget = ?, temperature = ?, \
             redact_prompts = ?, approval_tools = ?, output_schema = ?, version = version + 1, \
             input_timeout_seconds = ?, updated_at = ? \
             WHERE tenant_id = ? AND id = ? AND version = ? RETURNING ",
            employee_cols!(),
            ""
        ))
        .bind(&fields.name)
        .bind(&fields.role)
        .bind(&fields.instructions)
        .bind(to_json(&fields.model_policy))
        .bind(to_json(&fields.allowed_tools))
        .bind(fields.max_steps)
        .bind(fields.token_budget)
        .bind(fields.temperature)
        .bind(fields.redact_prompts)
        .bind(to_json(&fields.approval_tools))
        .bind(fields.output_schema.as_ref().map(|v| v.to_string()))
        .bind(fields.input_timeout_seconds)
        .bind(ts(&t))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(version)
        .fetch_optional(&mut *self.w().await?)
        .await
        .map_err(|err| map_unique(err, "employee name"))?;
        match row {
            Some(r) => employee_row(&r),
            None => Err(self.missing_or_conflict(tenant, id).await),
        }
    }

    async fn delete_employee(
        &self,
        tenant: Uuid,
        id: Uuid,
        version: Option<i64>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "DELETE FROM employees WHERE tenant_id = ? AND id = ? AND (? IS NULL OR version = ?)",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(version)
        .bind(version)
        .execute(&mut *self.w().await?)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(self.missing_or_conflict(tenant, id).await)
        }
    }
    async fn insert_ai_calls(&self, calls: &[AiCallRecord]) -> StoreResult<()> {
        if calls.is_empty() {
            return Ok(());
        }
        let calls = calls.to_vec();
        self.hot
            .run(move |conn| {
                let mut st = conn
                    .prepare_cached(concat!(
                        "INSERT INTO ai_calls (",
                        ai_call_cols!(),
                        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                         ?15, ?16, ?17, ?18, ?19)"
                    ))
                    .map_err(writer::engine)?;
                for c in &calls {
                    st.execute(rusqlite::params![
                        c.id.to_string(),
                        c.tenant_id.to_string(),
                        c.task_id.map(|t| t.to_string()),
                        c.provider,
                        c.model,
                        c.status,
                        c.error_kind,
                        c.http_status,
                        c.latency_us,
                        c.input_tokens,
                        c.output_tokens,
                        c.cached_tokens,
                        c.cache_write_tokens,
                        c.cost_nanos,
                        c.cache_hit,
                        c.streamed,
                        ts(&c.created_at),
                        c.employee_id.map(|e| e.to_string()),
                        c.reasoning_tokens,
                    ])
                    .map_err(writer::engine)?;
                }
                // The daily, hourly and minute rollups, in the same transaction: one
                // upsert per group of the batch, in key order.
                rollup_rs(conn, &calls, 86_400, "usage_daily", "day")?;
                rollup_rs(conn, &calls, 3_600, "usage_hourly", "hour")?;
                rollup_rs(conn, &calls, 60, "usage_minutely", "minute")?;
                Ok(())
            })
            .await
    }

    async fn list_ai_calls(
        &self,
        tenant: Uuid,
        task: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AiCallRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            ai_call_cols!(),
            " FROM ai_calls WHERE tenant_id = ? ",
            "AND (? IS NULL OR task_id = ?) ORDER BY id LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(task.map(|t| t.to_string()))
        .bind(task.map(|t| t.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ai_call_row).collect()
    }

    async fn usage_of_slots(
        &self,
        tenant: Uuid,
        slots: &UsageSlots,
        group_by: UsageGroupBy,
    ) -> StoreResult<Vec<UsageGroup>> {
        let mut q = sqlx::query(usage_sql(group_by)).bind(tenant.to_string());
        for (a, b) in slots {
            q = q.bind(ts(a)).bind(ts(b));
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(usage_row).collect()
    }
}

/// The statement of a usage report grouped by `group_by` ([`usage_statements`]). Times
/// are stored as fixed-width UTC text, so text comparison is time order and the first ten
/// characters are the UTC day.
fn usage_sql(group_by: UsageGroupBy) -> &'static str {
    static SQL: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
        usage_statements(&UsageDialect {
            calls_key: |g| match g {
                UsageGroupBy::Employee => "employee_id".into(),
                UsageGroupBy::Model => "model".into(),
                UsageGroupBy::Day => "substr(created_at, 1, 10)".into(),
                UsageGroupBy::Provider => "provider".into(),
            },
            rollup_key: |g, unit| match g {
                UsageGroupBy::Employee => "NULLIF(employee_id, '')".into(),
                UsageGroupBy::Model => "model".into(),
                UsageGroupBy::Day => format!("substr({unit}, 1, 10)"),
                UsageGroupBy::Provider => "provider".into(),
            },
            call_counts: "1 AS requests, status = 'ok' AS successes, \
                          status = 'error' AS errors, status = 'cache_hit' AS cache_hits",
            sigil: '?',
            sum_cast: "",
        })
    });
    SQL.get(usage_statement_index(group_by))
        .map_or("", String::as_str)
}

/// Adds `calls` to the rollup `table`, whose unit column `unit` holds the calls' stored
/// time cut to its first `prefix` characters and completed with `rest` (10: the day, 13:
/// the hour, 16: the minute). One upsert per group, in key order.
fn rollup_rs(
    conn: &rusqlite::Connection,
    calls: &[AiCallRecord],
    unit_secs: i64,
    table: &str,
    unit: &str,
) -> StoreResult<()> {
    // Grouped on borrowed keys and whole units of time; the texts the table keeps are
    // written once per group.
    let mut groups: std::collections::BTreeMap<(Uuid, i64, Option<Uuid>, &str, &str), UsageGroup> =
        std::collections::BTreeMap::new();
    for c in calls {
        let bucket = c.created_at.timestamp().div_euclid(unit_secs);
        let key = (
            c.tenant_id,
            bucket,
            c.employee_id,
            c.provider.as_str(),
            c.model.as_str(),
        );
        add_call(groups.entry(key).or_default(), c);
    }
    let mut up = conn
        .prepare_cached(&format!(
            "INSERT INTO {table} (tenant_id, {unit}, employee_id, provider, model, requests, \
             successes, errors, cache_hits, input_tokens, output_tokens, cached_tokens, \
             cache_write_tokens, cost_nanos, reasoning_tokens) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
             ON CONFLICT (tenant_id, {unit}, employee_id, provider, model) DO UPDATE \
             SET requests = requests + excluded.requests, \
             successes = successes + excluded.successes, \
             errors = errors + excluded.errors, \
             cache_hits = cache_hits + excluded.cache_hits, \
             input_tokens = input_tokens + excluded.input_tokens, \
             output_tokens = output_tokens + excluded.output_tokens, \
             cached_tokens = cached_tokens + excluded.cached_tokens, \
             cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, \
             cost_nanos = cost_nanos + excluded.cost_nanos, \
             reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens"
        ))
        .map_err(writer::engine)?;
    for ((tenant, bucket, employee, provider, model), g) in &groups {
        let at = DateTime::from_timestamp(bucket * unit_secs, 0).ok_or_else(|| {
            StoreError::Corrupt(format!("a call's time is out of range: {bucket} {unit}s"))
        })?;
        up.execute(rusqlite::params![
            tenant.to_string(),
            ts(&at),
            employee.map(|e| e.to_string()).unwrap_or_default(),
            provider,
            model,
            g.requests,
            g.successes,
            g.errors,
            g.cache_hits,
            g.input_tokens,
            g.output_tokens,
            g.cached_tokens,
            g.cache_write_tokens,
            g.cost_nanos,
            g.reasoning_tokens,
        ])
        .map_err(writer::engine)?;
    }
    Ok(())
}

impl SqliteStore {
    /// After a fenced write touched no row: was the row gone, or at another version?
    async fn missing_or_conflict(&self, tenant: Uuid, id: Uuid) -> StoreError {
        match self.get_employee(tenant, id).await {
            Ok(_) => StoreError::VersionConflict,
            Err(e) => e,
        }
    }
}
