//! Copies of stored events: the one writer of `events` beside the [`crate::CommandBus`].
//!
//! Reprocessing appends a copy of an event (its type, version and payload) in a stream
//! of its own, with metadata the caller derives from the original's. The caller chooses
//! the transaction: on a connection in autocommit the copy commits when the INSERT
//! returns; inside a transaction it commits with it.

use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

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
