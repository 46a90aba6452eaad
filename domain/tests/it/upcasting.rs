//! Stored payloads of older event versions load as the current version.

use aula_domain::student::{StudentEvent, STUDENT_CREATED_VERSION};
use aula_domain::upcasters;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::DomainEvent;

fn stored(event_type: &str, version: &str, payload: serde_json::Value) -> SerializedEvent {
    SerializedEvent::new(
        "00000000-0000-0000-0000-0000000000aa".to_owned(),
        1,
        "student".to_owned(),
        event_type.to_owned(),
        version.to_owned(),
        payload,
        serde_json::json!({}),
    )
}

/// What the event store does on load: run every applicable upcaster in order.
fn upcast(event: SerializedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> SerializedEvent {
    upcasters.iter().fold(event, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

#[test]
fn student_created_v1_loads_as_v2() {
    let v1 = stored(
        "StudentCreated",
        "1.0",
        serde_json::json!({
            "type": "StudentCreated",
            "institution_id": "00000000-0000-0000-0000-000000000002",
            "user_id": "00000000-0000-0000-0000-000000000001",
            "full_name": "Ada Lovelace",
            "email": "  Ada@Example.ORG ",
            "birth_date": "2008-03-14"
        }),
    );
    let upcasted = upcast(v1, &upcasters());
    // cqrs-es writes the target version in full semantic form ("2.0" -> "2.0.0").
    assert_eq!(
        upcasted.event_version,
        format!("{STUDENT_CREATED_VERSION}.0")
    );
    let event: StudentEvent = serde_json::from_value(upcasted.payload).unwrap();
    assert_eq!(event, aula_domain::student::sample_events()[0]);
    assert_eq!(event.event_version(), "2.0");
}

#[test]
fn current_version_payloads_are_left_alone() {
    let current = aula_domain::student::sample_events()[0].clone();
    let payload = serde_json::to_value(&current).unwrap();
    let event = stored("StudentCreated", "2.0", payload.clone());
    let upcasted = upcast(event.clone(), &upcasters());
    assert_eq!(upcasted, event);
}

#[test]
fn other_event_types_are_not_touched() {
    let payload = serde_json::json!({"type": "TeacherCreated", "full_name": "x"});
    let event = stored("TeacherCreated", "1.0", payload);
    assert_eq!(upcast(event.clone(), &upcasters()), event);
}
