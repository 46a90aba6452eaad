//! Processing status of events, rollups and status counts, kept current by the
//! processor in the same transaction as every task change.
//!
//! Every statement of [`crate::queue`] that changes tasks (insert, claim, complete,
//! fail/retry/dead, release, rescue) and [`crate::reprocess::retry_task`] return the
//! changes they made ([`TaskChange`]: the event, the status before and after) and pass
//! them to [`record`] in their transaction, which:
//!
//! 1. updates the event's row in `admin_events` (the processing columns only): task
//!    counts by status (`failed` counts failed and dead tasks), `status`, `processed_at`,
//!    `duration_ms`, `error`;
//! 2. adds to `processing_rollups` (per minute and status, the tasks and events that
//!    reached a final status);
//! 3. adds to `task_status_counts` (current counts by status of tasks and events).
//!
//! ## The event's status
//! - `pending` while any of its tasks is pending or running (`processed_at` and
//!   `duration_ms` are NULL then);
//! - otherwise `failed` if any task failed or is dead, else `succeeded`;
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
//! `SELECT ... FOR UPDATE` of the rows, one `unnest` upsert, one upsert into each counter
//! table.
//!
//! **Invariant (no deadlocks):** within a transaction, rows are locked tasks first (by
//! id), then `admin_events` in log order (`tx_id, global_position`, the order the
//! projection writes in), then `processing_rollups` and `task_status_counts`, each in
//! key order.

use std::collections::{BTreeMap, HashMap};

use aula_eventlog::RecordedEvent;
use chrono::{DateTime, Duration, FixedOffset, NaiveTime, Utc};
use rand::Rng;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::reactions::REPROCESSED_FROM;

/// Counter rows per key: concurrent transactions pick different ones at random.
pub const SHARDS: i16 = 16;

pub const KIND_EVENT: &str = "event";
pub const KIND_TASK: &str = "task";
/// The statuses [`status_counts`] always reports, per kind.
pub const EVENT_STATUSES: &[&str] = &["pending", "succeeded", "failed"];
pub const TASK_STATUSES: &[&str] = &["pending", "running", "succeeded", "failed", "dead"];

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
    matches!(status, "succeeded" | "failed" | "dead")
}

fn is_final_event_status(status: &str) -> bool {
    matches!(status, "succeeded" | "failed")
}

/// The start of `t`'s minute.
pub fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(60) * 60;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// Task count deltas of one event in a batch.
#[derive(Debug, Default, Clone)]
struct EventDelta {
    counts: [i32; 4],
    last_finished: Option<DateTime<Utc>>,
    error: Option<String>,
}

/// Index in `[pending, running, succeeded, failed]` (dead counts as failed).
fn bucket(status: &str) -> usize {
    match status {
        "pending" => 0,
        "running" => 1,
        "succeeded" => 2,
        _ => 3,
    }
}

#[derive(Debug, sqlx::FromRow)]
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

