//! [`WebhookStore`] on PostgreSQL. The claim is one statement with `FOR UPDATE SKIP
//! LOCKED`, so deliverers on several replicas take disjoint rows.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use super::PgStore;
use crate::store::*;

macro_rules! delivery_cols {
    () => {
        "id, tenant_id, task_id, event, url, body, status, attempts, next_attempt_at, \
         last_error, created_at, updated_at"
    };
}

fn delivery_row(r: &PgRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        task_id: r.try_get("task_id")?,
        event: r.try_get("event")?,
        url: r.try_get("url")?,
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

macro_rules! tool_cols {
    () => {
        "id, tenant_id, name, description, parameters, url, timeout_ms, created_at, updated_at"
    };
}

fn tool_row(r: &PgRow) -> StoreResult<WebhookTool> {
    let params: Json<Value> = r.try_get("parameters")?;
    Ok(WebhookTool {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        fields: WebhookToolFields {
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            parameters: params.0,
            url: r.try_get("url")?,
            timeout_ms: r.try_get("timeout_ms")?,
        },
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn after(d: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn webhook_secret(&self, tenant: Uuid, candidate: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(candidate)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let s: String =
            sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&self.pool)
                .await?;
        Ok(s)
    }

    async fn set_webhook_secret(&self, tenant: Uuid, secret: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET secret = EXCLUDED.secret, \
             created_at = EXCLUDED.created_at",
        )
        .bind(tenant)
        .bind(secret)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_deliveries(&self, n: u32, lease: Duration) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(concat!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, \
             updated_at = $2 WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $2 ORDER BY next_attempt_at, id \
             LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING ",
            delivery_cols!()
        ))
        .bind(after(lease))
        .bind(now())
        .bind(i64::from(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn finish_delivery(
        &self,
        id: Uuid,
        attempt: i32,
        result: &DeliveryResult,
    ) -> StoreResult<bool> {
        let t = now();
        let (status, at, error) = match result {
            DeliveryResult::Delivered => ("delivered", t, None),
            DeliveryResult::Retry { at, error } => ("pending", *at, Some(error.as_str())),
            DeliveryResult::Failed { error } => ("failed", t, Some(error.as_str())),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
             last_error = COALESCE($3, last_error), updated_at = $4 \
             WHERE id = $5 AND attempts = $6 AND status = 'pending'",
        )
        .bind(status)
        .bind(at)
        .bind(error)
        .bind(t)
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_deliveries(&self, tenant: Uuid, task: Uuid) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_cols!(),
            " FROM webhook_deliveries WHERE tenant_id = $1 AND task_id = $2 ORDER BY id"
        ))
        .bind(tenant)
        .bind(task)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn create_webhook_tool(
        &self,
        tenant: Uuid,
        f: &WebhookToolFields,
    ) -> StoreResult<WebhookTool> {
        let row = sqlx::query(concat!(
            "INSERT INTO webhook_tools (",
            tool_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            tool_cols!()
        ))
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&f.name)
        .bind(&f.description)
        .bind(Json(&f.parameters))
        .bind(&f.url)
        .bind(f.timeout_ms)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_unique(e, "tool name"))?;
        tool_row(&row)
    }

    async fn get_webhook_tool(&self, tenant: Uuid, id: Uuid) -> StoreResult<WebhookTool> {
        let row = sqlx::query(concat!(
            "SELECT ",
            tool_cols!(),
            " FROM webhook_tools WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        tool_row(&row)
    }

    async fn find_webhook_tools(
        &self,
        tenant: Uuid,
        names: &[String],
    ) -> StoreResult<Vec<WebhookTool>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            tool_cols!(),
            " FROM webhook_tools WHERE tenant_id = $1 AND name = ANY($2) ORDER BY name"
        ))
        .bind(tenant)
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tool_row).collect()
    }

    async fn list_webhook_tools(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<WebhookTool>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            tool_cols!(),
            " FROM webhook_tools WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows.iter().map(tool_row).collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn update_webhook_tool(
        &self,
        tenant: Uuid,
        id: Uuid,
        f: &WebhookToolFields,
    ) -> StoreResult<WebhookTool> {
        let row = sqlx::query(concat!(
            "UPDATE webhook_tools SET name = $1, description = $2, parameters = $3, url = $4, \
             timeout_ms = $5, updated_at = $6 WHERE tenant_id = $7 AND id = $8 RETURNING ",
            tool_cols!()
        ))
        .bind(&f.name)
        .bind(&f.description)
        .bind(Json(&f.parameters))
        .bind(&f.url)
        .bind(f.timeout_ms)
        .bind(now())
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_unique(e, "tool name"))?
        .ok_or(StoreError::NotFound)?;
        tool_row(&row)
    }

    async fn delete_webhook_tool(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM webhook_tools WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }
}
