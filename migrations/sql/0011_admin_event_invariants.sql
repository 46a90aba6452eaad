-- What the processor (processor/src/processing.rs) has always written into
-- `admin_events`, now enforced: an event has a processed time and a duration exactly
-- when it is not pending; a duration is never negative (it is clamped at 0) and a
-- processed time is a real time. The admin event list (projections/src/admin_events.rs)
-- relies on it: a filter that only processed events pass adds `processed sort > its
-- value for "missing"`, so walking the processed-time or duration index starts past
-- the pending events' block (measured: 80-111 ms for a first page of failed events
-- sorted by processed time or duration, with 50,000 pending events to skip).
-- NOT VALID then VALIDATE: existing rows are checked without blocking writers.
ALTER TABLE admin_events
    ADD CONSTRAINT admin_events_processed_check
        CHECK ((status = 'pending') = (processed_at IS NULL)) NOT VALID,
    ADD CONSTRAINT admin_events_duration_check
        CHECK ((processed_at IS NULL) = (duration_ms IS NULL)
               AND duration_ms >= 0
               AND processed_at > '-infinity'::timestamptz) NOT VALID;
ALTER TABLE admin_events VALIDATE CONSTRAINT admin_events_processed_check;
ALTER TABLE admin_events VALIDATE CONSTRAINT admin_events_duration_check;
