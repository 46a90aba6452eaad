//! Reading the event log in commit order.
//!
//! `global_position` is taken when a row is inserted, not when its transaction
//! commits, so transaction A can hold position 100 while B, holding 101, commits
//! first. A reader that trusted positions alone would see 101, move past 100 and lose
//! A's event forever. We order by the writing transaction instead and only read rows
//! of transactions older than every transaction still running:
//!
//! ```sql
//! WHERE (tx_id, global_position) > $checkpoint
//!   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
//! ORDER BY tx_id, global_position
//! ```
//!
//! **Invariant:** once a row is readable under that guard, nothing can ever be inserted
//! before it in `(tx_id, global_position)` order: every transaction with a smaller id
//! has ended. So a checkpoint never jumps over an event. The guard and the read must be
//! one statement (one snapshot); two statements would see two snapshots.
//!
//! The price: one long-open transaction anywhere in the cluster delays every reader
//! (it does not break them). Our connections set `idle_in_transaction_session_timeout`.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::metadata;

/// A reader's position: the last `(tx_id, global_position)` it has consumed.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    pub tx_id: i64,
    pub global_position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition {
        tx_id: 0,
        global_position: 0,
    };
}

/// One event as stored, with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: LogPosition,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: StoredJson,
    pub metadata: StoredJson,
    pub recorded_at: DateTime<Utc>,
}

/// A JSON document of the log (an event's payload or metadata) as stored, parsed on
/// first use. Reading the log is mostly turning rows into values: parsing every payload
/// and metadata into a [`Value`] tree (an allocation per key and string) cost more than
/// the database spent producing the rows, for consumers that read a few keys of them or
/// none (issue #20). The text is kept, and parsed once, by the first reader that looks
/// inside (`Deref` to [`Value`]); [`StoredJson::deserialize`] goes from the text
/// straight to a typed value, and [`StoredJson::as_str`] hands the text on unparsed.
#[derive(Clone)]
pub struct StoredJson {
    text: Box<str>,
    parsed: OnceLock<Value>,
}

impl StoredJson {
    /// The document as stored: a `json` column's text (valid JSON: PostgreSQL checks it).
    fn from_stored(text: String) -> StoredJson {
        StoredJson {
            text: text.into_boxed_str(),
            parsed: OnceLock::new(),
        }
    }

    /// The JSON text, unparsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The document as a [`Value`], parsed on the first call. PostgreSQL's `json`
    /// accepts a few documents `serde_json` refuses (numbers beyond `f64`); those read as
    /// `null`, so a typed decode of them fails and names its event.
    pub fn value(&self) -> &Value {
        self.parsed.get_or_init(|| {
            serde_json::from_str(&self.text).unwrap_or_else(|error| {
                tracing::error!(%error, "a stored JSON document does not parse; read as null");
                Value::Null
            })
        })
    }

    /// Deserializes the document as `T` from its text, without building a [`Value`]
    /// (or from the [`Value`] when it was parsed already).
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match self.parsed.get() {
            Some(value) => T::deserialize(value),
            None => serde_json::from_str(&self.text),
        }
    }
}

impl std::ops::Deref for StoredJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl From<Value> for StoredJson {
    fn from(value: Value) -> StoredJson {
        StoredJson {
            text: value.to_string().into_boxed_str(),
            parsed: OnceLock::from(value),
        }
    }
}

impl PartialEq for StoredJson {
    /// Equal documents, however their texts are spaced.
    fn eq(&self, other: &StoredJson) -> bool {
        self.text == other.text || self.value() == other.value()
    }
}

impl std::fmt::Debug for StoredJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for StoredJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl RecordedEvent {
    pub fn global_position(&self) -> i64 {
        self.position.global_position
    }

    fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    pub fn institution_id(&self) -> Option<Uuid> {
        self.metadata_str(metadata::INSTITUTION_ID)?.parse().ok()
    }

    pub fn correlation_id(&self) -> Option<Uuid> {
        self.metadata_str(metadata::CORRELATION_ID)?.parse().ok()
    }

    pub fn actor(&self) -> Option<metadata::Actor> {
        metadata::Actor::parse(self.metadata_str(metadata::ACTOR)?)
    }

    pub fn causation_id(&self) -> Option<&str> {
        self.metadata_str(metadata::CAUSATION_ID)
    }

    /// The original's id when this event is a reprocessed copy
    /// ([`metadata::REPROCESSED_FROM`]).
    pub fn reprocessed_from(&self) -> Option<Uuid> {
        self.metadata_str(metadata::REPROCESSED_FROM)?.parse().ok()
    }

    /// Whether this event is a reprocessed copy. A copy whose original id does not
    /// parse is still a copy.
    pub fn is_reprocessed(&self) -> bool {
        self.metadata.get(metadata::REPROCESSED_FROM).is_some()
    }
}

/// One row of the read statements, whose columns come in this order: `tx_id` (as
/// text), `global_position`, `event_id`, `aggregate_type`, `aggregate_id`, `sequence`,
/// `event_type`, `event_version`, `payload` and `metadata` (as text), `recorded_at`.
fn recorded_event(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    Ok(RecordedEvent {
        position: LogPosition {
            tx_id: row.try_get(0)?,
            global_position: row.try_get(1)?,
        },
        event_id: row.try_get(2)?,
        aggregate_type: row.try_get(3)?,
        aggregate_id: row.try_get(4)?,
        sequence: row.try_get(5)?,
        event_type: row.try_get(6)?,
        event_version: row.try_get(7)?,
        payload: StoredJson::from_stored(row.try_get(8)?),
        metadata: StoredJson::from_stored(row.try_get(9)?),
        recorded_at: row.try_get(10)?,
    })
}

/// The committed events after `after`, in commit order, at most `limit`, and only
/// those no still-running transaction can precede (see the module docs).
pub const READ_BATCH_SQL: &str = "
SELECT tx_id::text::bigint AS tx, global_position, event_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload::text, metadata::text, recorded_at
FROM events
WHERE (tx_id, global_position) > ($1::text::xid8, $2)
  AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY events.tx_id, events.global_position
LIMIT $3";
// Careful: ORDER BY matches output column names first. An output column named
// `tx_id` (the cast keeps the name) would make PostgreSQL sort by the bigint
// expression and ignore the (tx_id, global_position) index: a full sort per batch.
// `::text` on the documents: a `json` value is its text, and the reader keeps it
// unparsed ([`StoredJson`]).

pub async fn read_batch(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    read_with(conn, READ_BATCH_SQL, after, limit).await
}

pub(crate) async fn read_with(
    conn: &mut PgConnection,
    sql: &str,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    sqlx::query(sql)
        .bind(after.tx_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .try_map(|row: PgRow| recorded_event(&row))
        .fetch_all(conn)
        .await
}

/// The position of the event at `global_position`, for "has reader X reached the
/// event my command appended?" (read-your-writes).
pub async fn position_of(
    conn: &mut PgConnection,
    global_position: i64,
) -> Result<Option<LogPosition>, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT tx_id::text::bigint FROM events WHERE global_position = $1")
            .bind(global_position)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(tx_id,)| LogPosition {
        tx_id,
        global_position,
    }))
}
