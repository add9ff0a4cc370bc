-- Tasks and their step log, sessions and messages, employee memory, schedules (PostgreSQL).

CREATE TABLE tasks (
    id                UUID PRIMARY KEY,
    tenant_id         UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id       UUID NOT NULL,
    input             JSONB NOT NULL,
    status            TEXT NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            TIMESTAMPTZ NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMPTZ,
    idempotency_key   TEXT,
    request_hash      TEXT,
    parent_task_id    UUID,
    depth             INTEGER NOT NULL DEFAULT 0,
    session_id        UUID,
    callback_url      TEXT,
    metadata          JSONB NOT NULL DEFAULT '{}',
    result            JSONB,
    error             TEXT,
    tokens_in         BIGINT NOT NULL DEFAULT 0,
    tokens_out        BIGINT NOT NULL DEFAULT 0,
    cost_nanos        BIGINT NOT NULL DEFAULT 0,
    steps             INTEGER NOT NULL DEFAULT 0,
    cancel_requested  BOOLEAN NOT NULL DEFAULT false,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL
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
    task_id     UUID NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE sessions (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id  UUID NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_tenant ON sessions (tenant_id, id DESC);

CREATE TABLE messages (
    id          UUID PRIMARY KEY,
    session_id  UUID NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    task_id     UUID,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_session ON messages (session_id, id);

CREATE TABLE employee_memory (
    tenant_id    UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id  UUID NOT NULL,
    key          TEXT NOT NULL,
    value        JSONB NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, employee_id, key)
);

CREATE TABLE schedules (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    employee_id    UUID NOT NULL,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    input          JSONB NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    enabled        BOOLEAN NOT NULL DEFAULT true,
    next_fire_at   TIMESTAMPTZ NOT NULL,
    last_fired_at  TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX schedules_tenant ON schedules (tenant_id, id DESC);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

-- Tools of an employee that pause the task for a human decision before they run.
ALTER TABLE employees ADD COLUMN approval_tools JSONB NOT NULL DEFAULT '[]';
