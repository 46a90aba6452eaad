//! Every event variant survives serialize → deserialize unchanged, in the stored
//! (internally tagged) form.

use std::fmt::Debug;

use aula_domain::{application, course, exam_grade, institution, student, teacher, user};
use cqrs_es::DomainEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn assert_round_trips<E>(events: Vec<E>)
where
    E: Serialize + DeserializeOwned + PartialEq + Debug + DomainEvent,
{
    assert!(!events.is_empty());
    for event in events {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["type"],
            serde_json::Value::String(event.event_type()),
            "tagged with its event type"
        );
        let back: E = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, event, "{json}");
    }
}

#[test]
fn every_aggregates_events_round_trip() {
    assert_round_trips(user::sample_events());
    assert_round_trips(institution::sample_events());
    assert_round_trips(student::sample_events());
    assert_round_trips(teacher::sample_events());
    assert_round_trips(application::sample_events());
    assert_round_trips(course::sample_events());
    assert_round_trips(exam_grade::sample_events());
}

#[test]
fn stored_form_is_stable() {
    // A literal of the stored form, so an accidental change to serde attributes fails here.
    let json = serde_json::json!({
        "type": "ExamGradeNoteChanged",
        "from": "7.50",
        "to": "8.25",
        "teacher_id": "00000000-0000-0000-0000-000000000006",
        "at": "2026-02-03T14:30:00Z"
    });
    let event: exam_grade::ExamGradeEvent = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(event, exam_grade::sample_events()[1]);
    assert_eq!(serde_json::to_value(&event).unwrap(), json);
}

#[test]
fn invalid_values_in_a_stored_payload_fail_to_load() {
    let json = serde_json::json!({
        "type": "CapacityChanged",
        "from": 30,
        "to": 0
    });
    assert!(serde_json::from_value::<course::CourseEvent>(json).is_err());
}
