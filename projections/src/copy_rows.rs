//! Rows written by a binary `COPY ... FROM STDIN`: how a rebuild fills the shadow tables
//! of the read models with one row per event (issue #20).
//!
//! A rebuild's shadow tables start empty and are written by the rebuild alone, so the
//! live handlers' idempotent upserts (`INSERT ... SELECT FROM unnest(...) ON CONFLICT`)
//! buy nothing there and cost the most of the load: the arrays parsed, a speculative
//! insertion and its confirmation per row. `COPY` writes the same rows with the server's
//! bulk insert (a heap page per WAL record), and the binary form needs no text parsing.
//!
//! The format (<https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.4>): a
//! signature, then per row a 16-bit field count and per field a 32-bit length (-1 for
//! NULL) and the value in its type's binary form, then -1 as the trailer.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// 2000-01-01, PostgreSQL's epoch, in days of the common era (chrono's count).
const PG_EPOCH_DAYS_CE: i32 = 730_120;

/// The rows of one `COPY ... (FORMAT binary)`, encoded as they are pushed.
pub(crate) struct CopyRows {
    data: Vec<u8>,
    rows: usize,
}

impl CopyRows {
    pub(crate) fn new() -> CopyRows {
        let mut data = Vec::with_capacity(1 << 16);
        data.extend_from_slice(SIGNATURE);
        // Flags, then the length of the header extension: none.
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        CopyRows { data, rows: 0 }
    }

    /// Starts a row of `fields` values; the caller pushes exactly that many.
    pub(crate) fn row(&mut self, fields: i16) -> &mut CopyRows {
        self.data.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut CopyRows {
        // A field of the rows a projection writes is far below 1 GB (PostgreSQL's
        // limit for one value), so its length fits.
        let length = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.data.extend_from_slice(&length.to_be_bytes());
        self.data.extend_from_slice(bytes);
        self
    }

    pub(crate) fn null(&mut self) -> &mut CopyRows {
        self.data.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    pub(crate) fn uuid(&mut self, value: Uuid) -> &mut CopyRows {
        self.field(value.as_bytes())
    }

    pub(crate) fn bigint(&mut self, value: i64) -> &mut CopyRows {
        self.field(&value.to_be_bytes())
    }

    pub(crate) fn int(&mut self, value: i32) -> &mut CopyRows {
        self.field(&value.to_be_bytes())
    }

    pub(crate) fn text(&mut self, value: &str) -> &mut CopyRows {
        self.field(value.as_bytes())
    }

    pub(crate) fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut CopyRows {
        self.bigint(value.timestamp_micros() - PG_EPOCH_MICROS)
    }

    pub(crate) fn date(&mut self, value: NaiveDate) -> &mut CopyRows {
        use chrono::Datelike as _;
        self.int(value.num_days_from_ce() - PG_EPOCH_DAYS_CE)
    }

    pub(crate) fn opt_date(&mut self, value: Option<NaiveDate>) -> &mut CopyRows {
        match value {
            Some(value) => self.date(value),
            None => self.null(),
        }
    }

    pub(crate) fn opt_uuid(&mut self, value: Option<Uuid>) -> &mut CopyRows {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    pub(crate) fn opt_text(&mut self, value: Option<&str>) -> &mut CopyRows {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// Sends the rows by `statement` (`COPY table (columns) FROM STDIN (FORMAT binary)`,
    /// the columns in the order of each row's values). Returns the rows written.
    pub(crate) async fn copy_in(
        mut self,
        conn: &mut PgConnection,
        statement: &str,
    ) -> Result<u64, sqlx::Error> {
        if self.rows == 0 {
            return Ok(0);
        }
        self.data.extend_from_slice(&(-1i16).to_be_bytes());
        let mut copy = conn.copy_in_raw(statement).await?;
        copy.send(self.data).await?;
        copy.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_encoded_in_the_binary_copy_format() {
        let mut rows = CopyRows::new();
        let at = DateTime::parse_from_rfc3339("2000-01-01T00:00:01.000002Z")
            .unwrap()
            .with_timezone(&Utc);
        rows.row(4)
            .bigint(-2)
            .opt_text(None)
            .text("é")
            .timestamptz(at);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(&[0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 254]);
        expected.extend_from_slice(&[255, 255, 255, 255]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xc3, 0xa9]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x42]);
        assert_eq!(rows.data, expected);
        assert_eq!(rows.rows, 1);
    }

    #[test]
    fn dates_count_days_from_2000() {
        let mut rows = CopyRows::new();
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        rows.row(3)
            .date(day(2000, 1, 1))
            .date(day(1999, 12, 31))
            .opt_date(Some(day(2026, 2, 3)));
        let header = SIGNATURE.len() + 8;
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 4, 255, 255, 255, 255]);
        // 26 years of which 7 leap (2000, 2004, ..., 2024), and January's 31 days + 2.
        let days: i32 = 26 * 365 + 7 + 33;
        expected.extend_from_slice(&[0, 0, 0, 4]);
        expected.extend_from_slice(&days.to_be_bytes());
        assert_eq!(rows.data[header..], expected);
    }
}
