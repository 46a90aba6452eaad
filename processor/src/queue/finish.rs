//! Finishing attempts: completions, failures, heartbeats, releases and the rescue of
//! expired leases, each fenced by attempt number and claim time (see [`Done`]).

use std::time::Duration;

use aula_eventlog::db::column;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::processing::{self, TaskChange};

/// A successful attempt to record.
///
/// Outcomes, heartbeats and releases are fenced by the attempt number *and* the claim's
/// time. The number alone is not enough across a database crash: claims commit
/// asynchronously (see `worker`), so a claim lost with the server's last unflushed
/// commits leaves its task at the previous attempt, and the next claim reuses the
/// number while the first worker may still be running it; it never reuses the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub id: i64,
    pub attempt: i32,
    pub claimed_at: DateTime<Utc>,
}

/// A failed attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub id: i64,
    pub attempt: i32,
    pub claimed_at: DateTime<Utc>,
    pub error: String,
    /// `None` for a permanent failure (status `failed`, or `dead` with [`Failed::dead`]);
    /// otherwise how long after now
    /// (the database's clock) to run again (status `pending`), unless the attempts are
    /// exhausted (status `dead`).
    pub retry_after: Option<Duration>,
    /// The attempt could not use the database at all (see
    /// `TaskError::is_unavailable`): it is retried without counting against the
    /// task's attempts, so an outage longer than the retry budget kills no task.
    pub spare: bool,
    /// The outcome can never change (`TaskError::Final`): status `dead` at once.
    pub dead: bool,
}

/// The fencing keys of a batch of attempts, one array each: ids, attempts, claim times.
fn fences(batch: &[Done]) -> (Vec<i64>, Vec<i32>, Vec<DateTime<Utc>>) {
    (
        column(batch, |d| d.id),
        column(batch, |d| d.attempt),
        column(batch, |d| d.claimed_at),
    )
}

// The statements share their parts as macros rather than consts: `concat!` takes only
// literals, and each statement must stay one `&'static str` (tests explain them).

/// `locked`: the queue rows of a batch still held under the claim named by its fencing
/// keys (`$1` ids, `$2` attempts, the claim times in the parameter given), in id order.
macro_rules! locked_attempts {
    ($columns:literal, $claimed_at:literal, $lock:literal) => {
        concat!(
            "WITH locked AS (
             SELECT t.id, t.status",
            $columns,
            " FROM unnest($1::bigint[], $2::int[], ",
            $claimed_at,
            "::timestamptz[]) AS c(id, attempt, claimed_at)
             JOIN task_queue t ON t.id = c.id AND t.attempt = c.attempt AND t.claimed_at = c.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t",
            $lock,
            "
         )"
        )
    };
}

/// `done`: the locked rows that `$running` selects, moved from the queue into the
/// history as succeeded, their attempts recorded.
macro_rules! succeeded {
    ($running:literal) => {
        concat!(
            ", done AS (
             DELETE FROM task_queue t
             WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE ",
            $running,
            "))
             RETURNING t.*
         ), kept AS (
             ",
            history_columns!(),
            "
             SELECT id, kind, priority, 'succeeded', run_at, attempt, max_attempts, NULL, worker,
                    event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
                    correlation_id, created_at, started_at, now(), NULL, claimed_at
             FROM done
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'succeeded', finished_at = now(),
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM done WHERE a.task_id = done.id AND a.attempt = done.attempt
         )"
        )
    };
}

/// The end of a completion that counts its own tasks: `done` added to the rollups and
/// the status counters in shard `$3`; returns the ids accepted.
macro_rules! counted_succeeded {
    () => {
        ", total AS (
             SELECT count(*) AS n FROM done
         ), rolled AS (
             INSERT INTO processing_rollups (minute, kind, status, shard, count)
             SELECT to_timestamp(floor(extract(epoch FROM now()) / 60) * 60), 'task', 'succeeded', $3, n
             FROM total WHERE n > 0
             ON CONFLICT (minute, kind, status, shard)
             DO UPDATE SET count = processing_rollups.count + EXCLUDED.count
         ), counted AS (
             INSERT INTO task_status_counts (kind, status, shard, count)
             SELECT 'task', s.status, $3, s.sign * total.n
             FROM total, (VALUES ('running', -1), ('succeeded', 1)) AS s(status, sign)
             WHERE total.n > 0
             ORDER BY s.status
             ON CONFLICT (kind, status, shard)
             DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
         )
         SELECT id FROM done"
    };
}

