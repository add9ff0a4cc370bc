-- Completion webhooks through an outbox, and live events through NOTIFY (PostgreSQL).
--
-- A task's end writes its `task.finished` delivery in the same statement or transaction
-- as the status change; the body of such a row is NULL and is rendered at each attempt
-- from the ended task (a terminal row no longer changes). Rows queued before this
-- migration keep the body they were queued with.
ALTER TABLE webhook_deliveries ALTER COLUMN body DROP NOT NULL;
-- The sweep for ended tasks without a delivery is gone with the outbox: its index too.
DROP INDEX IF EXISTS tasks_callback_finished;

-- Every statement that appends to a task's step log notifies `de_events` with the ids of
-- the tasks it appended to (comma-separated, at most 100 per notification), in its own
-- transaction: the notification is sent at commit, when the events are visible. One
-- notification per statement and batch of tasks, never one per event.
CREATE FUNCTION task_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('de_events', string_agg(c.task_id::text, ','))
    FROM (SELECT d.task_id, (row_number() OVER () - 1) / 100 AS batch
          FROM (SELECT DISTINCT task_id FROM added) d) c
    GROUP BY c.batch;
    RETURN NULL;
END
$$;
CREATE TRIGGER task_events_notify AFTER INSERT ON task_events
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION task_events_notify();
