-- Tasks and their step log, sessions and messages, employee memory, schedules (SQLite).
-- Times are fixed-width RFC 3339 UTC text (microseconds), so text order is time order.

CREATE TABLE tasks (
    id                TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id       TEXT NOT NULL,
    input             TEXT NOT NULL,
    status            TEXT NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            TEXT NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    idempotency_key   TEXT,
    request_hash      TEXT,
    parent_task_id    TEXT,
    depth             INTEGER NOT NULL DEFAULT 0,
    session_id        TEXT,
    callback_url      TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    result            TEXT,
    error             TEXT,
    tokens_in         INTEGER NOT NULL DEFAULT 0,
    tokens_out        INTEGER NOT NULL DEFAULT 0,
    cost_nanos        INTEGER NOT NULL DEFAULT 0,
    steps             INTEGER NOT NULL DEFAULT 0,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim scan: due tasks by priority then age.
CREATE INDEX tasks_due ON tasks (priority DESC, run_at, id) WHERE status IN ('queued', 'retrying');
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_tenant ON tasks (tenant_id, id DESC);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_parent ON tasks (parent_task_id) WHERE parent_task_id IS NOT NULL;

CREATE TABLE task_events (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX sessions_tenant ON sessions (tenant_id, id DESC);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    task_id     TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX messages_session ON messages (session_id, id);

CREATE TABLE employee_memory (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, employee_id, key)
);

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id    TEXT NOT NULL,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    input          TEXT NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    enabled        INTEGER NOT NULL DEFAULT 1,
    next_fire_at   TEXT NOT NULL,
    last_fired_at  TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX schedules_tenant ON schedules (tenant_id, id DESC);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled = 1;

-- Tools of an employee that pause the task for a human decision before they run.
ALTER TABLE employees ADD COLUMN approval_tools TEXT NOT NULL DEFAULT '[]';
