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

/// [`read_batch`]'s read, streamed by a binary `COPY (...) TO STDOUT` and decoded here
/// (issue #20). Same statement inside the `COPY` (one statement, so one snapshot for the
/// guard and the read), same order, same [`RecordedEvent`]s; what it saves is the
/// driver's work per row (a row object with its column table, a typed lookup and
/// compatibility check per column), which cost the subscription more than the server
/// spent producing the rows. `COPY` takes no parameters: the position and the limit are
/// integers, written into the statement.
///
/// **The caller must close `conn` when this fails.** An error the server raises before
/// the copy starts (a cancel or a timeout while the statement is planned) leaves a reply
/// that sqlx 0.8 does not consume, and the connection's next statement would read it.
/// The subscription closes its connection on every error; callers that hand the
/// connection back to a pool use [`read_batch`].
pub async fn read_batch_copy(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    use futures::TryStreamExt as _;
    let statement = copy_statement(after, limit);
    let mut stream = conn.copy_out_raw(&statement).await?;
    let mut decoder = copy_binary::Decoder::new(usize::try_from(limit).unwrap_or(0).min(65_536));
    // Every chunk is read to the end, even after a decoding error: a copy left unread
    // would be read (and discarded) by the connection's next statement.
    let mut failed = None;
    while let Some(chunk) = stream.try_next().await? {
        if failed.is_none() {
            if let Err(error) = decoder.push(&chunk) {
                failed = Some(error);
            }
        }
    }
    match failed {
        Some(error) => Err(error),
        None => decoder.finish(),
    }
}

/// [`READ_BATCH_SQL`] with its parameters written in, inside a binary `COPY`: one text
/// of the read for both paths, so its guard and order cannot drift apart.
fn copy_statement(after: LogPosition, limit: i64) -> String {
    let query = READ_BATCH_SQL
        .replace("$1", &format!("'{}'", after.tx_id))
        .replace("$2", &after.global_position.to_string())
        .replace("$3", &limit.to_string());
    format!("COPY ({query}) TO STDOUT (FORMAT binary)")
}

/// The binary `COPY` format of [`read_batch_copy`]'s columns
/// (<https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.4>): a signature,
/// then per row a 16-bit field count and per field a 32-bit length (-1 for NULL) and
/// the value in the type's binary form, then -1 as the trailer. PostgreSQL sends each
/// row in one message (the header with the first); the decoder does not rely on it.
mod copy_binary {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::{LogPosition, RecordedEvent, StoredJson};

    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    const COLUMNS: i16 = 11;
    /// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix microseconds.
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

    pub(super) struct Decoder {
        events: Vec<RecordedEvent>,
        /// Bytes of a row split across chunks (never in practice, see above).
        partial: Vec<u8>,
        header_read: bool,
        ended: bool,
    }

    fn malformed(what: &str) -> sqlx::Error {
        sqlx::Error::Protocol(format!("binary COPY of the log: {what}"))
    }

    /// Why a slice is not (yet) a row.
    enum Short {
        /// More bytes are needed.
        Incomplete,
        Invalid(sqlx::Error),
    }

    impl From<sqlx::Error> for Short {
        fn from(error: sqlx::Error) -> Short {
            Short::Invalid(error)
        }
    }

