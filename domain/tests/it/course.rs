//! Given/when/then tests of the `Course` enrollment aggregate: every command and
//! rejection, and the capacity invariant.

use aula_domain::course::{
    Course, CourseCommand, CourseEvent, CourseServices, DeclineReason, EnrollmentError,
};
use aula_domain::values::{ApplicationId, Capacity, CourseName, Email, PersonName};
use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

use crate::fixtures::{birth_date, campus_id, institution_id, now, today};

type CourseTest = TestFramework<Course>;

fn framework() -> CourseTest {
    CourseTest::with(CourseServices)
}

fn app(n: u128) -> ApplicationId {
    ApplicationId::from_uuid(Uuid::from_u128(0x700 + n))
}

fn applicant_email(n: u128) -> Email {
    Email::parse(&format!("applicant{n}@example.org")).unwrap()
}

fn applicant_name() -> PersonName {
    PersonName::parse("Ada Lovelace").unwrap()
}

fn capacity(seats: u32) -> Capacity {
    Capacity::new(seats).unwrap()
}

/// Física I with `seats` seats: the fields `OpenCourse` carries and `CourseOpened`
/// records alike.
macro_rules! course_of {
    ($($variant:ident)::+, $seats:expr) => {
        $($variant)::+ {
            institution_id: institution_id(),
            campus_id: campus_id(),
            name: CourseName::parse("Física I").unwrap(),
            capacity: capacity($seats),
        }
    };
}

/// Application `n`, using e-mail `email_n`: the fields `RequestEnrollment` carries and
/// `EnrollmentRequested` records alike.
macro_rules! application_of {
    ($($variant:ident)::+, $n:expr, $email_n:expr) => {
        $($variant)::+ {
            application_id: app($n),
            name: applicant_name(),
            birth_date: birth_date(),
            email: applicant_email($email_n),
            requested_at: now(),
        }
    };
}

fn opened(seats: u32) -> CourseEvent {
    course_of!(CourseEvent::CourseOpened, seats)
}

fn requested(n: u128, email_n: u128) -> CourseEvent {
    application_of!(CourseEvent::EnrollmentRequested, n, email_n)
}

fn enrolled(n: u128, email_n: u128) -> CourseEvent {
    CourseEvent::StudentEnrolled {
        application_id: app(n),
        name: applicant_name(),
        email: applicant_email(email_n),
        birth_date: birth_date(),
        age_years: 17,
        enrolled_on: today(),
        campus_id: campus_id(),
        institution_id: institution_id(),
    }
}

fn declined(n: u128, email_n: u128, reason: DeclineReason) -> CourseEvent {
    CourseEvent::EnrollmentDeclined {
        application_id: app(n),
        name: applicant_name(),
        email: applicant_email(email_n),
        reason,
    }
}

fn cancelled(n: u128, email_n: u128) -> CourseEvent {
    CourseEvent::EnrollmentCancelled {
        application_id: app(n),
        email: applicant_email(email_n),
        age_years: 17,
        campus_id: campus_id(),
        institution_id: institution_id(),
        cancelled_on: today(),
    }
}

fn decide(n: u128) -> CourseCommand {
    CourseCommand::DecideEnrollment {
        application_id: app(n),
        today: today(),
    }
}

fn request(n: u128, email_n: u128) -> CourseCommand {
    application_of!(CourseCommand::RequestEnrollment, n, email_n)
}

fn change_capacity(seats: u32) -> CourseCommand {
    CourseCommand::ChangeCapacity {
        capacity: capacity(seats),
    }
}

fn open(seats: u32) -> CourseCommand {
    course_of!(CourseCommand::OpenCourse, seats)
}

fn cancel(n: u128) -> CourseCommand {
    CourseCommand::CancelEnrollment {
        application_id: app(n),
        at: now(),
    }
}

// --- OpenCourse ---

#[test]
fn opening_a_course_records_it() {
    framework()
        .given_no_previous_events()
        .when(open(2))
        .then_expect_events(vec![opened(2)]);
}

#[test]
fn opening_twice_is_rejected() {
    framework()
        .given(vec![opened(2)])
        .when(open(2))
        .then_expect_error(EnrollmentError::AlreadyOpened);
}

// --- RequestEnrollment ---

#[test]
fn a_request_is_recorded_at_once() {
    framework()
        .given(vec![opened(2)])
        .when(request(1, 1))
        .then_expect_events(vec![requested(1, 1)]);
}

#[test]
fn a_request_is_recorded_even_when_the_class_is_full() {
    framework()
        .given(vec![opened(1), requested(1, 1), enrolled(1, 1)])
        .when(request(2, 2))
        .then_expect_events(vec![requested(2, 2)]);
}

#[test]
fn reusing_an_application_id_is_rejected() {
    framework()
        .given(vec![opened(2), requested(1, 1)])
        .when(request(1, 1))
        .then_expect_error(EnrollmentError::ApplicationAlreadyExists);
}

// --- DecideEnrollment ---

