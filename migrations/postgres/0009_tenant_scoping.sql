-- Per-tenant fairness of the task claim (ADR 0008).

-- The claim walks the tenants with queued work and takes each one's next tasks: deepest
-- delegation first (a waiting parent holds a slot), then priority, then age.
CREATE INDEX tasks_due_tenant ON tasks (tenant_id, depth DESC, priority DESC, run_at, id)
    WHERE status IN ('queued', 'retrying');
-- The global scan it replaces.
DROP INDEX tasks_due;
-- Running top-level tasks per tenant: the fairness rank and `TENANT_MAX_RUNNING`.
CREATE INDEX tasks_running_tenant ON tasks (tenant_id) WHERE status = 'running' AND depth = 0;
