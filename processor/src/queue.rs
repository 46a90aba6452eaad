//! The task queue's statements.
//!
//! A task lives in `task_queue` while it is unfinished (pending, paused, running) and
//! in `task_history` once finished (succeeded, failed, dead, cancelled): the statement
//! that finishes it DELETEs the queue row and INSERTs the history row, so the history
//! and its list indexes are written once per task, and the queue stays as small as the
//! backlog (ADR 0003). The view `tasks` reads both, for everything off the hot path.
//!
//! - Insert in bulk with `unnest`; tasks issued by an event conflict on
//!   `(event_id, kind)` and are skipped, so an event never issues a task twice (the
//!   queue's unique index, then the history's, see [`insert_tasks_unrecorded`]).
//! - Claim a batch with `FOR UPDATE SKIP LOCKED ORDER BY priority, run_at`, setting the
//!   lease and `attempt = attempt + 1`, and recording the attempt's start, in one statement.
//! - Finish in batches from `unnest(ids, attempts, claim times)`, fenced: a task is
//!   finished only if its attempt and claim time are the reporting worker's and, once
//!   locked, it is still `running`. A worker whose lease expired and whose task was
//!   claimed again finishes nothing ([`Done`]).
//! - Rescue running tasks whose lease expired (their worker died or stalled).
//! - Every statement that changes a task's status returns what it changed and records it
//!   with [`processing::record`] in the same transaction: the event's processing status
//!   in `admin_events`, `processing_rollups` and `task_status_counts`. Two hot paths do
//!   that bookkeeping inside the statement itself, so they are one round trip with no
//!   open transaction (no row lock held across a round trip to the client): [`claim`]
//!   (pending to running changes only counts) and [`complete_eventless`] (tasks that no
//!   event issued have no event row to update).
//! - The workers use [`claim_deferred`] and [`complete_deferred`]: the same one-statement
//!   shape, but the issuing events' rows are not touched at all; their ids are queued in
//!   `admin_event_refresh` for [`processing::run_refresher`] (ADR 0001). [`claim`] and
//!   [`complete`] stay the synchronous API (the event's row is current when they return).
//!
//! ## Plans
//! The statements run as prepared statements, so mostly under a generic plan that
//! cannot see how many rows a batch has, and batches grow to thousands of rows when
//! finishing falls behind. Three rules, each from a measured meltdown:
//! - **A CTE's rows are found again with `id = ANY(ARRAY(SELECT id FROM cte))`**, not
//!   by a join on the CTE: estimating a join on `LIMIT $1` rows, the generic plan may
//!   hash the whole table (136 ms per claim over 200,000 tasks).
//! - **That `= ANY` stands alone, never beside a join condition on the same column.**
//!   Both on the inner side of a nested loop, the index scan prepares the whole array
//!   again for every outer row, so the cost grows with the square of the batch (60
//!   completions: 11.0 ms, 4.1 without; a claim of 500 event-issued tasks: 145 ms,
//!   53 without).
//! - **A batch's own tasks are found by primary key from the `unnest` of their ids; their
//!   status is checked after the lock**, outside the locating `WHERE`. `ANALYZE` mostly
//!   finds no task running, so with `status = 'running'` there the planner took the
//!   partial lease index for nearly empty and scanned every running task once per id
//!   (4,000 completions with 4,000 tasks running: 3.9 s).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::kinds;
use crate::processing::{self, TaskChange};

/// A task to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub kind: String,
    pub priority: i16,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub idempotency_key: String,
    pub payload: Value,
    pub institution_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
}

impl NewTask {
    /// A task of `kind` with the kind's priority and retry budget.
    pub fn new(kind: &str, idempotency_key: impl Into<String>, payload: Value) -> Self {
        let policy = kinds::policy(kind);
        Self {
            kind: kind.to_owned(),
            priority: policy.priority,
            max_attempts: policy.max_attempts,
            run_at: None,
            event_id: None,
            event_type: None,
            idempotency_key: idempotency_key.into(),
            payload,
            institution_id: None,
            correlation_id: None,
        }
    }
}

