//! [`ResponseStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::types::Json;
use uuid::Uuid;

use super::PgStore;
use crate::store::*;

#[async_trait]
impl ResponseStore for PgStore {
    async fn insert_response(&self, r: &StoredResponse) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO responses (id, tenant_id, body, conversation, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.id)
        .bind(r.tenant_id)
        .bind(Json(&r.body))
        .bind(Json(&r.conversation))
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&self.pool)
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
             WHERE tenant_id = $1 AND id = $2 AND expires_at > $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let Json(body): Json<serde_json::Value> = row.try_get("body")?;
        let Json(conversation): Json<serde_json::Value> = row.try_get("conversation")?;
        Ok(StoredResponse {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            body,
            conversation,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    }

    async fn delete_response(&self, tenant: Uuid, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM responses WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn purge_expired_responses(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM responses WHERE id IN \
             (SELECT id FROM responses WHERE expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
