//! Processing status of events, rollups and status counts, kept current by the
//! processor in the same transaction as every task change.
//!
//! Every statement of [`crate::queue`] that changes tasks (insert, claim, complete,
//! fail/retry/dead, release, rescue) and [`crate::reprocess::retry_task`] return the
//! changes they made ([`TaskChange`]: the event, the status before and after) and pass
//! them to [`record`] in their transaction, which:
//!
//! 1. updates the event's row in `admin_events` (the processing columns only): task
//!    counts by status (`failed` counts failed and dead tasks), recounted from the
//!    event's tasks (live and archived) after the row is locked, `status`,
//!    `processed_at`, `duration_ms`, `error`;
//! 2. adds to `processing_rollups` (per minute and status, the tasks and events that
//!    reached a final status);
//! 3. adds to `task_status_counts` (current counts by status of tasks and events).
//!
//! The workers' hot path is the exception (ADR 0001): their claims and successful
//! completions ([`crate::queue::claim_deferred`], [`crate::queue::complete_deferred`])
//! update the task counters in their one statement and *queue* the event's id in
//! `admin_event_refresh` instead of rewriting its row; [`run_refresher`] brings the rows
//! up to date in batches ([`refresh`], the same recount), so the admin view of those
//! events is behind by the refresher's pause. Failures, releases, rescues, inserts and
//! manual retries still record at once.
//!
//! ## The event's status
//! - `pending` while any of its tasks is pending or running (`processed_at` and
//!   `duration_ms` are NULL then);
//! - otherwise `failed` if any task failed or is dead, else `succeeded`;
//! - only the latest task of each kind counts: a manual retry's outcome replaces the
//!   retried task's, so an event whose failed task was retried with success is
//!   `succeeded` again and leaves the "has failed tasks" list ([`event_status`]);
//! - `processed_at` is when its last task finished; `duration_ms = processed_at -
//!   recorded_at`; `error` is the last error any of its tasks reported (kept after a
//!   later success, for the admin's information);
//! - an event that issues no task is `succeeded` when the reactions see it, with
//!   `processed_at = recorded_at` and `duration_ms = 0`; it counts as processed.
//!
//! An event is "seen" by the processor once its row has a task or a status other than
//! the projection's default `pending`; only seen events are in the event counts.
//!
//! ## Writes
//! The projection (`aula_projections::admin_events`) upserts the identity columns and
//! leaves these alone; this module upserts with `ON CONFLICT (event_id) DO UPDATE SET`
//! the processing columns only, so either side may come first. Per batch: one
//! `SELECT ... FOR UPDATE` of the rows, one recount of their tasks, then the `unnest`
//! upsert and the upserts into the counter tables in one statement
//! (`counters::write_rows_and_counters`).
//!
//! **Invariant (no deadlocks):** within a transaction, rows are locked tasks first (by
//! id), then `admin_events` in log order (`tx_id, global_position`, the order the
//! projection writes in), then `processing_rollups` and `task_status_counts`, each in
//! key order.

mod counters;
mod reads;
mod refresher;
mod upsert;

use std::collections::HashMap;

use aula_eventlog::metadata::REPROCESSED_FROM;
use aula_eventlog::RecordedEvent;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use counters::{write_rows_and_counters, Counters};
pub use reads::{local_midnight, processed_per_minute, processing_rate_today, status_counts};
pub use refresher::{
    analyze_queue, open_tasks, queue_refresh, refresh, refresh_all, run_refresher, vacuum_queue,
    ANALYZE_FROM, ANALYZE_GROWTH, CLAIM_REFRESH_DELAY_MS, KEEP_GOING, REFRESHERS, REFRESH_BATCH,
    VACUUM_AFTER,
};
use upsert::{RowColumns, UPSERT_EVENTS_SQL};

/// Counter rows per key: concurrent transactions pick different ones at random.
/// Readers sum over all of them.
pub const SHARDS: i16 = 32;

