-- Completion webhooks (PostgreSQL): the per-tenant signing secret and the durable
-- delivery queue, polled by each replica's delivery loop so deliveries survive restarts.

CREATE TABLE webhook_secrets (
    tenant_id   UUID PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    task_id          UUID NOT NULL,
    event            TEXT NOT NULL,
    url              TEXT NOT NULL,
    -- The exact bytes sent (and signed) on every attempt.
    body             TEXT NOT NULL,
    -- pending, delivered or failed.
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
-- One delivery per task and event, however many times the end is reported.
CREATE UNIQUE INDEX webhook_deliveries_task_event ON webhook_deliveries (task_id, event);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
