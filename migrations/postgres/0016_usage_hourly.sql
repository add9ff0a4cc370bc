-- Hourly sums of `ai_calls` per tenant, hour (UTC), employee, provider and model, written
-- by the same statement as the calls they sum. Usage reports read whole hours from here
-- and only the partial hours at the ends of their range from `ai_calls`.
CREATE TABLE usage_hourly (
    tenant_id           UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    hour                TIMESTAMPTZ NOT NULL,
    -- The nil UUID for calls made without an employee (gateway calls).
    employee_id         UUID NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    requests            BIGINT NOT NULL,
    successes           BIGINT NOT NULL,
    errors              BIGINT NOT NULL,
    cache_hits          BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour, employee_id, provider, model)
);

INSERT INTO usage_hourly
SELECT tenant_id, date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid),
       provider, model, COUNT(*),
       COUNT(*) FILTER (WHERE status = 'ok'),
       COUNT(*) FILTER (WHERE status = 'error'),
       COUNT(*) FILTER (WHERE status = 'cache_hit'),
       SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint,
       SUM(cache_write_tokens)::bigint, SUM(cost_nanos)::bigint
FROM ai_calls
GROUP BY 1, 2, 3, 4, 5;

-- A tenant's tasks in one status, newest first: the task list filtered by status and the
-- approvals inbox read a page of it without visiting the tenant's other tasks.
CREATE INDEX tasks_tenant_status_id ON tasks (tenant_id, status, id DESC);