/// The workers' claims count on the shards below this one, and every other writer on
/// the shards from it up to [`SHARDS`].
///
/// Why apart: a claim commits without waiting for the WAL flush (see `worker`), but a
/// completion waits for it while it holds its counter rows, and a claim that drew the
/// same row waited for that flush. Sampling a drain of 100,000 tasks issued by events
/// (4 processes × 24), the claims spent more samples waiting on another transaction
/// (184) than running (96). Claims now wait at most for another claim's quick commit.
pub const CLAIM_SHARDS: i16 = 16;

/// A random shard for a claim's counts (see [`CLAIM_SHARDS`]).
pub(crate) fn claim_shard() -> i16 {
    rand::Rng::gen_range(&mut rand::thread_rng(), 0..CLAIM_SHARDS)
}

/// A random shard for every other writer's counts (see [`CLAIM_SHARDS`]).
pub(crate) fn shard() -> i16 {
    rand::Rng::gen_range(&mut rand::thread_rng(), CLAIM_SHARDS..SHARDS)
}

pub const KIND_EVENT: &str = "event";
pub const KIND_TASK: &str = "task";
/// The statuses [`status_counts`] always reports, per kind.
/// `retrying`: unfinished, and one of its tasks waits for a retry.
pub const EVENT_STATUSES: &[&str] = &["pending", "retrying", "succeeded", "failed"];
/// `retrying` is a pending task whose earlier attempt failed (`last_error` set); it is
/// counted apart from `pending`. `paused` tasks wait behind a paused kind.
pub const TASK_STATUSES: &[&str] = &[
    "pending",
    "retrying",
    "paused",
    "running",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
];

/// One task's change of status, as a queue statement made it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    pub event_id: Option<Uuid>,
    /// `None` when the task was inserted.
    pub from: Option<String>,
    pub to: String,
    /// Set when `to` is final (succeeded, failed, dead).
    pub finished_at: Option<DateTime<Utc>>,
    /// The attempt's error, when it failed.
    pub error: Option<String>,
}

impl TaskChange {
    pub fn inserted(event_id: Option<Uuid>) -> Self {
        Self {
            event_id,
            from: None,
            to: "pending".into(),
            finished_at: None,
            error: None,
        }
    }

    pub fn moved(event_id: Option<Uuid>, from: &str, to: &str) -> Self {
        Self {
            event_id,
            from: Some(from.into()),
            to: to.into(),
            finished_at: None,
            error: None,
        }
    }
}

fn is_final_task_status(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "dead" | "cancelled")
}

fn is_final_event_status(status: &str) -> bool {
    matches!(status, "succeeded" | "failed")
}

/// The start of `t`'s minute.
pub fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(60) * 60;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// What a batch's changes say about one event beyond its tasks' counts (which are
/// recounted from the tasks).
#[derive(Debug, Default, Clone)]
struct EventDelta {
    last_finished: Option<DateTime<Utc>>,
    error: Option<String>,
}

/// An event's `admin_events` row; decoded from the lock's statement, or from its
/// `to_jsonb` text when a caller's statement locked it ([`LockedRows`]).
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct Row {
    event_id: Uuid,
    global_position: i64,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    institution_id: Option<Uuid>,
    recorded_at: DateTime<Utc>,
    reprocessed_from: Option<Uuid>,
    status: String,
    processed_at: Option<DateTime<Utc>>,
    error: Option<String>,
    tasks_pending: i32,
    tasks_running: i32,
    tasks_succeeded: i32,
    tasks_failed: i32,
    tx_id: i64,
}

impl Row {
    fn counts(&self) -> [i32; 4] {
        [
            self.tasks_pending,
            self.tasks_running,
            self.tasks_succeeded,
            self.tasks_failed,
        ]
    }

    fn seen(&self) -> bool {
        self.counts().iter().any(|&n| n != 0) || self.status != "pending"
    }

