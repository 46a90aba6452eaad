-- Processing rollups and current status counts for the dashboard header, maintained
-- incrementally by the processor (processor/src/processing.rs) in the same transaction
-- as every task change (insert, claim, complete, fail, retry, dead, release, rescue), so
-- the header never scans `tasks` or `admin_events`.
--
-- `kind` is 'event' or 'task'. Rows are split over a few `shard`s (each writing
-- transaction picks one at random) so concurrent workers do not queue on one hot row;
-- readers sum over the shards. A shard's count may be negative (a decrement landing in
-- another shard than the increment); only the sum is meaningful.

-- Per minute (UTC, truncated) and status, the items that reached a final status then:
--   kind 'task':  tasks by (minute of finished_at, status) for status succeeded/failed/dead
--                 (archived tasks stay counted);
--   kind 'event': events by (minute of processed_at, status) for status succeeded/failed.
--                 An event that goes back to pending (a manual retry of one of its tasks)
--                 is taken out of its old minute and counted again when it finishes.
CREATE TABLE processing_rollups (
    minute  timestamptz NOT NULL,
    kind    text        NOT NULL CHECK (kind IN ('event', 'task')),
    status  text        NOT NULL,
    shard   smallint    NOT NULL DEFAULT 0,
    count   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, kind, status, shard)
);

-- Current counts by status:
--   kind 'task':  every task (tasks + tasks_archive) by status;
--   kind 'event': every event the processor has seen, by admin_events.status
--                 (pending, succeeded, failed).
CREATE TABLE task_status_counts (
    kind    text        NOT NULL CHECK (kind IN ('event', 'task')),
    status  text        NOT NULL,
    shard   smallint    NOT NULL DEFAULT 0,
    count   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, status, shard)
);

-- Start from what exists already (tasks issued before this migration).
INSERT INTO task_status_counts (kind, status, count)
SELECT 'task', status, count(*)
FROM (SELECT status FROM tasks UNION ALL SELECT status FROM tasks_archive) t
GROUP BY status;

INSERT INTO processing_rollups (minute, kind, status, count)
SELECT date_trunc('minute', finished_at), 'task', status, count(*)
FROM (SELECT status, finished_at FROM tasks UNION ALL SELECT status, finished_at FROM tasks_archive) t
WHERE status IN ('succeeded', 'failed', 'dead') AND finished_at IS NOT NULL
GROUP BY 1, 3;
