-- `aula bench list-query`: synthetic events, admin_events rows and tasks, generated
-- set-based (no round trip per row). $1 = events, $2 = institutions. Statements are
-- separated by lines holding only `-- ;`. Random but reproducible: the session calls
-- setseed() first. The time span is 90 days from 2026-08-24; positions follow time.

CREATE TEMP TABLE bench_gen AS
SELECT g,
       -- ~15 event types, skewed: the first ones are the most frequent.
       (ARRAY['EnrollmentRequested', 'StudentEnrolled', 'EnrollmentDeclined', 'LoginSucceeded',
              'EnrollmentCancelled', 'GradeRecorded', 'UserCreated', 'StudentRegistered',
              'CourseOpened', 'PasswordResetRequested', 'PasswordChanged', 'TeacherHired',
              'CapacityChanged', 'GradeCorrected', 'CourseClosed'])[1 + floor(15 * power(random(), 1.8))::int] AS event_type,
       1 + floor(random() * $2::int)::int AS institution,
       timestamptz '2026-08-24 00:00:00+00' + (g::double precision / $1::bigint) * interval '90 days'
           + random() * interval '2 seconds' AS recorded_at,
       random() AS status_roll,
       -- 0..4 tasks, 2 on average.
       floor(random() * 5)::int AS tasks,
       -- Durations spread over four orders of magnitude (1 ms .. ~8 s).
       floor(exp(random() * 9))::bigint AS duration_ms
FROM generate_series(1, $1::bigint) AS g
-- ;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)
SELECT 'bench', 'agg-' || (g / 10), g % 10, event_type, '1.0',
       -- An e-mail address per event, so a search can find one event or all of them.
       json_build_object('type', event_type, 'email', 'user' || g || '@escola.test'),
       json_build_object('institution_id', '00000000-0000-4000-8000-' || lpad(institution::text, 12, '0'),
                         'actor', 'system', 'correlation_id', gen_random_uuid()),
       recorded_at
FROM bench_gen ORDER BY g
-- ;
-- Status: 5 % pending (their tasks pending or running), 3 % failed (one failed or dead
-- task), the rest succeeded.
INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
    institution_id, recorded_at, status, processed_at, duration_ms, error,
    tasks_pending, tasks_running, tasks_succeeded, tasks_failed, tx_id)
SELECT e.event_id, e.global_position, e.event_type, e.aggregate_type, e.aggregate_id, e.sequence,
       ('00000000-0000-4000-8000-' || lpad(b.institution::text, 12, '0'))::uuid, e.recorded_at,
       CASE WHEN b.status_roll < 0.05 THEN 'pending' WHEN b.status_roll < 0.08 THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN b.status_roll < 0.05 THEN NULL ELSE e.recorded_at + b.duration_ms * interval '1 millisecond' END,
       CASE WHEN b.status_roll < 0.05 THEN NULL ELSE b.duration_ms END,
       CASE WHEN b.status_roll >= 0.05 AND b.status_roll < 0.08 THEN 'handler failed: smtp timeout' END,
       CASE WHEN b.status_roll < 0.05 THEN greatest(b.tasks - 1, 0) ELSE 0 END,
       CASE WHEN b.status_roll < 0.05 AND b.tasks > 0 THEN 1 ELSE 0 END,
       CASE WHEN b.status_roll < 0.05 THEN 0 WHEN b.status_roll < 0.08 THEN greatest(b.tasks, 1) - 1 ELSE b.tasks END,
       CASE WHEN b.status_roll >= 0.05 AND b.status_roll < 0.08 THEN 1 ELSE 0 END,
       e.tx_id::text::bigint
FROM events e JOIN bench_gen b ON b.g = e.global_position
-- ;
-- The tasks behind those counts: failed events have their failed (or dead) task first.
-- Unfinished ones into the queue, finished ones into the history (migration 0046).
WITH generated AS (
SELECT 'reaction_' || n AS kind, s.status, a.recorded_at,
       CASE s.status WHEN 'pending' THEN 0 WHEN 'dead' THEN 5 ELSE 1 END, 5,
       a.event_id, a.event_type, a.event_id || ':' || n, a.institution_id, a.recorded_at,
       CASE WHEN s.status <> 'pending' THEN a.recorded_at END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'dead') THEN a.processed_at END,
       -- Each error names its event, so a search can find one task's error or all of them.
       CASE WHEN s.status IN ('failed', 'dead') THEN a.error || ' (event ' || a.global_position || ')' END
FROM admin_events a
CROSS JOIN LATERAL generate_series(1, a.tasks_pending + a.tasks_running + a.tasks_succeeded + a.tasks_failed) AS n
CROSS JOIN LATERAL (SELECT CASE
        WHEN n <= a.tasks_failed THEN CASE WHEN a.global_position % 2 = 0 THEN 'dead' ELSE 'failed' END
        WHEN n <= a.tasks_failed + a.tasks_running THEN 'running'
        WHEN n <= a.tasks_failed + a.tasks_running + a.tasks_pending THEN 'pending'
        ELSE 'succeeded' END AS status) AS s
), queued AS (
    INSERT INTO task_queue (kind, status, run_at, attempt, max_attempts, event_id, event_type,
        idempotency_key, institution_id, created_at, started_at, finished_at, last_error)
    SELECT * FROM generated WHERE status IN ('pending', 'running')
)
INSERT INTO task_history (kind, status, run_at, attempt, max_attempts, event_id, event_type,
    idempotency_key, institution_id, created_at, started_at, finished_at, last_error)
SELECT * FROM generated WHERE status NOT IN ('pending', 'running')
-- ;
-- What the admin_events projection writes beside each row for the list's search.
INSERT INTO admin_event_search (global_position, body)
SELECT global_position, aula_search_text(payload::jsonb) FROM events
-- ;
INSERT INTO task_status_counts (kind, status, count)
SELECT 'task', status, count(*) FROM tasks GROUP BY status
ON CONFLICT (kind, status, shard) DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
-- ;
INSERT INTO task_status_counts (kind, status, count)
SELECT 'event', status, count(*) FROM admin_events GROUP BY status
ON CONFLICT (kind, status, shard) DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
-- ;
INSERT INTO processing_rollups (minute, kind, status, count)
SELECT date_trunc('minute', finished_at), 'task', status, count(*) FROM tasks
WHERE status IN ('succeeded', 'failed', 'dead') GROUP BY 1, 3
ON CONFLICT (minute, kind, status, shard) DO UPDATE SET count = processing_rollups.count + EXCLUDED.count
-- ;
INSERT INTO processing_rollups (minute, kind, status, count)
SELECT date_trunc('minute', processed_at), 'event', status, count(*) FROM admin_events
WHERE status IN ('succeeded', 'failed') GROUP BY 1, 3
ON CONFLICT (minute, kind, status, shard) DO UPDATE SET count = processing_rollups.count + EXCLUDED.count
-- ;
DROP TABLE bench_gen
