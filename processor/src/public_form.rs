//! The public form of an event: what leaves Aula for other systems (the NATS JetStream
//! stream of `aula-broker`; webhooks will send the same form).
//!
//! ```json
//! {"id": "<event id>", "type": "StudentEnrolled", "timestamp": "2026-12-06T15:04:05.123456Z",
//!  "institution_id": "<uuid or null>", "data": { ...payload fields... },
//!  "reprocessed_from": "<original event id>"}
//! ```
//!
//! `data` is the stored payload without its `type` tag and without the catalog's
//! sensitive fields (`aula_domain::catalog::SENSITIVE_FIELDS`, at any depth): they are
//! *removed*, not masked, so no consumer ever sees even their presence.
//! `reprocessed_from` is present only on a reprocessed copy (a new event, with an id of
//! its own) and names the original it copies.
//!
//! **Invariant:** built from the stored event alone (no clock, no lookups), so the same
//! event always has the same public form, byte for byte: a redelivery is a true copy.

use aula_domain::catalog::SENSITIVE_FIELDS;
use aula_eventlog::RecordedEvent;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use aula_eventlog::metadata::REPROCESSED_FROM;

/// The public form of `event`, as a JSON value (see the module docs).
pub fn public_form(event: &RecordedEvent) -> Value {
    let mut form = Map::with_capacity(6);
    form.insert("id".into(), Value::String(event.event_id.to_string()));
    form.insert("type".into(), Value::String(event.event_type.clone()));
    form.insert(
        "timestamp".into(),
        Value::String(
            event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    );
    form.insert(
        "institution_id".into(),
        event
            .institution_id()
            .map_or(Value::Null, |id| Value::String(id.to_string())),
    );
    form.insert("data".into(), public_data(&event.payload));
    if let Some(original) = reprocessed_from(event) {
        form.insert(REPROCESSED_FROM.into(), Value::String(original.to_owned()));
    }
    Value::Object(form)
}

/// The public form serialized (what a message body or a webhook request carries).
///
/// Written straight from the stored event, without building the JSON tree of
/// [`public_form`] first: the broker serializes every event of the log, and copying
/// each payload into a new tree cost about as much as the serialization itself. The
/// bytes are the same as `serde_json::to_vec(&public_form(event))` (keys in the same
/// sorted order; a test holds the two equal), so a redelivery stays a true copy.
pub fn public_form_bytes(event: &RecordedEvent) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    // Serializing into a `Vec` cannot fail: every key is a string and nothing does I/O.
    serde_json::to_writer(&mut body, &PublicForm(event)).expect("a JSON value serializes");
    body
}

/// [`public_form`] as a `Serialize`: the keys in the order a `serde_json::Map` (sorted)
/// would write them.
struct PublicForm<'a>(&'a RecordedEvent);

impl Serialize for PublicForm<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let original = reprocessed_from(event);
        let mut map = serializer.serialize_map(Some(5 + usize::from(original.is_some())))?;
        map.serialize_entry("data", &PublicData(&event.payload))?;
        map.serialize_entry("id", &event.event_id)?;
        map.serialize_entry("institution_id", &event.institution_id())?;
        if let Some(original) = original {
            map.serialize_entry(REPROCESSED_FROM, original)?;
        }
        map.serialize_entry(
            "timestamp",
            &event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        )?;
        map.serialize_entry("type", &event.event_type)?;
        map.end()
    }
}

/// The payload as [`public_data`] writes it: without the `type` tag at the top.
struct PublicData<'a>(&'a Value);

impl Serialize for PublicData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(fields) => serializer
                .collect_map(without_sensitive_fields(fields).filter(|(key, _)| *key != "type")),
            other => WithoutSensitive(other).serialize(serializer),
        }
    }
}

/// A value as [`without_sensitive`] writes it.
struct WithoutSensitive<'a>(&'a Value);