/// Inserts `tasks` in one statement; those whose `(event_id, kind)` exists are skipped.
/// Returns how many were inserted. The processing counters and the events' rows are
/// updated in the same transaction (a savepoint if `conn` is already in one).
pub async fn insert_tasks(conn: &mut PgConnection, tasks: &[NewTask]) -> Result<u64, sqlx::Error> {
    if tasks.is_empty() {
        return Ok(0);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let changes = insert_tasks_unrecorded(&mut tx, tasks).await?;
    processing::record(&mut tx, &changes, &[]).await?;
    tx.commit().await?;
    Ok(changes.len() as u64)
}

/// [`insert_tasks`] without [`processing::record`]: the caller records the returned
/// changes in its transaction (the reactions add their events).
pub(crate) async fn insert_tasks_unrecorded(
    conn: &mut PgConnection,
    tasks: &[NewTask],
) -> Result<Vec<TaskChange>, sqlx::Error> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<(i64, Option<Uuid>)> = sqlx::query_as(
        "INSERT INTO task_queue (kind, priority, max_attempts, run_at, event_id, event_type, idempotency_key,
                            payload, institution_id, correlation_id)
         SELECT kind, priority, max_attempts, COALESCE(run_at, now()), event_id, event_type, key,
                payload, institution_id, correlation_id
         FROM unnest($1::text[], $2::smallint[], $3::int[], $4::timestamptz[], $5::uuid[], $6::text[],
                     $7::text[], $8::jsonb[], $9::uuid[], $10::uuid[])
              AS t(kind, priority, max_attempts, run_at, event_id, event_type, key, payload, institution_id, correlation_id)
         WHERE t.event_id IS NULL OR NOT EXISTS (
             SELECT 1 FROM task_history h
             WHERE h.event_id = t.event_id AND h.kind = t.kind AND h.origin_task_id IS NULL)
         ON CONFLICT (event_id, kind) WHERE origin_task_id IS NULL AND event_id IS NOT NULL DO NOTHING
         RETURNING id, event_id",
    )
    .bind(tasks.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.priority).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.max_attempts).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.run_at).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.event_id).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.event_type.as_deref()).collect::<Vec<_>>())
    .bind(
        tasks
            .iter()
            .map(|t| t.idempotency_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(tasks.iter().map(|t| &t.payload).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.institution_id).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.correlation_id).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    // The dedupe spans two tables (the queue's unique index, the history's): a task of
    // the same event and kind that finished while this insert ran moved from the queue
    // to the history, so the queue's index let this one in. Its completion's commit is
    // what this insert waited for at the index, so this next statement (a new snapshot)
    // sees its history row: the duplicate is removed before anyone can claim it (it is
    // not committed yet). See docs/adr/0003-narrow-task-queue.md.
    let issued: Vec<i64> = inserted
        .iter()
        .filter(|(_, event_id)| event_id.is_some())
        .map(|(id, _)| *id)
        .collect();
    let duplicates: Vec<i64> = if issued.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar(
            "DELETE FROM task_queue q
             WHERE q.id = ANY($1) AND EXISTS (
                 SELECT 1 FROM task_history h
                 WHERE h.event_id = q.event_id AND h.kind = q.kind AND h.origin_task_id IS NULL)
             RETURNING q.id",
        )
        .bind(&issued)
        .fetch_all(&mut *conn)
        .await?
    };
    Ok(inserted
        .into_iter()
        .filter(|(id, _)| !duplicates.contains(id))
        .map(|(_, event_id)| TaskChange::inserted(event_id))
        .collect())
}

/// A claimed task, as a handler sees it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub kind: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub origin_task_id: Option<i64>,
    pub idempotency_key: String,
    pub payload: Value,
    pub institution_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// When this claim was made: with `attempt`, the fence of its outcome (see [`Done`]).
    pub claimed_at: DateTime<Utc>,
    /// Its place in the claim order, `(priority, run_at)`: where the claiming loop's
    /// next [`ClaimHint`] starts.
    pub priority: i16,
    pub run_at: DateTime<Utc>,
}

impl TaskRow {
    /// This claim's success, to record with [`complete`].
    pub fn done(&self) -> Done {
        Done {
            id: self.id,
            attempt: self.attempt,
            claimed_at: self.claimed_at,
        }
    }

