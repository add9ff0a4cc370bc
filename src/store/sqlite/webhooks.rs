//! [`WebhookStore`] on SQLite. The claim is one `UPDATE … WHERE id IN (SELECT …)
//! RETURNING`, one write transaction, so two deliverers never take the same row.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{SqliteStore, parse_id, parse_ts, ts};
use crate::store::*;

macro_rules! delivery_cols {
    () => {
        "id, tenant_id, task_id, event, url, body, status, attempts, next_attempt_at, \
         last_error, created_at, updated_at"
    };
}

fn delivery_row(r: &SqliteRow) -> StoreResult<Delivery> {
    Ok(Delivery {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        task_id: parse_id(r.try_get("task_id")?)?,
        event: r.try_get("event")?,
        url: r.try_get("url")?,
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: parse_ts(r.try_get("next_attempt_at")?)?,
        last_error: r.try_get("last_error")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        updated_at: parse_ts(r.try_get("updated_at")?)?,
    })
}

macro_rules! tool_cols {
    () => {
        "id, tenant_id, name, description, parameters, url, timeout_ms, created_at, updated_at"
    };
}

fn tool_row(r: &SqliteRow) -> StoreResult<WebhookTool> {
    let params: String = r.try_get("parameters")?;
    Ok(WebhookTool {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        fields: WebhookToolFields {
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            parameters: serde_json::from_str(&params)
                .map_err(|e| StoreError::Corrupt(format!("tool parameters: {e}")))?,
            url: r.try_get("url")?,
            timeout_ms: r.try_get("timeout_ms")?,
        },
        created_at: parse_ts(r.try_get("created_at")?)?,
        updated_at: parse_ts(r.try_get("updated_at")?)?,
    })
}

fn after(d: Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn webhook_secret(&self, tenant: Uuid, candidate: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant_id, secret, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(candidate)
        .bind(ts(&now()))
        .execute(&mut *self.w().await?)
        .await?;
        let s: String =
            sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE tenant_id = ?")
                .bind(tenant.to_string())
                .fetch_one(&mut *self.w().await?)
                .await?;
        Ok(s)
    }

    async fn set_webhook_secret(&self, tenant: Uuid, secret: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant_id, secret, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET secret = excluded.secret, \
             created_at = excluded.created_at",
        )
        .bind(tenant.to_string())
        .bind(secret)
        .bind(ts(&now()))
        .execute(&mut *self.w().await?)
        .await?;
        Ok(())
    }

    async fn claim_deliveries(&self, n: u32, lease: Duration) -> StoreResult<Vec<Delivery>> {
        let t = ts(&now());
        let rows = sqlx::query(concat!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?, \
             updated_at = ? WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id \
             LIMIT ?) RETURNING ",
            delivery_cols!()
        ))
        .bind(ts(&after(lease)))
        .bind(&t)
        .bind(&t)
        .bind(i64::from(n))
        .fetch_all(&mut *self.w().await?)
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
            "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, \
             last_error = COALESCE(?, last_error), updated_at = ? \
             WHERE id = ? AND attempts = ? AND status = 'pending'",
        )
        .bind(status)
        .bind(ts(&at))
        .bind(error)
        .bind(ts(&t))
        .bind(id.to_string())
        .bind(attempt)
        .execute(&mut *self.w().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_deliveries(&self, tenant: Uuid, task: Uuid) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            delivery_cols!(),
            " FROM webhook_deliveries WHERE tenant_id = ? AND task_id = ? ORDER BY id"
        ))
        .bind(tenant.to_string())
        .bind(task.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn create_webhook_tool(
        &self,
        tenant: Uuid,
        f: &WebhookToolFields,
    ) -> StoreResult<WebhookTool> {
        let t = ts(&now());
        let row = sqlx::query(concat!(
            "INSERT INTO webhook_tools (",
            tool_cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            tool_cols!()
        ))
        .bind(Uuid::now_v7().to_string())
        .bind(tenant.to_string())
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.parameters.to_string())
        .bind(&f.url)
        .bind(f.timeout_ms)
        .bind(&t)
        .bind(&t)
        .fetch_one(&mut *self.w().await?)
        .await
        .map_err(|e| map_unique(e, "tool name"))?;
        tool_row(&row)
    }

    async fn get_webhook_tool(&self, tenant: Uuid, id: Uuid) -> StoreResult<WebhookTool> {
        let row = sqlx::query(concat!(
            "SELECT ",
            tool_cols!(),
            " FROM webhook_tools WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
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
        let list = serde_json::to_string(names)
            .map_err(|e| StoreError::Corrupt(format!("tool names: {e}")))?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            tool_cols!(),
            " FROM webhook_tools WHERE tenant_id = ? \
             AND name IN (SELECT value FROM json_each(?)) ORDER BY name"
        ))
        .bind(tenant.to_string())
        .bind(list)
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
            " FROM webhook_tools WHERE tenant_id = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
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
            "UPDATE webhook_tools SET name = ?, description = ?, parameters = ?, url = ?, \
             timeout_ms = ?, updated_at = ? WHERE tenant_id = ? AND id = ? RETURNING ",
            tool_cols!()
        ))
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.parameters.to_string())
        .bind(&f.url)
        .bind(f.timeout_ms)
        .bind(ts(&now()))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *self.w().await?)
        .await
        .map_err(|e| map_unique(e, "tool name"))?
        .ok_or(StoreError::NotFound)?;
        tool_row(&row)
    }

    async fn delete_webhook_tool(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM webhook_tools WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut *self.w().await?)
            .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }
}
