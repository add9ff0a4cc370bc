-- MCP servers (SQLite): a tenant's Model Context Protocol servers, whose tools its
-- employees may use as mcp:<server>/<tool>. The server's tool list is cached here, with
-- the tools' JSON schemas, as the last refresh found it.

CREATE TABLE mcp_servers (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    url             TEXT NOT NULL,
    -- Secret: extra request headers (name -> value) and the bearer token. The API never
    -- shows them after creation.
    headers         TEXT NOT NULL,
    bearer_token    TEXT,
    -- Tool names employees may use; NULL = every tool the server lists.
    tool_allowlist  TEXT,
    timeout_ms      INTEGER NOT NULL,
    -- pending | ok | error, with the last error's text.
    status          TEXT NOT NULL,
    last_error      TEXT,
    -- [{name, description, input_schema}] as the server last listed them.
    tools           TEXT NOT NULL,
    refreshed_at    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX mcp_servers_tenant_name ON mcp_servers (tenant_id, name);
