-- Webhook tools (SQLite): tools a tenant defines by a JSON-schema and a URL; a call is
-- POSTed there, signed with the tenant's webhook secret.

CREATE TABLE webhook_tools (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    -- JSON schema of the arguments (an object).
    parameters   TEXT NOT NULL,
    url          TEXT NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX webhook_tools_tenant_name ON webhook_tools (tenant_id, name);