/// Marks attempts succeeded, fenced by attempt number.
///
/// Returns the ids accepted; an id missing from the result was superseded (its lease
/// expired and it was claimed again or rescued) and its completion was rejected.
pub async fn complete(pool: &PgPool, done: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, attempts, claimed_at) = fences(done);
    let sql = sqlx::query_as::<_, (i64, Option<Uuid>, Option<DateTime<Utc>>)>(COMPLETE_SQL)
        .bind(ids)
        .bind(attempts)
        .bind(claimed_at);
    finish(pool, sql, |(id, event_id, finished_at)| {
        let mut change = TaskChange::moved(event_id, "running", "succeeded");
        change.finished_at = finished_at;
        (id, change)
    })
    .await
}

/// See [`complete`].
pub const COMPLETE_SQL: &str = concat!(
    locked_attempts!("", "$3", ""),
    succeeded!("status = 'running'"),
    "
         SELECT id, event_id, now() AS finished_at FROM done"
);

/// [`complete`] for tasks that no event issued (benchmarks, direct inserts): one
/// statement, in one round trip and without an open transaction, also records the
/// status counts and rollups ([`processing::record`] has nothing else to do for them).
/// Tasks that have an event are left alone (not in the result): finish them with
/// [`complete`], which updates their event's row.
pub async fn complete_eventless(pool: &PgPool, done: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    complete_counted(pool, done, COMPLETE_EVENTLESS_SQL).await
}

/// See [`complete_eventless`].
pub const COMPLETE_EVENTLESS_SQL: &str = concat!(
    locked_attempts!(", t.event_id", "$4", ""),
    succeeded!("status = 'running' AND event_id IS NULL"),
    counted_succeeded!()
);

/// Marks attempts succeeded, fenced like [`complete`], in one statement without an open
/// transaction: the task counters and rollups are updated in it, and the issuing
/// events' ids are queued in `admin_event_refresh` (see [`claim_deferred`](super::claim_deferred)) rather than
/// their rows rewritten. The workers' completion. Returns the ids accepted.
pub async fn complete_deferred(pool: &PgPool, done: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    complete_counted(pool, done, COMPLETE_DEFERRED_SQL).await
}

/// Runs one of the completions that count their own tasks (`$3` is the counters' shard).
async fn complete_counted(
    pool: &PgPool,
    done: &[Done],
    statement: &'static str,
) -> Result<Vec<i64>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let shard = processing::shard();
    let (ids, attempts, claimed_at) = fences(done);
    sqlx::query_scalar(statement)
        .bind(ids)
        .bind(attempts)
        .bind(shard)
        .bind(claimed_at)
        .fetch_all(pool)
        .await
}

/// See [`complete_deferred`].
pub const COMPLETE_DEFERRED_SQL: &str = concat!(
    locked_attempts!("", "$4", ""),
    succeeded!("status = 'running'"),
    ", queued AS (
             INSERT INTO admin_event_refresh (event_id)
             SELECT DISTINCT event_id FROM done WHERE event_id IS NOT NULL
         )",
    counted_succeeded!()
);

/// Runs a finishing statement and records its changes, in one transaction.
async fn finish<'q, R, F>(
    pool: &PgPool,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, R, sqlx::postgres::PgArguments>,
    to_change: F,
) -> Result<Vec<i64>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    F: Fn(R) -> (i64, TaskChange),
{
    let mut tx = pool.begin().await?;
    let rows = query.fetch_all(&mut *tx).await?;
    let (ids, changes): (Vec<i64>, Vec<TaskChange>) = rows.into_iter().map(to_change).unzip();
    if !changes.is_empty() {
        processing::record(&mut tx, &changes, &[]).await?;
    }
    tx.commit().await?;
    Ok(ids)
}

