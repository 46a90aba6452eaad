//! The counter tables a [`record`](super::record) or a refresh adds to, in one order
//! (`processing_rollups`, `dashboard_rollups`, `task_status_counts`), each in key order:
//! the deltas of a batch, then one upsert per table on a random shard.
//! [`write_rows_and_counters`] writes the events' rows and the three tables in one
//! statement, in that same order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use aula_eventlog::db::column;

use super::minute_of;
use crate::dashboard;

/// A key of `dashboard_rollups`, in its primary key's order (the lock order).
pub(super) type DashboardKey = (
    &'static str,
    Uuid,
    DateTime<Utc>,
    &'static str,
    &'static str,
);

/// Counter deltas keyed in lock order.
#[derive(Debug, Default)]
pub(super) struct Counters {
    rollups: BTreeMap<(DateTime<Utc>, &'static str, String), i64>,
    statuses: BTreeMap<(&'static str, String), i64>,
    dashboard: BTreeMap<DashboardKey, i64>,
}

impl Counters {
    /// Adds `n` finished events or tasks (`status` succeeded or failed) at `at` to the
    /// dashboard's minute and hour rows of `institution` and of the platform's total.
    pub(super) fn dashboard(
        &mut self,
        institution: Option<Uuid>,
        at: DateTime<Utc>,
        kind: &'static str,
        status: &str,
        n: i64,
    ) {
        let status = match status {
            "succeeded" => "succeeded",
            "failed" | "dead" => "failed",
            _ => return,
        };
        if n == 0 {
            return;
        }
        let institution = institution.unwrap_or(dashboard::NO_INSTITUTION);
        for width in [dashboard::Width::Minute, dashboard::Width::Hour] {
            for key in [institution, dashboard::ALL_INSTITUTIONS] {
                *self
                    .dashboard
                    .entry((width.as_str(), key, width.bucket(at), kind, status))
                    .or_default() += n;
            }
        }
    }

    pub(super) fn rollup(&mut self, at: DateTime<Utc>, kind: &'static str, status: &str, n: i64) {
        *self
            .rollups
            .entry((minute_of(at), kind, status.to_owned()))
            .or_default() += n;
    }

    pub(super) fn status(&mut self, kind: &'static str, status: &str, n: i64) {
        *self.statuses.entry((kind, status.to_owned())).or_default() += n;
    }
}

pub(super) async fn write_counters(
    conn: &mut PgConnection,
    counters: &Counters,
) -> Result<(), sqlx::Error> {
    let shard = super::shard();
    if nonzero(&counters.rollups).next().is_some() {
        counters
            .bind_rollups(sqlx::query(
                "INSERT INTO processing_rollups (minute, kind, status, shard, count)
                 SELECT minute, kind, status, $5, n
                 FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY
                     AS r(minute, kind, status, n, ord)
                 ORDER BY ord
                 ON CONFLICT (minute, kind, status, shard)
                 DO UPDATE SET count = processing_rollups.count + EXCLUDED.count",
            ))
            .bind(shard)
            .execute(&mut *conn)
            .await?;
    }
    // The dashboard's rollups after `processing_rollups`, before `task_status_counts`:
    // the counter tables in one order, each in key order.
    if nonzero(&counters.dashboard).next().is_some() {
        counters
            .bind_dashboard(sqlx::query(
                "INSERT INTO dashboard_rollups (width, institution_id, bucket, kind, status, shard, count)
                 SELECT width, institution_id, bucket, kind, status, $7, n
                 FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[])
                     WITH ORDINALITY AS r(width, institution_id, bucket, kind, status, n, ord)
                 ORDER BY ord
                 ON CONFLICT (width, institution_id, bucket, kind, status, shard)
                 DO UPDATE SET count = dashboard_rollups.count + EXCLUDED.count",
            ))
            .bind(shard)
            .execute(&mut *conn)
            .await?;
    }
    if nonzero(&counters.statuses).next().is_some() {
        counters
            .bind_statuses(sqlx::query(
                "INSERT INTO task_status_counts (kind, status, shard, count)
                 SELECT kind, status, $4, n
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS r(kind, status, n, ord)
                 ORDER BY ord
                 ON CONFLICT (kind, status, shard)
                 DO UPDATE SET count = task_status_counts.count + EXCLUDED.count",
            ))
            .bind(shard)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The entries of `deltas` that change a count, in key order.
fn nonzero<K>(deltas: &BTreeMap<K, i64>) -> impl Iterator<Item = (&K, i64)> {
    deltas
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(k, n)| (k, *n))
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl Counters {
    /// Binds the `processing_rollups` deltas as four arrays: minutes, kinds, statuses,
    /// counts.
    fn bind_rollups<'q>(&'q self, query: Query<'q>) -> Query<'q> {
        let deltas: Vec<_> = nonzero(&self.rollups).collect();
        query
            .bind(column(&deltas, |((m, _, _), _)| *m))
            .bind(column(&deltas, |((_, k, _), _)| *k))
            .bind(column(&deltas, |((_, _, s), _)| s.as_str()))
            .bind(column(&deltas, |(_, n)| *n))
    }

    /// Binds the `dashboard_rollups` deltas as six arrays: widths, institutions,
    /// buckets, kinds, statuses, counts.
    fn bind_dashboard<'q>(&'q self, query: Query<'q>) -> Query<'q> {
        let deltas: Vec<_> = nonzero(&self.dashboard).collect();
        query
            .bind(column(&deltas, |((w, ..), _)| *w))
            .bind(column(&deltas, |((_, i, ..), _)| *i))
            .bind(column(&deltas, |((_, _, b, ..), _)| *b))
            .bind(column(&deltas, |((_, _, _, k, _), _)| *k))
            .bind(column(&deltas, |((.., s), _)| *s))
            .bind(column(&deltas, |(_, n)| *n))
    }

    /// Binds the `task_status_counts` deltas as three arrays: kinds, statuses, counts.
    fn bind_statuses<'q>(&'q self, query: Query<'q>) -> Query<'q> {
        let deltas: Vec<_> = nonzero(&self.statuses).collect();
        query
            .bind(column(&deltas, |((k, _), _)| *k))
            .bind(column(&deltas, |((_, s), _)| s.as_str()))
            .bind(column(&deltas, |(_, n)| *n))
    }
}

/// The events' rows (`rows`, in log order) and the counters in one statement: one round
/// trip where [`super::update_events`] and [`write_counters`] take up to four.
///
/// The statement's parts are data-modifying CTEs, which PostgreSQL runs in an order of
/// its own choosing unless one reads another. So each reads the one before it in the
/// lock order (module docs of [`super`]) in a `WHERE` that names no column of its rows:
/// the planner makes that a one-time filter, evaluated before the part writes its
/// first row, even when it has none. The part before has then run to completion: the
/// events' rows, then `processing_rollups`, `dashboard_rollups`, `task_status_counts`.
pub(super) async fn write_rows_and_counters(
    conn: &mut PgConnection,
    rows: &[super::Row],
    counters: &Counters,
) -> Result<(), sqlx::Error> {
    if rows.is_empty()
        && nonzero(&counters.rollups).next().is_none()
        && nonzero(&counters.dashboard).next().is_none()
        && nonzero(&counters.statuses).next().is_none()
    {
        return Ok(());
    }
    let columns = super::RowColumns::of(rows);
    let query = columns.bind(sqlx::query(RECORD_SQL)).bind(super::shard());
    let query = counters.bind_rollups(query);
    let query = counters.bind_dashboard(query);
    let query = counters.bind_statuses(query);
    query.execute(&mut *conn).await?;
    Ok(())
}

/// [`write_rows_and_counters`]'s statement: $1 to $18 the rows (as
/// the processing module's upsert), $19 the shard, $20 to $23 the rollups, $24 to $29 the
/// dashboard's, $30 to $32 the status counts.
const RECORD_SQL: &str = concat!(
    "WITH event_rows AS (",
    super::upsert::upsert_events_sql!(),
    "
    RETURNING 1),
rollups AS (
    INSERT INTO processing_rollups (minute, kind, status, shard, count)
    SELECT minute, kind, status, $19, n
    FROM unnest($20::timestamptz[], $21::text[], $22::text[], $23::bigint[]) WITH ORDINALITY
        AS r(minute, kind, status, n, ord)
    WHERE (SELECT count(*) FROM event_rows) >= 0
    ORDER BY ord
    ON CONFLICT (minute, kind, status, shard)
    DO UPDATE SET count = processing_rollups.count + EXCLUDED.count
    RETURNING 1),
dashboard AS (
    INSERT INTO dashboard_rollups (width, institution_id, bucket, kind, status, shard, count)
    SELECT width, institution_id, bucket, kind, status, $19, n
    FROM unnest($24::text[], $25::uuid[], $26::timestamptz[], $27::text[], $28::text[], $29::bigint[])
        WITH ORDINALITY AS r(width, institution_id, bucket, kind, status, n, ord)
    WHERE (SELECT count(*) FROM rollups) >= 0
    ORDER BY ord
    ON CONFLICT (width, institution_id, bucket, kind, status, shard)
    DO UPDATE SET count = dashboard_rollups.count + EXCLUDED.count
    RETURNING 1),
statuses AS (
    INSERT INTO task_status_counts (kind, status, shard, count)
    SELECT kind, status, $19, n
    FROM unnest($30::text[], $31::text[], $32::bigint[]) WITH ORDINALITY AS r(kind, status, n, ord)
    WHERE (SELECT count(*) FROM dashboard) >= 0
    ORDER BY ord
    ON CONFLICT (kind, status, shard)
    DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
    RETURNING 1)
SELECT count(*) FROM statuses"
);
