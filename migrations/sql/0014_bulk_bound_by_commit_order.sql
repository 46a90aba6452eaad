-- A bulk job's bound in commit order (processor/src/bulk.rs, "The bound").
--
-- `up_to_position` alone (the log's last position at preview time) was not a bound:
-- positions are taken at insert time, not at commit, so an event inserted before the
-- preview and committed after it has a smaller position and was included. The bound is
-- now the `admin_events` projection's checkpoint at preview time, `(up_to_tx,
-- up_to_position)` in the log's commit order: every row of the list at or before it was
-- there when the preview counted, and every later row comes after it.
--
-- So that the bound can be checked on the list's rows, each row carries its event's
-- transaction id (as the log reader's `tx_id::text::bigint`), which also lets the
-- processor and the projection lock rows in log order without joining `events`.
ALTER TABLE admin_events ADD COLUMN tx_id bigint;
UPDATE admin_events a SET tx_id = e.tx_id::text::bigint FROM events e WHERE e.event_id = a.event_id;
-- A row whose event is gone (none should be) sorts first rather than failing the upgrade.
UPDATE admin_events SET tx_id = 0 WHERE tx_id IS NULL;
ALTER TABLE admin_events ALTER COLUMN tx_id SET NOT NULL;

ALTER TABLE bulk_reprocess_jobs ADD COLUMN up_to_tx bigint;
-- Jobs recorded before: the transaction of the event at their position (the closest
-- commit-order bound to what they meant).
UPDATE bulk_reprocess_jobs j
SET up_to_tx = COALESCE((SELECT e.tx_id::text::bigint FROM events e
                         WHERE e.global_position = j.up_to_position), 0);
ALTER TABLE bulk_reprocess_jobs ALTER COLUMN up_to_tx SET NOT NULL;
