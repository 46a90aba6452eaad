//! Projection `admin_events`: one row per event for the admin dashboard's event list.
//!
//! The projection writes what the event says (type, aggregate, institution, recorded
//! at, reprocessing links). The processing columns (status, processed at, duration,
//! error, task counts) are the processor's: created with defaults here, filled by it,
//! and carried over by a rebuild ([`PRESERVED_COLUMNS`]).

use std::collections::BTreeMap;

use aula_eventlog::subscription::BoxError;
use aula_eventlog::{Consumer, RecordedEvent};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::decode::reprocessed_from;
use crate::ProjectionError;

pub const NAME: &str = "admin_events";
pub const TABLES: &[&str] = &["admin_events"];
/// Columns the processor owns; a rebuild copies them from the live table by `event_id`.
pub const PRESERVED_COLUMNS: &[&str] = &[
    "status",
    "processed_at",
    "duration_ms",
    "error",
    "tasks_pending",
    "tasks_running",
    "tasks_succeeded",
    "tasks_failed",
];

#[derive(Debug, Default)]
pub struct AdminEvents;

#[async_trait::async_trait]
impl Consumer for AdminEvents {
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        Ok(handle(tx, events).await?)
    }
}

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let originals: Vec<Option<Uuid>> = events.iter().map(reprocessed_from).collect();
    // If the processor recorded the outcome first, the identity columns fill its row.
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, institution_id, recorded_at, reprocessed_from)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
             $7::uuid[], $8::timestamptz[], $9::uuid[])
         ON CONFLICT (event_id) DO UPDATE SET global_position = EXCLUDED.global_position,
             event_type = EXCLUDED.event_type, aggregate_type = EXCLUDED.aggregate_type,
             aggregate_id = EXCLUDED.aggregate_id, sequence = EXCLUDED.sequence,
             institution_id = EXCLUDED.institution_id, recorded_at = EXCLUDED.recorded_at,
             reprocessed_from = EXCLUDED.reprocessed_from",
    )
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.global_position()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.institution_id()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
    .bind(&originals)
    .execute(&mut *tx)
    .await?;
    let mut copies: BTreeMap<Uuid, i32> = BTreeMap::new();
    for original in originals.into_iter().flatten() {
        *copies.entry(original).or_default() += 1;
    }
    if !copies.is_empty() {
        sqlx::query(
            "UPDATE admin_events a SET copies = a.copies + c.n
             FROM unnest($1::uuid[], $2::int[]) AS c(event_id, n) WHERE a.event_id = c.event_id",
        )
        .bind(copies.keys().copied().collect::<Vec<_>>())
        .bind(copies.values().copied().collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One event as the admin list shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct AdminEventRow {
    pub event_id: Uuid,
    pub global_position: i64,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub institution_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
    pub reprocessed_from: Option<Uuid>,
    pub copies: i32,
    pub status: String,
    pub processed_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub tasks_pending: i32,
    pub tasks_running: i32,
    pub tasks_succeeded: i32,
    pub tasks_failed: i32,
}

const COLUMNS: &str = "event_id, global_position, event_type, aggregate_type, aggregate_id, sequence, \
    institution_id, recorded_at, reprocessed_from, copies, status, processed_at, duration_ms, error, \
    tasks_pending, tasks_running, tasks_succeeded, tasks_failed";

/// `duration = X`, `> X`, `< X` (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationOp {
    Eq,
    Gt,
    Lt,
}

/// The column the list is sorted by (ties broken by log position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSort {
    #[default]
    Position,
    RecordedAt,
    ProcessedAt,
    Duration,
    EventType,
    Status,
}

impl EventSort {
    /// The sort expression; must match an index of `0002_projections.sql`.
    fn expression(&self) -> &'static str {
        match self {
            EventSort::Position => "global_position",
            EventSort::RecordedAt => "recorded_at",
            EventSort::ProcessedAt => "COALESCE(processed_at, '-infinity'::timestamptz)",
            EventSort::Duration => "COALESCE(duration_ms, -1)",
            EventSort::EventType => "event_type",
            EventSort::Status => "status",
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            EventSort::Position | EventSort::Duration => "bigint",
            EventSort::RecordedAt | EventSort::ProcessedAt => "timestamptz",
            EventSort::EventType | EventSort::Status => "text",
        }
    }
}

