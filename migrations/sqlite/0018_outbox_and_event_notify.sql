-- Completion webhooks through an outbox (SQLite; live events need no database support:
-- one process, the in-process broadcast wakes its followers).
--
-- A task's end writes its `task.finished` delivery in the same transaction as the status
-- change; the body of such a row is NULL and is rendered at each attempt from the ended
-- task (a terminal row no longer changes). Rows queued before this migration keep the
-- body they were queued with. SQLite cannot drop a NOT NULL: the table is rebuilt.
CREATE TABLE webhook_deliveries_outbox (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    task_id          TEXT NOT NULL,
    event            TEXT NOT NULL,
    url              TEXT NOT NULL,
    -- The exact bytes sent (and signed) on every attempt; NULL: rendered from the task.
    body             TEXT,
    -- pending, delivered or failed.
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
INSERT INTO webhook_deliveries_outbox (id, tenant_id, task_id, event, url, body, status,
    attempts, next_attempt_at, last_error, created_at, updated_at)
    SELECT id, tenant_id, task_id, event, url, body, status, attempts, next_attempt_at,
           last_error, created_at, updated_at
    FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_outbox RENAME TO webhook_deliveries;
CREATE UNIQUE INDEX webhook_deliveries_task_event ON webhook_deliveries (task_id, event);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- The sweep for ended tasks without a delivery is gone with the outbox: its index too.
DROP INDEX IF EXISTS tasks_callback_finished;
