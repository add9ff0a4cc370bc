//! [`SessionStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use crate::store::*;

fn session_row(r: &PgRow) -> StoreResult<SessionRecord> {
    let revoked: Option<DateTime<Utc>> = r.try_get("revoked_at")?;
    Ok(SessionRecord {
        id_hash: r.try_get("id_hash")?,
        tenant_id: r.try_get("tenant_id")?,
        key_id: r.try_get("key_id")?,
        scope: r.try_get("scope")?,
        subject: r.try_get("subject")?,
        rate_limit: r.try_get("rate_limit")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        expires_at: r.try_get("expires_at")?,
        key_revoked: revoked.is_some(),
    })
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, tenant_id, key_id, scope, subject, \
             rate_limit, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&s.id_hash)
        .bind(s.tenant_id)
        .bind(s.key_id)
        .bind(&s.scope)
        .bind(&s.subject)
        .bind(s.rate_limit)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> StoreResult<SessionRecord> {
        let row = sqlx::query(
            "SELECT s.id_hash, s.tenant_id, s.key_id, s.scope, s.subject, s.rate_limit, \
             s.created_at, s.last_seen_at, s.expires_at, k.revoked_at \
             FROM console_sessions s LEFT JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        session_row(&row)
    }

    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE console_sessions SET last_seen_at = $1 WHERE id_hash = $2")
            .bind(at)
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_stale_sessions(
        &self,
        now: DateTime<Utc>,
        idle_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let r =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at < $2")
                .bind(now)
                .bind(idle_before)
                .execute(self.pool())
                .await?;
        Ok(r.rows_affected())
    }
}
