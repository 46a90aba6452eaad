//! Given/when/then tests of the `Application` aggregate: one stream per applicant and
//! course, repeats answered without a second event, a reused idempotency key refused.

use aula_domain::application::{
    application_id_for, Application, ApplicationCommand, ApplicationError, ApplicationEvent,
    ApplicationServices,
};
use aula_domain::values::{CourseId, Email, PersonName};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

use crate::fixtures::{birth_date, course_id, institution_id, now};

fn framework() -> TestFramework<Application> {
    TestFramework::with(ApplicationServices)
}

fn email() -> Email {
    Email::parse("Ada@Example.org").unwrap()
}

/// An application of Ada's e-mail to course 4, under `name` and client key `key`: the
/// fields `SubmitApplication` carries and `ApplicationSubmitted` records (with `extra`).
macro_rules! application {
    ($($variant:ident)::+, $name:expr, $key:expr $(, $extra:ident: $value:expr)*) => {
        $($variant)::+ {
            $($extra: $value,)*
            course_id: course_id(),
            institution_id: institution_id(),
            name: PersonName::parse($name).unwrap(),
            birth_date: birth_date(),
            email: email(),
            requested_at: now(),
            idempotency_key: $key.map(str::to_owned),
        }
    };
}

fn submit(name: &str, key: Option<&str>) -> ApplicationCommand {
    application!(ApplicationCommand::SubmitApplication, name, key)
}

fn submitted(name: &str, key: Option<&str>) -> ApplicationEvent {
    let application_id = application_id_for(course_id(), &email());
    application!(ApplicationEvent::ApplicationSubmitted, name, key, application_id: application_id)
}

#[test]
fn submitting_records_the_application() {
    framework()
        .given_no_previous_events()
        .when(submit("Ada Lovelace", Some("k1")))
        .then_expect_events(vec![submitted("Ada Lovelace", Some("k1"))]);
}

#[test]
fn the_id_depends_on_course_and_normalized_email_only() {
    let a = application_id_for(course_id(), &Email::parse("ada@example.org").unwrap());
    let b = application_id_for(course_id(), &Email::parse(" ADA@example.ORG ").unwrap());
    assert_eq!(a, b);
    let other_course = application_id_for(
        CourseId::from_uuid(Uuid::from_u128(5)),
        &Email::parse("ada@example.org").unwrap(),
    );
    assert_ne!(a, other_course);
}

/// A repeat is answered with the existing application: under the same key and input,
/// and for the same e-mail under another name without a key or under another key.
#[test]
fn a_repeat_of_the_same_email_records_nothing() {
    let repeats = [
        (("Ada Lovelace", Some("k1")), ("Ada Lovelace", Some("k1"))),
        (("Ada Lovelace", Some("k1")), ("Ada King", None)),
        (("Ada Lovelace", None), ("Ada King", Some("k2"))),
    ];
    for ((first, first_key), (again, again_key)) in repeats {
        framework()
            .given(vec![submitted(first, first_key)])
            .when(submit(again, again_key))
            .then_expect_events(vec![]);
    }
}

#[test]
fn the_same_key_with_other_input_is_refused() {
    framework()
        .given(vec![submitted("Ada Lovelace", Some("k1"))])
        .when(submit("Ada King", Some("k1")))
        .then_expect_error(ApplicationError::IdempotencyKeyReused);
}
