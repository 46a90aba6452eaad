-- A bulk job's `skipped`: events its preview matched that no longer matched its filter
-- when their batch came (a single `reprocessEvent` resolved them meanwhile, or their
-- status changed), so a finished job's done + failed + skipped is its total. Before,
-- such events were left out silently and a `done` job's counts did not add up.
-- The column's constant default adds it without rewriting the table; jobs that already
-- finished get what they skipped, by the same count the runner now makes at the end.
ALTER TABLE bulk_reprocess_jobs ADD COLUMN skipped bigint NOT NULL DEFAULT 0;

UPDATE bulk_reprocess_jobs
SET skipped = GREATEST(total - done - failed, 0)
WHERE status = 'done';
