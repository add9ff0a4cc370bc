-- Per-tenant fairness of the task claim (ADR 0008).

-- The claim walks the tenants with queued work and takes each one's next tasks: deepest
-- delegation first (a waiting parent holds a slot), then priority, then age.
CREATE INDEX tasks_due_tenant ON tasks (tenant_id, depth DESC, priority DESC, run_at, id)
    WHERE status IN ('queued', 'retrying');
-- The global scan it replaces.
DROP INDEX tasks_due;
-- Running top-level tasks per tenant: the fairness rank and `TENANT_MAX_RUNNING`.
CREATE INDEX tasks_running_tenant ON tasks (tenant_id) WHERE status = 'running' AND depth = 0;

-- Sessions are keyed by (tenant, id): session ids are chosen by callers, so two tenants
-- may pick the same one and each gets a session of its own. Messages carry the tenant to
-- reference their session by that key. SQLite cannot change a primary key in place: both
-- tables are rebuilt (messages dropped first, so dropping the old sessions cascades to
-- nothing).
CREATE TABLE sessions_scoped (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    employee_id  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO sessions_scoped (tenant_id, id, employee_id, created_at, updated_at)
    SELECT tenant_id, id, employee_id, created_at, updated_at FROM sessions;
CREATE TABLE messages_scoped (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    task_id     TEXT,
    created_at  TEXT NOT NULL,
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions_scoped (tenant_id, id)
        ON DELETE CASCADE
);
INSERT INTO messages_scoped (id, tenant_id, session_id, role, content, task_id, created_at)
    SELECT m.id, s.tenant_id, m.session_id, m.role, m.content, m.task_id, m.created_at
    FROM messages m JOIN sessions s ON s.id = m.session_id;
DROP TABLE messages;
DROP TABLE sessions;
ALTER TABLE sessions_scoped RENAME TO sessions;
ALTER TABLE messages_scoped RENAME TO messages;
CREATE INDEX messages_session ON messages (tenant_id, session_id, id);