    /// This claim's failure, to record with [`fail`].
    pub fn failed(&self, error: impl Into<String>, retry_after: Option<Duration>) -> Failed {
        Failed {
            id: self.id,
            attempt: self.attempt,
            claimed_at: self.claimed_at,
            error: error.into(),
            retry_after,
            spare: false,
            dead: false,
        }
    }
}

/// Claims up to `limit` due tasks for `worker`, holding them for `lease`.
///
/// One statement, so one round trip and no open transaction: it locks the due rows
/// (`SKIP LOCKED`), marks them running, records the attempts' start, moves the issuing
/// events' task counts in `admin_events` (pending to running: the event's status stays
/// `pending`, so nothing else of [`processing::record`] applies) and the status counts.
/// Rows are locked in the order of the module's invariant: tasks, then `admin_events`
/// in log order, then `task_status_counts` by key.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    run_claim(CLAIM_SQL, pool, worker, limit, lease, record_attempts).await
}

/// Runs one of the claim statements (they take the same parameters).
async fn run_claim(
    sql: &'static str,
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let shard: i16 = rand::Rng::gen_range(&mut rand::thread_rng(), 0..processing::SHARDS);
    sqlx::query_as(sql)
        .bind(limit)
        .bind(lease.as_millis() as f64)
        .bind(worker)
        .bind(record_attempts)
        .bind(shard)
        .fetch_all(pool)
        .await
}

/// The CTEs every claim starts with: pick the due tasks (`SKIP LOCKED`), park those of
/// a paused kind, mark the others running under a lease, record the attempts' start
/// (when `$4`), and list the tasks' moves between counted statuses (`moved`). A macro,
/// not a `const`, so `concat!` can build the statements at compile time.
///
/// Pausing a kind (`controls::pause_kind`) parks its waiting tasks (status `paused`,
/// outside `task_queue_claim_idx`). A task of a paused kind that becomes due afterwards
/// (inserted, retried, released) is parked here, by the first claim that meets it, so
/// no later claim steps over it again: the claim keeps walking `task_queue_claim_idx` in
/// `(priority, run_at)` order and stops after `$1` rows, however many tasks of paused
/// kinds wait. Filtering paused kinds in `due` instead would make every claim step over
/// all of them (heap fetches included: the index does not hold `kind`). With nothing
/// paused, `task_kind_pauses` is empty and the anti-join costs one probe of an empty
/// table per claim. `retried` (a pending task with an error recorded: `retrying`)
/// tells the counters which status a claimed or parked task leaves.
macro_rules! claim_ctes {
    () => {
        claim_ctes!("")
    };
    ($from:literal) => {
        concat!(
            "WITH due AS (
         SELECT id, kind FROM task_queue
         WHERE status = 'pending' AND run_at <= now()",
            $from,
            "
         ORDER BY priority, run_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED
     ), parked AS (
         UPDATE task_queue t SET status = 'paused'
         WHERE t.id = ANY(ARRAY(SELECT d.id FROM due d
                                WHERE EXISTS (SELECT 1 FROM task_kind_pauses p WHERE p.kind = d.kind)))
         RETURNING t.id, t.last_error IS NOT NULL AS retried
     ), claimed AS (
         UPDATE task_queue t
         SET status = 'running', attempt = t.attempt + 1,
             lease_until = now() + $2 * interval '1 millisecond', worker = $3,
             started_at = COALESCE(t.started_at, now()), claimed_at = now()
         WHERE t.id = ANY(ARRAY(SELECT d.id FROM due d
                                WHERE NOT EXISTS (SELECT 1 FROM task_kind_pauses p WHERE p.kind = d.kind)))
         RETURNING t.id, t.kind, t.attempt, t.max_attempts, t.event_id, t.event_type,
             t.origin_task_id, t.idempotency_key, t.payload, t.institution_id, t.correlation_id,
             t.created_at, t.claimed_at, t.priority, t.run_at, t.last_error IS NOT NULL AS retried
     ), started AS (
         INSERT INTO task_attempts (task_id, attempt, worker)
         SELECT id, attempt, $3 FROM claimed WHERE $4
     ), moved AS (
         SELECT CASE WHEN retried THEN 'retrying' ELSE 'pending' END AS status, -1 AS n FROM claimed
         UNION ALL SELECT 'running', 1 FROM claimed
         UNION ALL SELECT CASE WHEN retried THEN 'retrying' ELSE 'pending' END, -1 FROM parked
         UNION ALL SELECT 'paused', 1 FROM parked
     ), "
        )
    };
}

