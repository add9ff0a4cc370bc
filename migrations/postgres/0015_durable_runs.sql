-- Human input mid-run: how long a task waits in `waiting_input` for an answer before it
-- fails with `input_timeout` (the deadline itself is the waiting task's `run_at`).
ALTER TABLE employees ADD COLUMN input_timeout_seconds BIGINT NOT NULL DEFAULT 86400;
CREATE INDEX tasks_waiting_input ON tasks (run_at) WHERE status = 'waiting_input';
