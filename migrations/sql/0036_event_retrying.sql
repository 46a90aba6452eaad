-- An event waiting for a retry of one of its tasks (issue #19): `admin_events.status`
-- is `retrying` while any of its tasks is `retrying` (a pending task whose earlier
-- attempt failed, see 0035), else `pending` while any is unfinished, as before. Both
-- are unfinished: no processed time, no duration (the invariant of 0011, restated).
ALTER TABLE admin_events DROP CONSTRAINT admin_events_processed_check;
ALTER TABLE admin_events
    ADD CONSTRAINT admin_events_processed_check
        CHECK ((status IN ('pending', 'retrying')) = (processed_at IS NULL)) NOT VALID;

-- The events waiting for a retry now, and their counter.
WITH moved AS (
    UPDATE admin_events a SET status = 'retrying'
    WHERE a.status = 'pending'
      AND a.event_id IN (SELECT event_id FROM tasks
                         WHERE status IN ('pending', 'paused') AND last_error IS NOT NULL
                           AND event_id IS NOT NULL)
    RETURNING 1
)
INSERT INTO task_status_counts (kind, status, shard, count)
SELECT 'event', s.status, 0, s.sign * n.n
FROM (SELECT count(*) AS n FROM moved) n,
     (VALUES ('pending', -1), ('retrying', 1)) AS s(status, sign)
WHERE n.n > 0
ORDER BY s.status
ON CONFLICT (kind, status, shard) DO UPDATE SET count = task_status_counts.count + EXCLUDED.count;

ALTER TABLE admin_events VALIDATE CONSTRAINT admin_events_processed_check;
