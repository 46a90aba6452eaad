//! Turning stored events into the domain's typed events: upcast old payloads first
//! (the domain's [`aula_domain::upcasters`]), then deserialize.

use std::sync::OnceLock;

use aula_eventlog::RecordedEvent;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ProjectionError;

/// The metadata key a reprocessed copy carries: the id of the event it copies.
pub const REPROCESSED_FROM: &str = "reprocessed_from";

fn upcasters() -> &'static [Box<dyn EventUpcaster>] {
    static UPCASTERS: OnceLock<Vec<Box<dyn EventUpcaster>>> = OnceLock::new();
    UPCASTERS.get_or_init(aula_domain::upcasters)
}

/// The original's id when `event` is a reprocessed copy.
pub fn reprocessed_from(event: &RecordedEvent) -> Option<uuid::Uuid> {
    event
        .metadata
        .get(REPROCESSED_FROM)
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

/// Whether `event` is a reprocessed copy (domain read models skip those). A copy whose
/// original id does not parse is still a copy.
pub fn is_reprocessed(event: &RecordedEvent) -> bool {
    event.metadata.get(REPROCESSED_FROM).is_some()
}

/// Deserializes `event`'s payload as `E`, upcasting it first when it is of an older version.
pub fn decode<E: DeserializeOwned>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    let upcasters = upcasters();
    let needs_upcast = upcasters
        .iter()
        .any(|u| u.can_upcast(&event.event_type, &event.event_version));
    let result = if needs_upcast {
        let mut serialized = SerializedEvent {
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence as usize,
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
        };
        for upcaster in upcasters {
            if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
                serialized = upcaster.upcast(serialized);
            }
        }
        serde_json::from_value(serialized.payload)
    } else {
        // Borrowing deserializer: no copy of the payload.
        E::deserialize(&event.payload)
    };
    result.map_err(|source| ProjectionError::Decode {
        global_position: event.global_position(),
        event_type: event.event_type.clone(),
        source,
    })
}

/// Parses a course aggregate id (the course id is the stream id).
pub fn course_id(event: &RecordedEvent) -> Result<uuid::Uuid, ProjectionError> {
    event
        .aggregate_id
        .parse()
        .map_err(|_| ProjectionError::BadAggregateId {
            global_position: event.global_position(),
            aggregate_id: event.aggregate_id.clone(),
        })
}

#[cfg(test)]
mod tests {
    use aula_domain::student::StudentEvent;
    use aula_eventlog::LogPosition;
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn recorded(event_type: &str, version: &str, payload: Value, metadata: Value) -> RecordedEvent {
        RecordedEvent {
            position: LogPosition::START,
            event_id: uuid::Uuid::new_v4(),
            aggregate_type: "student".into(),
            aggregate_id: uuid::Uuid::new_v4().to_string(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: version.into(),
            payload,
            metadata,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn old_student_created_payloads_are_upcast_before_decoding() {
        let event = recorded(
            "StudentCreated",
            "1.0",
            json!({
                "type": "StudentCreated",
                "institution_id": uuid::Uuid::nil(),
                "user_id": uuid::Uuid::nil(),
                "full_name": "Ada Lovelace",
                "email": "  Ada@Example.org ",
                "birth_date": "2000-01-01"
            }),
            json!({}),
        );
        let StudentEvent::StudentCreated { name, email, .. } =
            decode::<StudentEvent>(&event).expect("an upcast 1.0 payload decodes");
        assert_eq!(name.as_str(), "Ada Lovelace");
        assert_eq!(email.as_str(), "ada@example.org");
    }

    #[test]
    fn undecodable_payloads_are_errors_naming_their_event() {
        let event = recorded(
            "StudentCreated",
            "2.0",
            json!({"type": "StudentCreated"}),
            json!({}),
        );
        let error = decode::<StudentEvent>(&event).expect_err("fields are missing");
        assert!(error.to_string().contains("StudentCreated"), "{error}");
    }

    #[test]
    fn copies_are_recognised_by_their_metadata() {
        let original = uuid::Uuid::new_v4();
        let copy = recorded(
            "StudentCreated",
            "2.0",
            json!({}),
            json!({ REPROCESSED_FROM: original.to_string() }),
        );
        assert!(is_reprocessed(&copy));
        assert_eq!(reprocessed_from(&copy), Some(original));
        let plain = recorded("StudentCreated", "2.0", json!({}), json!({}));
        assert!(!is_reprocessed(&plain));
    }
}
