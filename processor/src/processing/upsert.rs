//! The upsert of the processing columns of `admin_events` (the other columns are the
//! projection's), alone or as the first part of [`super::counters`]' statement.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Row;

/// The upsert of the processing columns of `admin_events` from `unnest` ($1 to $18, see
/// [`RowColumns`]), in the rows' order (log order: the lock order). A macro, so that
/// `concat!` can join it into the statement of [`super::counters`].
macro_rules! upsert_events_sql {
    () => {
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
             tasks_failed = EXCLUDED.tasks_failed"
    };
}

pub(super) use upsert_events_sql;

pub(super) const UPSERT_EVENTS_SQL: &str = upsert_events_sql!();

/// The rows to upsert, column by column (the parameters $1 to $18 of
/// [`UPSERT_EVENTS_SQL`]).
pub(super) struct RowColumns {
    event_ids: Vec<Uuid>,
    positions: Vec<i64>,
    event_types: Vec<String>,
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    institutions: Vec<Option<Uuid>>,
    recorded: Vec<DateTime<Utc>>,
    reprocessed_from: Vec<Option<Uuid>>,
    statuses: Vec<String>,
    processed: Vec<Option<DateTime<Utc>>>,
    durations: Vec<Option<i64>>,
    errors: Vec<Option<String>>,
    pending: Vec<i32>,
    running: Vec<i32>,
    succeeded: Vec<i32>,
    failed: Vec<i32>,
    tx_ids: Vec<i64>,
}

impl RowColumns {
    pub(super) fn of(rows: &[Row]) -> Self {
        let duration = |r: &Row| {
            r.processed_at
                .map(|p| (p - r.recorded_at).num_milliseconds().max(0))
        };
        Self {
            event_ids: rows.iter().map(|r| r.event_id).collect(),
            positions: rows.iter().map(|r| r.global_position).collect(),
            event_types: rows.iter().map(|r| r.event_type.clone()).collect(),
            aggregate_types: rows.iter().map(|r| r.aggregate_type.clone()).collect(),
            aggregate_ids: rows.iter().map(|r| r.aggregate_id.clone()).collect(),
            sequences: rows.iter().map(|r| r.sequence).collect(),
            institutions: rows.iter().map(|r| r.institution_id).collect(),
            recorded: rows.iter().map(|r| r.recorded_at).collect(),
            reprocessed_from: rows.iter().map(|r| r.reprocessed_from).collect(),
            statuses: rows.iter().map(|r| r.status.clone()).collect(),
            processed: rows.iter().map(|r| r.processed_at).collect(),
            durations: rows.iter().map(duration).collect(),
            errors: rows.iter().map(|r| r.error.clone()).collect(),
            pending: rows.iter().map(|r| r.tasks_pending).collect(),
            running: rows.iter().map(|r| r.tasks_running).collect(),
            succeeded: rows.iter().map(|r| r.tasks_succeeded).collect(),
            failed: rows.iter().map(|r| r.tasks_failed).collect(),
            tx_ids: rows.iter().map(|r| r.tx_id).collect(),
        }
    }

    /// Binds the columns as the statement's first eighteen parameters.
    pub(super) fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.event_ids)
            .bind(&self.positions)
            .bind(&self.event_types)
            .bind(&self.aggregate_types)
            .bind(&self.aggregate_ids)
            .bind(&self.sequences)
            .bind(&self.institutions)
            .bind(&self.recorded)
            .bind(&self.reprocessed_from)
            .bind(&self.statuses)
            .bind(&self.processed)
            .bind(&self.durations)
            .bind(&self.errors)
            .bind(&self.pending)
            .bind(&self.running)
            .bind(&self.succeeded)
            .bind(&self.failed)
            .bind(&self.tx_ids)
    }
}
