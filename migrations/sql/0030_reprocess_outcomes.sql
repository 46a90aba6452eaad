-- Reprocessing outcomes (issue #19): an original names its latest copy, so its row can
-- show that copy's outcome ("resolved by copy" when the copy's tasks succeeded), the
-- list can leave resolved failures out, and a bulk job can count its copies' outcomes.

-- The latest reprocessed copy of an original (NULL on copies and never-copied events).
-- Written by the `admin_events` projection from the events alone (a copy names its
-- root original in `reprocessed_from`), so a rebuild reproduces it.
ALTER TABLE admin_events ADD COLUMN latest_copy_id uuid;

UPDATE admin_events a SET latest_copy_id = c.event_id
FROM (SELECT DISTINCT ON (reprocessed_from) reprocessed_from, event_id
      FROM admin_events WHERE reprocessed_from IS NOT NULL
      ORDER BY reprocessed_from, tx_id DESC, global_position DESC) c
WHERE a.event_id = c.reprocessed_from;

-- The failed events that have a copy: the header's count of failures resolved by a
-- copy reads only these (a few, next to all events).
CREATE INDEX admin_events_failed_copied_idx ON admin_events (latest_copy_id)
    WHERE status = 'failed' AND latest_copy_id IS NOT NULL;

-- The copies each bulk job wrote, so its progress reports their tasks' outcomes
-- (succeeded / failed / still running), not only how many copies it wrote. Inserted in
-- the transaction of the batch that wrote them (processor/src/bulk.rs).
CREATE TABLE bulk_reprocess_copies (
    job_id   uuid NOT NULL REFERENCES bulk_reprocess_jobs (id) ON DELETE CASCADE,
    event_id uuid NOT NULL,
    PRIMARY KEY (job_id, event_id)
);