/// See [`claim`] and the module's rules for plans. An event row nobody had counted yet
/// (all counts 0, `pending`: its task was inserted before the projection wrote the row)
/// becomes counted here, as [`processing::record`] would do.
pub const CLAIM_SQL: &str = concat!(claim_ctes!(), "by_event AS (
         SELECT event_id, count(*)::int AS n FROM claimed WHERE event_id IS NOT NULL GROUP BY event_id
     ), event_rows AS (
         SELECT a.event_id, b.n, a.status,
                (a.status = 'pending' AND a.tasks_pending = 0 AND a.tasks_running = 0
                 AND a.tasks_succeeded = 0 AND a.tasks_failed = 0) AS unseen
         FROM admin_events a
         JOIN by_event b ON b.event_id = a.event_id
         WHERE a.event_id = ANY(ARRAY(SELECT event_id FROM by_event))
         ORDER BY a.tx_id, a.global_position
         FOR UPDATE OF a
     ), event_counts AS (
         UPDATE admin_events a
         SET tasks_pending = greatest(a.tasks_pending - r.n, 0),
             tasks_running = a.tasks_running + r.n
         FROM event_rows r
         WHERE a.event_id = r.event_id
     ), requeued AS (
         -- An event leaving `retrying` needs its tasks recounted (another of them may
         -- still wait for a retry): the refresher does it, as for the workers' claims.
         INSERT INTO admin_event_refresh (event_id)
         SELECT event_id FROM event_rows WHERE status = 'retrying'
     ), deltas AS (
         SELECT 'task' AS kind, status, sum(n) AS n FROM moved GROUP BY status
         UNION ALL SELECT 'event', 'pending', count(*) FROM event_rows WHERE unseen
     ), counted AS (
         INSERT INTO task_status_counts (kind, status, shard, count)
         SELECT kind, status, $5, n FROM deltas WHERE n <> 0
         ORDER BY kind, status
         ON CONFLICT (kind, status, shard)
         DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
     )
     SELECT * FROM claimed");

/// [`claim`] for the workers: the same claim, but the issuing events' rows in
/// `admin_events` are left alone. Their ids are queued in `admin_event_refresh` for the
/// refresher ([`processing::run_refresher`]), which recounts them in batches. No
/// `admin_events` row is locked or rewritten, so a claim's cost does not depend on the
/// event rows (ADR 0001).
pub async fn claim_deferred(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    run_claim(
        CLAIM_DEFERRED_SQL,
        pool,
        worker,
        limit,
        lease,
        record_attempts,
    )
    .await
}

/// The part of [`CLAIM_DEFERRED_SQL`] after the claim's CTEs, shared with
/// [`CLAIM_DEFERRED_FROM_SQL`].
macro_rules! claim_deferred_tail {
    () => {
        "queued AS (
         -- Due a moment later: refreshed with the task's completion if that comes
         -- first (migration 0047, `processing::CLAIM_REFRESH_DELAY_MS`).
         INSERT INTO admin_event_refresh (event_id, not_before)
         SELECT DISTINCT event_id, now() + interval '300 milliseconds'
         FROM claimed WHERE event_id IS NOT NULL
     ), counted AS (
         INSERT INTO task_status_counts (kind, status, shard, count)
         SELECT 'task', status, $5, sum(n) FROM moved
         GROUP BY status HAVING sum(n) <> 0
         ORDER BY status
         ON CONFLICT (kind, status, shard)
         DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
     )
     SELECT * FROM claimed"
    };
}

