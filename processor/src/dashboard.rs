//! The dashboard's charts: processed and failed events and tasks per minute and per
//! hour, per institution, and the queue's depth by task kind (issue #23, migration
//! `0040_dashboard_rollups.sql`, `docs/adr/0002-dashboard-rollups.md`).
//!
//! **Where they are written:** beside the event's processing row, in
//! [`crate::processing`]'s `update_events`, which every change of an event's status goes
//! through: the refresher's batches (the workers' claims and completions, ADR 0001) and
//! the synchronous paths (failures, retries, rescues, the reactions' batch). There the
//! event's old and new status, its institution and its tasks' counts are already in
//! hand, so a rollup is a few more keys in the batch's counter upsert: no read, no extra
//! statement, and nothing on the workers' claim or completion statements.
//!
//! **Upkeep:** [`maintain`] (from the refresher's loop, once a minute, one process at a
//! time per database) deletes minute rows older than [`MINUTES_KEPT`], hour rows and
//! hourly depth samples older than [`HOURS_KEPT`], and samples the queue's depth.
//!
//! **Reads** ([`series`], [`queue_depth`]) touch only these tables: for one institution
//! (or the platform's total key) and a range, at most buckets × 4 × shards rows.

use aula_eventlog::db::try_transaction_lock;
use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// The `institution_id` of the platform's totals.
pub const ALL_INSTITUTIONS: Uuid = Uuid::max();
/// The `institution_id` of events (and tasks) of no institution.
pub const NO_INSTITUTION: Uuid = Uuid::nil();
/// Minute rows are kept this long (a day and a bit: "today" at any UTC offset).
pub const MINUTES_KEPT: Duration = Duration::hours(26);
/// Hour rows and hourly queue samples are kept this long.
pub const HOURS_KEPT: Duration = Duration::days(15);

/// A bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Width {
    Minute,
    Hour,
}

impl Width {
    pub fn as_str(self) -> &'static str {
        match self {
            Width::Minute => "minute",
            Width::Hour => "hour",
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            Width::Minute => Duration::minutes(1),
            Width::Hour => Duration::hours(1),
        }
    }

    /// The start of `t`'s bucket.
    pub fn bucket(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.duration_trunc(self.duration()).unwrap_or(t)
    }
}

/// One bucket of a series (zero-filled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub events_succeeded: i64,
    pub events_failed: i64,
    pub tasks_succeeded: i64,
    pub tasks_failed: i64,
}

/// The buckets of `width` from the one holding `to - count buckets` (exclusive of
/// older) to the one holding `to`, each with its counts: `count` points, oldest first.
pub async fn series(
    pool: &PgPool,
    institution: Option<Uuid>,
    width: Width,
    count: i64,
    to: DateTime<Utc>,
) -> Result<Vec<Point>, sqlx::Error> {
    let last = width.bucket(to);
    let first = last - width.duration() * (count.max(1) as i32 - 1);
    let rows: Vec<(DateTime<Utc>, String, String, i64)> = sqlx::query_as(
        "SELECT bucket, kind, status, sum(count)::bigint FROM dashboard_rollups
         WHERE width = $1 AND institution_id = $2 AND bucket >= $3 AND bucket <= $4
         GROUP BY bucket, kind, status",
    )
    .bind(width.as_str())
    .bind(institution.unwrap_or(ALL_INSTITUTIONS))
    .bind(first)
    .bind(last)
    .fetch_all(pool)
    .await?;
    let mut points: Vec<Point> = (0..count.max(1) as i32)
        .map(|i| Point {
            at: first + width.duration() * i,
            ..Point::default()
        })
        .collect();
    for (bucket, kind, status, n) in rows {
        let index = ((bucket - first).num_seconds() / width.duration().num_seconds()) as usize;
        let Some(point) = points.get_mut(index) else {
            continue;
        };
        match (kind.as_str(), status.as_str()) {
            ("event", "succeeded") => point.events_succeeded += n,
            ("event", "failed") => point.events_failed += n,
            ("task", "succeeded") => point.tasks_succeeded += n,
            ("task", "failed") => point.tasks_failed += n,
            _ => {}
        }
    }
    Ok(points)
}

