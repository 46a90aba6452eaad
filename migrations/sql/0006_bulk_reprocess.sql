-- Bulk reprocessing: one row per job. The job re-emits a copy (processor/src/reprocess.rs)
-- of every event of `admin_events` that matches `filter` and is at or before
-- `up_to_position` (the log position at preview time: later events are not included).
-- The row is the job's audit trail (who asked, what, when, how it went); progress is
-- updated per batch; setting `status = 'cancelled'` stops it before its next batch.
CREATE TABLE bulk_reprocess_jobs (
    id             uuid        PRIMARY KEY,
    filter         jsonb       NOT NULL,
    up_to_position bigint      NOT NULL,
    -- The institution the job is scoped to (NULL: an admin's job over all).
    institution_id uuid,
    -- The actor, e.g. `user:<uuid>`.
    requested_by   text        NOT NULL,
    status         text        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'cancelled', 'done', 'failed')),
    total          bigint      NOT NULL DEFAULT 0,
    done           bigint      NOT NULL DEFAULT 0,
    failed         bigint      NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    error          text
);

CREATE INDEX bulk_reprocess_jobs_created ON bulk_reprocess_jobs (created_at DESC);
