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
use aula_eventlog::{Actor, CommandBus};
use aula_processor::handlers::notify::{create_broadcast, Audience};
use chrono::{Duration, Utc};
use common::*;
use sqlx::PgPool;
use uuid::Uuid;

mod copies;
mod emails;
mod school;

/// The status, attempt number and last error of the task `kind` of event `event_id`,
/// once it exists.
async fn task_state(
    pool: &PgPool,
    event_id: Uuid,
    kind: &str,
) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT status, attempt, last_error FROM tasks
         WHERE event_id = $1 AND kind = $2 AND origin_task_id IS NULL",
    )
    .bind(event_id)
    .bind(kind)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_task_succeeded(pool: &PgPool, event_id: Uuid, kind: &str) {
    wait_task_status(pool, event_id, kind, "succeeded").await;
}

/// Waits until the task `kind` of event `event_id` is `status`; returns its attempt
/// number and last error then.
async fn wait_task_status(
    pool: &PgPool,
    event_id: Uuid,
    kind: &str,
    status: &str,
) -> (i32, Option<String>) {
    eventually(
        &format!("{kind} for {event_id} to end {status}"),
        || async {
            match task_state(pool, event_id, kind).await {
                Some((now, attempt, error)) if now == status => Some((attempt, error)),
                _ => None,
            }
        },
    )
    .await
}

/// Creates a student of `institution`, born on 1 January of `born`; returns its id and
/// the id of its `StudentCreated` event.
async fn create_student(
    pool: &PgPool,
    institution: Uuid,
    name: &str,
    email: &str,
    born: i32,
) -> (Uuid, Uuid) {
    let student = Uuid::new_v4();
    bus::<Student>(pool, StudentServices)
        .execute(
            &student.to_string(),
            StudentCommand::CreateStudent {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse(name).unwrap(),
                email: Email::parse(email).unwrap(),
                birth_date: born_on(born, 1, 1),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let event = event_id_of(pool, "StudentCreated", &student.to_string()).await;
    (student, event)
}
