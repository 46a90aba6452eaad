//! In-app notifications: the student's "new grade" notification, and linking the
//! institution's broadcast notifications ("for all students" / "for all teachers") to
//! each new student or teacher.

use aula_domain::exam_grade::{ExamGrade, ExamGradeEvent, ExamGradeServices};
use aula_domain::student::StudentEvent;
use aula_domain::teacher::TeacherEvent;
use aula_eventlog::CommandBus;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::email::course_name;
use super::{EventPayload, TaskContext, TaskError, TaskHandler};

/// `notification.grade`.
pub struct GradeNotification;

#[async_trait::async_trait]
impl TaskHandler for GradeNotification {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let event: ExamGradeEvent = payload.decode()?;
        let (student_id, course_id, exam_name, note, changed) = match event {
            ExamGradeEvent::ExamGradeNoteAdded {
                student_id,
                course_id,
                exam_name,
                note,
                ..
            } => (student_id, course_id, exam_name, note, false),
            ExamGradeEvent::ExamGradeNoteChanged { to, .. } => {
                let bus = CommandBus::<ExamGrade>::with_upcasters(
                    ctx.pool.clone(),
                    ExamGradeServices,
                    aula_domain::upcasters(),
                );
                let (grade, _) = bus.load(payload.aggregate_id).await?;
                match (grade.student_id(), grade.course_id(), grade.exam_name()) {
                    (Some(student), Some(course), Some(exam)) => {
                        (student, course, exam.clone(), to, true)
                    }
                    _ => return Err(TaskError::permanent("the exam grade was never recorded")),
                }
            }
        };
        let course = course_name(ctx, &course_id.to_string()).await?;
        let title = if changed {
            format!("Grade changed in {course}")
        } else {
            format!("New grade in {course}")
        };
        let body = format!("{exam_name}: {note}");
        let mut tx = ctx.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO notifications (idempotency_key, institution_id, audience, recipient_id, title, body, data, task_id, event_id)
             VALUES ($1, $2, 'student', $3, $4, $5, $6, $7, $8)
             ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
             RETURNING id",
        )
        .bind(&ctx.task.idempotency_key)
        .bind(ctx.task.institution_id)
        .bind(student_id.as_uuid())
        .bind(&title)
        .bind(&body)
        .bind(json!({
            "course_id": course_id,
            "exam_grade_id": payload.aggregate_id,
            "exam_name": exam_name,
            "note": note,
        }))
        .bind(ctx.task.id)
        .bind(ctx.task.event_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO notification_recipients (notification_id, recipient_id, recipient_type)
             VALUES ($1, $2, 'student') ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(student_id.as_uuid())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Who a broadcast addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    AllStudents,
    AllTeachers,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Audience::AllStudents => "all_students",
            Audience::AllTeachers => "all_teachers",
        }
    }

    fn recipient_type(self) -> &'static str {
        match self {
            Audience::AllStudents => "student",
            Audience::AllTeachers => "teacher",
        }
    }
}

/// `notification.link_student` / `notification.link_teacher`.
pub struct LinkBroadcasts {
    audience: Audience,
}

impl LinkBroadcasts {
    pub fn students() -> Self {
        Self {
            audience: Audience::AllStudents,
        }
    }

    pub fn teachers() -> Self {
        Self {
            audience: Audience::AllTeachers,
        }
    }
}

#[async_trait::async_trait]
impl TaskHandler for LinkBroadcasts {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let recipient = payload.aggregate_uuid()?;
        let institution_id = match self.audience {
            Audience::AllStudents => {
                let StudentEvent::StudentCreated { institution_id, .. } = payload.decode()?;
                institution_id.as_uuid()
            }
            Audience::AllTeachers => {
                let TeacherEvent::TeacherCreated { institution_id, .. } = payload.decode()?;
                institution_id.as_uuid()
            }
        };
        let linked = sqlx::query(
            "INSERT INTO notification_recipients (notification_id, recipient_id, recipient_type)
             SELECT id, $3, $4 FROM notifications WHERE institution_id = $1 AND audience = $2
             ON CONFLICT DO NOTHING",
        )
        .bind(institution_id)
        .bind(self.audience.as_str())
        .bind(recipient)
        .bind(self.audience.recipient_type())
        .execute(&ctx.pool)
        .await?
        .rows_affected();
        tracing::debug!(task = ctx.task.id, linked, "linked broadcast notifications");
        Ok(())
    }
}

/// Creates a broadcast notification for every student or teacher of an institution,
/// present (`recipients`, which the caller knows from its read model) and future (the
/// processor links each one created later). Idempotent per `idempotency_key`.
pub async fn create_broadcast(
    pool: &PgPool,
    idempotency_key: &str,
    institution_id: Uuid,
    audience: Audience,
    title: &str,
    body: &str,
    recipients: &[Uuid],
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO notifications (idempotency_key, institution_id, audience, title, body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
         RETURNING id",
    )
    .bind(idempotency_key)
    .bind(institution_id)
    .bind(audience.as_str())
    .bind(title)
    .bind(body)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO notification_recipients (notification_id, recipient_id, recipient_type)
         SELECT $1, r, $3 FROM unnest($2::uuid[]) AS r ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(recipients)
    .bind(audience.recipient_type())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}
