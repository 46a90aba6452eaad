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

/// Login events of 1.0 had no source: a failure counted against the whole account and a
/// lockout locked all of it. They load as 2.0 with `source: null`, which means that.
#[test]
fn login_events_of_version_1_load_and_mean_what_they_meant() {
    use aula_domain::user::{User, UserCommand, UserError, UserEvent, UserServices};
    use aula_domain::values::LoginSource;
    use chrono::{TimeZone, Utc};

    let at = |minute| Utc.with_ymd_and_hms(2026, 2, 3, 12, minute, 0).unwrap();
    let v1 = |payload: serde_json::Value| {
        let event_type = payload["type"].as_str().unwrap().to_owned();
        let upcasted = upcast(stored(&event_type, "1.0", payload), &upcasters());
        assert_eq!(upcasted.event_version, "2.0.0", "{event_type}");
        let event: UserEvent = serde_json::from_value(upcasted.payload).unwrap();
        assert_eq!(event.event_version(), "2.0");
        event
    };
    let failed = v1(serde_json::json!({
        "type": "LoginFailed", "at": "2026-02-03T12:05:00Z", "consecutive_failures": 5
    }));
    assert_eq!(
        failed,
        UserEvent::LoginFailed {
            at: at(5),
            consecutive_failures: 5,
            source: None,
            counts_until: None,
        }
    );
    let locked = v1(serde_json::json!({"type": "UserLockedOut", "until": "2026-02-03T12:20:00Z"}));
    assert_eq!(
        locked,
        UserEvent::UserLockedOut {
            until: at(20),
            source: None,
        }
    );
    let succeeded = v1(serde_json::json!({"type": "LoginSucceeded", "at": "2026-02-03T12:01:00Z"}));
    assert_eq!(
        succeeded,
        UserEvent::LoginSucceeded {
            at: at(1),
            source: None,
        }
    );

    let created = aula_domain::user::sample_events()
        .into_iter()
        .find(|event| matches!(event, UserEvent::UserCreated { .. }))
        .unwrap();
    let login = |address: &str, minute| UserCommand::AttemptLogin {
        password_matches: true,
        source: Some(LoginSource::from_ip(address.parse().unwrap())),
        now: at(minute),
    };
    // An old lockout locks the whole account, from any source, until it ends.
    for address in ["198.51.100.7", "2001:db8::1"] {
        cqrs_es::test::TestFramework::<User>::with(UserServices::default())
            .given(vec![
                created.clone(),
                succeeded.clone(),
                failed.clone(),
                locked.clone(),
            ])
            .when(login(address, 19))
            .then_expect_error(UserError::LockedOut { until: at(20) });
    }
    cqrs_es::test::TestFramework::<User>::with(UserServices::default())
        .given(vec![created.clone(), failed.clone(), locked])
        .when(login("198.51.100.7", 20))
        .then_expect_events(vec![UserEvent::LoginSucceeded {
            at: at(20),
            source: Some(LoginSource::from_ip("198.51.100.7".parse().unwrap())),
        }]);
    // Old failures without a lockout still count against the account: one more from
    // no known source reaches the old threshold.
    let four = v1(serde_json::json!({
        "type": "LoginFailed", "at": "2026-02-03T12:05:00Z", "consecutive_failures": 4
    }));
    cqrs_es::test::TestFramework::<User>::with(UserServices::default())
        .given(vec![created, four])
        .when(UserCommand::AttemptLogin {
            password_matches: false,
            source: None,
            now: at(30),
        })
        .then_expect_events(vec![
            UserEvent::LoginFailed {
                at: at(30),
                consecutive_failures: 5,
                source: None,
                counts_until: Some(at(45)),
            },
            UserEvent::UserLockedOut {
                until: at(45),
                source: None,
            },
        ]);
}
