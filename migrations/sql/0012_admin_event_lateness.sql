-- The admin event list sorted by one time column under a range of the other (processed
-- time under a recorded range, recorded time under a processed range). Nearly every event
-- is processed within an hour of being recorded, so for those the range of one time
-- bounds the other and the sort column's covering index (0008) is walked within the
-- bounds. The rest are read whole, from the small partial indexes below.
-- See projections/src/admin_events.rs (`push_split`): its `LATE` predicate must stay the
-- same expression as these indexes' predicate, or the planner will not use them.

-- Processed, but more than an hour after being recorded (or before it: another clock).
-- `timestamptz - timestamptz` is immutable, so it may appear in an index predicate.
CREATE INDEX admin_events_late_recorded_idx ON admin_events (recorded_at, global_position)
    INCLUDE (processed_at, duration_ms, event_type, status, institution_id, tasks_failed)
    WHERE (processed_at - recorded_at > interval '1 hour' OR processed_at < recorded_at);
CREATE INDEX admin_events_late_processed_idx ON admin_events
    ((COALESCE(processed_at, '-infinity'::timestamptz)), global_position)
    INCLUDE (processed_at, recorded_at, duration_ms, event_type, status, institution_id, tasks_failed)
    WHERE (processed_at - recorded_at > interval '1 hour' OR processed_at < recorded_at);

-- Not processed yet (the processor's backlog): sorted by processed time, they come first.
CREATE INDEX admin_events_pending_recorded_idx ON admin_events (recorded_at, global_position)
    INCLUDE (processed_at, duration_ms, event_type, status, institution_id, tasks_failed)
    WHERE processed_at IS NULL;
