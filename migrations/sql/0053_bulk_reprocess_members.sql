-- The events a bulk job works on, fixed when it starts: the rows its filter matched at
-- or before its bound then. Its runner pages through them and copies those that still
-- match when their batch comes (the others are `skipped`), so done + failed + skipped
-- never exceeds total. Before, every batch ran the filter again over the list: an event
-- at or before the bound that started matching afterwards (its tasks failed after the
-- preview) was copied too, and a job could end with `done` above its `total`.
CREATE TABLE bulk_reprocess_members (
    job_id          uuid   NOT NULL REFERENCES bulk_reprocess_jobs (id) ON DELETE CASCADE,
    global_position bigint NOT NULL,
    event_id        uuid   NOT NULL,
    PRIMARY KEY (job_id, global_position)
);

-- Jobs recorded before this migration have no members: their runner keeps filtering
-- the list, and stops once it has copied `total` events.
ALTER TABLE bulk_reprocess_jobs ADD COLUMN fixed_members boolean NOT NULL DEFAULT false;
