//! Projection `admin_events`: one row per event for the admin dashboard's event list.
//!
//! The projection writes what the event says (type, aggregate, institution, recorded
//! at, reprocessing links). The processing columns (status, processed at, duration,
//! error, task counts) are the processor's: created with defaults here, filled by it,
//! and carried over by a rebuild ([`PRESERVED_COLUMNS`]).

use std::collections::BTreeMap;

use aula_eventlog::db::{page_size, Page, PageError};
use aula_eventlog::RecordedEvent;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::copy_rows::CopyRows;
use crate::decode::reprocessed_from;
use crate::ProjectionError;

mod list;
mod search;

// The search pattern of every list, kept at its old path for the callers of this list.
pub use crate::like_pattern;
pub use list::{
    list_admin_events, push_filters, DurationOp, EventListQuery, EventPage, EventSort, LATE,
    MIN_SEARCH_CHARS,
};
pub use search::search_text;

pub const NAME: &str = "admin_events";
pub const TABLES: &[&str] = &["admin_events", "admin_event_search"];
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

read_model_consumer!(AdminEvents);

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let originals: Vec<Option<Uuid>> = events.iter().map(reprocessed_from).collect();
    // Lock order (the processor's, `aula_processor::processing`): `admin_events` rows in
    // log order. The batch's rows are in log order, and the originals of its copies that
    // are not in it come before all of them (an original is committed before it can be
    // copied), so those are locked first, in log order; the copy counts below then take
    // no new lock. Otherwise a claim holding an original and waiting on its copy's row
    // could deadlock with this transaction.
    let batch: std::collections::HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    let earlier: Vec<Uuid> = originals
        .iter()
        .flatten()
        .filter(|id| !batch.contains(id))
        .copied()
        .collect();
    if !earlier.is_empty() {
        sqlx::query(
            "SELECT 1 FROM admin_events WHERE event_id = ANY($1)
             ORDER BY tx_id, global_position
             FOR UPDATE",
        )
        .bind(&earlier)
        .execute(&mut *tx)
        .await?;
    }
    // If the processor recorded the outcome first, the identity columns fill its row. It
    // wrote them from the same event, so they are normally equal already: then the row is
    // left as it is (the `WHERE`), since every new version of an `admin_events` row
    // writes an entry in each of its ten indexes.
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, institution_id, recorded_at, reprocessed_from, tx_id)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
             $7::uuid[], $8::timestamptz[], $9::uuid[], $10::bigint[])
         ON CONFLICT (event_id) DO UPDATE SET global_position = EXCLUDED.global_position,
             tx_id = EXCLUDED.tx_id,
             event_type = EXCLUDED.event_type, aggregate_type = EXCLUDED.aggregate_type,
             aggregate_id = EXCLUDED.aggregate_id, sequence = EXCLUDED.sequence,
             institution_id = EXCLUDED.institution_id, recorded_at = EXCLUDED.recorded_at,
             reprocessed_from = EXCLUDED.reprocessed_from
         WHERE (admin_events.global_position, admin_events.tx_id, admin_events.event_type,
                admin_events.aggregate_type, admin_events.aggregate_id, admin_events.sequence,
                admin_events.institution_id, admin_events.recorded_at, admin_events.reprocessed_from)
             IS DISTINCT FROM
               (EXCLUDED.global_position, EXCLUDED.tx_id, EXCLUDED.event_type,
                EXCLUDED.aggregate_type, EXCLUDED.aggregate_id, EXCLUDED.sequence,
                EXCLUDED.institution_id, EXCLUDED.recorded_at, EXCLUDED.reprocessed_from)",
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
    .bind(events.iter().map(|e| e.position.tx_id).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    // What the list's search reads: the payload's values, sensitive fields left out
    // ([`search_text`], the same text as the database's `aula_search_text`).
    sqlx::query(
        "INSERT INTO admin_event_search (global_position, body)
         SELECT * FROM unnest($1::bigint[], $2::text[])
         ON CONFLICT (global_position) DO NOTHING",
    )
    .bind(
        events
            .iter()
            .map(|e| e.global_position())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| search_text(&e.payload))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    add_copies(tx, &copies_in(&originals, events)).await
}

/// Per original: how many copies `events` add, and its latest (the batch is in log
/// order, so the last one seen). `originals` are the events' [`reprocessed_from`].
fn copies_in(originals: &[Option<Uuid>], events: &[RecordedEvent]) -> BTreeMap<Uuid, (i32, Uuid)> {
    let mut copies: BTreeMap<Uuid, (i32, Uuid)> = BTreeMap::new();
    for (original, copy) in originals
        .iter()
        .zip(events)
        .filter_map(|(o, e)| Some(((*o)?, e)))
    {
        let entry = copies.entry(original).or_insert((0, copy.event_id));
        entry.0 += 1;
        entry.1 = copy.event_id;
    }
    copies
}

