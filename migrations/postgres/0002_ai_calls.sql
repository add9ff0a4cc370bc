-- One row per AI vendor attempt (and per cache hit): the source of usage and cost reports.
CREATE TABLE ai_calls (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    task_id             UUID,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    status              TEXT NOT NULL,
    error_kind          TEXT,
    http_status         INTEGER,
    latency_us          BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    cache_hit           BOOLEAN NOT NULL,
    streamed            BOOLEAN NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX ai_calls_tenant_time ON ai_calls (tenant_id, created_at);
CREATE INDEX ai_calls_task ON ai_calls (task_id) WHERE task_id IS NOT NULL;
