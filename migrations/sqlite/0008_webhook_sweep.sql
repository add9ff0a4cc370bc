-- Ended tasks that asked for a completion webhook, by end time: the webhook sweeper
-- finds those whose delivery was never queued (a crash between the end and the queue).
CREATE INDEX tasks_callback_finished ON tasks (finished_at) WHERE callback_url IS NOT NULL;
