-- narrow queue + history written once: DELETE the queue rows, INSERT the finished task into
-- `task_history` (history, list indexes) and its attempt into `task_attempts`, counters and rollups.
\set batch 24
-- claim: like Aula's (SKIP LOCKED, asynchronous commit), on the narrow row; counters per batch
BEGIN;
SET LOCAL synchronous_commit = off;
WITH due AS (
  SELECT id FROM q WHERE locked_at IS NULL AND run_at <= now() ORDER BY priority, run_at LIMIT :batch FOR UPDATE SKIP LOCKED
), c AS (
  UPDATE q SET locked_at = now(), locked_by = 'w' || :client_id, attempts = attempts + 1,
               lease_until = now() + interval '30 s'
  WHERE id = ANY(ARRAY(SELECT id FROM due)) RETURNING id
), counted AS (
  INSERT INTO task_status_counts (kind, status, shard, count)
  SELECT 'task', s, :client_id % 16, sign * (SELECT count(*) FROM c)
  FROM (VALUES ('pending', -1), ('running', 1)) v(s, sign)
  ORDER BY s
  ON CONFLICT (kind, status, shard) DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
)
SELECT coalesce(array_agg(id), '{}') AS ids FROM c \gset
COMMIT;
WITH d AS (
  DELETE FROM q WHERE id = ANY(:ids::bigint[]) AND locked_by = 'w' || :client_id RETURNING *
), h AS (
  INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, worker, event_id, event_type,
                     idempotency_key, payload, created_at, started_at, finished_at, claimed_at)
  SELECT id, kind, priority, 'succeeded', run_at, attempts, max_attempts, locked_by, event_id, 'BenchTaskIssued',
         'bench:' || id, payload, created_at, locked_at, now(), locked_at FROM d
), a AS (
  INSERT INTO task_attempts (task_id, attempt, worker, started_at, finished_at, duration_ms, outcome)
  SELECT id, attempts, locked_by, locked_at, now(), extract(epoch FROM now() - locked_at) * 1000, 'succeeded' FROM d
), n AS (SELECT count(*) AS n FROM d
), rolled AS (
  INSERT INTO processing_rollups (minute, kind, status, shard, count)
  SELECT date_trunc('minute', now()), 'task', 'succeeded', :client_id % 16, n FROM n WHERE n > 0
  ON CONFLICT (minute, kind, status, shard) DO UPDATE SET count = processing_rollups.count + EXCLUDED.count
)
INSERT INTO task_status_counts (kind, status, shard, count)
SELECT 'task', s, :client_id % 16, sign * n FROM n, (VALUES ('running', -1), ('succeeded', 1)) v(s, sign) WHERE n > 0
ORDER BY s
ON CONFLICT (kind, status, shard) DO UPDATE SET count = task_status_counts.count + EXCLUDED.count;
