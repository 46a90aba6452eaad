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
//!   queue's unique index, then the history's, see `insert_tasks_unrecorded`).
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
//! - The workers use [`claim_for_workers`] and [`complete_deferred`]: the same
//!   one-statement shape, but the issuing events' rows are not touched at all; the
//!   completion queues their ids in `admin_event_refresh` for
//!   [`processing::run_refresher`], and the worker does for tasks it still runs a moment
//!   after their claim (ADR 0001). [`claim_deferred`] queues that claim's id itself, due a
//!   moment later. [`claim`] and [`complete`] stay the synchronous API (the event's row is
//!   current when they return).
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

use aula_eventlog::db::column;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
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

/// The reactions' insert of new tasks: an event issues a kind once, checked against the
/// queue's unique index and the history's key (see `insert_tasks_unrecorded`).
///
/// Both checks of the history ([`DROP_FINISHED_DUPLICATES_SQL`] too) probe its
/// `(event_id, kind)` key once per task: `OFFSET 0` keeps each EXISTS a per-row subplan,
/// which the planner would otherwise turn into a hash of the whole history (the insert:
/// a scan of every finished task per batch) or, while the history has no statistics yet
/// (a new database), a nested loop over all of it (the delete: 1.3 to 6 s per batch of
/// 500 tasks in `aula bench rush`, 17 of the run's 30 CPU seconds).
pub const INSERT_TASKS_SQL: &str = "INSERT INTO task_queue (kind, priority, max_attempts, run_at, event_id, event_type, idempotency_key,
                       payload, institution_id, correlation_id)
    SELECT kind, priority, max_attempts, COALESCE(run_at, now()), event_id, event_type, key,
           payload, institution_id, correlation_id
    FROM unnest($1::text[], $2::smallint[], $3::int[], $4::timestamptz[], $5::uuid[], $6::text[],
                $7::text[], $8::jsonb[], $9::uuid[], $10::uuid[])
         AS t(kind, priority, max_attempts, run_at, event_id, event_type, key, payload, institution_id, correlation_id)
    WHERE t.event_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM task_history h
        WHERE h.event_id = t.event_id AND h.kind = t.kind AND h.origin_task_id IS NULL
        OFFSET 0)
    ON CONFLICT (event_id, kind) WHERE origin_task_id IS NULL AND event_id IS NOT NULL DO NOTHING
    RETURNING id, event_id";

/// Removes the tasks just inserted (ids in the array parameter named) whose (event,
/// kind) finished meanwhile (moved to the history while the insert ran). A macro, so
/// that `concat!` can join it into the reactions' recount
/// ([`crate::processing::record_issued`]).
macro_rules! drop_finished_duplicates_sql {
    ($ids:literal) => {
        concat!(
            "DELETE FROM task_queue q
    WHERE q.id = ANY(",
            $ids,
            ") AND EXISTS (
        SELECT 1 FROM task_history h
        WHERE h.event_id = q.event_id AND h.kind = q.kind AND h.origin_task_id IS NULL
        OFFSET 0)
    RETURNING q.id"
        )
    };
}

pub(crate) use drop_finished_duplicates_sql;

/// Removes the tasks just inserted whose (event, kind) finished meanwhile (moved to the
/// history while the insert ran).
pub const DROP_FINISHED_DUPLICATES_SQL: &str = drop_finished_duplicates_sql!("$1");

/// [`insert_tasks`] without [`processing::record`]: the caller records the returned
/// changes in its transaction (the reactions add their events).
pub(crate) async fn insert_tasks_unrecorded(
    conn: &mut PgConnection,
    tasks: &[NewTask],
) -> Result<Vec<TaskChange>, sqlx::Error> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<(i64, Option<Uuid>)> =
        bind_new_tasks(sqlx::query_as(INSERT_TASKS_SQL), tasks)
            .fetch_all(&mut *conn)
            .await?;
    without_finished_duplicates(conn, inserted).await
}

/// Binds `tasks` as the parameters `$1` to `$10` of [`INSERT_TASKS_SQL`] (alone, or in a
/// statement that contains it).
pub(crate) fn bind_new_tasks<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    tasks: &'q [NewTask],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(column(tasks, |t| t.kind.as_str()))
        .bind(column(tasks, |t| t.priority))
        .bind(column(tasks, |t| t.max_attempts))
        .bind(column(tasks, |t| t.run_at))
        .bind(column(tasks, |t| t.event_id))
        .bind(column(tasks, |t| t.event_type.as_deref()))
        .bind(column(tasks, |t| t.idempotency_key.as_str()))
        .bind(column(tasks, |t| &t.payload))
        .bind(column(tasks, |t| t.institution_id))
        .bind(column(tasks, |t| t.correlation_id))
}

/// The changes of the tasks [`INSERT_TASKS_SQL`] returned (`(id, event_id)`), once the
/// event-issued ones whose (event, kind) finished meanwhile are removed again: the
/// second half of the insert's duplicates' check, in a statement of its own.
pub(crate) async fn without_finished_duplicates(
    conn: &mut PgConnection,
    inserted: Vec<(i64, Option<Uuid>)>,
) -> Result<Vec<TaskChange>, sqlx::Error> {
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
        sqlx::query_scalar(DROP_FINISHED_DUPLICATES_SQL)
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

/// The insert into `task_history` that every statement finishing a task starts its
/// history row with: the columns, in the order their `SELECT`s give them. A macro, so
/// that `concat!` can join it into a statement.
macro_rules! history_columns {
    () => {
        "INSERT INTO task_history (id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker, event_id, event_type, origin_task_id, idempotency_key, payload, institution_id, correlation_id, created_at, started_at, finished_at, last_error, claimed_at)"
    };
}

pub(crate) use history_columns;

mod claim;
mod finish;

pub use claim::{
    claim, claim_deferred, claim_deferred_at, claim_deferred_from, claim_for_workers,
    claim_for_workers_excluding, ClaimHint, ClaimStart, Notified,
    CLAIM_DEFERRED_BEFORE_EXCLUDING_SQL, CLAIM_DEFERRED_BEFORE_SQL, CLAIM_DEFERRED_EXCLUDING_SQL,
    CLAIM_DEFERRED_FROM_EXCLUDING_SQL, CLAIM_DEFERRED_FROM_SQL, CLAIM_DEFERRED_SQL, CLAIM_SQL,
};
pub use finish::{
    complete, complete_deferred, complete_eventless, fail, heartbeat, release, rescue_expired,
    Done, Failed, COMPLETE_DEFERRED_SQL, COMPLETE_EVENTLESS_SQL, COMPLETE_SQL, FAIL_SQL,
    HEARTBEAT_SQL, RELEASE_SQL,
};

// The retry delay is part of a kind's retry policy: it lives in `kinds`, so that
// `processing` can use it without depending on the queue's statements.
pub use crate::kinds::backoff;