/// Where a claim may start its walk of the claim index: the first `(priority, run_at)`
/// of the claiming loop's previous claim.
///
/// Why: a claim marks its tasks running, which takes them out of the partial index
/// `task_queue_claim_idx`, but their old entries stay in the index (dead, then marked
/// dead by the scans that meet them) until VACUUM removes them. A claim that starts at
/// the index's front walks every entry the drain has claimed since the last VACUUM, so
/// its cost grew with the backlog (one claim after 100,000 of 200,000 tasks read 2,944
/// buffers in 19 ms). A hinted claim starts where the loop's last claim started, so it
/// walks only what the other claimers took since.
///
/// What it may miss: a task due *before* the hint that became pending after it was set
/// (a task of a more urgent priority, a rescued or released task, a priority changed by
/// an operator). So the hint is a shortcut, never the rule: the loop drops it when new
/// tasks are notified, when a hinted claim finds fewer tasks than it asked for, and at
/// the latest [`ClaimHint::LIFETIME`] after the last claim from the front. Such a task
/// waits at most that long; no task is ever skipped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimHint {
    pub priority: i16,
    pub run_at: DateTime<Utc>,
}

impl ClaimHint {
    /// How long a loop keeps claiming from hints before it claims from the front again.
    pub const LIFETIME: Duration = Duration::from_secs(1);

    /// The hint a claim leaves: its first task in claim order (`None` for no task).
    pub fn of(claimed: &[TaskRow]) -> Option<ClaimHint> {
        claimed
            .iter()
            .map(|t| ClaimHint {
                priority: t.priority,
                run_at: t.run_at,
            })
            .min()
    }
}

/// [`claim_deferred`] from a [`ClaimHint`] (from the index's front without one).
pub async fn claim_deferred_from(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
    hint: Option<ClaimHint>,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let Some(hint) = hint else {
        return claim_deferred(pool, worker, limit, lease, record_attempts).await;
    };
    let shard: i16 = rand::Rng::gen_range(&mut rand::thread_rng(), 0..processing::SHARDS);
    sqlx::query_as(CLAIM_DEFERRED_FROM_SQL)
        .bind(limit)
        .bind(lease.as_millis() as f64)
        .bind(worker)
        .bind(record_attempts)
        .bind(shard)
        .bind(hint.priority)
        .bind(hint.run_at)
        .fetch_all(pool)
        .await
}

/// See [`claim_deferred`] and the module's rules for plans.
pub const CLAIM_DEFERRED_SQL: &str = concat!(claim_ctes!(), claim_deferred_tail!());

/// [`CLAIM_DEFERRED_SQL`] that starts its walk of `task_queue_claim_idx` at a
/// [`ClaimHint`] (`$6`, `$7`) instead of at the index's front; see [`ClaimHint`].
pub const CLAIM_DEFERRED_FROM_SQL: &str = concat!(
    claim_ctes!(" AND (priority, run_at) >= ($6, $7)"),
    claim_deferred_tail!()
);

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

/// Marks attempts succeeded, fenced by attempt number.
///
/// Returns the ids accepted; an id missing from the result was superseded (its lease
/// expired and it was claimed again or rescued) and its completion was rejected.
pub async fn complete(pool: &PgPool, done: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sqlx::query_as::<_, (i64, Option<Uuid>, Option<DateTime<Utc>>)>(COMPLETE_SQL)
        .bind(done.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(done.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(done.iter().map(|d| d.claimed_at).collect::<Vec<_>>());
    finish(pool, sql, |(id, event_id, finished_at)| {
        let mut change = TaskChange::moved(event_id, "running", "succeeded");
        change.finished_at = finished_at;
        (id, change)
    })
    .await
}

/// See [`complete`].
pub const COMPLETE_SQL: &str = "WITH locked AS (
             SELECT t.id, t.status FROM unnest($1::bigint[], $2::int[], $3::timestamptz[]) AS c(id, attempt, claimed_at)
             JOIN task_queue t ON t.id = c.id AND t.attempt = c.attempt AND t.claimed_at = c.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t
         ), done AS (
             DELETE FROM task_queue t
             WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running'))
             RETURNING t.*
         ), kept AS (
             INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker, event_id, event_type, origin_task_id, idempotency_key, payload, institution_id, correlation_id, created_at, started_at, finished_at, last_error, claimed_at)
             SELECT id, kind, priority, 'succeeded', run_at, attempt, max_attempts, NULL, worker,
                    event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
                    correlation_id, created_at, started_at, now(), NULL, claimed_at
             FROM done
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'succeeded', finished_at = now(),
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM done WHERE a.task_id = done.id AND a.attempt = done.attempt
         )
         SELECT id, event_id, now() AS finished_at FROM done";