/// Counter deltas keyed in lock order.
#[derive(Debug, Default)]
struct Counters {
    rollups: BTreeMap<(DateTime<Utc>, &'static str, String), i64>,
    statuses: BTreeMap<(&'static str, String), i64>,
}

impl Counters {
    fn rollup(&mut self, at: DateTime<Utc>, kind: &'static str, status: &str, n: i64) {
        *self
            .rollups
            .entry((minute_of(at), kind, status.to_owned()))
            .or_default() += n;
    }

    fn status(&mut self, kind: &'static str, status: &str, n: i64) {
        *self.statuses.entry((kind, status.to_owned())).or_default() += n;
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
        if let Some(from) = &change.from {
            delta.counts[bucket(from)] -= 1;
        }
        delta.counts[bucket(&change.to)] += 1;
        if let Some(at) = change.finished_at {
            delta.last_finished = delta.last_finished.max(Some(at));
        }
        if change.error.is_some() {
            delta.error.clone_from(&change.error);
        }
    }
    for event in events {
        deltas.entry(event.event_id).or_default();
    }
    if !deltas.is_empty() {
        update_events(conn, &deltas, events, &mut counters).await?;
    }
    write_counters(conn, &counters).await
}

async fn update_events(
    conn: &mut PgConnection,
    deltas: &HashMap<Uuid, EventDelta>,
    events: &[RecordedEvent],
    counters: &mut Counters,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = deltas.keys().copied().collect();
    let existing: Vec<Row> = sqlx::query_as(
        "SELECT a.event_id, a.global_position, a.event_type, a.aggregate_type, a.aggregate_id,
                a.sequence, a.institution_id, a.recorded_at, a.reprocessed_from, a.status,
                a.processed_at, a.error, a.tasks_pending, a.tasks_running, a.tasks_succeeded,
                a.tasks_failed, a.tx_id
         FROM admin_events a
         WHERE a.event_id = ANY($1)
         ORDER BY a.tx_id, a.global_position
         FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
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
    // When a task finished, the event's last finish is read back (after the row lock, so
    // it sees every committed finish): a transaction that started earlier may commit later.
    let finishing: Vec<Uuid> = deltas
        .iter()
        .filter(|(id, d)| d.last_finished.is_some() && rows.contains_key(id))
        .map(|(id, _)| *id)
        .collect();
    let last_finish: HashMap<Uuid, DateTime<Utc>> = if finishing.is_empty() {
        HashMap::new()
    } else {
        let found: Vec<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT event_id, max(finished_at) FROM (
                 SELECT event_id, finished_at FROM tasks WHERE event_id = ANY($1)
                 UNION ALL
                 SELECT event_id, finished_at FROM tasks_archive WHERE event_id = ANY($1)
             ) t GROUP BY event_id",
        )
        .bind(&finishing)
        .fetch_all(&mut *conn)
        .await?;
        found
            .into_iter()
            .filter_map(|(id, at)| Some((id, at?)))
            .collect()
    };
    let mut new_rows: Vec<Row> = Vec::with_capacity(rows.len());
    for (event_id, (old, seen)) in rows {
        let delta = &deltas[&event_id];
        let base = if seen { old.counts() } else { [0; 4] };
        let counts: [i32; 4] = std::array::from_fn(|i| (base[i] + delta.counts[i]).max(0));
        let total: i32 = counts.iter().sum();
        let status = if counts[0] + counts[1] > 0 {
            "pending"
        } else if total > 0 && counts[3] > 0 {
            "failed"
        } else {
            "succeeded"
        };
        let old_processed = if seen && is_final_event_status(&old.status) {
            old.processed_at
        } else {
            None
        };
        let processed_at = if status == "pending" {
            None
        } else if total == 0 {
            Some(old_processed.unwrap_or(old.recorded_at))
        } else {
            [
                delta.last_finished,
                old_processed,
                last_finish.get(&event_id).copied(),
            ]
            .into_iter()
            .flatten()
            .max()
            .or(Some(old.recorded_at))
        };
        if seen {
            counters.status(KIND_EVENT, &old.status, -1);
            if let (true, Some(at)) = (is_final_event_status(&old.status), old.processed_at) {
                counters.rollup(at, KIND_EVENT, &old.status, -1);
            }
        }
        counters.status(KIND_EVENT, status, 1);
        if let Some(at) = processed_at {
            counters.rollup(at, KIND_EVENT, status, 1);
        }
        let error = delta.error.clone().or(if seen { old.error } else { None });
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
    let duration = |r: &Row| {
        r.processed_at
            .map(|p| (p - r.recorded_at).num_milliseconds().max(0))
    };
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, institution_id, recorded_at, reprocessed_from, status, processed_at, duration_ms,
             error, tasks_pending, tasks_running, tasks_succeeded, tasks_failed, tx_id)
         SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
             institution_id, recorded_at, reprocessed_from, status, processed_at, duration_ms,
             error, tasks_pending, tasks_running, tasks_succeeded, tasks_failed, tx_id
         FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
             $7::uuid[], $8::timestamptz[], $9::uuid[], $10::text[], $11::timestamptz[], $12::bigint[],
             $13::text[], $14::int[], $15::int[], $16::int[], $17::int[], $18::bigint[]) WITH ORDINALITY
             AS r(event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                  institution_id, recorded_at, reprocessed_from, status, processed_at, duration_ms,
                  error, tasks_pending, tasks_running, tasks_succeeded, tasks_failed, tx_id, ord)
         ORDER BY ord
         ON CONFLICT (event_id) DO UPDATE SET status = EXCLUDED.status,
             processed_at = EXCLUDED.processed_at, duration_ms = EXCLUDED.duration_ms,
             error = EXCLUDED.error, tasks_pending = EXCLUDED.tasks_pending,
             tasks_running = EXCLUDED.tasks_running, tasks_succeeded = EXCLUDED.tasks_succeeded,
             tasks_failed = EXCLUDED.tasks_failed",
    )
    .bind(new_rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.global_position).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.aggregate_type.as_str()).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.aggregate_id.as_str()).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.institution_id).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.reprocessed_from).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.processed_at).collect::<Vec<_>>())
    .bind(new_rows.iter().map(duration).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.tasks_pending).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.tasks_running).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.tasks_succeeded).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.tasks_failed).collect::<Vec<_>>())
    .bind(new_rows.iter().map(|r| r.tx_id).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_counters(conn: &mut PgConnection, counters: &Counters) -> Result<(), sqlx::Error> {
    let shard: i16 = rand::thread_rng().gen_range(0..SHARDS);
    let rollups: Vec<_> = counters.rollups.iter().filter(|(_, n)| **n != 0).collect();
    if !rollups.is_empty() {
        sqlx::query(
            "INSERT INTO processing_rollups (minute, kind, status, shard, count)
             SELECT minute, kind, status, $4, n
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $5::bigint[]) WITH ORDINALITY
                 AS r(minute, kind, status, n, ord)
             ORDER BY ord
             ON CONFLICT (minute, kind, status, shard)
             DO UPDATE SET count = processing_rollups.count + EXCLUDED.count",
        )
        .bind(rollups.iter().map(|((m, _, _), _)| *m).collect::<Vec<_>>())
        .bind(rollups.iter().map(|((_, k, _), _)| *k).collect::<Vec<_>>())
        .bind(
            rollups
                .iter()
                .map(|((_, _, s), _)| s.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(shard)
        .bind(rollups.iter().map(|(_, n)| **n).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let statuses: Vec<_> = counters.statuses.iter().filter(|(_, n)| **n != 0).collect();
    if !statuses.is_empty() {
        sqlx::query(
            "INSERT INTO task_status_counts (kind, status, shard, count)
             SELECT kind, status, $3, n
             FROM unnest($1::text[], $2::text[], $4::bigint[]) WITH ORDINALITY AS r(kind, status, n, ord)
             ORDER BY ord
             ON CONFLICT (kind, status, shard)
             DO UPDATE SET count = task_status_counts.count + EXCLUDED.count",
        )
        .bind(statuses.iter().map(|((k, _), _)| *k).collect::<Vec<_>>())
        .bind(
            statuses
                .iter()
                .map(|((_, s), _)| s.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(shard)
        .bind(statuses.iter().map(|(_, n)| **n).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The start of the local day containing `now`, for a zone `utc_offset_minutes` east of UTC.
pub fn local_midnight(now: DateTime<Utc>, utc_offset_minutes: i32) -> DateTime<Utc> {
    let offset = FixedOffset::east_opt(utc_offset_minutes * 60)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"));
    let local_date = now.with_timezone(&offset).date_naive();
    let midnight_local = local_date.and_time(NaiveTime::MIN);
    DateTime::<Utc>::from_naive_utc_and_offset(midnight_local, Utc)
        - Duration::minutes(i64::from(utc_offset_minutes))
}

/// Events processed (succeeded or failed) since local midnight, per hour elapsed since
/// then (at least one minute, so just after midnight the rate is not infinite). Reads
/// only `processing_rollups` (at most 1,440 minutes × statuses × shards rows).
pub async fn processing_rate_today(
    pool: &PgPool,
    now: DateTime<Utc>,
    utc_offset_minutes: i32,
) -> Result<f64, sqlx::Error> {
    let since = local_midnight(now, utc_offset_minutes);
    let processed: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(count), 0)::bigint FROM processing_rollups
         WHERE minute >= $1 AND minute <= $2 AND kind = 'event' AND status IN ('succeeded', 'failed')",
    )
    .bind(since)
    .bind(now)
    .fetch_one(pool)
    .await?;
    let hours = ((now - since).num_milliseconds() as f64 / 3_600_000.0).max(1.0 / 60.0);
    Ok(processed as f64 / hours)
}

/// Current counts by status: `(kind, status, count)` for kind `event` ([`EVENT_STATUSES`])
/// then `task` ([`TASK_STATUSES`]), every status listed (0 when none). Reads only
/// `task_status_counts`.
pub async fn status_counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, status, sum(count)::bigint FROM task_status_counts GROUP BY kind, status",
    )
    .fetch_all(pool)
    .await?;
    let mut out: Vec<(String, String, i64)> = EVENT_STATUSES
        .iter()
        .map(|s| (KIND_EVENT, *s))
        .chain(TASK_STATUSES.iter().map(|s| (KIND_TASK, *s)))
        .map(|(k, s)| (k.to_owned(), s.to_owned(), 0))
        .collect();
    for (kind, status, count) in rows {
        match out.iter_mut().find(|(k, s, _)| *k == kind && *s == status) {
            Some(slot) => slot.2 = count,
            None if count != 0 => out.push((kind, status, count)),
            None => {}
        }
    }
    Ok(out)
}

/// Events processed per minute from `from` (inclusive) to `to` (exclusive): `(minute,
/// status, count)`, from the rollups.
pub async fn processed_per_minute(
    pool: &PgPool,
    kind: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT minute, status, sum(count)::bigint FROM processing_rollups
         WHERE minute >= $1 AND minute < $2 AND kind = $3
         GROUP BY minute, status HAVING sum(count) <> 0 ORDER BY minute, status",
    )
    .bind(from)
    .bind(to)
    .bind(kind)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn local_midnight_follows_the_offset() {
        let now = utc("2026-11-22T02:30:00Z");
        assert_eq!(local_midnight(now, 0), utc("2026-11-22T00:00:00Z"));
        // UTC-3: local time is 23:30 on the 21st.
        assert_eq!(local_midnight(now, -180), utc("2026-11-21T03:00:00Z"));
        // UTC+5:30: local time is 08:00 on the 22nd.
        assert_eq!(local_midnight(now, 330), utc("2026-11-21T18:30:00Z"));
    }

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