/// Records failed attempts, fenced like [`complete`]: retried (back to `pending` at
/// `retry_at`, counted and shown as `retrying`: its `last_error` is set), `dead` when
/// the attempts are exhausted, or `failed` when permanent.
/// Returns the ids accepted.
pub async fn fail(pool: &PgPool, failed: &[Failed]) -> Result<Vec<i64>, sqlx::Error> {
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sqlx::query_as::<_, Ended>(FAIL_SQL)
        .bind(column(failed, |f| f.id))
        .bind(column(failed, |f| f.attempt))
        .bind(column(failed, |f| f.error.as_str()))
        .bind(column(failed, |f| {
            f.retry_after.map(|d| d.as_millis() as f64)
        }))
        .bind(column(failed, |f| f.claimed_at))
        .bind(column(failed, |f| f.spare))
        .bind(column(failed, |f| f.dead));
    finish(pool, sql, ended).await
}

/// A row of an attempt that ended (failed, retried or rescued): id, issuing event, the
/// status it was moved to (`retrying` for one pending again), when and with what error.
type Ended = (i64, Option<Uuid>, String, Option<DateTime<Utc>>, String);

/// The change an ended attempt makes to its event's tasks and the counters.
fn ended((id, event_id, status, finished_at, error): Ended) -> (i64, TaskChange) {
    let mut change = TaskChange::moved(event_id, "running", &status);
    change.finished_at = finished_at;
    change.error = Some(error);
    (id, change)
}

/// See [`fail`].
pub const FAIL_SQL: &str = concat!(
    "WITH f AS (
             SELECT id, attempt, claimed_at, error,
                    CASE WHEN NOT dead THEN now() + retry_ms * interval '1 millisecond' END AS retry_at,
                    spare AND retry_ms IS NOT NULL AND NOT dead AS spare, dead
             FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::timestamptz[], $6::bool[], $7::bool[])
                 AS c(id, attempt, error, retry_ms, claimed_at, spare, dead)
         ), locked AS (
             -- The next status from the locked row (its attempt and budget as committed).
             SELECT t.id, t.status, f.error, f.retry_at, f.spare, f.dead,
                    CASE WHEN f.dead THEN 'dead'
                         WHEN f.retry_at IS NULL THEN 'failed'
                         WHEN t.attempt >= t.max_attempts AND NOT f.spare THEN 'dead'
                         ELSE 'pending' END AS next
             FROM f
             JOIN task_queue t ON t.id = f.id AND t.attempt = f.attempt AND t.claimed_at = f.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t
         ), retried AS (
             -- Waits for its retry in the queue.
             UPDATE task_queue t
             SET status = 'pending',
                 max_attempts = t.max_attempts + CASE WHEN f.spare THEN 1 ELSE 0 END,
                 run_at = COALESCE(f.retry_at, t.run_at), finished_at = NULL,
                 lease_until = NULL, worker = NULL, last_error = f.error
             FROM locked f
             WHERE t.id = f.id AND f.status = 'running' AND f.next = 'pending'
             RETURNING t.id, t.attempt, t.status, f.error, t.event_id, t.finished_at
         ), gone AS (
             -- Finished (failed or dead): out of the queue, into the history once.
             DELETE FROM task_queue t
             WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running' AND next <> 'pending'))
             RETURNING t.*
         ), ended AS (
             ",
    history_columns!(),
    "
             SELECT g.id, g.kind, g.priority, l.next, COALESCE(l.retry_at, g.run_at), g.attempt,
                    g.max_attempts + CASE WHEN l.spare THEN 1 ELSE 0 END, NULL, NULL, g.event_id,
                    g.event_type, g.origin_task_id, g.idempotency_key, g.payload, g.institution_id,
                    g.correlation_id, g.created_at, g.started_at, now(), l.error, g.claimed_at
             FROM gone g JOIN locked l ON l.id = g.id
             RETURNING id, attempt, status, last_error AS error, event_id, finished_at
         ), updated AS (
             SELECT * FROM retried UNION ALL SELECT * FROM ended
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = CASE updated.status WHEN 'pending' THEN 'retry' ELSE updated.status END,
                 error = updated.error, finished_at = now(),
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM updated WHERE a.task_id = updated.id AND a.attempt = updated.attempt
         )
         SELECT id, event_id, CASE status WHEN 'pending' THEN 'retrying' ELSE status END,
                finished_at, error
         FROM updated"
);