#[test]
fn deciding_with_a_free_seat_enrolls_with_the_age_on_that_day() {
    framework()
        .given(vec![opened(2), requested(1, 1)])
        .when(decide(1))
        .then_expect_events(vec![enrolled(1, 1)]);
}

#[test]
fn the_age_is_counted_on_the_decision_day() {
    let events = framework()
        .given(vec![opened(2), requested(1, 1)])
        .when(CourseCommand::DecideEnrollment {
            application_id: app(1),
            today: NaiveDate::from_ymd_opt(2026, 3, 14).unwrap(),
        })
        .inspect_result()
        .unwrap();
    match events.as_slice() {
        [CourseEvent::StudentEnrolled { age_years, .. }] => assert_eq!(*age_years, 18),
        other => panic!("expected one StudentEnrolled, got {other:?}"),
    }
}

#[test]
fn deciding_declines_a_full_class_an_enrolled_email_and_a_closed_course() {
    let cases = [
        (
            vec![opened(1), requested(1, 1), requested(2, 2), enrolled(1, 1)],
            2,
            declined(2, 2, DeclineReason::ClassFull),
        ),
        (
            vec![opened(5), requested(1, 1), requested(2, 1), enrolled(1, 1)],
            2,
            declined(2, 1, DeclineReason::AlreadyEnrolled),
        ),
        (
            vec![opened(5), requested(1, 1), CourseEvent::CourseClosed],
            1,
            declined(1, 1, DeclineReason::CourseClosed),
        ),
    ];
    for (given, n, declined) in cases {
        framework()
            .given(given)
            .when(decide(n))
            .then_expect_events(vec![declined]);
    }
}

#[test]
fn a_cancelled_seat_can_be_taken_again() {
    framework()
        .given(vec![
            opened(1),
            requested(1, 1),
            requested(2, 2),
            enrolled(1, 1),
            cancelled(1, 1),
        ])
        .when(decide(2))
        .then_expect_events(vec![enrolled(2, 2)]);
}

#[test]
fn deciding_an_enrolled_or_declined_application_again_is_already_decided() {
    for (seats, decision) in [
        (2, enrolled(1, 1)),
        (1, declined(1, 1, DeclineReason::ClassFull)),
    ] {
        framework()
            .given(vec![opened(seats), requested(1, 1), decision])
            .when(decide(1))
            .then_expect_error(EnrollmentError::AlreadyDecided);
    }
}

#[tokio::test]
async fn decisions_never_exceed_capacity() {
    // Ten applications for three seats, decided one after another on the same state, as
    // the event store's optimistic concurrency serializes concurrent workers.
    let mut course = Course::default();
    course.apply(opened(3));
    for n in 0..10 {
        course.apply(requested(n, n));
    }
    let mut enrolled_count = 0;
    for n in 0..10 {
        let sink = EventSink::default();
        course
            .handle(decide(n), &CourseServices, &sink)
            .await
            .unwrap();
        let events = sink.collect().await;
        enrolled_count += events
            .iter()
            .filter(|event| matches!(event, CourseEvent::StudentEnrolled { .. }))
            .count();
    }
    assert_eq!(enrolled_count, 3);
    assert_eq!(course.enrolled_count(), 3);
    assert!(course.pending().is_empty());
}

// --- CancelEnrollment ---

#[test]
fn cancelling_frees_the_seat_and_carries_the_age() {
    framework()
        .given(vec![opened(2), requested(1, 1), enrolled(1, 1)])
        .when(cancel(1))
        .then_expect_events(vec![cancelled(1, 1)]);
}

#[test]
fn cancelling_twice_is_rejected() {
    framework()
        .given(vec![
            opened(2),
            requested(1, 1),
            enrolled(1, 1),
            cancelled(1, 1),
        ])
        .when(cancel(1))
        .then_expect_error(EnrollmentError::AlreadyCancelled);
}

#[test]
fn cancelling_a_pending_or_declined_application_is_rejected() {
    let declined = declined(1, 1, DeclineReason::ClassFull);
    for given in [
        vec![opened(2), requested(1, 1)],
        vec![opened(2), requested(1, 1), declined],
    ] {
        framework()
            .given(given)
            .when(cancel(1))
            .then_expect_error(EnrollmentError::NotEnrolled);
    }
}

// --- ChangeCapacity ---

/// Growing, and shrinking down to the enrolled count, record the old and new capacity.
#[test]
fn changing_capacity_records_from_and_to() {
    for (given, from, to) in [
        (vec![opened(2)], 2, 5),
        (vec![opened(5), requested(1, 1), enrolled(1, 1)], 5, 1),
    ] {
        framework()
            .given(given)
            .when(change_capacity(to))
            .then_expect_events(vec![CourseEvent::CapacityChanged {
                from: capacity(from),
                to: capacity(to),
            }]);
    }
}

#[test]
fn capacity_below_the_enrolled_count_is_rejected() {
    framework()
        .given(vec![
            opened(5),
            requested(1, 1),
            requested(2, 2),
            enrolled(1, 1),
            enrolled(2, 2),
        ])
        .when(change_capacity(1))
        .then_expect_error(EnrollmentError::CapacityBelowEnrolled { enrolled: 2 });
}

