//! Given/when/then tests of the `Student` and `Teacher` aggregates.

use aula_domain::errors::RejectionKind;
use aula_domain::student::{Student, StudentCommand, StudentError, StudentEvent, StudentServices};
use aula_domain::teacher::{Teacher, TeacherCommand, TeacherError, TeacherEvent, TeacherServices};
use aula_domain::values::{BirthDate, Email, InstitutionId, PersonName, UserId};
use chrono::NaiveDate;
use cqrs_es::test::TestFramework;
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

fn create_student() -> StudentCommand {
    StudentCommand::CreateStudent {
        institution_id: institution_id(),
        user_id: user_id(),
        name: PersonName::parse("Ada Lovelace").unwrap(),
        email: Email::parse("ada@example.org").unwrap(),
        birth_date: birth_date(),
    }
}

fn student_created() -> StudentEvent {
    StudentEvent::StudentCreated {
        institution_id: institution_id(),
        user_id: user_id(),
        name: PersonName::parse("Ada Lovelace").unwrap(),
        email: Email::parse("ada@example.org").unwrap(),
        birth_date: birth_date(),
    }
}

#[test]
fn creating_a_student_records_it() {
    TestFramework::<Student>::with(StudentServices)
        .given_no_previous_events()
        .when(create_student())
        .then_expect_events(vec![student_created()]);
}

#[test]
fn creating_a_student_twice_is_rejected() {
    TestFramework::<Student>::with(StudentServices)
        .given(vec![student_created()])
        .when(create_student())
        .then_expect_error(StudentError::AlreadyExists);
}

fn create_teacher() -> TeacherCommand {
    TeacherCommand::CreateTeacher {
        institution_id: institution_id(),
        user_id: user_id(),
        name: PersonName::parse("Grace Hopper").unwrap(),
        email: Email::parse("grace@example.org").unwrap(),
    }
}

fn teacher_created() -> TeacherEvent {
    TeacherEvent::TeacherCreated {
        institution_id: institution_id(),
        user_id: user_id(),
        name: PersonName::parse("Grace Hopper").unwrap(),
        email: Email::parse("grace@example.org").unwrap(),
    }
}

#[test]
fn creating_a_teacher_records_it() {
    TestFramework::<Teacher>::with(TeacherServices)
        .given_no_previous_events()
        .when(create_teacher())
        .then_expect_events(vec![teacher_created()]);
}

#[test]
fn creating_a_teacher_twice_is_rejected() {
    TestFramework::<Teacher>::with(TeacherServices)
        .given(vec![teacher_created()])
        .when(create_teacher())
        .then_expect_error(TeacherError::AlreadyExists);
}

#[test]
fn errors_have_stable_codes_and_kinds() {
    assert_eq!(StudentError::AlreadyExists.code(), "STUDENT_ALREADY_EXISTS");
    assert_eq!(StudentError::AlreadyExists.kind(), RejectionKind::Conflict);
    assert_eq!(TeacherError::AlreadyExists.code(), "TEACHER_ALREADY_EXISTS");
    assert_eq!(TeacherError::AlreadyExists.kind(), RejectionKind::Conflict);
}