/// [`complete`] for tasks that no event issued (benchmarks, direct inserts): one
/// statement, in one round trip and without an open transaction, also records the
/// status counts and rollups ([`processing::record`] has nothing else to do for them).
/// Tasks that have an event are left alone (not in the result): finish them with
/// [`complete`], which updates their event's row.
pub async fn complete_eventless(pool: &PgPool, done: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let shard: i16 = rand::Rng::gen_range(&mut rand::thread_rng(), 0..processing::SHARDS);
    sqlx::query_scalar(COMPLETE_EVENTLESS_SQL)
        .bind(done.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(done.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(shard)
        .bind(done.iter().map(|d| d.claimed_at).collect::<Vec<_>>())
        .fetch_all(pool)
        .await
}

/// See [`complete_eventless`].
pub const COMPLETE_EVENTLESS_SQL: &str = "WITH locked AS (
             SELECT t.id, t.status, t.event_id FROM unnest($1::bigint[], $2::int[], $4::timestamptz[]) AS c(id, attempt, claimed_at)
             JOIN task_queue t ON t.id = c.id AND t.attempt = c.attempt AND t.claimed_at = c.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t
         ), done AS (
             DELETE FROM task_queue t
             WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running' AND event_id IS NULL))
             RETURNING t.*
         ), kept AS (
             INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker, event_id, event_type, origin_task_id, idempotency_key, payload, institution_id, correlation_id, created_at, started_at, finished_at, last_error, claimed_at)
             SELECT id, kind, priority, 'succeeded', run_at, attempt, max_attempts, NULL, worker,
                    event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
                    correlation_id, created_at, started_at, now(), NULL, claimed_at
             FROM done
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'succeeded', finished_at = now(),
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM done WHERE a.task_id = done.id AND a.attempt = done.attempt
         ), total AS (
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
         SELECT id FROM done";

/// Marks attempts succeeded, fenced like [`complete`], in one statement without an open
/// transaction: the task counters and rollups are updated in it, and the issuing
/// events' ids are queued in `admin_event_refresh` (see [`claim_deferred`]) rather than
/// their rows rewritten. The workers' completion. Returns the ids accepted.
pub async fn complete_deferred(pool: &PgPool, done: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let shard: i16 = rand::Rng::gen_range(&mut rand::thread_rng(), 0..processing::SHARDS);
    sqlx::query_scalar(COMPLETE_DEFERRED_SQL)
        .bind(done.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(done.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(shard)
        .bind(done.iter().map(|d| d.claimed_at).collect::<Vec<_>>())
        .fetch_all(pool)
        .await
}

/// See [`complete_deferred`].
pub const COMPLETE_DEFERRED_SQL: &str = "WITH locked AS (
             SELECT t.id, t.status FROM unnest($1::bigint[], $2::int[], $4::timestamptz[]) AS c(id, attempt, claimed_at)
             JOIN task_queue t ON t.id = c.id AND t.attempt = c.attempt AND t.claimed_at = c.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t
         ), done AS (
             DELETE FROM task_queue t
             WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running'))
             RETURNING t.*
         ), kept AS (
             INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker, event_id, event_type, origin_task_id, idempotency_key, payload, institution_id, correlation_id, created_at, started_at, finished_at, last_error, claimed_at)
             SELECT id, kind, priority, 'succeeded', run_at, attempt, max_attempts, NULL, worker,
                    event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
                    correlation_id, created_at, started_at, now(), NULL, claimed_at
             FROM done
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'succeeded', finished_at = now(),
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM done WHERE a.task_id = done.id AND a.attempt = done.attempt
         ), queued AS (
             INSERT INTO admin_event_refresh (event_id)
             SELECT DISTINCT event_id FROM done WHERE event_id IS NOT NULL
         ), total AS (
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
         SELECT id FROM done";

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
    let sql =
        sqlx::query_as::<_, (i64, Option<Uuid>, String, Option<DateTime<Utc>>, String)>(FAIL_SQL)
            .bind(failed.iter().map(|f| f.id).collect::<Vec<_>>())
            .bind(failed.iter().map(|f| f.attempt).collect::<Vec<_>>())
            .bind(failed.iter().map(|f| f.error.as_str()).collect::<Vec<_>>())
            .bind(
                failed
                    .iter()
                    .map(|f| f.retry_after.map(|d| d.as_millis() as f64))
                    .collect::<Vec<_>>(),
            )
            .bind(failed.iter().map(|f| f.claimed_at).collect::<Vec<_>>())
            .bind(failed.iter().map(|f| f.spare).collect::<Vec<_>>())
            .bind(failed.iter().map(|f| f.dead).collect::<Vec<_>>());
    finish(pool, sql, |(id, event_id, status, finished_at, error)| {
        let mut change = TaskChange::moved(event_id, "running", &status);
        change.finished_at = finished_at;
        change.error = Some(error);
        (id, change)
    })
    .await
}

/// See [`fail`].
pub const FAIL_SQL: &str = "WITH f AS (
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
             INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker, event_id, event_type, origin_task_id, idempotency_key, payload, institution_id, correlation_id, created_at, started_at, finished_at, last_error, claimed_at)
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
         FROM updated";

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
    sqlx::query_scalar(HEARTBEAT_SQL)
        .bind(running.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(running.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(lease.as_millis() as f64)
        .bind(running.iter().map(|d| d.claimed_at).collect::<Vec<_>>())
        .fetch_all(pool)
        .await
}

/// See [`heartbeat`].
pub const HEARTBEAT_SQL: &str = "WITH locked AS (
             SELECT t.id, t.status FROM unnest($1::bigint[], $2::int[], $4::timestamptz[]) AS c(id, attempt, claimed_at)
             JOIN task_queue t ON t.id = c.id AND t.attempt = c.attempt AND t.claimed_at = c.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t SKIP LOCKED
         )
         UPDATE task_queue t SET lease_until = now() + $3 * interval '1 millisecond'
         WHERE t.id = ANY(ARRAY(SELECT id FROM locked WHERE status = 'running'))
         RETURNING t.id";

