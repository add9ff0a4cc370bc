//! [`McpStore`] on PostgreSQL: JSON columns as `JSONB`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

use super::PgStore;
use crate::store::*;

macro_rules! cols {
    () => {
        "id, tenant_id, name, url, headers, bearer_token, tool_allowlist, timeout_ms, status, \
         last_error, tools, refreshed_at, created_at, updated_at"
    };
}

fn row(r: &PgRow) -> StoreResult<McpServer> {
    let headers: Json<BTreeMap<String, String>> = r.try_get("headers")?;
    let allowlist: Option<Json<Vec<String>>> = r.try_get("tool_allowlist")?;
    let tools: Json<Vec<McpToolInfo>> = r.try_get("tools")?;
    Ok(McpServer {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        fields: McpServerFields {
            name: r.try_get("name")?,
            url: r.try_get("url")?,
            headers: headers.0,
            bearer_token: r.try_get("bearer_token")?,
            tool_allowlist: allowlist.map(|a| a.0),
            timeout_ms: r.try_get("timeout_ms")?,
        },
        state: McpServerState {
            status: r.try_get("status")?,
            last_error: r.try_get("last_error")?,
            tools: tools.0,
            refreshed_at: r.try_get("refreshed_at")?,
        },
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

#[async_trait]
impl McpStore for PgStore {
    async fn create_mcp_server(&self, tenant: Uuid, f: &McpServerFields) -> StoreResult<McpServer> {
        let state = McpServerState::pending();
        let r = sqlx::query(concat!(
            "INSERT INTO mcp_servers (",
            cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $12) RETURNING ",
            cols!()
        ))
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(&f.name)
        .bind(&f.url)
        .bind(Json(&f.headers))
        .bind(&f.bearer_token)
        .bind(f.tool_allowlist.as_ref().map(Json))
        .bind(f.timeout_ms)
        .bind(&state.status)
        .bind(&state.last_error)
        .bind(Json(&state.tools))
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_unique(e, "MCP server name"))?;
        row(&r)
    }

    async fn get_mcp_server(&self, tenant: Uuid, id: Uuid) -> StoreResult<McpServer> {
        let r = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM mcp_servers WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
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
            " FROM mcp_servers WHERE tenant_id = $1 AND name = ANY($2) ORDER BY name"
        ))
        .bind(tenant)
        .bind(names)
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
            " FROM mcp_servers WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(before)
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
            "UPDATE mcp_servers SET name = $1, url = $2, headers = $3, bearer_token = $4, \
             tool_allowlist = $5, timeout_ms = $6, updated_at = $7 \
             WHERE tenant_id = $8 AND id = $9 RETURNING ",
            cols!()
        ))
        .bind(&f.name)
        .bind(&f.url)
        .bind(Json(&f.headers))
        .bind(&f.bearer_token)
        .bind(f.tool_allowlist.as_ref().map(Json))
        .bind(f.timeout_ms)
        .bind(now())
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_unique(e, "MCP server name"))?
        .ok_or(StoreError::NotFound)?;
        row(&r)
    }

    async fn delete_mcp_server(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM mcp_servers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
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
            "UPDATE mcp_servers SET status = $1, last_error = $2, tools = $3, refreshed_at = $4 \
             WHERE tenant_id = $5 AND id = $6 AND updated_at = $7 RETURNING ",
            cols!()
        ))
        .bind(&state.status)
        .bind(&state.last_error)
        .bind(Json(&state.tools))
        .bind(state.refreshed_at)
        .bind(tenant)
        .bind(id)
        .bind(fields_updated_at)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(row).transpose()
    }
}
