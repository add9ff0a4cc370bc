-- The W3C trace context of a task's submit: the replica that claims the task continues
-- that trace (ADR 0014). NULL when tracing was off at submit.

ALTER TABLE tasks ADD COLUMN trace_context TEXT;