/// Events of `institution` (or every institution) that finished since `since`, by
/// status: `(succeeded, failed)`, from the minute rows.
pub async fn finished_since(
    pool: &PgPool,
    institution: Option<Uuid>,
    kind: &str,
    since: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(sum(count) FILTER (WHERE status = 'succeeded'), 0)::bigint,
                COALESCE(sum(count) FILTER (WHERE status = 'failed'), 0)::bigint
         FROM dashboard_rollups
         WHERE width = 'minute' AND institution_id = $1 AND bucket >= $2 AND kind = $3",
    )
    .bind(institution.unwrap_or(ALL_INSTITUTIONS))
    .bind(since)
    .bind(kind)
    .fetch_one(pool)
    .await
}

/// One sample of the queue: unfinished tasks of one kind.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DepthSample {
    pub at: DateTime<Utc>,
    pub task_kind: String,
    pub pending: i64,
    pub running: i64,
}

/// The queue's depth by task kind from `from` on, one sample per bucket of `width`
/// (the latest in it), for `institution` or every institution.
pub async fn queue_depth(
    pool: &PgPool,
    institution: Option<Uuid>,
    width: Width,
    from: DateTime<Utc>,
) -> Result<Vec<DepthSample>, sqlx::Error> {
    sqlx::query_as(
        "WITH latest AS (
             SELECT date_trunc($1, minute) AS bucket, max(minute) AS minute
             FROM dashboard_queue_depth
             WHERE minute >= $2 AND ($3::uuid IS NULL OR institution_id = $3)
             GROUP BY 1
         )
         SELECT l.bucket AS at, d.task_kind, sum(d.pending)::bigint AS pending,
                sum(d.running)::bigint AS running
         FROM latest l
         JOIN dashboard_queue_depth d ON d.minute = l.minute
         WHERE ($3::uuid IS NULL OR d.institution_id = $3)
         GROUP BY l.bucket, d.task_kind
         ORDER BY l.bucket, d.task_kind",
    )
    .bind(width.as_str())
    .bind(from)
    .bind(institution)
    .fetch_all(pool)
    .await
}

/// The upkeep's advisory lock (two-key form, beside the refresher's `(…, 17)`).
const MAINTAIN_LOCK: (i32, i32) = (0x6175_6c61, 23);

/// Prunes old rows and samples the queue's depth, once per minute per database: a
/// process that finds the lock taken, or this minute sampled, does nothing.
///
/// The sample counts the unfinished tasks (`pending` and `running`, through the
/// queue's partial indexes), so it costs in proportion to the backlog, never to the
/// table, once a minute, off every worker's path; `/metrics` reads the queue the same
/// way (`metrics::queue_depth`).
pub async fn maintain(pool: &PgPool, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_transaction_lock(&mut tx, MAINTAIN_LOCK).await? {
        return Ok(false);
    }
    let minute = Width::Minute.bucket(now);
    let sampled: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dashboard_queue_depth WHERE minute = $1)")
            .bind(minute)
            .fetch_one(&mut *tx)
            .await?;
    if sampled {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO dashboard_queue_depth (minute, institution_id, task_kind, pending, running)
         SELECT $1, COALESCE(institution_id, $2), kind,
                count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'running')
         FROM (SELECT institution_id, kind, status FROM task_queue WHERE status = 'pending'
               UNION ALL
               SELECT institution_id, kind, status FROM task_queue WHERE status = 'running') t
         GROUP BY 2, 3
         UNION ALL
         -- An empty queue still leaves a sample, so the chart shows zero, not a gap.
         SELECT $1, $3, '', 0, 0
         ON CONFLICT DO NOTHING",
    )
    .bind(minute)
    .bind(NO_INSTITUTION)
    .bind(ALL_INSTITUTIONS)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM dashboard_rollups
         WHERE (width = 'minute' AND bucket < $1) OR (width = 'hour' AND bucket < $2)",
    )
    .bind(now - MINUTES_KEPT)
    .bind(now - HOURS_KEPT)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM dashboard_queue_depth
         WHERE minute < $2 OR (minute < $1 AND minute <> date_trunc('hour', minute))",
    )
    .bind(now - MINUTES_KEPT)
    .bind(now - HOURS_KEPT)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_truncate() {
        let t: DateTime<Utc> = "2026-11-22T02:30:59.999Z".parse().unwrap();
        assert_eq!(
            Width::Minute.bucket(t),
            "2026-11-22T02:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            Width::Hour.bucket(t),
            "2026-11-22T02:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
