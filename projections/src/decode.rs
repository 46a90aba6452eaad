//! Turning stored events into the domain's typed events: upcast old payloads first
//! (the domain's [`aula_domain::upcasters`]), then deserialize.

use aula_eventlog::RecordedEvent;
use serde::de::DeserializeOwned;

use crate::ProjectionError;

pub use aula_eventlog::metadata::REPROCESSED_FROM;

/// The original's id when `event` is a reprocessed copy.
pub fn reprocessed_from(event: &RecordedEvent) -> Option<uuid::Uuid> {
    event.reprocessed_from()
}

/// Whether `event` is a reprocessed copy (domain read models skip those). A copy whose
/// original id does not parse is still a copy.
pub fn is_reprocessed(event: &RecordedEvent) -> bool {
    event.is_reprocessed()
}

/// Deserializes `event`'s payload as `E`, upcasting it first when it is of an older
/// version ([`aula_domain::decode`]).
pub fn decode<E: DeserializeOwned>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    aula_domain::decode(&event.event_type, &event.event_version, &event.payload).map_err(|source| {
        ProjectionError::Decode {
            global_position: event.global_position(),
            event_type: event.event_type.clone(),
            source,
        }
    })
}

/// The events among `events` that a course read model reads: of the course aggregate, of
/// one of `event_types`, and not reprocessed copies.
pub fn course_events<'a>(
    events: &'a [RecordedEvent],
    event_types: &'a [&str],
) -> impl Iterator<Item = &'a RecordedEvent> {
    events.iter().filter(|event| {
        event.aggregate_type == "course"
            && event_types.contains(&event.event_type.as_str())
            && !is_reprocessed(event)
    })
}

/// Parses `event`'s aggregate id as a uuid (the id of a course, student, grade...: each
/// such aggregate's id is its stream id).
pub fn aggregate_uuid(event: &RecordedEvent) -> Result<uuid::Uuid, ProjectionError> {
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
    use serde_json::{json, Value};

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
            payload: payload.into(),
            metadata: metadata.into(),
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