/// Extends the leases of the attempts this worker still runs. Returns the ids whose
/// lease was extended (a missing id was superseded, or is being finished right now:
/// rows locked by a completion are skipped rather than waited for).
///
/// **Invariant:** every statement that locks several task rows locks them in id order
/// (or skips locked rows), so completions, heartbeats and releases never deadlock.
pub async fn heartbeat(
    pool: &PgPool,
    running: &[Done],
    lease: Duration,
) -> Result<Vec<i64>, sqlx::Error> {
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, attempts, claimed_at) = fences(running);
    sqlx::query_scalar(HEARTBEAT_SQL)
        .bind(ids)
        .bind(attempts)
        .bind(lease.as_millis() as f64)
        .bind(claimed_at)
        .fetch_all(pool)
        .await
}

/// See [`heartbeat`].
pub const HEARTBEAT_SQL: &str = concat!(
    locked_attempts!("", "$4", " SKIP LOCKED"),
    "
         UPDATE task_queue t SET lease_until = now() + $3 * interval '1 millisecond'
         WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running'))
         RETURNING t.id"
);

/// Gives running attempts back (graceful shutdown before they finished): the task is
/// pending again at once and the attempt does not count against its budget.
pub async fn release(pool: &PgPool, running: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, attempts, claimed_at) = fences(running);
    let sql = sqlx::query_as::<_, (i64, Option<Uuid>, bool)>(RELEASE_SQL)
        .bind(ids)
        .bind(attempts)
        .bind(claimed_at);
    finish(pool, sql, |(id, event_id, retried)| {
        // Given back, not failed: it stays `retrying` only if an earlier attempt failed.
        let to = if retried { "retrying" } else { "pending" };
        (id, TaskChange::moved(event_id, "running", to))
    })
    .await
}

/// See [`release`].
pub const RELEASE_SQL: &str = concat!(
    locked_attempts!("", "$3", ""),
    ", released AS (
             UPDATE task_queue t
             SET status = 'pending', run_at = now(), lease_until = NULL, worker = NULL,
                 max_attempts = t.max_attempts + 1
             WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running'))
             RETURNING t.id, t.attempt, t.event_id, t.last_error IS NOT NULL AS retried
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'released', finished_at = now(), error = 'released by a shutting-down worker',
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM released WHERE a.task_id = released.id AND a.attempt = released.attempt
         )
         SELECT id, event_id, retried FROM released"
);

/// Rescues up to `limit` running tasks whose lease has expired: pending again at once,
/// or `dead` if that was their last attempt. Any process may run it. Returns how many.
pub async fn rescue_expired(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let sql = sqlx::query_as::<_, Ended>(concat!(
        "WITH expired AS (
             SELECT id, attempt >= max_attempts AS last FROM task_queue
             WHERE status = 'running' AND lease_until < now()
             ORDER BY lease_until
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), requeued AS (
             UPDATE task_queue t
             SET status = 'pending', finished_at = NULL, run_at = now(), lease_until = NULL,
                 last_error = 'the lease expired: worker ' || COALESCE(t.worker, '?') || ' was lost',
                 worker = NULL
             WHERE t.id = ANY(ARRAY(SELECT id FROM expired WHERE NOT last))
             RETURNING t.id, t.attempt, t.last_error, t.event_id, t.status, t.finished_at
         ), gone AS (
             -- That was its last attempt: dead, out of the queue, into the history.
             DELETE FROM task_queue t
             WHERE t.id = ANY(ARRAY(SELECT id FROM expired WHERE last))
             RETURNING t.*
         ), buried AS (
             ",
    history_columns!(),
    "
             SELECT id, kind, priority, 'dead', now(), attempt, max_attempts, NULL, NULL, event_id,
                    event_type, origin_task_id, idempotency_key, payload, institution_id,
                    correlation_id, created_at, started_at, now(),
                    'the lease expired: worker ' || COALESCE(worker, '?') || ' was lost', claimed_at
             FROM gone
             RETURNING id, attempt, last_error, event_id, status, finished_at
         ), updated AS (
             SELECT * FROM requeued UNION ALL SELECT * FROM buried
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'lease_expired', finished_at = now(), error = updated.last_error,
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM updated WHERE a.task_id = updated.id AND a.attempt = updated.attempt
         )
         SELECT id, event_id, CASE status WHEN 'pending' THEN 'retrying' ELSE status END,
                finished_at, last_error
         FROM updated"
    ))
    .bind(limit);
    let rescued = finish(pool, sql, ended).await?;
    if !rescued.is_empty() {
        tracing::warn!(count = rescued.len(), ids = ?rescued, "rescued tasks whose worker was lost");
    }
    Ok(rescued.len() as u64)
}
