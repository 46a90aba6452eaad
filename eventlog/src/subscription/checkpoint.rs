//! A subscription's checkpoint: where it stands, and the statement that opens a batch's
//! transaction by moving it (compare-and-set).

use sqlx::PgConnection;

use crate::log::{LogPosition, RecordedEvent};

const CHECKPOINT_SQL: &str =
    "SELECT tx_id::text::bigint, global_position FROM subscription_checkpoints WHERE name = $1";

/// Where the subscription `name` stands: the last position it committed (`None` before
/// it first ran). Whatever it wrote at or before that position is committed with it.
pub async fn checkpoint<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    name: &str,
) -> Result<Option<LogPosition>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(CHECKPOINT_SQL)
        .bind(name)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|(tx_id, global_position)| LogPosition {
        tx_id,
        global_position,
    }))
}

pub(super) async fn load_checkpoint(
    conn: &mut PgConnection,
    name: &str,
) -> Result<LogPosition, sqlx::Error> {
    checkpoint(conn, name)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// The statement that opens a batch's transaction: `BEGIN`, then the compare-and-set
/// of the checkpoint from `checkpoint` to `last` (the row locked, the counts and times
/// of `batch` written), which fails with `division_by_zero` (`22012`) when the stored
/// checkpoint is not `checkpoint` (see [`is_checkpoint_moved`]).
///
/// A simple query, so its values are literals: [`sqlx::Connection::begin_with`] sends
/// it as one message and the whole batch costs the consumer's round trips plus two
/// (this one and `COMMIT`), where a `BEGIN`, a locking read and an `UPDATE` of their own
/// cost four (about a tenth of a millisecond each on an idle machine, more under load:
/// `aula bench latency`).
pub(super) fn advance_statement(
    name: &str,
    checkpoint: LogPosition,
    last: LogPosition,
    batch: &[RecordedEvent],
) -> String {
    let last_event_at = batch.last().map_or_else(
        || "NULL".to_owned(),
        |event| {
            sql_literal(
                &event
                    .recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ) + "::timestamptz"
        },
    );
    format!(
        "BEGIN;
         WITH moved AS (
             UPDATE subscription_checkpoints
             SET tx_id = '{new_tx}'::xid8, global_position = {new_position},
                 events_handled = events_handled + {count}, last_event_at = {last_event_at},
                 updated_at = now(), last_error = NULL, failed_position = NULL,
                 failing_since = NULL, attempts = 0
             WHERE name = {name} AND tx_id = '{old_tx}'::xid8 AND global_position = {old_position}
             RETURNING 1)
         SELECT 1 / count(*) FROM moved",
        new_tx = last.tx_id,
        new_position = last.global_position,
        count = batch.len(),
        name = sql_literal(name),
        old_tx = checkpoint.tx_id,
        old_position = checkpoint.global_position,
    )
}

/// Whether `error` is [`advance_statement`]'s report that the stored checkpoint is not
/// where this instance left it (a rebuild moved it).
pub(super) fn is_checkpoint_moved(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.code().as_deref() == Some("22012"))
}

/// `text` as an SQL string literal, right whatever `standard_conforming_strings` says.
fn sql_literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}
