-- The refresher finds every id queued for an event by the event (issue #20).
--
-- Since 0047 a refresh takes the events that have an id due and deletes every id
-- queued for them, due or not (a claim's id goes with its task's completion). Without
-- an index that delete read the whole table on every round, and when the refresher
-- fell behind the table grew, so each round cost more: the admin view of a
-- 200,000-task drain ended 18 s behind. With the index a round costs its own ids.
CREATE INDEX admin_event_refresh_event_idx ON admin_event_refresh (event_id);
