//! Rows and storage operations of the tenants' MCP servers: where a server is, the secret
//! headers sent to it, which of its tools employees may use, and the tool list (with
//! schemas) its last refresh found.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{HasId, Page, StoreResult};

/// The fields of an MCP server a tenant sets.
#[derive(Clone, PartialEq)]
pub struct McpServerFields {
    /// Unique in the tenant; the `<server>` of `mcp:<server>/<tool>`.
    pub name: String,
    /// Streamable HTTP endpoint.
    pub url: String,
    /// Secret: extra headers sent with every request (name → value).
    pub headers: BTreeMap<String, String>,
    /// Secret: sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Tools employees may use; `None` = every tool the server lists.
    pub tool_allowlist: Option<Vec<String>>,
    pub timeout_ms: i64,
}

/// The header values and the token never reach a log line through `Debug`.
impl std::fmt::Debug for McpServerFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServerFields")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("tool_allowlist", &self.tool_allowlist)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// One tool of an MCP server, as its last `tools/list` described it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McpToolInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments (an object).
    pub input_schema: Value,
}

/// What the platform last learnt from a server.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServerState {
    /// `pending` (never refreshed), `ok` or `error`.
    pub status: String,
    pub last_error: Option<String>,
    pub tools: Vec<McpToolInfo>,
    pub refreshed_at: Option<DateTime<Utc>>,
}

impl McpServerState {
    /// Before the first refresh.
    pub fn pending() -> Self {
        Self {
            status: "pending".into(),
            last_error: None,
            tools: Vec::new(),
            refreshed_at: None,
        }
    }
}

/// A tenant's MCP server.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServer {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub fields: McpServerFields,
    pub state: McpServerState,
    pub created_at: DateTime<Utc>,
    /// When the fields last changed (a refresh does not move it).
    pub updated_at: DateTime<Utc>,
}

impl HasId for McpServer {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[async_trait]
pub trait McpStore: Send + Sync {
    /// Fails with `Duplicate("MCP server name")` when the name is taken in the tenant.
    async fn create_mcp_server(&self, tenant: Uuid, f: &McpServerFields) -> StoreResult<McpServer>;
    async fn get_mcp_server(&self, tenant: Uuid, id: Uuid) -> StoreResult<McpServer>;
    /// The tenant's servers with these names (unknown names are skipped), by name.
    async fn find_mcp_servers(&self, tenant: Uuid, names: &[String])
    -> StoreResult<Vec<McpServer>>;
    /// Newest first; `before` is the id of the last row of the previous page.
    async fn list_mcp_servers(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<McpServer>>;
    /// Replaces the fields (moves `updated_at`); `Duplicate("MCP server name")` when the
    /// new name is taken.
    async fn update_mcp_server(
        &self,
        tenant: Uuid,
        id: Uuid,
        f: &McpServerFields,
    ) -> StoreResult<McpServer>;
    async fn delete_mcp_server(&self, tenant: Uuid, id: Uuid) -> StoreResult<()>;
    /// Records a refresh, only while the fields are still those of `fields_updated_at`
    /// (a refresh of the old URL must not land after an update); `None` otherwise.
    async fn set_mcp_server_state(
        &self,
        tenant: Uuid,
        id: Uuid,
        fields_updated_at: DateTime<Utc>,
        state: &McpServerState,
    ) -> StoreResult<Option<McpServer>>;
}
