-- Hourly sums of `ai_calls` per tenant, hour (UTC), employee, provider and model, written
-- in the same transaction as the calls they sum. Usage reports read whole hours from
-- here and only the partial hours at the ends of their range from `ai_calls`.
CREATE TABLE usage_hourly (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The hour's start in the fixed-width form of every stored time.
    hour                TEXT NOT NULL,
    -- '' for calls made without an employee (gateway calls).
    employee_id         TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    requests            INTEGER NOT NULL,
    successes           INTEGER NOT NULL,
    errors              INTEGER NOT NULL,
    cache_hits          INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    cost_nanos          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, hour, employee_id, provider, model)
) WITHOUT ROWID;

INSERT INTO usage_hourly
SELECT tenant_id, substr(created_at, 1, 13) || ':00:00.000000Z', COALESCE(employee_id, ''),
       provider, model, COUNT(*),
       SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END),
       SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
       SUM(cost_nanos)
FROM ai_calls
GROUP BY 1, 2, 3, 4, 5;

-- A tenant's tasks in one status, newest first: the task list filtered by status and the
-- approvals inbox read a page of it without visiting the tenant's other tasks.
CREATE INDEX tasks_tenant_status_id ON tasks (tenant_id, status, id DESC);
