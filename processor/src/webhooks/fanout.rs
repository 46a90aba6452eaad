//! From events to messages: in the reactions' batch transaction, every event is matched
//! against the enabled endpoints (institution, event types, registered before the
//! event) and each match becomes one message, with an id derived from (event,
//! endpoint), and its first `webhook.deliver` task. A redelivered batch inserts nothing
//! twice (`UNIQUE (event_id, endpoint_id)`).

use std::collections::HashMap;

use aula_eventlog::RecordedEvent;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::kinds;
use crate::processing::TaskChange;
use crate::queue::{insert_tasks_unrecorded, NewTask};

/// Bodies larger than this are sent thin: the event's id, type and time, no data.
pub const MAX_BODY_BYTES: usize = 20 * 1024;

/// The namespace of message ids (uuid v5 of event and endpoint).
const MESSAGE_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_9b7d_4e5f_8a21_0c3d_5e7f_9b11);

/// The message id of `event` for `endpoint`: the same whoever computes it, so a message
/// is never issued twice under two ids.
pub fn message_id(event_id: Uuid, endpoint_id: Uuid) -> Uuid {
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(event_id.as_bytes());
    name[16..].copy_from_slice(endpoint_id.as_bytes());
    Uuid::new_v5(&MESSAGE_NAMESPACE, &name)
}

/// The institution an event belongs to: its metadata's, or its payload's.
pub fn institution_of(event: &RecordedEvent) -> Option<Uuid> {
    event.institution_id().or_else(|| {
        event
            .payload
            .get("institution_id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
    })
}

/// The event's public form: `{"type", "timestamp", "data"}` (the payload without its
/// type tag and without the catalog's sensitive fields, at any depth), plus the event's
/// id, its institution and, for a reprocessed copy, the original's id. Above
/// [`MAX_BODY_BYTES`], thin: no `data`, `"thin": true`.
pub fn public_body(
    event_type: &str,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    institution_id: Option<Uuid>,
    original_event_id: Option<Uuid>,
    payload: &Value,
) -> String {
    let mut data = payload.clone();
    if let Value::Object(map) = &mut data {
        map.remove("type");
    }
    redact(&mut data);
    let mut body = Map::new();
    body.insert("type".into(), event_type.into());
    body.insert(
        "timestamp".into(),
        recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .into(),
    );
    body.insert("event_id".into(), event_id.to_string().into());
    body.insert(
        "institution_id".into(),
        institution_id.map(|id| id.to_string()).into(),
    );
    if let Some(original) = original_event_id {
        body.insert("original_event_id".into(), original.to_string().into());
    }
    body.insert("data".into(), data);
    let full = Value::Object(body.clone()).to_string();
    if full.len() <= MAX_BODY_BYTES {
        return full;
    }
    body.remove("data");
    body.insert("thin".into(), true.into());
    Value::Object(body).to_string()
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !aula_domain::catalog::SENSITIVE_FIELDS.contains(&key.as_str()));
            map.values_mut().for_each(redact);
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// An enabled endpoint, as the fan-out needs it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Subscriber {
    pub(crate) id: Uuid,
    pub(crate) institution_id: Option<Uuid>,
    pub(crate) event_types: Option<Vec<String>>,
    pub(crate) created_at: DateTime<Utc>,
}

/// The enabled endpoints ([`Subscriber`]'s columns). The reactions read them in the
/// statement that inserts their tasks ([`crate::reactions`]).
pub(crate) const ENDPOINTS_SQL: &str =
    "SELECT id, institution_id, event_types, created_at FROM webhook_endpoints
     WHERE enabled AND deleted_at IS NULL";

/// Whether `event` may be sent to endpoints at all: not the operators' records
/// (`webhook_endpoint` streams would announce the delivery's configuration through
/// itself; `queue_control` streams are the queue's internals).
pub fn is_deliverable(event: &RecordedEvent) -> bool {
    !aula_domain::catalog::is_operator_record(&event.aggregate_type)
}

impl Subscriber {
    fn wants(&self, event: &RecordedEvent, institution: Option<Uuid>) -> bool {
        is_deliverable(event)
            && (self.institution_id.is_none() || self.institution_id == institution)
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type))
            && self.created_at <= event.recorded_at
    }
}

/// The first delivery task of a message.
pub fn delivery_task(
    message_id: Uuid,
    attempt: i32,
    manual: bool,
    institution: Option<Uuid>,
) -> NewTask {
    let mut task = NewTask::new(
        kinds::WEBHOOK_DELIVER,
        format!("webhook:{}:{attempt}", super::message_header_id(message_id)),
        json!({ "message_id": message_id, "attempt": attempt, "manual": manual }),
    );
    task.institution_id = institution;
    task
}

