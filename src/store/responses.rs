//! Stored Responses-API answers: the response object a caller can fetch again and the
//! conversation a later request continues with `previous_response_id`. Rows belong to
//! a tenant and expire; an expired row reads as missing before the purge removes it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreResult;

/// One stored response.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    /// `resp_…`, unique across tenants.
    pub id: String,
    pub tenant_id: Uuid,
    /// The response object as served.
    pub body: Value,
    /// The conversation up to and including this answer (neutral messages, without the
    /// request's instructions), for `previous_response_id`.
    pub conversation: Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Stores a response; its id must be new.
    async fn insert_response(&self, r: &StoredResponse) -> StoreResult<()>;
    /// The tenant's response with this id, unless it expired before `now`
    /// (`NotFound` otherwise, also for another tenant's id).
    async fn get_response(
        &self,
        tenant: Uuid,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<StoredResponse>;
    /// Deletes the tenant's response; `NotFound` when there is none.
    async fn delete_response(&self, tenant: Uuid, id: &str) -> StoreResult<()>;
    /// Deletes up to `limit` responses that expired before `now`; returns how many.
    async fn purge_expired_responses(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64>;
}