    fn from_event(event: &RecordedEvent) -> Self {
        Row {
            event_id: event.event_id,
            global_position: event.global_position(),
            event_type: event.event_type.clone(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            institution_id: event.institution_id(),
            recorded_at: event.recorded_at,
            reprocessed_from: event
                .metadata
                .get(REPROCESSED_FROM)
                .and_then(serde_json::Value::as_str)
                .and_then(|id| id.parse().ok()),
            status: "pending".into(),
            processed_at: None,
            error: None,
            tasks_pending: 0,
            tasks_running: 0,
            tasks_succeeded: 0,
            tasks_failed: 0,
            tx_id: event.position.tx_id,
        }
    }
}

/// Records `changes` (and, from the reactions, the `events` of the batch, each of which
/// gets its row even if it issued no task) in the caller's transaction.
///
/// A change whose event has no `admin_events` row and is not among `events` (a task
/// issued before this module existed, with the projection behind) updates the counters
/// of tasks only.
pub async fn record(
    conn: &mut PgConnection,
    changes: &[TaskChange],
    events: &[RecordedEvent],
) -> Result<(), sqlx::Error> {
    record_with_inserted(conn, &[], changes, events, None).await?;
    Ok(())
}

/// [`record`] for the reactions' batch, whose tasks' insert returned `inserted` (`(id,
/// event_id)`, from [`crate::queue::INSERT_TASKS_SQL`]) and whose other `changes` are
/// the webhooks' tasks: the second half of the insert's duplicates' check (see
/// [`crate::queue::without_finished_duplicates`]) runs in the recount's statement, which
/// removes the inserted tasks whose (event, kind) finished meanwhile and leaves them out
/// of the counts. Returns how many of `inserted` remain.
///
/// `locked`: the events' rows, when the caller's statement that inserted the tasks also
/// locked them ([`lock_rows_sql!`]); `None` locks them here, one statement more.
pub(crate) async fn record_issued(
    conn: &mut PgConnection,
    inserted: &[(i64, Option<Uuid>)],
    changes: &[TaskChange],
    events: &[RecordedEvent],
    locked: Option<LockedRows>,
) -> Result<usize, sqlx::Error> {
    let dropped = record_with_inserted(conn, inserted, changes, events, locked).await?;
    Ok(inserted.len() - dropped.len())
}

/// [`record`] and [`record_issued`]; returns the ids of `inserted` it removed.
async fn record_with_inserted(
    conn: &mut PgConnection,
    inserted: &[(i64, Option<Uuid>)],
    changes: &[TaskChange],
    events: &[RecordedEvent],
    locked: Option<LockedRows>,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut counters = Counters::default();
    let mut deltas: HashMap<Uuid, EventDelta> = HashMap::new();
    for change in changes {
        if let Some(from) = &change.from {
            counters.status(KIND_TASK, from, -1);
        }
        counters.status(KIND_TASK, &change.to, 1);
        if is_final_task_status(&change.to) {
            if let Some(at) = change.finished_at {
                counters.rollup(at, KIND_TASK, &change.to, 1);
            }
        }
        let Some(event_id) = change.event_id else {
            continue;
        };
        let delta = deltas.entry(event_id).or_default();
        if let Some(at) = change.finished_at {
            delta.last_finished = delta.last_finished.max(Some(at));
        }
        if change.error.is_some() {
            delta.error.clone_from(&change.error);
        }
    }
    for event_id in inserted.iter().filter_map(|(_, event_id)| *event_id) {
        deltas.entry(event_id).or_default();
    }
    // Only tasks an event issued can be duplicates (the queue's `(event_id, kind)` key).
    let issued: Vec<i64> = inserted
        .iter()
        .filter(|(_, event_id)| event_id.is_some())
        .map(|(id, _)| *id)
        .collect();
    let mut ids: Vec<Uuid> = deltas.keys().copied().collect();
    ids.extend(events.iter().map(|e| e.event_id));
    let (rows, dropped) = if ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        event_rows(conn, &ids, &deltas, events, &issued, locked, &mut counters).await?
    };
    for (id, _) in inserted {
        if !dropped.contains(id) {
            counters.status(KIND_TASK, "pending", 1);
        }
    }
    // The rows and the counters in one statement, in the lock order (module docs).
    write_rows_and_counters(conn, &rows, &counters).await?;
    Ok(dropped)
}

