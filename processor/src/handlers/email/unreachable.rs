//! How long an e-mail waits for an SMTP relay that cannot be reached.
//!
//! Attempts that cannot reach the relay ([`MailError::is_unreachable`]) do not count
//! against the task's attempts, so that an outage of the relay kills no e-mail; but a
//! relay that never answers (a wrong `SMTP_URL`) would then keep every e-mail pending
//! for ever, and nobody would be told. Each e-mail task records when its relay was first
//! unreachable (table `mail_unreachable`, by task id); past
//! `MailConfig::unreachable_give_up` from then, the task ends `dead` with
//! [`RelayGivenUp`] as its last error. Time nobody could try the e-mail (the processor
//! stopped, the database down, a backlog: how late an attempt was claimed after it was
//! due) says nothing about the relay and does not count: the first time moves later by
//! it (it used to count, so an e-mail outliving an outage of the processor longer than
//! the window was given up at its first attempt after it). Until then its last error ([`Unreachable`]) says
//! since when and when it will be given up. An attempt that reaches the relay (sent, or
//! answered with an error) forgets the record: the window starts again at the next
//! outage.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::handlers::{TaskContext, TaskError};
use crate::mail::{MailError, RelayGivenUp, Unreachable};

/// Records that `task`'s relay could not be reached now (keeping an earlier first
/// time, moved later by how late this attempt was claimed: `$4` claimed at, `$3` due
/// at); returns that time and the database's now. Records older than twice the window
/// (tasks cancelled meanwhile) are purged on the way.
const RECORD_SQL: &str = "WITH purged AS (
         DELETE FROM mail_unreachable
         WHERE since < now() - $2 * interval '2 millisecond' AND task_id <> $1
     )
     INSERT INTO mail_unreachable (task_id) VALUES ($1)
     ON CONFLICT (task_id) DO UPDATE
     SET since = mail_unreachable.since + greatest($4::timestamptz - $3::timestamptz, interval '0')
     RETURNING since, now()";

/// Forgets `task`'s record: its relay answered, or it was given up. (A sent e-mail's
/// record goes with the statement that records the send, `RECORD_SENT_SQL`.)
const FORGET_SQL: &str = "DELETE FROM mail_unreachable WHERE task_id = $1";

/// The task's error for a send that failed with `error`, an unreachable relay: retried
/// without counting while the relay has been unreachable for less than `give_up` since
/// the first such attempt, `dead` after.
pub(super) async fn unreachable(
    ctx: &TaskContext,
    conn: &mut sqlx::PgConnection,
    error: MailError,
    give_up: Duration,
) -> Result<TaskError, TaskError> {
    // The setting allows 30 days; anything set in code stays within PostgreSQL's range.
    let give_up = give_up.min(Duration::from_secs(365 * 24 * 3600));
    let window = chrono::Duration::from_std(give_up).unwrap_or(chrono::Duration::MAX);
    let (since, now): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(RECORD_SQL)
        .bind(ctx.task.id)
        .bind(give_up.as_millis() as f64)
        .bind(ctx.task.run_at)
        .bind(ctx.task.claimed_at)
        .fetch_one(&mut *conn)
        .await?;
    let waited = now - since;
    if waited < window {
        if waited.is_zero() {
            tracing::warn!(
                task = ctx.task.id,
                give_up_after = ?give_up,
                "the SMTP server could not be reached; the e-mail waits for it"
            );
        }
        return Ok(TaskError::retry(Unreachable {
            since,
            give_up_at: since
                .checked_add_signed(window)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            error,
        }));
    }
    sqlx::query(FORGET_SQL)
        .bind(ctx.task.id)
        .execute(&mut *conn)
        .await?;
    tracing::error!(
        task = ctx.task.id,
        %since,
        "the SMTP server stayed unreachable past the give-up window: the e-mail ends dead"
    );
    Ok(TaskError::final_outcome(RelayGivenUp {
        since,
        waited,
        error,
    }))
}

/// Forgets `task`'s record after an attempt that reached the relay but failed. Best
/// effort: the attempt's own error is what the task reports; a record left behind only
/// makes a later outage's window start earlier.
pub(super) async fn reached(ctx: &TaskContext, conn: &mut sqlx::PgConnection) {
    let forgotten = sqlx::query(FORGET_SQL)
        .bind(ctx.task.id)
        .execute(&mut *conn)
        .await;
    if let Err(error) = forgotten {
        tracing::warn!(task = ctx.task.id, %error, "could not forget the relay's unreachable time");
    }
}
