//! The audit trail of endpoint operations: each one appends a
//! [`WebhookEndpointEvent`] to the endpoint's stream (`webhook_endpoint`, id = the
//! endpoint's id) in the transaction that makes the change, with the caller's metadata
//! (actor, institution, correlation, request id). The `audit_log` projection lists them
//! like every other event, and a rebuild keeps them (they are in the log).
//!
//! Endpoints are not an aggregate (the table is their state), so nothing replays these
//! events; appending them directly, like a reprocessed copy, is the whole write path.
//! The stream's next sequence is read under the endpoint row's lock, which every
//! operation takes first, so two operations on one endpoint never race for a sequence.

use aula_domain::webhook_endpoint::{WebhookEndpointEvent, AGGREGATE_TYPE};
use aula_eventlog::EventMetadata;
use cqrs_es::DomainEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// `scheme://host[:port]` of a URL: what the records keep of it (receivers often put a
/// token in the path or the query).
pub fn url_origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => String::new(),
    }
}

/// Records appended in a transaction not yet committed: [`Recorded::committed`] once
/// it is.
#[must_use = "count and announce the records once their transaction commits"]
pub(crate) struct Recorded(Vec<String>);

impl Recorded {
    /// Counts the records in `aula_events_appended_total` and wakes the log's readers
    /// (they would otherwise see them at their next poll; best effort).
    pub(crate) async fn committed(self, pool: &sqlx::PgPool) {
        if self.0.is_empty() {
            return;
        }
        for event_type in &self.0 {
            crate::reprocess::count_appended(event_type);
        }
        if let Err(error) = aula_eventlog::store::notify_now(pool).await {
            tracing::debug!(%error, "could not notify the log's readers");
        }
    }
}

/// Appends `events` to `endpoint_id`'s stream on `conn` (in the caller's transaction).
pub(crate) async fn record(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    metadata: &EventMetadata,
    events: &[WebhookEndpointEvent],
) -> Result<Recorded, sqlx::Error> {
    if events.is_empty() {
        return Ok(Recorded(Vec::new()));
    }
    // The row lock serializes the operations of one endpoint (and is already held by
    // those that changed the row in this transaction).
    sqlx::query("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR NO KEY UPDATE")
        .bind(endpoint_id)
        .execute(&mut *conn)
        .await?;
    let metadata =
        serde_json::to_value(metadata.to_map()).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut types = Vec::with_capacity(events.len());
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        types.push(event.event_type());
        records.push(aula_eventlog::Record {
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
        });
    }
    aula_eventlog::append_records(
        conn,
        AGGREGATE_TYPE,
        &endpoint_id.to_string(),
        &records,
        &metadata,
    )
    .await?;
    Ok(Recorded(types))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_origin_of_a_url_is_kept() {
        assert_eq!(
            url_origin("https://hooks.example.org/T0/B1/secret-token?key=abc"),
            "https://hooks.example.org"
        );
        assert_eq!(
            url_origin("http://127.0.0.1:8080/hook"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(url_origin("not a url"), "");
    }
}