/// Gives running attempts back (graceful shutdown before they finished): the task is
/// pending again at once and the attempt does not count against its budget.
pub async fn release(pool: &PgPool, running: &[Done]) -> Result<Vec<i64>, sqlx::Error> {
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sqlx::query_as::<_, (i64, Option<Uuid>, bool)>(RELEASE_SQL)
        .bind(running.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(running.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(running.iter().map(|d| d.claimed_at).collect::<Vec<_>>());
    finish(pool, sql, |(id, event_id, retried)| {
        // Given back, not failed: it stays `retrying` only if an earlier attempt failed.
        let to = if retried { "retrying" } else { "pending" };
        (id, TaskChange::moved(event_id, "running", to))
    })
    .await
}

/// See [`release`].
pub const RELEASE_SQL: &str = "WITH locked AS (
             SELECT t.id, t.status FROM unnest($1::bigint[], $2::int[], $3::timestamptz[]) AS c(id, attempt, claimed_at)
             JOIN task_queue t ON t.id = c.id AND t.attempt = c.attempt AND t.claimed_at = c.claimed_at
             ORDER BY t.id
             FOR UPDATE OF t
         ), released AS (
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
         SELECT id, event_id, retried FROM released";

/// Rescues up to `limit` running tasks whose lease has expired: pending again at once,
/// or `dead` if that was their last attempt. Any process may run it. Returns how many.
pub async fn rescue_expired(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let sql = sqlx::query_as::<_, (i64, Option<Uuid>, String, Option<DateTime<Utc>>, String)>(
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
             INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker, event_id, event_type, origin_task_id, idempotency_key, payload, institution_id, correlation_id, created_at, started_at, finished_at, last_error, claimed_at)
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
         FROM updated",
    )
    .bind(limit);
    let rescued = finish(pool, sql, |(id, event_id, status, finished_at, error)| {
        let mut change = TaskChange::moved(event_id, "running", &status);
        change.finished_at = finished_at;
        change.error = Some(error);
        (id, change)
    })
    .await?;
    if !rescued.is_empty() {
        tracing::warn!(count = rescued.len(), ids = ?rescued, "rescued tasks whose worker was lost");
    }
    Ok(rescued.len() as u64)
}

// The retry delay is part of a kind's retry policy: it lives in `kinds`, so that
// `processing` can use it without depending on the queue's statements.
pub use crate::kinds::backoff;
