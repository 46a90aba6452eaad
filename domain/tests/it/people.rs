//! Given/when/then tests of the `Student` and `Teacher` aggregates.

use aula_domain::student::{Student, StudentCommand, StudentError, StudentEvent, StudentServices};
use aula_domain::teacher::{Teacher, TeacherCommand, TeacherError, TeacherEvent, TeacherServices};
use aula_domain::values::{Email, PersonName};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use crate::fixtures::{birth_date, institution_id, user_id};

/// A person of institution 2 with user 1: the fields a create command carries and its
/// event records alike (a student's also its `birth_date`, as `extra`).
macro_rules! person {
    ($($variant:ident)::+, $name:literal, $email:literal $(, $extra:ident: $value:expr)*) => {
        $($variant)::+ {
            institution_id: institution_id(),
            user_id: user_id(),
            name: PersonName::parse($name).unwrap(),
            email: Email::parse($email).unwrap(),
            $($extra: $value,)*
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
        person!(StudentCommand::CreateStudent, "Ada Lovelace", "ada@example.org", birth_date: birth_date()),
        person!(StudentEvent::StudentCreated, "Ada Lovelace", "ada@example.org", birth_date: birth_date()),
        StudentError::AlreadyExists,
    );
}

#[test]
fn a_teacher_is_created_once() {
    created_once::<Teacher>(
        TeacherServices,
        person!(
            TeacherCommand::CreateTeacher,
            "Grace Hopper",
            "grace@example.org"
        ),
        person!(
            TeacherEvent::TeacherCreated,
            "Grace Hopper",
            "grace@example.org"
        ),
        TeacherError::AlreadyExists,
    );
}
