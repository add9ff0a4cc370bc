-- Stored Responses-API answers (PostgreSQL): fetched again by id and continued with
-- previous_response_id; each row expires after the retention period.

CREATE TABLE responses (
    id            TEXT PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The response object as served.
    body          JSONB NOT NULL,
    -- The conversation up to this answer (list of messages).
    conversation  JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX responses_expires ON responses (expires_at);

-- Structured results: a JSON schema the final answer must satisfy, set on an employee
-- or on one task (which wins).
ALTER TABLE employees ADD COLUMN output_schema JSONB;
ALTER TABLE tasks ADD COLUMN output_schema JSONB;