/// Issues the messages of `events` and their first tasks; returns the task changes for
/// [`crate::processing::record`].
pub async fn fan_out(
    tx: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<Vec<TaskChange>, sqlx::Error> {
    let subscribers: Vec<Subscriber> = sqlx::query_as(ENDPOINTS_SQL).fetch_all(&mut *tx).await?;
    fan_out_to(tx, events, &subscribers).await
}

/// [`fan_out`] to `subscribers`, the enabled endpoints read earlier in `tx`.
pub(crate) async fn fan_out_to(
    tx: &mut PgConnection,
    events: &[RecordedEvent],
    subscribers: &[Subscriber],
) -> Result<Vec<TaskChange>, sqlx::Error> {
    if subscribers.is_empty() {
        return Ok(Vec::new());
    }
    let mut messages = MessageRows::default();
    for event in events {
        let institution = institution_of(event);
        let mut body: Option<String> = None;
        for subscriber in subscribers.iter().filter(|s| s.wants(event, institution)) {
            let body = body
                .get_or_insert_with(|| {
                    public_body(
                        &event.event_type,
                        event.event_id,
                        event.recorded_at,
                        institution,
                        event.reprocessed_from(),
                        &event.payload,
                    )
                })
                .clone();
            messages.push(
                message_id(event.event_id, subscriber.id),
                subscriber.id,
                event,
                institution,
                body,
            );
        }
    }
    messages.insert(tx).await
}

/// Messages to insert, column by column (one `unnest` statement).
#[derive(Default)]
pub(crate) struct MessageRows {
    ids: Vec<Uuid>,
    endpoints: Vec<Uuid>,
    events: Vec<Uuid>,
    types: Vec<String>,
    institutions: Vec<Option<Uuid>>,
    originals: Vec<Option<Uuid>>,
    recorded: Vec<DateTime<Utc>>,
    bodies: Vec<String>,
}

impl MessageRows {
    pub(crate) fn push(
        &mut self,
        id: Uuid,
        endpoint: Uuid,
        event: &RecordedEvent,
        institution: Option<Uuid>,
        body: String,
    ) {
        self.ids.push(id);
        self.endpoints.push(endpoint);
        self.events.push(event.event_id);
        self.types.push(event.event_type.clone());
        self.institutions.push(institution);
        self.originals.push(event.reprocessed_from());
        self.recorded.push(event.recorded_at);
        self.bodies.push(body);
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Inserts the messages not there yet and the first task of each.
    pub(crate) async fn insert(
        self,
        tx: &mut PgConnection,
    ) -> Result<Vec<TaskChange>, sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        let inserted: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "INSERT INTO webhook_messages (id, endpoint_id, event_id, event_type, institution_id,
                                           original_event_id, event_recorded_at, body, next_attempt_at)
             SELECT *, now() FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[],
                                  $6::uuid[], $7::timestamptz[], $8::text[])
             ON CONFLICT (event_id, endpoint_id) DO NOTHING
             RETURNING id, institution_id",
        )
        .bind(&self.ids)
        .bind(&self.endpoints)
        .bind(&self.events)
        .bind(&self.types)
        .bind(&self.institutions)
        .bind(&self.originals)
        .bind(&self.recorded)
        .bind(&self.bodies)
        .fetch_all(&mut *tx)
        .await?;
        let tasks: Vec<NewTask> = inserted
            .into_iter()
            .map(|(id, institution)| delivery_task(id, 1, false, institution))
            .collect();
        insert_tasks_unrecorded(tx, &tasks).await
    }
}

/// Counts by endpoint, for logs.
pub fn by_endpoint(ids: &[Uuid]) -> HashMap<Uuid, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(*id).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_public_form_without_sensitive_fields() {
        let event = Uuid::new_v4();
        let body = public_body(
            "UserCreated",
            event,
            Utc::now(),
            None,
            None,
            &json!({"type": "UserCreated", "email": "a@b.c", "password_hash": "$argon2id$...",
                    "nested": {"token_hash": "abc", "keep": 1}}),
        );
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["type"], "UserCreated");
        assert_eq!(value["event_id"], event.to_string());
        assert_eq!(value["data"]["email"], "a@b.c");
        assert!(value["data"].get("password_hash").is_none());
        assert!(value["data"].get("type").is_none());
        assert!(value["data"]["nested"].get("token_hash").is_none());
        assert_eq!(value["data"]["nested"]["keep"], 1);
        assert!(!body.contains("argon2"));
    }

    #[test]
    fn large_bodies_are_thin() {
        let big = "x".repeat(MAX_BODY_BYTES);
        let body = public_body(
            "CourseOpened",
            Uuid::new_v4(),
            Utc::now(),
            None,
            None,
            &json!({"name": big}),
        );
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["thin"], true);
        assert!(value.get("data").is_none());
        assert!(body.len() < 1024);
    }

    #[test]
    fn message_ids_are_stable_per_event_and_endpoint() {
        let (e, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(message_id(e, a), message_id(e, a));
        assert_ne!(message_id(e, a), message_id(e, b));
    }
}
