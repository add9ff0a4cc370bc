-- Reasoning tokens: the part of a call's output tokens the vendor reports as reasoning,
-- priced at the model's reasoning price. Calls recorded before this column report none.
ALTER TABLE ai_calls ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