#[test]
fn setting_the_same_capacity_records_nothing() {
    framework()
        .given(vec![opened(5)])
        .when(change_capacity(5))
        .then_expect_events(vec![]);
}

#[test]
fn changing_capacity_of_a_closed_course_is_rejected() {
    framework()
        .given(vec![opened(5), CourseEvent::CourseClosed])
        .when(change_capacity(6))
        .then_expect_error(EnrollmentError::CourseClosed);
}

// --- CloseCourse ---

#[test]
fn closing_records_it() {
    framework()
        .given(vec![opened(5)])
        .when(CourseCommand::CloseCourse)
        .then_expect_events(vec![CourseEvent::CourseClosed]);
}

#[test]
fn closing_twice_is_rejected() {
    framework()
        .given(vec![opened(5), CourseEvent::CourseClosed])
        .when(CourseCommand::CloseCourse)
        .then_expect_error(EnrollmentError::CourseClosed);
}

// --- rejections every command shares ---

#[test]
fn every_command_but_opening_is_refused_before_the_course_opened() {
    for command in [
        request(1, 1),
        decide(1),
        cancel(1),
        change_capacity(6),
        CourseCommand::CloseCourse,
        decide_batch(&[(1, 1)]),
    ] {
        framework()
            .given_no_previous_events()
            .when(command)
            .then_expect_error(EnrollmentError::CourseNotFound);
    }
}

#[test]
fn deciding_or_cancelling_an_unknown_application_is_not_found() {
    for command in [decide(9), cancel(9)] {
        framework()
            .given(vec![opened(2)])
            .when(command)
            .then_expect_error(EnrollmentError::ApplicationNotFound);
    }
}

// --- state and errors ---

#[test]
fn state_snapshots_round_trip() {
    let mut course = Course::default();
    for event in [opened(2), requested(1, 1), requested(2, 2), enrolled(1, 1)] {
        course.apply(event);
    }
    let snapshot = serde_json::to_value(&course).unwrap();
    assert_eq!(serde_json::from_value::<Course>(snapshot).unwrap(), course);
}

// --- DecideApplications (applications submitted in streams of their own) ---

fn to_decide(n: u128, email_n: u128) -> aula_domain::course::ApplicationToDecide {
    aula_domain::course::ApplicationToDecide {
        application_id: app(n),
        name: applicant_name(),
        email: applicant_email(email_n),
        birth_date: birth_date(),
    }
}

fn decide_batch(applications: &[(u128, u128)]) -> CourseCommand {
    CourseCommand::DecideApplications {
        applications: applications
            .iter()
            .map(|(n, email_n)| to_decide(*n, *email_n))
            .collect(),
        today: today(),
    }
}

#[test]
fn a_batch_gives_the_seats_to_the_first_applications_in_order() {
    framework()
        .given(vec![opened(2), enrolled(1, 1)])
        .when(decide_batch(&[(3, 3), (2, 2), (4, 4)]))
        .then_expect_events(vec![
            enrolled(3, 3),
            declined(2, 2, DeclineReason::ClassFull),
            declined(4, 4, DeclineReason::ClassFull),
        ]);
}

#[test]
fn a_redelivered_batch_decides_nothing_twice() {
    framework()
        .given(vec![
            opened(2),
            enrolled(1, 1),
            declined(2, 2, DeclineReason::ClassFull),
        ])
        .when(decide_batch(&[(1, 1), (2, 2), (3, 3), (3, 3)]))
        .then_expect_events(vec![enrolled(3, 3)]);
}

#[test]
fn a_batch_declines_the_same_email_and_a_closed_course() {
    framework()
        .given(vec![opened(5)])
        .when(decide_batch(&[(1, 1), (2, 1)]))
        .then_expect_events(vec![
            enrolled(1, 1),
            declined(2, 1, DeclineReason::AlreadyEnrolled),
        ]);
    framework()
        .given(vec![opened(5), CourseEvent::CourseClosed])
        .when(decide_batch(&[(1, 1)]))
        .then_expect_events(vec![declined(1, 1, DeclineReason::CourseClosed)]);
}

#[test]
fn cancellations_and_capacity_changes_apply_from_the_next_decision() {
    framework()
        .given(vec![
            opened(1),
            enrolled(1, 1),
            cancelled(1, 1),
            CourseEvent::CapacityChanged {
                from: capacity(1),
                to: capacity(2),
            },
        ])
        .when(decide_batch(&[(2, 2), (3, 3), (4, 4)]))
        .then_expect_events(vec![
            enrolled(2, 2),
            enrolled(3, 3),
            declined(4, 4, DeclineReason::ClassFull),
        ]);
}

#[test]
fn a_batch_also_decides_a_pending_old_shape_application() {
    framework()
        .given(vec![opened(1), requested(1, 1)])
        .when(decide_batch(&[(1, 1)]))
        .then_expect_events(vec![enrolled(1, 1)]);
}
