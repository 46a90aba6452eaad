-- :n tasks in the queue; with :events = 1 each names its own admin_events row (made pending).
TRUNCATE q; TRUNCATE task_history; TRUNCATE task_attempts; TRUNCATE task_status_counts; TRUNCATE processing_rollups;
INSERT INTO q (id, kind, event_id)
SELECT g, 'noop', CASE WHEN :events = 1 THEN e.event_id END
FROM generate_series(1, :n) g
LEFT JOIN (SELECT event_id, row_number() OVER (ORDER BY global_position) rn FROM admin_events) e ON e.rn = g;
UPDATE admin_events SET status = 'pending', processed_at = NULL, duration_ms = NULL,
       tasks_pending = 1, tasks_running = 0, tasks_succeeded = 0, tasks_failed = 0
WHERE :events = 1 AND event_id IN (SELECT event_id FROM q WHERE event_id IS NOT NULL);
INSERT INTO task_status_counts (kind, status, shard, count) VALUES ('task', 'pending', 0, :n)
ON CONFLICT (kind, status, shard) DO UPDATE SET count = EXCLUDED.count;
VACUUM ANALYZE q; VACUUM ANALYZE admin_events; VACUUM ANALYZE task_history; VACUUM ANALYZE task_attempts;
CHECKPOINT;
