-- Stored Responses-API answers (SQLite): fetched again by id and continued with
-- previous_response_id; each row expires after the retention period.

CREATE TABLE responses (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The response object as served (JSON).
    body          TEXT NOT NULL,
    -- The conversation up to this answer (JSON list of messages).
    conversation  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX responses_expires ON responses (expires_at);

-- Structured results: a JSON schema the final answer must satisfy, set on an employee
-- or on one task (which wins).
ALTER TABLE employees ADD COLUMN output_schema TEXT;
ALTER TABLE tasks ADD COLUMN output_schema TEXT;