/// Filters, sort and page of the admin event list. Every filter is optional; they
/// combine with AND.
#[derive(Debug, Clone, Default)]
pub struct EventListQuery {
    pub event_types: Vec<String>,
    pub recorded_from: Option<DateTime<Utc>>,
    pub recorded_to: Option<DateTime<Utc>>,
    pub processed_from: Option<DateTime<Utc>>,
    pub processed_to: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub duration: Option<(DurationOp, i64)>,
    pub institution_id: Option<Uuid>,
    /// `Some(true)`: only events with at least one failed task; `Some(false)`: none.
    pub has_failed_tasks: Option<bool>,
    /// Only the copies of this event.
    pub reprocessed_from: Option<Uuid>,
    pub sort: EventSort,
    pub descending: bool,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventPage {
    pub events: Vec<AdminEventRow>,
    /// Opaque cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventListError {
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Appends `query`'s filters (each as ` AND ...`) to a statement over `admin_events`.
/// Shared with bulk reprocessing, so a preview counts exactly what the list shows.
pub fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &EventListQuery) {
    if !query.event_types.is_empty() {
        sql.push(" AND event_type = ANY(")
            .push_bind(query.event_types.clone())
            .push(")");
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.recorded_to {
        sql.push(" AND recorded_at < ").push_bind(to);
    }
    // Processed-at and duration conditions are written over the sort expressions
    // (`COALESCE(...)`, see [`EventSort::expression`]) so their indexes serve them too;
    // each form is equivalent to the plain comparison (a missing value never matches).
    if let Some(from) = query.processed_from {
        sql.push(" AND COALESCE(processed_at, '-infinity'::timestamptz) >= ")
            .push_bind(from);
    }
    // "Not NULL" is written as a bound on the same expression (`> '-infinity'`, `>= 0`:
    // `0011_admin_event_invariants.sql` guarantees a real value is past it), so an index
    // walk starts past the pending events' block instead of filtering its way through it.
    if let Some(to) = query.processed_to {
        sql.push(
            " AND COALESCE(processed_at, '-infinity'::timestamptz) > '-infinity'::timestamptz \
             AND COALESCE(processed_at, '-infinity'::timestamptz) < ",
        )
        .push_bind(to);
    }
    if let Some(status) = &query.status {
        sql.push(" AND status = ").push_bind(status.clone());
    }
    match query.duration {
        Some((DurationOp::Eq, ms)) if ms >= 0 => {
            sql.push(" AND COALESCE(duration_ms, -1) = ").push_bind(ms);
        }
        Some((DurationOp::Gt, ms)) if ms >= -1 => {
            sql.push(" AND COALESCE(duration_ms, -1) > ").push_bind(ms);
        }
        Some((DurationOp::Lt, ms)) => {
            sql.push(" AND COALESCE(duration_ms, -1) >= 0 AND COALESCE(duration_ms, -1) < ")
                .push_bind(ms);
        }
        Some((op, ms)) => {
            sql.push(match op {
                DurationOp::Eq => " AND duration_ms = ",
                DurationOp::Gt => " AND duration_ms > ",
                DurationOp::Lt => " AND duration_ms < ",
            })
            .push_bind(ms);
        }
        None => {}
    }
    if let Some(id) = query.institution_id {
        sql.push(" AND institution_id = ").push_bind(id);
    }
    match query.has_failed_tasks {
        Some(true) => {
            sql.push(" AND tasks_failed > 0");
        }
        Some(false) => {
            sql.push(" AND tasks_failed = 0");
        }
        None => {}
    }
    if let Some(id) = query.reprocessed_from {
        sql.push(" AND reprocessed_from = ").push_bind(id);
    }
}

/// One page of the admin event list (keyset pagination: stable under inserts).
pub async fn list_admin_events(
    pool: &PgPool,
    query: &EventListQuery,
) -> Result<EventPage, EventListError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let expression = query.sort.expression();
    let time_range = query.recorded_from.is_some()
        || query.recorded_to.is_some()
        || query.processed_from.is_some()
        || query.processed_to.is_some();
    let natural = match query.sort {
        EventSort::RecordedAt => query.recorded_from.is_some() || query.recorded_to.is_some(),
        EventSort::ProcessedAt => query.processed_from.is_some() || query.processed_to.is_some(),
        _ => false,
    };
    // A time range matches a band of the log; walking another sort order's index
    // (which the planner likes under LIMIT) would skip everything outside the band
    // first. So under a time range, unless the sort is the range's own column, the
    // candidates come from the range's covering index (`0007_admin_event_list.sql`:
    // every filter and sort column, index-only), are sorted there, and only the page's
    // rows are read from the table. The `OFFSET 0` fence keeps the planner from
    // pushing the ORDER BY ... LIMIT into that scan.
    let fenced = time_range && !natural;
    // A filter that only processed events pass (a final status, a duration, a processed
    // time) sorted by processed time or duration: the pending events (no value, sorted
    // as the smallest) form a block at one end of that index, up to the whole backlog.
    // The bound below is implied by the filter (`0011_admin_event_invariants.sql`: an
    // event has a processed time and a duration exactly when it is not pending) and lets
    // the walk start past the block.
    let processed_only = query.status.as_deref().is_some_and(|s| s != "pending")
        || query.duration.is_some()
        || query.processed_from.is_some()
        || query.processed_to.is_some();
    let past_pending = match query.sort {
        EventSort::ProcessedAt if processed_only => Some("'-infinity'::timestamptz"),
        EventSort::Duration if processed_only => Some("-1"),
        _ => None,
    };
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(if fenced {
        format!(
            "SELECT {COLUMNS}, ({expression})::text AS sort_key FROM admin_events
             WHERE global_position IN (SELECT global_position FROM (SELECT global_position, {expression} AS sort_key
                 FROM admin_events WHERE true"
        )
    } else {
        format!("SELECT {COLUMNS}, ({expression})::text AS sort_key FROM admin_events WHERE true")
    });
    push_filters(&mut sql, query);
    if let Some(sentinel) = past_pending {
        sql.push(format!(" AND {expression} > {sentinel}"));
    }
    let direction = if query.descending { "DESC" } else { "ASC" };
    if fenced {
        // The cursor applies to the candidates, outside the fence: inside, its row
        // comparison would let the planner walk the sort column's index from the cursor
        // on, filtering on the range (measured: 250 ms, 644,052 rows removed, for a page
        // of a 7-day processed range sorted by status).
        // The candidates come in the range's index order, in the page's direction: the
        // other sort keys follow time closely (positions, recorded and processed times,
        // and every tie broken by position), so after the first page's worth of rows
        // nearly every candidate loses to the kept ones at the first comparison, and
        // the top-N sort stops copying rows (measured: 7-day processed range sorted by
        // status, 70 -> 38 ms).
        let range_order = if query.recorded_from.is_some() || query.recorded_to.is_some() {
            EventSort::RecordedAt.expression()
        } else {
            EventSort::ProcessedAt.expression()
        };
        sql.push(format!(
            " ORDER BY {range_order} {direction}, global_position {direction} OFFSET 0) candidates WHERE true"
        ));
    }
    if let Some(cursor) = &query.after {
        let (position, key) = cursor
            .split_once(':')
            .and_then(|(p, k)| Some((p.parse::<i64>().ok()?, k.to_owned())))
            .ok_or(EventListError::BadCursor)?;
        let sorted_by = if fenced { "sort_key" } else { expression };
        sql.push(format!(
            " AND ({sorted_by}, global_position) {} (",
            if query.descending { "<" } else { ">" }
        ))
        .push_bind(key)
        .push(format!("::{}, ", query.sort.sql_type()))
        .push_bind(position)
        .push(")");
    }
    if fenced {
        sql.push(format!(
            " ORDER BY sort_key {direction}, global_position {direction} LIMIT "
        ))
        .push_bind(limit + 1)
        .push(")");
    }
    sql.push(format!(
        " ORDER BY {expression} {direction}, global_position {direction} LIMIT "
    ))
    .push_bind(limit + 1);
    // Not a prepared statement kept for reuse: PostgreSQL would switch it to a generic
    // plan after a few runs, and the best plan here depends on the values (how many
    // rows a filter keeps, where the cursor is): planned afresh each time, with them.
    let rows: Vec<SortedRow> = sql
        .build_query_as()
        .persistent(false)
        .fetch_all(pool)
        .await?;
    let has_more = rows.len() as i64 > limit;
    let mut next = None;
    let mut events = Vec::with_capacity(rows.len());
    for (index, row) in rows.into_iter().enumerate() {
        if index as i64 == limit {
            break;
        }
        if has_more && index as i64 == limit - 1 {
            next = Some(format!("{}:{}", row.row.global_position, row.sort_key));
        }
        events.push(row.row);
    }
    Ok(EventPage { events, next })
}

#[derive(sqlx::FromRow)]
struct SortedRow {
    #[sqlx(flatten)]
    row: AdminEventRow,
    sort_key: String,
}

/// How many events match the filters (sort and page ignored): the reprocess preview.
pub async fn count_admin_events(pool: &PgPool, query: &EventListQuery) -> Result<i64, sqlx::Error> {
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT count(*) FROM admin_events WHERE true");
    push_filters(&mut sql, query);
    sql.build_query_scalar().fetch_one(pool).await
}

/// One event's row.
pub async fn admin_event(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<AdminEventRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM admin_events WHERE event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(pool)
    .await
}

/// The reprocessed copies of an event, oldest first.
pub async fn event_copies(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Vec<AdminEventRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM admin_events WHERE reprocessed_from = $1 ORDER BY global_position"
    ))
    .bind(event_id)
    .fetch_all(pool)
    .await
}

/// Event counts per processing status (the dashboard header), over all events.
pub async fn status_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM admin_events GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
}
