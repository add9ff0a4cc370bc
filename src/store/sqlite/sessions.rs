//! [`SessionStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, parse_id, parse_ts, ts};
use crate::store::*;

fn session_row(r: &SqliteRow) -> StoreResult<SessionRecord> {
    let key_id: Option<String> = r.try_get("key_id")?;
    let revoked: Option<String> = r.try_get("revoked_at")?;
    Ok(SessionRecord {
        id_hash: r.try_get("id_hash")?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        key_id: key_id.as_deref().map(parse_id).transpose()?,
        scope: r.try_get("scope")?,
        subject: r.try_get("subject")?,
        rate_limit: r.try_get("rate_limit")?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        last_seen_at: parse_ts(r.try_get("last_seen_at")?)?,
        expires_at: parse_ts(r.try_get("expires_at")?)?,
        key_revoked: revoked.is_some(),
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, tenant_id, key_id, scope, subject, \
             rate_limit, created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(s.tenant_id.to_string())
        .bind(s.key_id.map(|k| k.to_string()))
        .bind(&s.scope)
        .bind(&s.subject)
        .bind(s.rate_limit)
        .bind(ts(&s.created_at))
        .bind(ts(&s.last_seen_at))
        .bind(ts(&s.expires_at))
        .execute(&mut *self.w().await?)
        .await?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> StoreResult<SessionRecord> {
        let row = sqlx::query(
            "SELECT s.id_hash, s.tenant_id, s.key_id, s.scope, s.subject, s.rate_limit, \
             s.created_at, s.last_seen_at, s.expires_at, k.revoked_at \
             FROM console_sessions s LEFT JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id_hash = ?",
        )
        .bind(id_hash)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        session_row(&row)
    }

    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?")
            .bind(ts(&at))
            .bind(id_hash)
            .execute(&mut *self.w().await?)
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&mut *self.w().await?)
            .await?;
        Ok(())
    }

    async fn delete_stale_sessions(
        &self,
        now: DateTime<Utc>,
        idle_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let r =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at < ?")
                .bind(ts(&now))
                .bind(ts(&idle_before))
                .execute(&mut *self.w().await?)
                .await?;
        Ok(r.rows_affected())
    }
}
