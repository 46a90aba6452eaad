//! Projection `audit_log`: who did what and when, one row per event, from the
//! event's metadata (actor, institution, correlation and causation).

use aula_eventlog::db::{column, page_size, Page};
use aula_eventlog::{metadata, Actor, RecordedEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::copy_rows::CopyRows;
use crate::decode::reprocessed_from;
use crate::ProjectionError;

pub const NAME: &str = "audit_log";
pub const TABLES: &[&str] = &["audit_log"];

#[derive(Debug, Default)]
pub struct AuditLog;

read_model_consumer!(AuditLog);

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct AuditEntry {
    pub event_id: Uuid,
    pub global_position: i64,
    pub recorded_at: DateTime<Utc>,
    /// `user:<uuid>`, `system` or `public`, as stored.
    pub actor: Option<String>,
    pub actor_user_id: Option<Uuid>,
    pub institution_id: Option<Uuid>,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub correlation_id: Option<Uuid>,
    /// `request`, `event:<uuid>` or `task:<id>`.
    pub causation: Option<String>,
    pub request_id: Option<String>,
    pub reprocessed_from: Option<Uuid>,
}

impl AuditEntry {
    pub fn from_event(event: &RecordedEvent) -> AuditEntry {
        let row = AuditRow::of(event);
        AuditEntry {
            event_id: row.event_id,
            global_position: row.global_position,
            recorded_at: row.recorded_at,
            actor: row.actor.map(str::to_owned),
            actor_user_id: row.actor_user_id,
            institution_id: row.institution_id,
            event_type: row.event_type.to_owned(),
            aggregate_type: row.aggregate_type.to_owned(),
            aggregate_id: row.aggregate_id.to_owned(),
            sequence: row.sequence,
            correlation_id: row.correlation_id,
            causation: row.causation.map(str::to_owned),
            request_id: row.request_id.map(str::to_owned),
            reprocessed_from: row.reprocessed_from,
        }
    }
}

/// An event's audit row, borrowed from the event: the one derivation of what both
/// write paths (the live handler and a rebuild's bulk load) store.
struct AuditRow<'a> {
    event_id: Uuid,
    global_position: i64,
    recorded_at: DateTime<Utc>,
    actor: Option<&'a str>,
    actor_user_id: Option<Uuid>,
    institution_id: Option<Uuid>,
    event_type: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    correlation_id: Option<Uuid>,
    causation: Option<&'a str>,
    request_id: Option<&'a str>,
    reprocessed_from: Option<Uuid>,
}

impl<'a> AuditRow<'a> {
    fn of(event: &'a RecordedEvent) -> AuditRow<'a> {
        let text = |key: &str| event.metadata.get(key).and_then(Value::as_str);
        AuditRow {
            event_id: event.event_id,
            global_position: event.global_position(),
            recorded_at: event.recorded_at,
            actor: text(metadata::ACTOR),
            actor_user_id: match event.actor() {
                Some(Actor::User(id)) => Some(id),
                _ => None,
            },
            institution_id: event.institution_id(),
            event_type: &event.event_type,
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence,
            correlation_id: event.correlation_id(),
            causation: text(metadata::CAUSATION_ID),
            request_id: text(metadata::REQUEST_ID),
            reprocessed_from: reprocessed_from(event),
        }
    }
}

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let rows: Vec<AuditRow<'_>> = events.iter().map(AuditRow::of).collect();
    sqlx::query(
        "INSERT INTO audit_log (event_id, global_position, recorded_at, actor, actor_user_id, institution_id,
             event_type, aggregate_type, aggregate_id, sequence, correlation_id, causation, request_id, reprocessed_from)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::text[], $5::uuid[], $6::uuid[],
             $7::text[], $8::text[], $9::text[], $10::bigint[], $11::uuid[], $12::text[], $13::text[], $14::uuid[])
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(column(&rows, |r| r.event_id))
    .bind(column(&rows, |r| r.global_position))
    .bind(column(&rows, |r| r.recorded_at))
    .bind(column(&rows, |r| r.actor))
    .bind(column(&rows, |r| r.actor_user_id))
    .bind(column(&rows, |r| r.institution_id))
    .bind(column(&rows, |r| r.event_type))
    .bind(column(&rows, |r| r.aggregate_type))
    .bind(column(&rows, |r| r.aggregate_id))
    .bind(column(&rows, |r| r.sequence))
    .bind(column(&rows, |r| r.correlation_id))
    .bind(column(&rows, |r| r.causation))
    .bind(column(&rows, |r| r.request_id))
    .bind(column(&rows, |r| r.reprocessed_from))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A rebuild's load of `events` into its empty copy of `audit_log` (which no one else
