//! Given/when/then tests of the `Student` and `Teacher` aggregates.

use aula_domain::student::{Student, StudentCommand, StudentError, StudentEvent, StudentServices};
use aula_domain::teacher::{Teacher, TeacherCommand, TeacherError, TeacherEvent, TeacherServices};
use aula_domain::values::{BirthDate, Email, InstitutionId, PersonName, UserId};
use chrono::NaiveDate;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use uuid::Uuid;

fn institution_id() -> InstitutionId {
    InstitutionId::from_uuid(Uuid::from_u128(2))
}

fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(1))
}

fn birth_date() -> BirthDate {
    let today = NaiveDate::from_ymd_opt(2026, 2, 3).unwrap();
    BirthDate::parse(NaiveDate::from_ymd_opt(2008, 3, 14).unwrap(), today).unwrap()
}

/// Ada, a student: the fields `CreateStudent` carries and `StudentCreated` records alike.
macro_rules! ada {
    ($($variant:ident)::+) => {
        $($variant)::+ {
            institution_id: institution_id(),
            user_id: user_id(),
            name: PersonName::parse("Ada Lovelace").unwrap(),
            email: Email::parse("ada@example.org").unwrap(),
            birth_date: birth_date(),
        }
    };
}

/// Grace, a teacher: the fields `CreateTeacher` carries and `TeacherCreated` records.
macro_rules! grace {
    ($($variant:ident)::+) => {
        $($variant)::+ {
            institution_id: institution_id(),
            user_id: user_id(),
            name: PersonName::parse("Grace Hopper").unwrap(),
            email: Email::parse("grace@example.org").unwrap(),
        }
    };
}

/// A person is created once: the command records its event on a new stream, and the
/// same command again is refused with `already`.
fn created_once<A>(services: A::Services, create: A::Command, created: A::Event, already: A::Error)
where
    A: Aggregate,
    A::Services: Clone,
    A::Command: Clone,
    A::Event: Clone + PartialEq,
    A::Error: PartialEq,
{
    TestFramework::<A>::with(services.clone())
        .given_no_previous_events()
        .when(create.clone())
        .then_expect_events(vec![created.clone()]);
    TestFramework::<A>::with(services)
        .given(vec![created])
        .when(create)
        .then_expect_error(already);
}

#[test]
fn a_student_is_created_once() {
    created_once::<Student>(
        StudentServices,
        ada!(StudentCommand::CreateStudent),
        ada!(StudentEvent::StudentCreated),
        StudentError::AlreadyExists,
    );
}

#[test]
fn a_teacher_is_created_once() {
    created_once::<Teacher>(
        TeacherServices,
        grace!(TeacherCommand::CreateTeacher),
        grace!(TeacherEvent::TeacherCreated),
        TeacherError::AlreadyExists,
    );
}