    struct Cursor<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
            let end = self.at.checked_add(n).ok_or(Short::Incomplete)?;
            let slice = self.bytes.get(self.at..end).ok_or(Short::Incomplete)?;
            self.at = end;
            Ok(slice)
        }

        fn i16(&mut self) -> Result<i16, Short> {
            Ok(i16::from_be_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            ))
        }

        fn i32(&mut self) -> Result<i32, Short> {
            Ok(i32::from_be_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))
        }

        /// One field's value; NULL is an error (every column of `events` is NOT NULL,
        /// and the query reads them as they are).
        fn field(&mut self, column: &str) -> Result<&'a [u8], Short> {
            let len = self.i32()?;
            let len = usize::try_from(len)
                .map_err(|_| malformed(&format!("unexpected NULL in {column}")))?;
            self.take(len)
        }

        fn int8(&mut self, column: &str) -> Result<i64, Short> {
            let bytes: [u8; 8] = self
                .field(column)?
                .try_into()
                .map_err(|_| malformed(&format!("{column} is not 8 bytes")))?;
            Ok(i64::from_be_bytes(bytes))
        }

        fn text(&mut self, column: &str) -> Result<String, Short> {
            let bytes = self.field(column)?;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| malformed(&format!("{column} is not UTF-8")))?;
            Ok(text.to_owned())
        }

        fn uuid(&mut self, column: &str) -> Result<Uuid, Short> {
            Ok(Uuid::from_slice(self.field(column)?)
                .map_err(|_| malformed(&format!("{column} is not a uuid")))?)
        }

        fn timestamptz(&mut self, column: &str) -> Result<DateTime<Utc>, Short> {
            let micros = self.int8(column)?;
            micros
                .checked_add(PG_EPOCH_MICROS)
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(|| malformed(&format!("{column} is out of range")).into())
        }
    }

    impl Decoder {
        pub(super) fn new(capacity: usize) -> Decoder {
            Decoder {
                events: Vec::with_capacity(capacity),
                partial: Vec::new(),
                header_read: false,
                ended: false,
            }
        }

        pub(super) fn push(&mut self, chunk: &[u8]) -> Result<(), sqlx::Error> {
            if self.partial.is_empty() {
                let used = self.decode(chunk)?;
                self.partial.extend_from_slice(&chunk[used..]);
            } else {
                let mut partial = std::mem::take(&mut self.partial);
                partial.extend_from_slice(chunk);
                let used = self.decode(&partial)?;
                partial.drain(..used);
                self.partial = partial;
            }
            Ok(())
        }

        /// Decodes the complete rows at the start of `bytes`; how many bytes they took.
        fn decode(&mut self, bytes: &[u8]) -> Result<usize, sqlx::Error> {
            let mut cursor = Cursor { bytes, at: 0 };
            if !self.header_read {
                match Self::header(&mut cursor) {
                    Ok(()) => self.header_read = true,
                    Err(Short::Incomplete) => return Ok(0),
                    Err(Short::Invalid(error)) => return Err(error),
                }
            }
            loop {
                let start = cursor.at;
                if cursor.at == bytes.len() {
                    return Ok(start);
                }
                if self.ended {
                    return Err(malformed("data after the trailer"));
                }
                match self.row(&mut cursor) {
                    Ok(Some(event)) => self.events.push(event),
                    Ok(None) => self.ended = true,
                    Err(Short::Incomplete) => return Ok(start),
                    Err(Short::Invalid(error)) => return Err(error),
                }
            }
        }

        fn header(cursor: &mut Cursor<'_>) -> Result<(), Short> {
            if cursor.take(SIGNATURE.len())? != SIGNATURE {
                return Err(malformed("bad signature").into());
            }
            let _flags = cursor.i32()?;
            let extension = usize::try_from(cursor.i32()?)
                .map_err(|_| malformed("negative header extension"))?;
            cursor.take(extension)?;
            Ok(())
        }

        /// One row, or `None` at the trailer.
        fn row(&self, c: &mut Cursor<'_>) -> Result<Option<RecordedEvent>, Short> {
            match c.i16()? {
                -1 => return Ok(None),
                COLUMNS => {}
                n => return Err(malformed(&format!("{n} columns, expected {COLUMNS}")).into()),
            }
            Ok(Some(RecordedEvent {
                position: LogPosition {
                    tx_id: c.int8("tx_id")?,
                    global_position: c.int8("global_position")?,
                },
                event_id: c.uuid("event_id")?,
                aggregate_type: c.text("aggregate_type")?,
                aggregate_id: c.text("aggregate_id")?,
                sequence: c.int8("sequence")?,
                event_type: c.text("event_type")?,
                event_version: c.text("event_version")?,
                payload: StoredJson::from_stored(c.text("payload")?),
                metadata: StoredJson::from_stored(c.text("metadata")?),
                recorded_at: c.timestamptz("recorded_at")?,
            }))
        }

        pub(super) fn finish(self) -> Result<Vec<RecordedEvent>, sqlx::Error> {
            if !self.ended || !self.partial.is_empty() {
                return Err(malformed("the copy ended before its trailer"));
            }
            Ok(self.events)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_copy_statement_is_the_select_with_its_parameters_written_in() {
            for parameter in ["$1", "$2", "$3"] {
                assert_eq!(super::super::READ_BATCH_SQL.matches(parameter).count(), 1);
            }
            let after = LogPosition {
                tx_id: 812,
                global_position: -4,
            };
            let statement = super::super::copy_statement(after, 5000);
            assert!(statement.starts_with("COPY (\nSELECT tx_id::text::bigint AS tx"));
            assert!(
                statement.contains("> ('812'::text::xid8, -4)"),
                "{statement}"
            );
            assert!(statement.contains("pg_snapshot_xmin(pg_current_snapshot())"));
            assert!(statement.ends_with("LIMIT 5000) TO STDOUT (FORMAT binary)"));
            assert!(!statement.contains('$'));
        }

        fn header() -> Vec<u8> {
            let mut bytes = SIGNATURE.to_vec();
            bytes.extend_from_slice(&0i32.to_be_bytes());
            bytes.extend_from_slice(&0i32.to_be_bytes());
            bytes
        }

        fn field(bytes: &mut Vec<u8>, value: Option<&[u8]>) {
            match value {
                Some(value) => {
                    bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    bytes.extend_from_slice(value);
                }
                None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }

        fn row(payload: Option<&[u8]>) -> Vec<u8> {
            let mut bytes = COLUMNS.to_be_bytes().to_vec();
            field(&mut bytes, Some(&7i64.to_be_bytes()));
            field(&mut bytes, Some(&42i64.to_be_bytes()));
            field(&mut bytes, Some(Uuid::nil().as_bytes()));
            for text in ["course", "c-1"] {
                field(&mut bytes, Some(text.as_bytes()));
            }
            field(&mut bytes, Some(&3i64.to_be_bytes()));
            for text in ["Opened", "1.0"] {
                field(&mut bytes, Some(text.as_bytes()));
            }
            field(&mut bytes, payload);
            field(&mut bytes, Some(b"{}"));
            field(&mut bytes, Some(&0i64.to_be_bytes()));
            bytes
        }

        fn trailer() -> Vec<u8> {
            (-1i16).to_be_bytes().to_vec()
        }

        #[test]
        fn rows_split_anywhere_across_chunks_decode_the_same() {
            let whole = [
                header(),
                row(Some(b"{\"a\":1}")),
                row(Some(b"[]")),
                trailer(),
            ]
            .concat();
            let mut at_once = Decoder::new(2);
            at_once.push(&whole).unwrap();
            let expected = at_once.finish().unwrap();
            assert_eq!(expected.len(), 2);
            assert_eq!(
                expected[0].position,
                LogPosition {
                    tx_id: 7,
                    global_position: 42
                }
            );
            assert_eq!(expected[0].payload.as_str(), "{\"a\":1}");
            assert_eq!(expected[1].recorded_at.timestamp(), 946_684_800);
            for split in 1..whole.len() {
                let mut decoder = Decoder::new(2);
                decoder.push(&whole[..split]).unwrap();
                decoder.push(&whole[split..]).unwrap();
                assert_eq!(decoder.finish().unwrap(), expected, "split at {split}");
            }
        }

        #[test]
        fn a_null_a_short_copy_and_a_bad_signature_are_errors() {
            let mut decoder = Decoder::new(1);
            let null = decoder.push(&[header(), row(None), trailer()].concat());
            assert!(matches!(null, Err(sqlx::Error::Protocol(m)) if m.contains("NULL in payload")));

            let mut decoder = Decoder::new(1);
            decoder
                .push(&[header(), row(Some(b"{}"))].concat())
                .unwrap();
            assert!(decoder.finish().is_err(), "no trailer");

            let mut bad = header();
            bad[0] = b'X';
            assert!(Decoder::new(1).push(&[bad, trailer()].concat()).is_err());

            let mut decoder = Decoder::new(1);
            let after = decoder.push(&[header(), trailer(), row(Some(b"{}"))].concat());
            assert!(after.is_err(), "data after the trailer");
        }
    }
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
