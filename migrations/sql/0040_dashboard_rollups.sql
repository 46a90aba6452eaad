-- The dashboard's charts (issue #23): events and tasks processed and failed per minute
-- (kept 26 hours) and per hour (kept 15 days), per institution, and the queue's depth
-- by task kind sampled once a minute. docs/adr/0002-dashboard-rollups.md says where
-- they are written and why there.
--
-- `institution_id`: the events' institution (the nil uuid for events of none), and the
-- all-ones uuid for the platform's total (written beside each institution's row, so an
-- admin's chart reads one key, never a sum over every institution).
-- `kind` 'event': events that reached a final status in that bucket (an event that goes
-- back to pending is taken out of its old bucket); 'task': the tasks of those events that
-- finished (tasks no event issued, e.g. webhook deliveries, are in `processing_rollups`
-- only). Rows are split over `shard`s like `processing_rollups`; only sums mean anything.
CREATE TABLE dashboard_rollups (
    width          text        NOT NULL CHECK (width IN ('minute', 'hour')),
    institution_id uuid        NOT NULL,
    bucket         timestamptz NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('event', 'task')),
    status         text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    shard          smallint    NOT NULL DEFAULT 0,
    count          bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (width, institution_id, bucket, kind, status, shard)
);

-- Unfinished tasks by institution (nil uuid: none) and kind, once a minute; the samples
-- taken at minute 0 of an hour are kept 15 days, the others 26 hours.
CREATE TABLE dashboard_queue_depth (
    minute         timestamptz NOT NULL,
    institution_id uuid        NOT NULL,
    task_kind      text        NOT NULL,
    pending        bigint      NOT NULL,
    running        bigint      NOT NULL,
    PRIMARY KEY (minute, institution_id, task_kind)
);
CREATE INDEX dashboard_queue_depth_institution_idx
    ON dashboard_queue_depth (institution_id, minute);

-- Start from what `admin_events` knows (one scan, here and never again).
INSERT INTO dashboard_rollups (width, institution_id, bucket, kind, status, count)
SELECT w.width, i.institution_id, date_trunc(w.width, a.processed_at), k.kind, k.status, sum(k.n)
FROM admin_events a
CROSS JOIN (VALUES ('minute', interval '26 hours'), ('hour', interval '15 days')) AS w(width, keep)
CROSS JOIN LATERAL (VALUES (COALESCE(a.institution_id, '00000000-0000-0000-0000-000000000000'::uuid)),
                           ('ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)) AS i(institution_id)
CROSS JOIN LATERAL (VALUES ('event', a.status, 1::bigint),
                           ('task', 'succeeded', a.tasks_succeeded::bigint),
                           ('task', 'failed', a.tasks_failed::bigint)) AS k(kind, status, n)
WHERE a.status IN ('succeeded', 'failed') AND a.processed_at IS NOT NULL
  AND a.processed_at >= now() - w.keep AND k.n <> 0
GROUP BY 1, 2, 3, 4, 5;
