//! Given/when/then tests of the `Institution` aggregate: every command and rejection.

use aula_domain::institution::{
    Institution, InstitutionCommand, InstitutionError, InstitutionEvent, InstitutionServices,
};
use aula_domain::values::{
    CampusId, CampusName, Capacity, CityName, CourseId, CourseName, InstitutionName, UserId,
};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

type InstitutionTest = TestFramework<Institution>;

fn framework() -> InstitutionTest {
    InstitutionTest::with(InstitutionServices)
}

fn campus_id(n: u128) -> CampusId {
    CampusId::from_uuid(Uuid::from_u128(0x100 + n))
}

fn course_id(n: u128) -> CourseId {
    CourseId::from_uuid(Uuid::from_u128(0x200 + n))
}

fn created() -> InstitutionEvent {
    InstitutionEvent::InstitutionCreated {
        name: InstitutionName::parse("Escola Aurora").unwrap(),
        manager_user_id: UserId::from_uuid(Uuid::from_u128(1)),
    }
}

/// Campus `n` named `name`, in Recife: what `CreateCampus` carries and `CampusCreated`
/// records alike.
macro_rules! campus_of {
    ($($variant:ident)::+, $n:expr, $name:expr) => {
        $($variant)::+ {
            campus_id: campus_id($n),
            name: CampusName::parse($name).unwrap(),
            city: CityName::parse("Recife").unwrap(),
        }
    };
}

/// Course `course` of 30 seats named `name` on campus `campus`: what `OfferCourse`
/// carries and `CourseOffered` records alike.
macro_rules! offer_of {
    ($($variant:ident)::+, $course:expr, $campus:expr, $name:expr) => {
        $($variant)::+ {
            course_id: course_id($course),
            campus_id: campus_id($campus),
            name: CourseName::parse($name).unwrap(),
            capacity: Capacity::new(30).unwrap(),
        }
    };
}

fn campus(n: u128, name: &str) -> InstitutionEvent {
    campus_of!(InstitutionEvent::CampusCreated, n, name)
}

fn create_campus(n: u128, name: &str) -> InstitutionCommand {
    campus_of!(InstitutionCommand::CreateCampus, n, name)
}

fn offered(course: u128, campus: u128, name: &str) -> InstitutionEvent {
    offer_of!(InstitutionEvent::CourseOffered, course, campus, name)
}

fn offer(course: u128, campus: u128, name: &str) -> InstitutionCommand {
    offer_of!(InstitutionCommand::OfferCourse, course, campus, name)
}

#[test]
fn creating_an_institution_records_it() {
    framework()
        .given_no_previous_events()
        .when(InstitutionCommand::CreateInstitution {
            name: InstitutionName::parse("Escola Aurora").unwrap(),
            manager_user_id: UserId::from_uuid(Uuid::from_u128(1)),
        })
        .then_expect_events(vec![created()]);
}

#[test]
fn creating_it_twice_is_rejected() {
    framework()
        .given(vec![created()])
        .when(InstitutionCommand::CreateInstitution {
            name: InstitutionName::parse("Other").unwrap(),
            manager_user_id: UserId::from_uuid(Uuid::from_u128(1)),
        })
        .then_expect_error(InstitutionError::AlreadyExists);
}

#[test]
fn creating_a_campus_records_it() {
    framework()
        .given(vec![created()])
        .when(create_campus(1, "Centro"))
        .then_expect_events(vec![campus(1, "Centro")]);
}

/// A campus name is a duplicate regardless of case; a campus id, when it is the same.
#[test]
fn a_duplicate_campus_name_or_id_is_rejected() {
    for (command, error) in [
        (
            create_campus(2, "  CENTRO "),
            InstitutionError::DuplicateCampusName,
        ),
        (
            create_campus(1, "Norte"),
            InstitutionError::CampusAlreadyExists,
        ),
    ] {
        framework()
            .given(vec![created(), campus(1, "Centro")])
            .when(command)
            .then_expect_error(error);
    }
}

#[test]
fn offering_a_course_records_it() {
    framework()
        .given(vec![created(), campus(1, "Centro")])
        .when(offer(1, 1, "Física I"))
        .then_expect_events(vec![offered(1, 1, "Física I")]);
}

#[test]
fn the_same_course_name_may_exist_on_another_campus() {
    framework()
        .given(vec![
            created(),
            campus(1, "Centro"),
            campus(2, "Norte"),
            offered(1, 1, "Física I"),
        ])
        .when(offer(2, 2, "Física I"))
        .then_expect_events(vec![offered(2, 2, "Física I")]);
}

#[test]
fn offering_on_an_unknown_campus_is_rejected() {
    framework()
        .given(vec![created()])
        .when(offer(1, 9, "Física I"))
        .then_expect_error(InstitutionError::CampusNotFound);
}

#[test]
fn campuses_and_courses_need_an_institution() {
    for command in [create_campus(1, "Centro"), offer(1, 1, "Física I")] {
        framework()
            .given_no_previous_events()
            .when(command)
            .then_expect_error(InstitutionError::NotFound);
    }
}

#[test]
fn a_duplicate_course_name_on_a_campus_or_course_id_is_rejected() {
    let cases = [
        (
            offer(2, 1, "física i"),
            InstitutionError::DuplicateCourseName,
        ),
        (
            offer(1, 1, "Química"),
            InstitutionError::CourseAlreadyExists,
        ),
    ];
    for (command, error) in cases {
        framework()
            .given(vec![
                created(),
                campus(1, "Centro"),
                offered(1, 1, "Física I"),
            ])
            .when(command)
            .then_expect_error(error);
    }
}
