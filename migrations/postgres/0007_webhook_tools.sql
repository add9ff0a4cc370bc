-- Webhook tools (PostgreSQL): tools a tenant defines by a JSON-schema and a URL; a call
-- is POSTed there, signed with the tenant's webhook secret.

CREATE TABLE webhook_tools (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    -- JSON schema of the arguments (an object).
    parameters   JSONB NOT NULL,
    url          TEXT NOT NULL,
    timeout_ms   BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX webhook_tools_tenant_name ON webhook_tools (tenant_id, name);