impl Serialize for WithoutSensitive<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(fields) => serializer.collect_map(without_sensitive_fields(fields)),
            Value::Array(items) => serializer.collect_seq(items.iter().map(WithoutSensitive)),
            other => other.serialize(serializer),
        }
    }
}

/// An object's fields but the sensitive ones, their values as [`WithoutSensitive`].
fn without_sensitive_fields(
    fields: &serde_json::Map<String, Value>,
) -> impl Iterator<Item = (&str, WithoutSensitive<'_>)> {
    fields
        .iter()
        .filter(|(key, _)| !SENSITIVE_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.as_str(), WithoutSensitive(value)))
}

/// The id of the original when `event` is a reprocessed copy.
pub fn reprocessed_from(event: &RecordedEvent) -> Option<&str> {
    event.metadata.get(REPROCESSED_FROM).and_then(Value::as_str)
}

/// The payload's fields without the `type` tag and the sensitive fields.
fn public_data(payload: &Value) -> Value {
    match payload {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(key, _)| key.as_str() != "type")
                .filter(|(key, _)| !SENSITIVE_FIELDS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), without_sensitive(value)))
                .collect(),
        ),
        other => without_sensitive(other),
    }
}

fn without_sensitive(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(key, _)| !SENSITIVE_FIELDS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), without_sensitive(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_sensitive).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aula_eventlog::LogPosition;
    use serde_json::json;
    use uuid::Uuid;

    fn event(payload: Value, metadata: Value) -> RecordedEvent {
        RecordedEvent {
            position: LogPosition {
                tx_id: 7,
                global_position: 3,
            },
            event_id: Uuid::nil(),
            aggregate_type: "user".into(),
            aggregate_id: "u".into(),
            sequence: 1,
            event_type: "PasswordReset".into(),
            event_version: "1.0".into(),
            payload: payload.into(),
            metadata: metadata.into(),
            recorded_at: chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn sensitive_fields_are_removed_at_any_depth_and_the_tag_dropped() {
        let institution = Uuid::new_v4();
        let form = public_form(&event(
            json!({"type": "PasswordReset", "password_hash": "h", "user": "u",
                   "nested": [{"token_hash": "t", "kept": 1}]}),
            json!({"institution_id": institution.to_string()}),
        ));
        assert_eq!(
            form,
            json!({
                "id": Uuid::nil().to_string(), "type": "PasswordReset",
                "timestamp": "2026-12-06T10:00:00.000000Z",
                "institution_id": institution.to_string(),
                "data": {"user": "u", "nested": [{"kept": 1}]},
            })
        );
        let text = String::from_utf8(public_form_bytes(&event(
            json!({"token_hash": "secret"}),
            json!({}),
        )))
        .unwrap();
        assert!(
            !text.contains("token_hash") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn the_streamed_bytes_equal_the_serialized_tree() {
        let institution = Uuid::new_v4().to_string();
        let cases = [
            event(
                json!({"type": "PasswordReset", "password_hash": "h", "user": "u", "z": null,
                       "nested": [{"token_hash": "t", "kept": 1, "deep": {"type": "kept", "password_hash": 2}}],
                       "a": [1, 2.5, "x", true, []], "unicode": "é\"\n"}),
                json!({"institution_id": institution}),
            ),
            event(
                json!({}),
                json!({"reprocessed_from": Uuid::nil().to_string()}),
            ),
            event(
                json!("not an object"),
                json!({"institution_id": "not a uuid"}),
            ),
            event(json!([{"token_hash": "t"}]), json!({})),
        ];
        for case in &cases {
            assert_eq!(
                String::from_utf8(public_form_bytes(case)).unwrap(),
                serde_json::to_string(&public_form(case)).unwrap()
            );
        }
    }

    #[test]
    fn a_reprocessed_copy_names_its_original() {
        let original = Uuid::new_v4().to_string();
        let form = public_form(&event(json!({}), json!({"reprocessed_from": original})));
        assert_eq!(form["reprocessed_from"], json!(original));
        assert_eq!(form["institution_id"], Value::Null);
    }
}
