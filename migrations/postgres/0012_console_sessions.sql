-- Web console sessions (PostgreSQL). Only a SHA-256 of the session id is stored; the id
-- itself lives in the browser's HttpOnly cookie. A session acts as the key or token it
-- was opened with: its tenant, scope and rate-limit subject are copied here, and a
-- session opened with a stored key ends when that key is revoked.

CREATE TABLE console_sessions (
    id_hash       TEXT PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_id        UUID REFERENCES api_keys(id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    subject       TEXT NOT NULL,
    rate_limit    BIGINT,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    -- The absolute end: creation + the absolute timeout, or a JWT's expiry if sooner.
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- The console's counts of a tenant's tasks by status (the overview, the approvals badge
-- on every page) read this index alone instead of the tenant's rows.
CREATE INDEX tasks_tenant_status ON tasks (tenant_id, status, created_at);
