-- Spend limits (SQLite). A budget caps the AI spend of a tenant, of one API key or of
-- one employee over a period (`day`, `month` in UTC, or `none`: for ever). Every vendor
-- call first reserves its maximum cost against every budget that applies to it
-- (`reserved_nanos` plus one `budget_holds` row per budget), then settles its real cost
-- into `spent_nanos`. A hold whose process died expires and is reclaimed.

CREATE TABLE budgets (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- tenant | key | employee
    scope           TEXT NOT NULL,
    -- The key or employee the budget limits; NULL for a tenant budget.
    subject_id      TEXT,
    -- day | month | none
    period          TEXT NOT NULL,
    limit_nanos     INTEGER NOT NULL CHECK (limit_nanos >= 0),
    -- Spend settled in the window that starts at window_start.
    spent_nanos     INTEGER NOT NULL DEFAULT 0,
    -- Maximum cost of the calls in flight (sum of this budget's holds).
    reserved_nanos  INTEGER NOT NULL DEFAULT 0,
    window_start    TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX budgets_subject
    ON budgets (tenant_id, scope, COALESCE(subject_id, ''), period);

CREATE TABLE budget_holds (
    id              TEXT NOT NULL,
    budget_id       TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    amount_nanos    INTEGER NOT NULL,
    expires_at      TEXT NOT NULL,
    PRIMARY KEY (id, budget_id)
);
CREATE INDEX budget_holds_expires ON budget_holds (expires_at);
CREATE INDEX budget_holds_budget ON budget_holds (budget_id);
