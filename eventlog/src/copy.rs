//! Copies of stored events: the one writer of `events` beside the [`crate::CommandBus`].
//!
//! Reprocessing appends a copy of an event (its type, version and payload) in a stream
//! of its own, with metadata the caller derives from the original's. The caller chooses
//! the transaction: on a connection in autocommit the copy commits when the INSERT
//! returns; inside a transaction it commits with it.

use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::column;

/// A copy appended by [`append_copy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedCopy {
    pub event_id: Uuid,
    pub global_position: i64,
    /// The original's (and so the copy's) event type.
    pub event_type: String,
}

/// Appends a copy of the event `original` as sequence 1 of the stream
/// (`aggregate_type`, a new UUID), with the original's metadata as `metadata` leaves it
/// (a metadata that is not an object starts empty). `None` when there is no such event.
pub async fn append_copy(
    conn: &mut PgConnection,
    original: Uuid,
    aggregate_type: &str,
    metadata: impl FnOnce(&mut Map<String, Value>),
) -> Result<Option<AppendedCopy>, sqlx::Error> {
    let row: Option<(String, String, Value, Value)> = sqlx::query_as(
        "SELECT event_type, event_version, payload, metadata FROM events WHERE event_id = $1",
    )
    .bind(original)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((event_type, event_version, payload, stored)) = row else {
        return Ok(None);
    };
    let mut map = match stored {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    metadata(&mut map);
    let (event_id, global_position): (Uuid, i64) = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ($1, $2, 1, $3, $4, $5, $6)
         RETURNING event_id, global_position",
    )
    .bind(aggregate_type)
    .bind(Uuid::new_v4().to_string())
    .bind(&event_type)
    .bind(&event_version)
    .bind(&payload)
    .bind(Value::Object(map))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(AppendedCopy {
        event_id,
        global_position,
        event_type,
    }))
}

/// An event without an aggregate, appended by [`append_records`]: an operator's record
/// (a webhook endpoint's change, a queue control) whose state lives in its owner's
/// tables and which nothing replays, stored so the audit log lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
}

/// Appends `records` to the stream (`aggregate_type`, `aggregate_id`) after its last
/// event, with one `metadata` for all, in one INSERT. The caller's connection chooses
/// the transaction (the records commit with the change they describe) and serializes
/// writers of one stream itself (a concurrent append to the same stream fails on the
/// stream's unique sequence, as a lost race of the [`crate::CommandBus`] does).
pub async fn append_records(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    records: &[Record],
    metadata: &Value,
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let last: i64 = sqlx::query_scalar(
        "SELECT COALESCE(max(sequence), 0) FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(&mut *conn)
    .await?;
    let sequences: Vec<i64> = (1..=records.len() as i64).map(|i| last + i).collect();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT $1, $2, s, t, v, p, $7
         FROM unnest($3::bigint[], $4::text[], $5::text[], $6::json[]) AS e(s, t, v, p)",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(&sequences)
    .bind(column(records, |r| r.event_type.as_str()))
    .bind(column(records, |r| r.event_version.as_str()))
    .bind(column(records, |r| &r.payload))
    .bind(metadata)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
