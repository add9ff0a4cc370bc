-- Tenants, API keys and employees (embedded SQLite backend).
-- Ids are UUID text (time-ordered v7 for rows created by the service); times are RFC 3339 UTC text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- The default tenant owns the bootstrap keys (API_KEY_WHITELIST and the generated admin key).
INSERT INTO tenants (id, name, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL UNIQUE,
    secret_hash   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE employees (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL,
    instructions    TEXT NOT NULL,
    model_policy    TEXT NOT NULL,
    allowed_tools   TEXT NOT NULL,
    max_steps       INTEGER NOT NULL,
    token_budget    INTEGER NOT NULL,
    temperature     REAL NOT NULL,
    redact_prompts  INTEGER NOT NULL DEFAULT 0,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX employees_tenant_id ON employees (tenant_id, id DESC);
