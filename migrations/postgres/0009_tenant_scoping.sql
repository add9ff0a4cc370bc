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
-- reference their session by that key.
ALTER TABLE messages ADD COLUMN tenant_id UUID;
UPDATE messages m SET tenant_id = s.tenant_id FROM sessions s WHERE s.id = m.session_id;
ALTER TABLE messages ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE messages DROP CONSTRAINT messages_session_id_fkey;
ALTER TABLE sessions DROP CONSTRAINT sessions_pkey;
ALTER TABLE sessions ADD PRIMARY KEY (tenant_id, id);
-- The primary key now serves what this index did.
DROP INDEX sessions_tenant;
ALTER TABLE messages ADD FOREIGN KEY (tenant_id, session_id)
    REFERENCES sessions (tenant_id, id) ON DELETE CASCADE;
DROP INDEX messages_session;
CREATE INDEX messages_session ON messages (tenant_id, session_id, id);
