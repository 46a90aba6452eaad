-- The admin event list (projections/src/admin_events.rs, `list_admin_events`) under a
-- time-range filter: the recorded and processed indexes become covering indexes that
-- hold every filter and sort column, so the candidates of a page under a time range are
-- found and sorted from the index alone (index-only scan) and only the page's rows are
-- read from the table. Their keys are unchanged, so keyset pages sorted by recorded or
-- processed time still walk them directly. `aula bench list-query` measures the list.
-- A rebuild copies these (CREATE TABLE ... LIKE ... INCLUDING ALL).
DROP INDEX admin_events_recorded_idx;
CREATE INDEX admin_events_recorded_idx ON admin_events (recorded_at, global_position)
    INCLUDE (processed_at, duration_ms, event_type, status, institution_id, tasks_failed);
DROP INDEX admin_events_processed_idx;
CREATE INDEX admin_events_processed_idx ON admin_events
    ((COALESCE(processed_at, '-infinity'::timestamptz)), global_position)
    INCLUDE (processed_at, recorded_at, duration_ms, event_type, status, institution_id, tasks_failed);
-- "Has failed tasks" is rare and tied to status (a succeeded event has none), so a walk
-- along a full sort index may skip nearly every row before it finds one: each sort gets
-- a small partial index of its own.
CREATE INDEX admin_events_failed_recorded_idx ON admin_events (recorded_at, global_position)
    WHERE tasks_failed > 0;
CREATE INDEX admin_events_failed_processed_idx ON admin_events
    ((COALESCE(processed_at, '-infinity'::timestamptz)), global_position) WHERE tasks_failed > 0;
CREATE INDEX admin_events_failed_duration_idx ON admin_events
    ((COALESCE(duration_ms, -1)), global_position) WHERE tasks_failed > 0;
CREATE INDEX admin_events_failed_type_idx ON admin_events (event_type, global_position)
    WHERE tasks_failed > 0;
CREATE INDEX admin_events_failed_status_idx ON admin_events (status, global_position)
    WHERE tasks_failed > 0;
