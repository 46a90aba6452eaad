//! End to end: command -> event -> reaction issues tasks -> worker runs them -> e-mail
//! or notification. One test per reaction, against a real PostgreSQL.

use crate::common;

use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::exam_grade::{ExamGrade, ExamGradeCommand, ExamGradeServices};
use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::student::{Student, StudentCommand, StudentServices};
use aula_domain::teacher::{Teacher, TeacherCommand, TeacherServices};
use aula_domain::user::{Role, User, UserCommand, UserServices};
use aula_domain::values::*;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use aula_processor::handlers::notify::{create_broadcast, Audience};
use chrono::{Duration, NaiveDate, Utc};
use common::*;
use sqlx::PgPool;
use uuid::Uuid;

mod copies;
mod emails;
mod school;

fn bus<A>(pool: &PgPool, services: A::Services) -> CommandBus<A>
where
    A: cqrs_es::Aggregate + Clone + 'static,
    A::Command: Clone,
{
    CommandBus::with_upcasters(pool.clone(), services, aula_domain::upcasters())
}

fn meta(institution: Option<Uuid>) -> EventMetadata {
    EventMetadata::new(Actor::System, institution)
}

async fn event_id_of(pool: &PgPool, event_type: &str, aggregate_id: &str) -> Uuid {
    sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = $1 AND aggregate_id = $2 ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn task_status(pool: &PgPool, event_id: Uuid, kind: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT status FROM tasks WHERE event_id = $1 AND kind = $2 AND origin_task_id IS NULL",
    )
    .bind(event_id)
    .bind(kind)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_task_succeeded(pool: &PgPool, event_id: Uuid, kind: &str) {
    eventually(&format!("{kind} for {event_id} to succeed"), || async {
        (task_status(pool, event_id, kind).await.as_deref() == Some("succeeded")).then_some(())
    })
    .await
}

/// An institution with one campus and one course of `capacity` seats.
struct School {
    institution: InstitutionId,
    course: CourseId,
}

async fn school(pool: &PgPool, capacity: u32) -> School {
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    let campus = CampusId::from_uuid(Uuid::new_v4());
    let course = CourseId::from_uuid(Uuid::new_v4());
    let m = meta(Some(institution.as_uuid()));
    let institutions = bus::<Institution>(pool, InstitutionServices);
    let id = institution.to_string();
    institutions
        .execute(
            &id,
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Escola Teste").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &m,
        )
        .await
        .unwrap();
    institutions
        .execute(
            &id,
            InstitutionCommand::CreateCampus {
                campus_id: campus,
                name: CampusName::parse("Centro").unwrap(),
                city: CityName::parse("Recife").unwrap(),
            },
            &m,
        )
        .await
        .unwrap();
    let name = CourseName::parse("Física I").unwrap();
    let capacity = Capacity::new(capacity).unwrap();
    institutions
        .execute(
            &id,
            InstitutionCommand::OfferCourse {
                course_id: course,
                campus_id: campus,
                name: name.clone(),
                capacity,
            },
            &m,
        )
        .await
        .unwrap();
    bus::<Course>(pool, CourseServices)
        .execute(
            &course.to_string(),
            CourseCommand::OpenCourse {
                institution_id: institution,
                campus_id: campus,
                name,
                capacity,
            },
            &m,
        )
        .await
        .unwrap();
    School {
        institution,
        course,
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Creates student `student` of `institution`, born on 1 January of `born`; returns
/// the id of its `StudentCreated` event.
async fn create_student(
    pool: &PgPool,
    student: Uuid,
    institution: Uuid,
    name: &str,
    email: &str,
    born: i32,
) -> Uuid {
    bus::<Student>(pool, StudentServices)
        .execute(
            &student.to_string(),
            StudentCommand::CreateStudent {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse(name).unwrap(),
                email: Email::parse(email).unwrap(),
                birth_date: BirthDate::parse(NaiveDate::from_ymd_opt(born, 1, 1).unwrap(), today())
                    .unwrap(),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    event_id_of(pool, "StudentCreated", &student.to_string()).await
}
