//! [`ResponseStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{SqliteStore, parse_id, parse_ts, ts};
use crate::store::*;

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("stored response {what}: {e}"))
}

#[async_trait]
impl ResponseStore for SqliteStore {
    async fn insert_response(&self, r: &StoredResponse) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO responses (id, tenant_id, body, conversation, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(r.tenant_id.to_string())
        .bind(r.body.to_string())
        .bind(r.conversation.to_string())
        .bind(ts(&r.created_at))
        .bind(ts(&r.expires_at))
        .execute(&mut *self.w().await?)
        .await
        .map_err(|e| map_unique(e, "response"))?;
        Ok(())
    }

    async fn get_response(
        &self,
        tenant: Uuid,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<StoredResponse> {
        let row = sqlx::query(
            "SELECT id, tenant_id, body, conversation, created_at, expires_at FROM responses \
             WHERE tenant_id = ? AND id = ? AND expires_at > ?",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(ts(&now))
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        let body: String = row.try_get("body")?;
        let conversation: String = row.try_get("conversation")?;
        Ok(StoredResponse {
            id: row.try_get("id")?,
            tenant_id: parse_id(row.try_get("tenant_id")?)?,
            body: serde_json::from_str(&body).map_err(|e| corrupt("body", e))?,
            conversation: serde_json::from_str(&conversation)
                .map_err(|e| corrupt("conversation", e))?,
            created_at: parse_ts(row.try_get("created_at")?)?,
            expires_at: parse_ts(row.try_get("expires_at")?)?,
        })
    }

    async fn delete_response(&self, tenant: Uuid, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM responses WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id)
            .execute(&mut *self.w().await?)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn purge_expired_responses(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM responses WHERE id IN \
             (SELECT id FROM responses WHERE expires_at <= ? LIMIT ?)",
        )
        .bind(ts(&now))
        .bind(i64::from(limit))
        .execute(&mut *self.w().await?)
        .await?;
        Ok(done.rows_affected())
    }
}
