//! Projection `audit_log`: who did what and when, one row per event, from the
//! event's metadata (actor, institution, correlation and causation).

use aula_eventlog::db::column;
use aula_eventlog::{metadata, Actor, RecordedEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

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
        let text = |key: &str| {
            event
                .metadata
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        AuditEntry {
            event_id: event.event_id,
            global_position: event.global_position(),
            recorded_at: event.recorded_at,
            actor: text(metadata::ACTOR),
            actor_user_id: match event.actor() {
                Some(Actor::User(id)) => Some(id),
                _ => None,
            },
            institution_id: event.institution_id(),
            event_type: event.event_type.clone(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            correlation_id: event.correlation_id(),
            causation: text(metadata::CAUSATION_ID),
            request_id: text(metadata::REQUEST_ID),
            reprocessed_from: reprocessed_from(event),
        }
    }
}

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let rows: Vec<AuditEntry> = events.iter().map(AuditEntry::from_event).collect();
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
    .bind(column(&rows, |r| r.actor.as_deref()))
    .bind(column(&rows, |r| r.actor_user_id))
    .bind(column(&rows, |r| r.institution_id))
    .bind(column(&rows, |r| r.event_type.as_str()))
    .bind(column(&rows, |r| r.aggregate_type.as_str()))
    .bind(column(&rows, |r| r.aggregate_id.as_str()))
    .bind(column(&rows, |r| r.sequence))
    .bind(column(&rows, |r| r.correlation_id))
    .bind(column(&rows, |r| r.causation.as_deref()))
    .bind(column(&rows, |r| r.request_id.as_deref()))
    .bind(column(&rows, |r| r.reprocessed_from))
    .execute(&mut *tx)
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
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
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
    let mut entries: Vec<AuditEntry> = sql.build_query_as().fetch_all(pool).await?;
    let next = if entries.len() as i64 > limit {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.global_position)
    } else {
        None
    };
    Ok(AuditPage { entries, next })
}
