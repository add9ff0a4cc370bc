//! Rows and storage operations of the web console's sessions.
//!
//! A session row is keyed by a SHA-256 of the session id, never the id itself, so a
//! copy of the table opens no session. The row copies what the credential it was opened
//! with grants (tenant, scope, rate-limit subject); whether it is still alive (idle and
//! absolute timeouts, the key not revoked) is judged by `auth::session` from what
//! [`SessionStore::get_session`] returns.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// A console session as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the session id.
    pub id_hash: String,
    pub tenant_id: Uuid,
    /// The stored key it was opened with; `None` for a whitelist key or a JWT.
    pub key_id: Option<Uuid>,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// The rate-limit subject of the credential (shared with its API requests).
    pub subject: String,
    pub rate_limit: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// True when the key it was opened with has been revoked since.
    pub key_revoked: bool,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session (`key_revoked` is ignored).
    async fn create_session(&self, s: &SessionRecord) -> StoreResult<()>;
    /// The session with this id hash; `NotFound` when there is none.
    async fn get_session(&self, id_hash: &str) -> StoreResult<SessionRecord>;
    /// Moves `last_seen_at` (the idle timeout counts from it).
    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Ends a session; ending one that does not exist is not an error.
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
    /// Removes sessions past their absolute end or idle since before `idle_before`;
    /// returns how many.
    async fn delete_stale_sessions(
        &self,
        now: DateTime<Utc>,
        idle_before: DateTime<Utc>,
    ) -> StoreResult<u64>;
}
