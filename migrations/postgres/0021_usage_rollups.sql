-- Daily and minute sums of `ai_calls`, as `usage_hourly` by the UTC day and by the
-- minute. A usage report reads its whole days from `usage_daily`, the whole hours at the
-- ends of its range from `usage_hourly`, the whole minutes at the ends of those from
-- `usage_minutely` and only the partial minutes at its very ends from `ai_calls`: a month
-- is about 30 + 2 × 23 + 2 × 59 rollup rows per group, however many calls it holds.
--
-- Both are kept by a statement trigger on `ai_calls`, in the statement that inserts the
-- calls, so replicas of the previous release, still running while this migration is
-- applied, keep them whole too. `ai_calls` is locked against inserts while the tables are
-- filled, so no call falls between the fill and the trigger.
LOCK TABLE ai_calls IN SHARE MODE;

CREATE TABLE usage_minutely (
    tenant_id           UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    minute              TIMESTAMPTZ NOT NULL,
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
    reasoning_tokens    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute, employee_id, provider, model)
);

INSERT INTO usage_minutely
SELECT tenant_id, date_trunc('minute', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid),
       provider, model, COUNT(*),
       COUNT(*) FILTER (WHERE status = 'ok'),
       COUNT(*) FILTER (WHERE status = 'error'),
       COUNT(*) FILTER (WHERE status = 'cache_hit'),
       SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint,
       SUM(cache_write_tokens)::bigint, SUM(cost_nanos)::bigint, SUM(reasoning_tokens)::bigint
FROM ai_calls
GROUP BY 1, 2, 3, 4, 5;

CREATE TABLE usage_daily (
    tenant_id           UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day                 TIMESTAMPTZ NOT NULL,
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
    reasoning_tokens    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day, employee_id, provider, model)
);

INSERT INTO usage_daily
SELECT tenant_id, date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid),
       provider, model, COUNT(*),
       COUNT(*) FILTER (WHERE status = 'ok'),
       COUNT(*) FILTER (WHERE status = 'error'),
       COUNT(*) FILTER (WHERE status = 'cache_hit'),
       SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint,
       SUM(cache_write_tokens)::bigint, SUM(cost_nanos)::bigint, SUM(reasoning_tokens)::bigint
FROM ai_calls
GROUP BY 1, 2, 3, 4, 5;

CREATE FUNCTION ai_calls_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- In key order, so concurrent statements lock rollup rows in one order.
    INSERT INTO usage_minutely AS u
    SELECT tenant_id, date_trunc('minute', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid),
           provider, model, COUNT(*),
           COUNT(*) FILTER (WHERE status = 'ok'),
           COUNT(*) FILTER (WHERE status = 'error'),
           COUNT(*) FILTER (WHERE status = 'cache_hit'),
           SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint,
           SUM(cache_write_tokens)::bigint, SUM(cost_nanos)::bigint,
           SUM(reasoning_tokens)::bigint
    FROM added GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, minute, employee_id, provider, model) DO UPDATE
    SET requests = u.requests + EXCLUDED.requests,
        successes = u.successes + EXCLUDED.successes,
        errors = u.errors + EXCLUDED.errors,
        cache_hits = u.cache_hits + EXCLUDED.cache_hits,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        cached_tokens = u.cached_tokens + EXCLUDED.cached_tokens,
        cache_write_tokens = u.cache_write_tokens + EXCLUDED.cache_write_tokens,
        cost_nanos = u.cost_nanos + EXCLUDED.cost_nanos,
        reasoning_tokens = u.reasoning_tokens + EXCLUDED.reasoning_tokens;
    INSERT INTO usage_daily AS u
    SELECT tenant_id, date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           COALESCE(employee_id, '00000000-0000-0000-0000-000000000000'::uuid),
           provider, model, COUNT(*),
           COUNT(*) FILTER (WHERE status = 'ok'),
           COUNT(*) FILTER (WHERE status = 'error'),
           COUNT(*) FILTER (WHERE status = 'cache_hit'),
           SUM(input_tokens)::bigint, SUM(output_tokens)::bigint, SUM(cached_tokens)::bigint,
           SUM(cache_write_tokens)::bigint, SUM(cost_nanos)::bigint,
           SUM(reasoning_tokens)::bigint
    FROM added GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, day, employee_id, provider, model) DO UPDATE
    SET requests = u.requests + EXCLUDED.requests,
        successes = u.successes + EXCLUDED.successes,
        errors = u.errors + EXCLUDED.errors,
        cache_hits = u.cache_hits + EXCLUDED.cache_hits,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        cached_tokens = u.cached_tokens + EXCLUDED.cached_tokens,
        cache_write_tokens = u.cache_write_tokens + EXCLUDED.cache_write_tokens,
        cost_nanos = u.cost_nanos + EXCLUDED.cost_nanos,
        reasoning_tokens = u.reasoning_tokens + EXCLUDED.reasoning_tokens;
    RETURN NULL;
END
$$;
CREATE TRIGGER ai_calls_rollups AFTER INSERT ON ai_calls
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION ai_calls_rollups();
