-- Events whose `admin_events` row is behind their tasks (docs/adr/0001-queue-bookkeeping-off-the-hot-path.md).
--
-- The workers' claims and successful completions no longer rewrite the event's wide
-- `admin_events` row (a row lock, a new row version and an entry in each of its indexes,
-- twice per task). They add the event's id here, in the same statement as the task's
-- change, and the processor's refresher (processor/src/processing.rs, `refresh`) takes
-- the ids in batches of thousands, recounts those events' tasks and writes each row once
-- per batch. So the admin view is behind the tasks by the refresher's pause (well under a
-- second while it keeps up), and never loses a change: the id commits with the change.
--
-- No index: the refresher takes whatever is there (one process at a time, under an
-- advisory lock) and deletes what it took. An id may appear many times.
CREATE TABLE admin_event_refresh (
    event_id uuid NOT NULL
);
-- Rows live for milliseconds: vacuum often, so the refresher's scans stay short.
ALTER TABLE admin_event_refresh SET (autovacuum_vacuum_scale_factor = 0,
                                     autovacuum_vacuum_threshold = 10000,
                                     autovacuum_vacuum_insert_threshold = 10000);
