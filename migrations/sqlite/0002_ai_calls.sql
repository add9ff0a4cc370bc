-- One row per AI vendor attempt (and per cache hit): the source of usage and cost reports.
CREATE TABLE ai_calls (
    id                  TEXT PRIMARY KEY NOT NULL,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    task_id             TEXT,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    status              TEXT NOT NULL,
    error_kind          TEXT,
    http_status         INTEGER,
    latency_us          INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    cost_nanos          INTEGER NOT NULL,
    cache_hit           INTEGER NOT NULL,
    streamed            INTEGER NOT NULL,
    created_at          TEXT NOT NULL
);
CREATE INDEX ai_calls_tenant_time ON ai_calls (tenant_id, created_at);
CREATE INDEX ai_calls_task ON ai_calls (task_id) WHERE task_id IS NOT NULL;
