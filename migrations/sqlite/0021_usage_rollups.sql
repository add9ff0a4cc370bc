-- Daily and minute sums of `ai_calls`, as `usage_hourly` by the UTC day and by the
-- minute, written in the same transaction as the calls they sum. A usage report reads
-- its whole days from `usage_daily`, the whole hours at the ends of its range from
-- `usage_hourly`, the whole minutes at the ends of those from `usage_minutely` and only
-- the partial minutes at its very ends from `ai_calls`: a month is about 30 + 2 × 23 +
-- 2 × 59 rollup rows per group, however many calls it holds.
CREATE TABLE usage_minutely (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The minute's start in the fixed-width form of every stored time.
    minute              TEXT NOT NULL,
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
    reasoning_tokens    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, minute, employee_id, provider, model)
) WITHOUT ROWID;

INSERT INTO usage_minutely
SELECT tenant_id, substr(created_at, 1, 16) || ':00.000000Z', COALESCE(employee_id, ''),
       provider, model, COUNT(*),
       SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END),
       SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
       SUM(cost_nanos), SUM(reasoning_tokens)
FROM ai_calls
GROUP BY 1, 2, 3, 4, 5;

CREATE TABLE usage_daily (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The UTC day's start in the fixed-width form of every stored time.
    day                 TEXT NOT NULL,
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
    reasoning_tokens    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, employee_id, provider, model)
) WITHOUT ROWID;

INSERT INTO usage_daily
SELECT tenant_id, substr(created_at, 1, 10) || 'T00:00:00.000000Z', COALESCE(employee_id, ''),
       provider, model, COUNT(*),
       SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'cache_hit' THEN 1 ELSE 0 END),
       SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
       SUM(cost_nanos), SUM(reasoning_tokens)
FROM ai_calls
GROUP BY 1, 2, 3, 4, 5;
