//! Where each projection stands: its position in the log, how far behind it is, and
//! whether it is stuck on an event.

use aula_eventlog::health::BEHIND_CHECKPOINT;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::NAMES;

/// One projection's state, from `subscription_checkpoints`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// `global_position` of the last event handled (0: none yet).
    pub position: i64,
    pub events_handled: i64,
    /// Committed events not handled yet.
    pub lag_events: i64,
    /// How long the oldest unhandled event has been waiting, in seconds (0 when caught up).
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    /// The event it keeps failing on, if any.
    pub failed_position: Option<i64>,
    pub failing_since: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub updated_at: Option<DateTime<Utc>>,
}

type Row = (
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<i32>,
    Option<DateTime<Utc>>,
    i64,
    Option<DateTime<Utc>>,
);

/// Subscriptions that hand the log to other systems (`broker.nats`, see `aula-broker`):
/// listed after the projections once they ran, so operators see what is still to be
/// published where they see what is still to be projected. They cannot be rebuilt.
pub const OUTBOUND_PREFIX: &str = "broker.";

/// The state of every projection in [`NAMES`], in that order, then of every outbound
/// subscription that ran ([`OUTBOUND_PREFIX`]). A projection that never ran shows
/// position 0 and the whole log as lag.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    // The lag counts rows after the checkpoint in commit order (an index range scan:
    // proportional to the lag, not to the log).
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT n.name, c.tx_id::text::bigint, c.global_position, c.events_handled,
                c.last_error, c.failed_position, c.failing_since, c.attempts, c.updated_at,
                (SELECT count(*) FROM events e WHERE {BEHIND_CHECKPOINT}),
                (SELECT min(e.recorded_at) FROM (
                    SELECT recorded_at FROM events e
                    WHERE {BEHIND_CHECKPOINT}
                    ORDER BY e.tx_id, e.global_position LIMIT 1) e)
         FROM (SELECT name, ord FROM unnest($1::text[]) WITH ORDINALITY AS p(name, ord)
               UNION ALL
               SELECT name, 1000000 + row_number() OVER (ORDER BY name)
               FROM subscription_checkpoints WHERE name LIKE $2 || '%') AS n
         LEFT JOIN subscription_checkpoints c ON c.name = n.name
         ORDER BY n.ord",
    ))
    .bind(&names)
    .bind(OUTBOUND_PREFIX)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                name,
                _tx_id,
                position,
                events_handled,
                last_error,
                failed_position,
                failing_since,
                attempts,
                updated_at,
                lag_events,
                oldest_unhandled,
            )| {
                let lag_seconds = match (lag_events, oldest_unhandled) {
                    (0, _) | (_, None) => 0.0,
                    (_, Some(oldest)) => {
                        // Measured against the clock: an unhandled event has been
                        // waiting since it was recorded.
                        let since = Utc::now() - oldest;
                        (since.num_milliseconds().max(0) as f64) / 1000.0
                    }
                };
                ProjectionStatus {
                    name,
                    position: position.unwrap_or(0),
                    events_handled: events_handled.unwrap_or(0),
                    lag_events,
                    lag_seconds,
                    last_error,
                    failed_position,
                    failing_since,
                    attempts: attempts.unwrap_or(0),
                    updated_at,
                }
            },
        )
        .collect())
}