/// The events' rows of the ids in the array parameter named (and `$and`), locked in log order (the
/// lock order, module docs), with the columns of `Row`. A macro, so that `concat!` can
/// join it into the reactions' insert (`crate::reactions`), which locks them after its
/// tasks' insert and saves the batch this statement's round trip.
macro_rules! lock_rows_sql {
    ($ids:literal) => {
        $crate::processing::lock_rows_sql!($ids, "")
    };
    // `$and`: more conditions (`AND ...`), on no column of the rows.
    ($ids:literal, $and:literal) => {
        concat!(
            "SELECT a.event_id, a.global_position, a.event_type, a.aggregate_type, a.aggregate_id,
                a.sequence, a.institution_id, a.recorded_at, a.reprocessed_from, a.status,
                a.processed_at, a.error, a.tasks_pending, a.tasks_running, a.tasks_succeeded,
                a.tasks_failed, a.tx_id
         FROM admin_events a
         WHERE a.event_id = ANY(",
            $ids,
            ") ",
            $and,
            "
         ORDER BY a.tx_id, a.global_position
         FOR UPDATE"
        )
    };
}

pub(crate) use lock_rows_sql;

/// The rows a caller's statement locked with [`lock_rows_sql!`] (each as its
/// `to_jsonb(...)::text`), and the ids it asked for: [`record_issued`] takes them instead
/// of locking the rows itself.
#[derive(Debug, Default)]
pub(crate) struct LockedRows {
    /// Sorted.
    ids: Vec<Uuid>,
    rows: Vec<Row>,
}

impl LockedRows {
    /// For the rows of `ids`, as the statement was asked for them.
    pub(crate) fn of(ids: &[Uuid]) -> LockedRows {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        LockedRows {
            ids,
            rows: Vec::new(),
        }
    }

    /// A locked row, as the statement returned it (`to_jsonb(row)::text`), in the
    /// statement's order (log order).
    pub(crate) fn push(&mut self, json: &str) -> Result<(), serde_json::Error> {
        self.rows.push(serde_json::from_str(json)?);
        Ok(())
    }
}

/// The tasks of each event (live and archived) by status bucket, and their last finish.
///
/// Only each kind's latest task counts: a manual retry is a new task of the same event
/// and kind (`origin_task_id`), and its outcome replaces the retried one's, so a failed
/// task retried with success leaves its event `succeeded` (issue #19). The retried
/// task keeps its own status and history in the task list.
macro_rules! recount_sql {
    ($queue_filter:literal) => {
        concat!(
            "SELECT event_id,
         count(*) FILTER (WHERE status IN ('pending', 'paused'))::int AS pending,
         count(*) FILTER (WHERE status = 'running')::int AS running,
         count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded,
         count(*) FILTER (WHERE status IN ('failed', 'dead'))::int AS failed,
         -- A parked task that failed before still waits for its retry (after the resume),
         -- and parking does not recount the event: the same count either way.
         count(*) FILTER (WHERE status IN ('pending', 'paused') AND last_error IS NOT NULL)::int
             AS retrying,
         max(finished_at) AS last_finished
     FROM (SELECT DISTINCT ON (event_id, kind) event_id, status, finished_at, last_error
           FROM (SELECT id, event_id, kind, status, finished_at, last_error FROM task_queue
                 WHERE event_id = ANY($1)",
            $queue_filter,
            "
                 UNION ALL
                 SELECT id, event_id, kind, status, finished_at, last_error FROM task_history
                 WHERE event_id = ANY($1)
                 UNION ALL
                 SELECT id, event_id, kind, status, finished_at, last_error FROM tasks_archive
                 WHERE event_id = ANY($1)) all_tasks
           ORDER BY event_id, kind, id DESC) t
     GROUP BY event_id"
        )
    };
}

const RECOUNT_SQL: &str = recount_sql!("");

/// [`RECOUNT_SQL`] for the reactions' batch ([`record_issued`]): first removes the tasks
/// of `$2` (just inserted) whose (event, kind) finished meanwhile, as
/// [`crate::queue::DROP_FINISHED_DUPLICATES_SQL`] does, and counts the rest. Each removed
/// task is a row of its own, with only `dropped_id`.
const RECOUNT_DROPPING_SQL: &str = concat!(
    "WITH dropped AS (",
    crate::queue::drop_finished_duplicates_sql!("$2"),
    ")
     SELECT event_id, pending, running, succeeded, failed, retrying, last_finished,
            NULL::bigint AS dropped_id
     FROM (",
    recount_sql!(" AND NOT (id = ANY(ARRAY(SELECT id FROM dropped)))"),
    ") counted
     UNION ALL
     SELECT NULL, 0, 0, 0, 0, 0, NULL, id FROM dropped"
);

/// An event's status from its latest tasks' counts (`[pending, running, succeeded,
/// failed]`, see `RECOUNT_SQL`): the one place that derives it.
///
/// `retrying` counts the waiting tasks among `pending` that failed before: while any
/// waits for its retry, the event is `retrying` (issue #19), not `pending`.
pub fn event_status(counts: [i32; 4], retrying: i32) -> &'static str {
    let [pending, running, _, failed] = counts;
    if pending + running > 0 {
        if retrying > 0 {
            "retrying"
        } else {
            "pending"
        }
    } else if failed > 0 {
        "failed"
    } else {
        "succeeded"
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Tally {
    /// `None` on [`RECOUNT_DROPPING_SQL`]'s rows of removed tasks.
    event_id: Option<Uuid>,
    pending: i32,
    running: i32,
    succeeded: i32,
    failed: i32,
    /// Among `pending` (paused ones included): waiting for a retry.
    retrying: i32,
    last_finished: Option<DateTime<Utc>>,
    /// A task [`RECOUNT_DROPPING_SQL`] removed.
    #[sqlx(default)]
    dropped_id: Option<i64>,
}

impl Tally {
    fn counts(&self) -> [i32; 4] {
        [self.pending, self.running, self.succeeded, self.failed]
    }
}

/// Brings the rows of `ids` (deduplicated here) up to date with their tasks, and the
/// rows of `events` (the reactions' batch) into existence.
async fn update_events(
    conn: &mut PgConnection,
    ids: &[Uuid],
    deltas: &HashMap<Uuid, EventDelta>,
    events: &[RecordedEvent],
    counters: &mut Counters,
) -> Result<(), sqlx::Error> {
    let (rows, _) = event_rows(conn, ids, deltas, events, &[], None, counters).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let columns = RowColumns::of(&rows);
    columns
        .bind(sqlx::query(UPSERT_EVENTS_SQL))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The rows of `ids` (deduplicated here) as their tasks say they are now, and the rows
/// of `events` (the reactions' batch), locked in log order; only those that changed,
/// sorted in log order (the lock order), their counts added to `counters`. With the
/// tasks of `issued` (just inserted by the reactions), whose duplicates the recount
/// removes ([`RECOUNT_DROPPING_SQL`]): the ids it removed. With `locked`, the rows a
/// statement of the caller's already locked, when it locked them all.
async fn event_rows(
    conn: &mut PgConnection,
    ids: &[Uuid],
    deltas: &HashMap<Uuid, EventDelta>,
    events: &[RecordedEvent],
    issued: &[i64],
    locked: Option<LockedRows>,
    counters: &mut Counters,
) -> Result<(Vec<Row>, Vec<i64>), sqlx::Error> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let existing: Vec<Row> = match locked {
        Some(locked) if ids.iter().all(|id| locked.ids.binary_search(id).is_ok()) => locked.rows,
        // Not every row was locked (never, from the reactions: their ids are the batch's).
        _ => {
            sqlx::query_as(lock_rows_sql!("$1"))
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let mut rows: HashMap<Uuid, (Row, bool)> = existing
        .into_iter()
        .map(|row| {
            let seen = row.seen();
            (row.event_id, (row, seen))
        })
        .collect();
    for event in events {
        rows.entry(event.event_id)
            .or_insert_with(|| (Row::from_event(event), false));
    }
    // The tasks of every event, recounted after the row locks (so the count sees every
    // committed change, and this transaction's own): a transaction that started earlier
    // may commit later, and the workers' claims and completions do not touch these rows
    // at all (they queue a refresh, see [`refresh`]).
    let present: Vec<Uuid> = rows.keys().copied().collect();
    let found: Vec<Tally> = if present.is_empty() && issued.is_empty() {
        Vec::new()
    } else if issued.is_empty() {
        sqlx::query_as(RECOUNT_SQL)
            .bind(&present)
            .fetch_all(&mut *conn)
            .await?
    } else {
        sqlx::query_as(RECOUNT_DROPPING_SQL)
            .bind(&present)
            .bind(issued)
            .fetch_all(&mut *conn)
            .await?
    };
    let mut tallies: HashMap<Uuid, Tally> = HashMap::with_capacity(found.len());
    let mut dropped = Vec::new();
    for tally in found {
        match (tally.event_id, tally.dropped_id) {
            (Some(event_id), _) => {
                tallies.insert(event_id, tally);
            }
            (None, Some(id)) => dropped.push(id),
            (None, None) => {}
        }
    }
    let mut new_rows: Vec<Row> = Vec::with_capacity(rows.len());
    for (event_id, (old, seen)) in rows {
        let delta = deltas.get(&event_id).cloned().unwrap_or_default();
        let tally = tallies.get(&event_id);
        let counts: [i32; 4] = tally.map_or([0; 4], Tally::counts);
        let total: i32 = counts.iter().sum();
        let status = event_status(counts, tally.map_or(0, |t| t.retrying));
        let old_processed = if seen && is_final_event_status(&old.status) {
            old.processed_at
        } else {
            None
        };
        let processed_at = if !is_final_event_status(status) {
            None
        } else if total == 0 {
            Some(old_processed.unwrap_or(old.recorded_at))
        } else {
            // The event's latest task of each kind decides, as for the status: the
            // recount sees this transaction's own changes, and a superseded task that
            // finishes late (two manual retries of one task running at once) must not
            // move the time. Only without a recount does this batch's own finish count.
            [
                tally.map_or(delta.last_finished, |t| t.last_finished),
                old_processed,
            ]
            .into_iter()
            .flatten()
            .max()
            .or(Some(old.recorded_at))
        };
        if seen
            && old.status == status
            && old.processed_at == processed_at
            && old.counts() == counts
            && delta.error.is_none()
        {
            // A refresh that found nothing new (the claim's and the completion's refresh
            // of a task both land in one batch, or another path got there first).
            continue;
        }
        if seen {
            counters.status(KIND_EVENT, &old.status, -1);
            if let (true, Some(at)) = (is_final_event_status(&old.status), old.processed_at) {
                counters.rollup(at, KIND_EVENT, &old.status, -1);
                counters.dashboard(old.institution_id, at, KIND_EVENT, &old.status, -1);
            }
        }
        counters.status(KIND_EVENT, status, 1);
        if let Some(at) = processed_at {
            counters.rollup(at, KIND_EVENT, status, 1);
            counters.dashboard(old.institution_id, at, KIND_EVENT, status, 1);
        }
        // The event's tasks that finished since its row was last written: the change
        // of its counts (finished tasks never go back), at their last finish.
        let task_time = delta
            .last_finished
            .or(tally.and_then(|t| t.last_finished))
            .or(processed_at)
            .unwrap_or(old.recorded_at);
        let before = if seen { old.counts() } else { [0; 4] };
        counters.dashboard(
            old.institution_id,
            task_time,
            KIND_TASK,
            "succeeded",
            i64::from(counts[2] - before[2]),
        );
        counters.dashboard(
            old.institution_id,
            task_time,
            KIND_TASK,
            "failed",
            i64::from(counts[3] - before[3]),
        );
        let error = delta.error.or(if seen { old.error } else { None });
        new_rows.push(Row {
            status: status.to_owned(),
            processed_at,
            error,
            tasks_pending: counts[0],
            tasks_running: counts[1],
            tasks_succeeded: counts[2],
            tasks_failed: counts[3],
            ..old
        });
    }
    new_rows.sort_by_key(|r| (r.tx_id, r.global_position));
    Ok((new_rows, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::utc;

    #[test]
    fn minutes_truncate() {
        assert_eq!(
            minute_of(utc("2026-11-22T02:30:59.999Z")),
            utc("2026-11-22T02:30:00Z")
        );
        assert_eq!(
            minute_of(utc("1969-12-31T23:59:30Z")),
            utc("1969-12-31T23:59:00Z")
        );
    }
}
