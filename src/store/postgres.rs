//! The PostgreSQL backend (testing, staging, production).
//!
//! Native types: `UUID`, `TIMESTAMPTZ`, `JSONB`, `TEXT[]`. The pool is sized by
//! `DB_MAX_CONNECTIONS`; every query is a single round trip.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Row, migrate::Migrator};
use uuid::Uuid;

use super::*;

mod batch;
mod budgets;
mod mcp;
mod responses;
mod sessions;
mod tasks;
mod webhooks;
pub use tasks::{EVENTS_CHANNEL, TASKS_CHANNEL};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PgStore {
    pool: PgPool,
    /// The task path's hot statements (claim, submit and finish batches, call records):
    /// a few connections that plan each of them once (see [`HOT_POOL_SIZE`]).
    hot: PgPool,
    /// Usage reports: a few connections, opened on first use, that plan each report
    /// statement once (see [`REPORT_POOL_SIZE`]).
    reports: PgPool,
    /// Group commit of task submits and task ends (ADR 0018).
    submits: batch::Batcher<tasks::SubmitBatch>,
    finishes: batch::Batcher<tasks::FinishBatch>,
}

/// Connections of the hot pool: submits and ends have at most [`batch::MAX_IN_FLIGHT`]
/// statements out each, the call-record writer and the claim loop one each; two more so
/// that a slow statement never makes another wait for a connection.
pub const HOT_POOL_SIZE: u32 = 2 * batch::MAX_IN_FLIGHT as u32 + 4;

/// Connections of the usage-report pool. A report's custom plan took 0.5 ms to make
/// against 0.15 ms to run at 1,000,000 calls (seven index range scans whose bounds the
/// planner checks against each table's statistics); its generic plan runs in 0.1 ms and
/// is made once per connection. The generic estimate of a range is a fixed fraction of
/// the table, which keeps index scans at any size.
pub const REPORT_POOL_SIZE: u32 = 4;

/// A pool of at most `size` connections, opened on first use, named `name` in
/// `pg_stat_activity`, that keeps one generic plan per statement.
fn generic_plan_pool(options: &PgConnectOptions, name: &str, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(
            options
                .clone()
                .application_name(name)
                .options([("plan_cache_mode", "force_generic_plan")]),
        )
}

impl PgStore {
    pub async fn connect(opts: &ConnectOptions) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(&opts.url)?.application_name("digital-employee");
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        // The hot statements' parameters are arrays and batch sizes whose values do not
        // change the best plan, yet PostgreSQL re-plans them on every execution (their
        // generic plan's estimate never wins), which was about a sixth of the database's
        // time per task. Their connections keep one generic plan per statement (re-made
        // when statistics change). The usage reports do the same on a pool of their own
        // (see [`REPORT_POOL_SIZE`]); every other statement keeps custom plans.
        let hot = generic_plan_pool(&options, "digital-employee-hot", HOT_POOL_SIZE);
        let reports = generic_plan_pool(&options, "digital-employee-reports", REPORT_POOL_SIZE);
        Ok(Self {
            submits: batch::Batcher::start(tasks::SubmitBatch, hot.clone()),
            finishes: batch::Batcher::start(tasks::FinishBatch, hot.clone()),
            pool,
            hot,
            reports,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn missing_or_conflict(&self, tenant: Uuid, id: Uuid) -> StoreError {
        match self.get_employee(tenant, id).await {
            Ok(_) => StoreError::VersionConflict,
            Err(e) => e,
        }
    }
}

fn tenant_row(r: &PgRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    })
}

fn key_row(r: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        secret_hash: r.try_get("secret_hash")?,
        scopes: r.try_get("scopes")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
        rate_limit: r.try_get("rate_limit")?,
    })
}

