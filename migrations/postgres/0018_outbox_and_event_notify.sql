-- Completion webhooks through an outbox, and live events through NOTIFY (PostgreSQL).
--
-- A task's end writes its `task.finished` delivery in the same statement or transaction
-- as the status change; the body of such a row is NULL and is rendered at each attempt
-- from the ended task (a terminal row no longer changes). Rows queued before this
-- migration keep the body they were queued with.
ALTER TABLE webhook_deliveries ALTER COLUMN body DROP NOT NULL;
-- The sweep for ended tasks without a delivery is gone with the outbox: its index too.
DROP INDEX IF EXISTS tasks_callback_finished;

-- Streams following a task live (any replica): a row per open stream, written when it
-- opens and deleted when it closes; one left by a process that died goes at `expires_at`
-- (the stream's own end), removed by the next stream that opens.
CREATE TABLE task_followers (
    id          UUID PRIMARY KEY,
    task_id     UUID NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX task_followers_task ON task_followers (task_id);

-- Every statement that appends to the step log of a followed task notifies `de_events`
-- with the ids of those tasks (comma-separated, at most 100 per notification), in its own
-- transaction: the notification is sent at commit, when the events are visible. One
-- notification per statement and batch of tasks, never one per event, and none at all
-- for tasks nobody follows: a notifying commit takes a cluster-wide lock, so commits of
-- unfollowed work do not pay it.
CREATE FUNCTION task_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('de_events', string_agg(c.task_id::text, ','))
    FROM (SELECT d.task_id, (row_number() OVER () - 1) / 100 AS batch
          FROM (SELECT DISTINCT a.task_id FROM added a
                WHERE EXISTS (SELECT 1 FROM task_followers f
                              WHERE f.task_id = a.task_id)) d) c
    GROUP BY c.batch;
    RETURN NULL;
END
$$;
CREATE TRIGGER task_events_notify AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION task_events_notify();
