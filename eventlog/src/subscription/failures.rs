//! What a subscription makes of a failed batch: the consumer's panics caught, errors
//! told apart (a conflict between transactions, an outage of the database, a failing
//! consumer) and the back-off between attempts.

use std::time::Duration;

use sqlx::PgConnection;

use super::{BoxError, Consumer};
use crate::log::RecordedEvent;

/// Runs the consumer on a batch; a panic in it is a failure of the batch like any
/// other (retried with backoff, reported, never skipped), not the silent end of the
/// subscription's task.
pub(super) async fn handle_caught<C: Consumer + ?Sized>(
    consumer: &mut C,
    tx: &mut PgConnection,
    batch: &[RecordedEvent],
) -> Result<(), BoxError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(consumer.handle(tx, batch))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => Err(format!("the consumer panicked: {}", panic_message(&*panic)).into()),
    }
}

/// [`Consumer::deliver`], a panic in it caught like in [`handle_caught`].
pub(super) async fn deliver_caught<C: Consumer + ?Sized>(
    consumer: &mut C,
    batch: &[RecordedEvent],
) -> Result<(), BoxError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(consumer.deliver(batch))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => Err(format!("the consumer panicked: {}", panic_message(&*panic)).into()),
    }
}

/// What a caught panic said (its `&str` or `String` payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// "outer: inner: innermost", so the stored error says why, not only what.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors (lettre's, hyper's) already print their source in their own
        // message: say each cause once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How many times in a row a batch that conflicted with another transaction is run
/// again whole before it is treated as failing (isolated one event at a time).
pub(super) const CONFLICT_RETRIES: u32 = 8;

/// The cap of the pause before a conflicting batch runs again (a quarter of the
/// backoff: 12 ms, 25 ms, … up to this).
pub(super) const CONFLICT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Whether `error` (or one of its causes) is PostgreSQL's report of a conflict between
/// concurrent transactions, which running the same work again resolves: a deadlock
/// (`40P01`) or a serialization failure (`40001`).
pub fn is_conflict(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(sqlx::Error::Database(database)) = error.downcast_ref::<sqlx::Error>() {
            if matches!(database.code().as_deref(), Some("40P01" | "40001")) {
                return true;
            }
        }
        current = error.source();
    }
    false
}

/// Whether `error` (or one of its causes) says the database could not do the work at
/// all, whatever the batch held (`db::is_unavailable`: its disk full, shutting down,
/// out of connections, unreachable), and is not a conflict ([`is_conflict`], which
/// has its own bounded retries).
pub fn is_outage(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return crate::db::is_unavailable(error) && !is_conflict(error);
        }
        current = error.source();
    }
    false
}

/// The longest pause between two attempts to reconnect a subscription.
pub(super) const RECONNECT_MAX: Duration = Duration::from_secs(2);

pub(super) fn backoff(failures: u32, max: Duration) -> Duration {
    use rand::Rng;
    let base = Duration::from_millis(50).saturating_mul(2u32.saturating_pow(failures.min(16)));
    let capped = base.min(max);
    let jitter = rand::thread_rng().gen_range(0..=capped.as_millis() as u64 / 4);
    capped + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    enum Failure {
        #[error("the SMTP server refused or failed")]
        Outer(#[source] Box<Failure>),
        #[error("Connection error: {0}")]
        PrintsItsSource(#[source] std::io::Error),
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let error = Failure::Outer(Box::new(Failure::PrintsItsSource(io)));
        assert_eq!(
            error_chain(&error),
            "the SMTP server refused or failed: Connection error: Connection refused"
        );
    }
}
