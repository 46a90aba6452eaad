-- Task queue throughput and resumable, single-use bulk reprocessing jobs.

-- Every claim and completion rewrites a task row, and most attempt records are
-- rewritten once (the outcome). Free room on each page keeps the new row version on
-- the same page: an attempt's outcome update (no indexed column changes) becomes a
-- HOT update that writes no index entry; a task's status update still writes index
-- entries (`status` is in the partial indexes) but does not extend the table.
-- Applies to pages written from now on.
ALTER TABLE tasks SET (fillfactor = 70);
ALTER TABLE task_attempts SET (fillfactor = 80);

-- A bulk job is owned by one runner at a time (`owner`, until `lease_until`, extended
-- with every batch). A live service takes over a `running` job whose lease has expired
-- (its process died) and continues after `position`, the last log position of the
-- last committed batch: the batch's copies and the new position commit in one
-- transaction, so no event is copied twice. Jobs recorded before this migration have
-- no lease and are taken over at once.
ALTER TABLE bulk_reprocess_jobs
    ADD COLUMN owner              text,
    ADD COLUMN lease_until        timestamptz,
    ADD COLUMN position           bigint NOT NULL DEFAULT 0,
    -- SHA-256 (hex) of the confirm token that started the job: a token starts one job.
    ADD COLUMN confirm_token_hash text;

CREATE UNIQUE INDEX bulk_reprocess_jobs_confirm_token_key
    ON bulk_reprocess_jobs (confirm_token_hash);
CREATE INDEX bulk_reprocess_jobs_running_idx
    ON bulk_reprocess_jobs (lease_until) WHERE status = 'running';
