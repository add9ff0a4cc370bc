//! [`McpStore`] on SQLite: JSON columns as text.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{SqliteStore, parse_id, parse_ts, ts};
use crate::store::*;

macro_rules! cols {
    () => {
        "id, tenant_id, name, url, headers, bearer_token, tool_allowlist, timeout_ms, status, \
         last_error, tools, refreshed_at, created_at, updated_at"
    };
}

fn json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("MCP server {what}: {e}")))
}

fn text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("MCP server JSON: {e}")))
}

fn row(r: &SqliteRow) -> StoreResult<McpServer> {
    let headers: String = r.try_get("headers")?;
    let allowlist: Option<String> = r.try_get("tool_allowlist")?;
    let tools: String = r.try_get("tools")?;
    let refreshed: Option<String> = r.try_get("refreshed_at")?;
    Ok(McpServer {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        fields: McpServerFields {
            name: r.try_get("name")?,
            url: r.try_get("url")?,
            headers: json(&headers, "headers")?,
            bearer_token: r.try_get("bearer_token")?,
            tool_allowlist: allowlist.map(|a| json(&a, "tool allow-list")).transpose()?,
            timeout_ms: r.try_get("timeout_ms")?,
        },
        state: McpServerState {
            status: r.try_get("status")?,
            last_error: r.try_get("last_error")?,
            tools: json(&tools, "tools")?,
            refreshed_at: refreshed.as_deref().map(parse_ts).transpose()?,
        },
        created_at: parse_ts(r.try_get("created_at")?)?,
        updated_at: parse_ts(r.try_get("updated_at")?)?,
    })
}

#[async_trait]
impl McpStore for SqliteStore {
    async fn create_mcp_server(&self, tenant: Uuid, f: &McpServerFields) -> StoreResult<McpServer> {
        let t = ts(&now());
        let state = McpServerState::pending();
        let r = sqlx::query(concat!(
            "INSERT INTO mcp_servers (",
            cols!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            cols!()
        ))
        .bind(Uuid::now_v7().to_string())
        .bind(tenant.to_string())
        .bind(&f.name)
        .bind(&f.url)
        .bind(text(&f.headers)?)
        .bind(&f.bearer_token)
        .bind(f.tool_allowlist.as_ref().map(text).transpose()?)
        .bind(f.timeout_ms)
        .bind(&state.status)
        .bind(&state.last_error)
        .bind(text(&state.tools)?)
        .bind(None::<String>)
        .bind(&t)
        .bind(&t)
        .fetch_one(&mut *self.w().await?)
        .await
        .map_err(|e| map_unique(e, "MCP server name"))?;
        row(&r)
    }

    async fn get_mcp_server(&self, tenant: Uuid, id: Uuid) -> StoreResult<McpServer> {
        let r = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM mcp_servers WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        row(&r)
    }

    async fn find_mcp_servers(
        &self,
        tenant: Uuid,
        names: &[String],
    ) -> StoreResult<Vec<McpServer>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM mcp_servers WHERE tenant_id = ? \
             AND name IN (SELECT value FROM json_each(?)) ORDER BY name"
        ))
        .bind(tenant.to_string())
        .bind(text(&names)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    async fn list_mcp_servers(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<McpServer>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM mcp_servers WHERE tenant_id = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows.iter().map(row).collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn update_mcp_server(
        &self,
        tenant: Uuid,
        id: Uuid,
        f: &McpServerFields,
    ) -> StoreResult<McpServer> {
        let r = sqlx::query(concat!(
            "UPDATE mcp_servers SET name = ?, url = ?, headers = ?, bearer_token = ?, \
             tool_allowlist = ?, timeout_ms = ?, updated_at = ? \
             WHERE tenant_id = ? AND id = ? RETURNING ",
            cols!()
        ))
        .bind(&f.name)
        .bind(&f.url)
        .bind(text(&f.headers)?)
        .bind(&f.bearer_token)
        .bind(f.tool_allowlist.as_ref().map(text).transpose()?)
        .bind(f.timeout_ms)
        .bind(ts(&now()))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *self.w().await?)
        .await
        .map_err(|e| map_unique(e, "MCP server name"))?
        .ok_or(StoreError::NotFound)?;
        row(&r)
    }

    async fn delete_mcp_server(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM mcp_servers WHERE tenant_id = ? AND id = ?")
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

    async fn set_mcp_server_state(
        &self,
        tenant: Uuid,
        id: Uuid,
        fields_updated_at: DateTime<Utc>,
        state: &McpServerState,
    ) -> StoreResult<Option<McpServer>> {
        let r = sqlx::query(concat!(
            "UPDATE mcp_servers SET status = ?, last_error = ?, tools = ?, refreshed_at = ? \
             WHERE tenant_id = ? AND id = ? AND updated_at = ? RETURNING ",
            cols!()
        ))
        .bind(&state.status)
        .bind(&state.last_error)
        .bind(text(&state.tools)?)
        .bind(state.refreshed_at.as_ref().map(ts))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(ts(&fields_updated_at))
        .fetch_optional(&mut *self.w().await?)
        .await?;
        r.as_ref().map(row).transpose()
    }
}