fn employee_row(r: &PgRow) -> StoreResult<Employee> {
    let Json(model_policy): Json<Vec<String>> = r.try_get("model_policy")?;
    let Json(allowed_tools): Json<Vec<String>> = r.try_get("allowed_tools")?;
    let Json(approval_tools): Json<Vec<String>> = r.try_get("approval_tools")?;
    Ok(Employee {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        fields: EmployeeFields {
            name: r.try_get("name")?,
            role: r.try_get("role")?,
            instructions: r.try_get("instructions")?,
            model_policy,
            allowed_tools,
            max_steps: r.try_get("max_steps")?,
            token_budget: r.try_get("token_budget")?,
            temperature: r.try_get("temperature")?,
            redact_prompts: r.try_get("redact_prompts")?,
            approval_tools,
            output_schema: r
                .try_get::<Option<Json<serde_json::Value>>, _>("output_schema")?
                .map(|Json(v)| v),
            input_timeout_seconds: r.try_get("input_timeout_seconds")?,
        },
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The employee columns, as a macro so queries stay `&'static str` literals.
macro_rules! employee_cols {
    () => {
        "id, tenant_id, name, role, instructions, model_policy, allowed_tools, \
         max_steps, token_budget, temperature, redact_prompts, version, created_at, updated_at, \
         approval_tools, output_schema, input_timeout_seconds"
    };
}

impl PgStore {
    /// An employee by its name in a tenant, in one query.
    pub(crate) async fn employee_by_name(&self, tenant: Uuid, name: &str) -> StoreResult<Employee> {
        let row = sqlx::query(concat!(
            "SELECT ",
            employee_cols!(),
            " FROM employees WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant)
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

fn ai_call_row(r: &PgRow) -> StoreResult<AiCallRecord> {
    Ok(AiCallRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        task_id: r.try_get("task_id")?,
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
        created_at: r.try_get("created_at")?,
        employee_id: r.try_get("employee_id")?,
    })
}

fn usage_row(r: &PgRow) -> StoreResult<UsageGroup> {
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
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        // `to_regclass` honours the search_path, so per-schema test databases work.
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await?;
        let applied = if exists.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(schema_status_from(Backend::Postgres, &MIGRATOR, applied))
    }

    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        let before = self.schema_status().await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(before.pending)
    }

    async fn close(&self) {
        self.hot.close().await;
        self.reports.close().await;
        self.pool.close().await;
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats::of("main", &self.pool),
            PoolStats::of("hot", &self.hot),
            PoolStats::of("reports", &self.reports),
        ]
    }

    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant> {
        let row = sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
             RETURNING id, name, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_unique(e, "tenant name"))?;
        tenant_row(&row)
    }

    async fn get_tenant(&self, id: Uuid) -> StoreResult<Tenant> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        tenant_row(&row)
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
        let row = bind_key(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_at, \
             rate_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            key,
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_unique(e, "api key prefix"))?;
        key_row(&row)
    }

    async fn insert_first_api_key(&self, key: &NewApiKey) -> StoreResult<Option<ApiKeyRecord>> {
        // Serialise the check and the insert across replicas: READ COMMITTED alone would
        // let two `NOT EXISTS` checks pass together.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('digital-employee:first-api-key'))")
            .execute(&mut *tx)
            .await?;
        let row = bind_key(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_at, \
             rate_limit) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = $2) RETURNING *",
            key,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| map_unique(e, "api key prefix"))?;
        tx.commit().await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn find_api_key(&self, prefix: &str) -> StoreResult<ApiKeyRecord> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL")
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        key_row(&row)
    }

    async fn count_api_keys(&self, tenant: Uuid) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn count_active_api_keys(&self, tenant: Uuid) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_tenants(&self, before: Option<Uuid>, limit: u32) -> StoreResult<Page<Tenant>> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM tenants WHERE ($1::uuid IS NULL OR id < $1) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
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
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows.iter().map(key_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn get_api_key(&self, tenant: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        key_row(&row)
    }

    async fn revoke_api_key(&self, tenant: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord> {
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE tenant_id = $2 AND id = $3 RETURNING *",
        )
        .bind(now())
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        key_row(&row)
    }

    async fn touch_api_keys(
        &self,
        used: &[(Uuid, Uuid, chrono::DateTime<chrono::Utc>)],
    ) -> StoreResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        let tenants: Vec<Uuid> = used.iter().map(|u| u.0).collect();
        let ids: Vec<Uuid> = used.iter().map(|u| u.1).collect();
        let times: Vec<chrono::DateTime<chrono::Utc>> = used.iter().map(|u| u.2).collect();
        // One statement for the whole batch.
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = u.at \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) AS u(tenant_id, id, at) \
             WHERE k.tenant_id = u.tenant_id AND k.id = u.id \
             AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(&tenants)
        .bind(&ids)
        .bind(&times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_employee(
        &self,
        tenant: Uuid,
        fields: &EmployeeFields,
    ) -> StoreResult<Employee> {
        let t = now();
        let row = sqlx::query(concat!(
            "INSERT INTO employees (",
            employee_cols!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12, $13, $14, $15) \
             RETURNING ",
            employee_cols!(),
            ""
        ))
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&fields.name)
        .bind(&fields.role)
        .bind(&fields.instructions)
        .bind(Json(&fields.model_policy))
        .bind(Json(&fields.allowed_tools))
        .bind(fields.max_steps)
        .bind(fields.token_budget)
        .bind(fields.temperature)
        .bind(fields.redact_prompts)
        .bind(t)
        .bind(Json(&fields.approval_tools))
        .bind(fields.output_schema.as_ref().map(Json))
        .bind(fields.input_timeout_seconds)
        .fetch_one(&self.pool)
        .await
        .map_err(|err| map_unique(err, "employee name"))?;
        employee_row(&row)
    }

    async fn get_employee(&self, tenant: Uuid, id: Uuid) -> StoreResult<Employee> {
        let row = sqlx::query(concat!(
            "SELECT ",
            employee_cols!(),
            " FROM employees WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
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
            " FROM employees \
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(before)
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
        let row = sqlx::query(concat!(
            "UPDATE employees SET name = $1, role = $2, instructions = $3, model_policy = $4, \
             allowed_tools = $5, max_steps = $6, token_budget = $7, temperature = $8, \
             redact_prompts = $9, version = version + 1, updated_at = $10, approval_tools = $14, \
             output_schema = $15, input_timeout_seconds = $16 \
             WHERE tenant_id = $11 AND id = $12 AND version = $13 RETURNING ",
            employee_cols!(),
            ""
        ))
        .bind(&fields.name)
        .bind(&fields.role)
        .bind(&fields.instructions)
        .bind(Json(&fields.model_policy))
        .bind(Json(&fields.allowed_tools))
        .bind(fields.max_steps)
        .bind(fields.token_budget)
        .bind(fields.temperature)
        .bind(fields.redact_prompts)
        .bind(now())
        .bind(tenant)
        .bind(id)
        .bind(version)
        .bind(Json(&fields.approval_tools))
        .bind(fields.output_schema.as_ref().map(Json))
        .bind(fields.input_timeout_seconds)
        .fetch_optional(&self.pool)
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
            "DELETE FROM employees WHERE tenant_id = $1 AND id = $2 \
             AND ($3::bigint IS NULL OR version = $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(version)
        .execute(&self.pool)
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
        // One statement for the whole batch: a column array per field.
        macro_rules! col {
            ($f:expr) => {
                calls.iter().map($f).collect::<Vec<_>>()
            };
        }
        // The hourly rollup is kept by the same statement: the inserted rows, grouped and
        // upserted in key order (so concurrent batches lock rows in one order). The daily
        // and minute ones are kept by the table's statement trigger (migration 0021).
        sqlx::query(concat!(
            "WITH ins AS (INSERT INTO ai_calls (",
            ai_call_cols!(),
            ") SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::int4[], $9::int8[], $10::int8[], \
             $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::bool[], $16::bool[], \
             $17::timestamptz[], $18::uuid[], $19::int8[]) \
             RETURNING tenant_id, created_at, employee_id, provider, model, status, \
             input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_nanos, \
             reasoning_tokens) \
             INSERT INTO usage_hourly AS u (tenant_id, hour, employee_id, provider, model, \
             requests, successes, errors, cache_hits, input_tokens, output_tokens, \
             cached_tokens, cache_write_tokens, cost_nanos, reasoning_tokens) \
             SELECT tenant_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') \
             AT TIME ZONE 'UTC', \
             COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid), \
             provider, model, COUNT(*), \
             COUNT(*) FILTER (WHERE status = 'ok'), \
             COUNT(*) FILTER (WHERE status = 'error'), \
             COUNT(*) FILTER (WHERE status = 'cache_hit'), \
             SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, \
             SUM(cached_tokens)::bigint, SUM(cache_write_tokens)::bigint, \
             SUM(cost_nanos)::bigint, SUM(reasoning_tokens)::bigint \
             FROM ins GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 \
             ON CONFLICT (tenant_id, hour, employee_id, provider, model) DO UPDATE \
             SET requests = u.requests + EXCLUDED.requests, \
             successes = u.successes + EXCLUDED.successes, \
             errors = u.errors + EXCLUDED.errors, \
             cache_hits = u.cache_hits + EXCLUDED.cache_hits, \
             input_tokens = u.input_tokens + EXCLUDED.input_tokens, \
             output_tokens = u.output_tokens + EXCLUDED.output_tokens, \
             cached_tokens = u.cached_tokens + EXCLUDED.cached_tokens, \
             cache_write_tokens = u.cache_write_tokens + EXCLUDED.cache_write_tokens, \
             cost_nanos = u.cost_nanos + EXCLUDED.cost_nanos, \
             reasoning_tokens = u.reasoning_tokens + EXCLUDED.reasoning_tokens",
        ))
        .bind(col!(|c| c.id))
        .bind(col!(|c| c.tenant_id))
        .bind(col!(|c| c.task_id))
        .bind(col!(|c| c.provider.as_str()))
        .bind(col!(|c| c.model.as_str()))
        .bind(col!(|c| c.status.as_str()))
        .bind(col!(|c| c.error_kind.as_deref()))
        .bind(col!(|c| c.http_status))
        .bind(col!(|c| c.latency_us))
        .bind(col!(|c| c.input_tokens))
        .bind(col!(|c| c.output_tokens))
        .bind(col!(|c| c.cached_tokens))
        .bind(col!(|c| c.cache_write_tokens))
        .bind(col!(|c| c.cost_nanos))
        .bind(col!(|c| c.cache_hit))
        .bind(col!(|c| c.streamed))
        .bind(col!(|c| c.created_at))
        .bind(col!(|c| c.employee_id))
        .bind(col!(|c| c.reasoning_tokens))
        .execute(&self.hot)
        .await?;
        Ok(())
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
            " FROM ai_calls WHERE tenant_id = $1 ",
            "AND ($2::uuid IS NULL OR task_id = $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant)
        .bind(task)
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
        let mut q = sqlx::query(usage_sql(group_by)).bind(tenant);
        for (a, b) in slots {
            q = q.bind(*a).bind(*b);
        }
        let rows = q.fetch_all(&self.reports).await?;
        rows.iter().map(usage_row).collect()
    }
}

/// The statement of a usage report grouped by `group_by` ([`usage_statements`]).
fn usage_sql(group_by: UsageGroupBy) -> &'static str {
    static SQL: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
        usage_statements(&UsageDialect {
            calls_key: |g| match g {
                UsageGroupBy::Employee => "employee_id::text".into(),
                UsageGroupBy::Model => "model".into(),
                UsageGroupBy::Day => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')".into(),
                UsageGroupBy::Provider => "provider".into(),
            },
            rollup_key: |g, unit| match g {
                UsageGroupBy::Employee => {
                    "NULLIF(employee_id, '00000000-0000-0000-0000-000000000000'::uuid)::text".into()
                }
                UsageGroupBy::Model => "model".into(),
                UsageGroupBy::Day => format!("to_char({unit} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
                UsageGroupBy::Provider => "provider".into(),
            },
            call_counts: "1 AS requests, (status = 'ok')::int AS successes, \
                          (status = 'error')::int AS errors, \
                          (status = 'cache_hit')::int AS cache_hits",
            sigil: '$',
            sum_cast: "::bigint",
        })
    });
    SQL.get(usage_statement_index(group_by))
        .map_or("", String::as_str)
}

/// A key insert `sql` with the key's fields bound as `$1`–`$8` (id, tenant, name, prefix,
/// secret hash, scopes, created at = now, rate limit).
fn bind_key<'q>(
    sql: &'static str,
    key: &'q NewApiKey,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(key.id)
        .bind(key.tenant_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.secret_hash)
        .bind(&key.scopes)
        .bind(now())
        .bind(key.rate_limit)
}
