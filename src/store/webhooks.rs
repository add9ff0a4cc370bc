//! Rows and storage operations of the completion webhooks: the per-tenant signing secret
//! and the durable delivery queue.
//!
//! A delivery is claimed like a task, in one statement, by moving its `next_attempt_at`
//! a lease into the future and bumping `attempts`; a deliverer that crashes mid-attempt
//! simply lets the lease run out and the row becomes due again. The end of an attempt is
//! fenced by `attempts`, so a slow deliverer cannot overwrite a newer attempt.
//!
//! Deliveries are never queued on their own: the store writes a task's `task.finished`
//! row in the same statement or transaction as the task's end (an outbox, ADR 0016).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use serde_json::Value;

use super::{HasId, Page, StoreResult};

/// The event of a task's end, in `X-Digital-Employee-Event`.
pub const TASK_FINISHED: &str = "task.finished";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub task_id: Uuid,
    pub event: String,
    pub url: String,
    /// The exact body of every attempt; `None` (every row the outbox writes): rendered
    /// at each attempt from the ended task, whose row no longer changes.
    pub body: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made (or in flight).
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The fields of a webhook tool a tenant sets.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookToolFields {
    /// Unique in the tenant.
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Value,
    pub url: String,
    pub timeout_ms: i64,
}

/// A tool defined by a tenant: calls are POSTed to `url`, signed.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookTool {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub fields: WebhookToolFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HasId for WebhookTool {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryResult {
    Delivered,
    /// Try again at this time.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Attempts used up.
    Failed {
        error: String,
    },
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// The tenant's signing secret; stores `candidate` first when the tenant has none.
    async fn webhook_secret(&self, tenant: Uuid, candidate: &str) -> StoreResult<String>;
    /// Replaces (or sets) the tenant's signing secret.
    async fn set_webhook_secret(&self, tenant: Uuid, secret: &str) -> StoreResult<()>;
    /// Claims up to `n` due pending deliveries for one attempt each (see the module docs).
    async fn claim_deliveries(&self, n: u32, lease: Duration) -> StoreResult<Vec<Delivery>>;
    /// Records the end of attempt number `attempt`; `false` when a newer attempt owns it.
    async fn finish_delivery(
        &self,
        id: Uuid,
        attempt: i32,
        result: &DeliveryResult,
    ) -> StoreResult<bool>;
    /// The deliveries of one task of the tenant, oldest first.
    async fn list_deliveries(&self, tenant: Uuid, task: Uuid) -> StoreResult<Vec<Delivery>>;

    /// Fails with `Duplicate("tool name")` when the name is taken in the tenant.
    async fn create_webhook_tool(
        &self,
        tenant: Uuid,
        f: &WebhookToolFields,
    ) -> StoreResult<WebhookTool>;
    async fn get_webhook_tool(&self, tenant: Uuid, id: Uuid) -> StoreResult<WebhookTool>;
    /// The tenant's tools with these names (unknown names are skipped), by name.
    async fn find_webhook_tools(
        &self,
        tenant: Uuid,
        names: &[String],
    ) -> StoreResult<Vec<WebhookTool>>;
    /// Newest first; `before` is the id of the last row of the previous page.
    async fn list_webhook_tools(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<WebhookTool>>;
    /// Replaces the fields; `Duplicate("tool name")` when the new name is taken.
    async fn update_webhook_tool(
        &self,
        tenant: Uuid,
        id: Uuid,
        f: &WebhookToolFields,
    ) -> StoreResult<WebhookTool>;
    async fn delete_webhook_tool(&self, tenant: Uuid, id: Uuid) -> StoreResult<()>;
}