/// Adds `copies` (from [`copies_in`]) to their originals' rows.
async fn add_copies(
    tx: &mut PgConnection,
    copies: &BTreeMap<Uuid, (i32, Uuid)>,
) -> Result<(), ProjectionError> {
    if !copies.is_empty() {
        sqlx::query(
            "UPDATE admin_events a SET copies = a.copies + c.n, latest_copy_id = c.latest
             FROM unnest($1::uuid[], $2::int[], $3::uuid[]) AS c(event_id, n, latest)
             WHERE a.event_id = c.event_id",
        )
        .bind(copies.keys().copied().collect::<Vec<_>>())
        .bind(copies.values().map(|c| c.0).collect::<Vec<_>>())
        .bind(copies.values().map(|c| c.1).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A rebuild's load of `events` into its empty copies of this projection's tables,
/// which no one else writes (the processor writes the live ones): the rows [`handle`]
/// leaves, by binary `COPY`s ([`crate::copy_rows`]). Each event is in the log once, so
/// its row is new: no upsert, and no lock order to keep. An original copied within the
/// batch gets its copy count with its row; only the originals of earlier batches are
/// updated, as [`handle`] does.
pub(crate) async fn load(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let originals: Vec<Option<Uuid>> = events.iter().map(reprocessed_from).collect();
    let mut copies = copies_in(&originals, events);
    let mut rows = CopyRows::new();
    for (event, original) in events.iter().zip(&originals) {
        let (count, latest) = match copies.remove(&event.event_id) {
            Some((count, latest)) => (count, Some(latest)),
            None => (0, None),
        };
        rows.row(12)
            .uuid(event.event_id)
            .bigint(event.global_position())
            .text(&event.event_type)
            .text(&event.aggregate_type)
            .text(&event.aggregate_id)
            .bigint(event.sequence)
            .opt_uuid(event.institution_id())
            .timestamptz(event.recorded_at)
            .opt_uuid(*original)
            .bigint(event.position.tx_id)
            .int(count)
            .opt_uuid(latest);
    }
    rows.copy_in(
        &mut *conn,
        "COPY admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, institution_id, recorded_at, reprocessed_from, tx_id, copies, latest_copy_id)
         FROM STDIN (FORMAT binary)",
    )
    .await?;
    let mut search = CopyRows::new();
    for event in events {
        search
            .row(2)
            .bigint(event.global_position())
            .text(&search_text(&event.payload));
    }
    search
        .copy_in(
            &mut *conn,
            "COPY admin_event_search (global_position, body) FROM STDIN (FORMAT binary)",
        )
        .await?;
    // What is left: originals of earlier batches.
    add_copies(conn, &copies).await
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
    /// The latest reprocessed copy of this event (originals only).
    pub latest_copy_id: Option<Uuid>,
    /// That copy's processing status, read with the page ([`with_copy_status`]).
    #[sqlx(skip)]
    pub latest_copy_status: Option<String>,
}

impl AdminEventRow {
    /// Whether its latest copy's tasks all succeeded: a failure reprocessing fixed.
    pub fn resolved_by_copy(&self) -> bool {
        self.latest_copy_status.as_deref() == Some("succeeded")
    }
}

const COLUMNS: &str = "event_id, global_position, event_type, aggregate_type, aggregate_id, sequence, \
    institution_id, recorded_at, reprocessed_from, copies, status, processed_at, duration_ms, error, \
    tasks_pending, tasks_running, tasks_succeeded, tasks_failed, latest_copy_id";

/// "Resolved by a copy": the event's latest copy succeeded. Written over the bare
/// table name, as every statement that takes [`push_filters`] reads `admin_events`
/// without an alias.
const RESOLVED: &str = "EXISTS (SELECT 1 FROM admin_events c \
    WHERE c.event_id = admin_events.latest_copy_id AND c.status = 'succeeded')";

/// Fills each row's `latest_copy_status` with one look-up for all of them.
pub async fn with_copy_status(
    pool: &PgPool,
    mut rows: Vec<AdminEventRow>,
) -> Result<Vec<AdminEventRow>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.latest_copy_id).collect();
    if ids.is_empty() {
        return Ok(rows);
    }
    let statuses: std::collections::HashMap<Uuid, String> =
        sqlx::query_as("SELECT event_id, status FROM admin_events WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    for row in &mut rows {
        row.latest_copy_status = row.latest_copy_id.and_then(|id| statuses.get(&id).cloned());
    }
    Ok(rows)
}

/// How many of `institution`'s events are `failed` now (copies' outcomes aside). The
/// platform's count comes from the rollups; an institution's header needs this one.
pub async fn failed_events(pool: &PgPool, institution: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM admin_events WHERE status = 'failed' AND institution_id = $1",
    )
    .bind(institution)
    .fetch_one(pool)
    .await
}

/// How many failed events their latest copy resolved (the header shows the failures
/// that are left: failed events minus these). Reads the failed events that have a
/// copy only (`admin_events_failed_copied_idx`).
pub async fn failures_resolved_by_copy(
    pool: &PgPool,
    institution: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM admin_events a JOIN admin_events c ON c.event_id = a.latest_copy_id
         WHERE a.status = 'failed' AND a.latest_copy_id IS NOT NULL AND c.status = 'succeeded'
           AND ($1::uuid IS NULL OR a.institution_id = $1)",
    )
    .bind(institution)
    .fetch_one(pool)
    .await
}

/// How many events match the filters (sort and page ignored): the reprocess preview.
pub async fn count_admin_events(pool: &PgPool, query: &EventListQuery) -> Result<i64, sqlx::Error> {
    let mut sql: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("SELECT count(*) FROM admin_events WHERE true");
    push_filters(&mut sql, query);
    sql.build_query_scalar().fetch_one(pool).await
}

/// One event's row.
pub async fn admin_event(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<AdminEventRow>, sqlx::Error> {
    let row: Option<AdminEventRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM admin_events WHERE event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    Ok(with_copy_status(pool, row.into_iter().collect())
        .await?
        .pop())
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