/// writes): the rows [`handle`] would insert, by a binary `COPY` ([`crate::copy_rows`]).
/// Each event is in the log once, so no row can exist already.
pub(crate) async fn load(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let mut rows = CopyRows::new();
    for event in events {
        let row = AuditRow::of(event);
        rows.row(14)
            .uuid(row.event_id)
            .bigint(row.global_position)
            .timestamptz(row.recorded_at)
            .opt_text(row.actor)
            .opt_uuid(row.actor_user_id)
            .opt_uuid(row.institution_id)
            .text(row.event_type)
            .text(row.aggregate_type)
            .text(row.aggregate_id)
            .bigint(row.sequence)
            .opt_uuid(row.correlation_id)
            .opt_text(row.causation)
            .opt_text(row.request_id)
            .opt_uuid(row.reprocessed_from);
    }
    rows.copy_in(
        conn,
        "COPY audit_log (event_id, global_position, recorded_at, actor, actor_user_id, institution_id,
             event_type, aggregate_type, aggregate_id, sequence, correlation_id, causation, request_id,
             reprocessed_from)
         FROM STDIN (FORMAT binary)",
    )
    .await?;
    Ok(())
}

/// Filters of the audit log; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub institution_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub event_types: Vec<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub recorded_from: Option<DateTime<Utc>>,
    pub recorded_to: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Cursor: the `global_position` of the last entry of the previous page.
    pub after: Option<i64>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
}

/// A page of audit entries and the cursor of the next page (`None`: last page).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next: Option<i64>,
}

pub async fn audit_log(pool: &PgPool, query: &AuditQuery) -> Result<AuditPage, sqlx::Error> {
    let limit = page_size(query.limit);
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT event_id, global_position, recorded_at, actor, actor_user_id, institution_id, event_type,
                aggregate_type, aggregate_id, sequence, correlation_id, causation, request_id, reprocessed_from
         FROM audit_log WHERE true",
    );
    if let Some(id) = query.institution_id {
        sql.push(" AND institution_id = ").push_bind(id);
    }
    if let Some(id) = query.actor_user_id {
        sql.push(" AND actor_user_id = ").push_bind(id);
    }
    if let Some(id) = query.correlation_id {
        sql.push(" AND correlation_id = ").push_bind(id);
    }
    if !query.event_types.is_empty() {
        sql.push(" AND event_type = ANY(")
            .push_bind(query.event_types.clone())
            .push(")");
    }
    if let Some(t) = &query.aggregate_type {
        sql.push(" AND aggregate_type = ").push_bind(t.clone());
    }
    if let Some(id) = &query.aggregate_id {
        sql.push(" AND aggregate_id = ").push_bind(id.clone());
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.recorded_to {
        sql.push(" AND recorded_at < ").push_bind(to);
    }
    if let Some(after) = query.after {
        sql.push(if query.ascending {
            " AND global_position > "
        } else {
            " AND global_position < "
        })
        .push_bind(after);
    }
    sql.push(if query.ascending {
        " ORDER BY global_position ASC"
    } else {
        " ORDER BY global_position DESC"
    });
    sql.push(" LIMIT ").push_bind(limit + 1);
    let rows: Vec<AuditEntry> = sql.build_query_as().fetch_all(pool).await?;
    let page = Page::from_overfetch(rows, limit, |e| e.global_position);
    Ok(AuditPage {
        entries: page.rows,
        next: page.next,
    })
}
