//! `demo.seed`: demo data for a new institution, issued through the real commands so it
//! produces real events, metrics, e-mails and notifications: 2 campuses, 3 courses
//! (one with 3 seats and 5 applicants, so two are declined "class full"), 2 teachers,
//! 4 students, applications and grades.
//!
//! Small and deterministic: every id is a UUIDv5 of the institution id and a fixed
//! name, so running the task again (a retry after a crash, a reprocessed copy) issues
//! the same commands, which the aggregates refuse as duplicates; a duplicate counts as
//! done. Demo addresses use the reserved `.example` domain.

use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::exam_grade::{ExamGrade, ExamGradeCommand, ExamGradeServices};
use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::student::{Student, StudentCommand, StudentServices};
use aula_domain::teacher::{Teacher, TeacherCommand, TeacherServices};
use aula_domain::user::{Role, User, UserCommand, UserServices};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, CampusName, Capacity, CityName, CourseId, CourseName,
    Email, ExamGradeId, ExamName, GradeNote, InstitutionId, PersonName, StudentId, TeacherId,
    UserId, ValidationError,
};
use aula_domain::{Rejection, RejectionKind};
use aula_eventlog::{CommandBus, EventMetadata};
use chrono::{NaiveDate, Utc};
use cqrs_es::Aggregate;
use sqlx::PgPool;
use uuid::Uuid;

use super::enrollment::task_metadata;
use super::{EventPayload, TaskContext, TaskError, TaskHandler};

pub struct SeedDemoData;

const CAMPUSES: [(&str, &str); 2] = [("Centro", "Recife"), ("Norte", "Olinda")];
/// (campus index, name, capacity)
const COURSES: [(usize, &str, u32); 3] = [
    (0, "Física I", 3),
    (0, "Cálculo I", 20),
    (1, "Química Geral", 10),
];
const TEACHERS: [&str; 2] = ["Marie Curie", "Alan Turing"];
/// (name, birth date)
const STUDENTS: [(&str, &str); 4] = [
    ("Ana Souza", "2004-03-14"),
    ("Bruno Lima", "2002-11-02"),
    ("Carla Dias", "1999-06-30"),
    ("Diego Alves", "2006-01-20"),
];
/// Applicants to the first course beyond the students (5 applicants for 3 seats).
const EXTRA_APPLICANT: (&str, &str) = ("Eva Rocha", "2003-08-08");

fn invalid(error: ValidationError) -> TaskError {
    TaskError::permanent(error)
}

/// Issues `command` to the stream `id` of `bus`. A conflict means an earlier attempt
/// already seeded it, which counts as done.
async fn issue<A>(
    bus: &CommandBus<A>,
    id: impl ToString,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<(), TaskError>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Error: Rejection + Send + Sync + 'static,
{
    let result = bus.execute(&id.to_string(), command, metadata).await;
    super::command_outcome(result, |rejection| {
        rejection.kind() == RejectionKind::Conflict
    })
}

fn bus<A>(pool: &PgPool, services: A::Services) -> CommandBus<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
{
    CommandBus::with_upcasters(pool.clone(), services, aula_domain::upcasters())
}

#[async_trait::async_trait]
impl TaskHandler for SeedDemoData {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let institution = payload.aggregate_uuid()?;
        seed(&ctx.pool, institution, task_metadata(ctx)).await
    }
}

/// Seeds the demo data of `institution` (which must exist).
pub async fn seed(
    pool: &PgPool,
    institution: Uuid,
    metadata: EventMetadata,
) -> Result<(), TaskError> {
    let id = |name: &str| Uuid::new_v5(&institution, name.as_bytes());
    let short = institution.simple().to_string()[..8].to_owned();
    let institution_id = InstitutionId::from_uuid(institution);
    let metadata = EventMetadata {
        institution_id: Some(institution),
        ..metadata
    };
    let now = Utc::now();
    let today = now.date_naive();
    let institutions = bus::<Institution>(pool, InstitutionServices);
    let courses = bus::<Course>(pool, CourseServices);
    let users = bus::<User>(pool, UserServices::default());
    let students = bus::<Student>(pool, StudentServices);
    let teachers = bus::<Teacher>(pool, TeacherServices);
    let grades = bus::<ExamGrade>(pool, ExamGradeServices);
    let aggregate = institution.to_string();

    let mut campus_ids = Vec::new();
    for (name, city) in CAMPUSES {
        let campus_id = CampusId::from_uuid(id(&format!("campus/{name}")));
        campus_ids.push(campus_id);
        let command = InstitutionCommand::CreateCampus {
            campus_id,
            name: CampusName::parse(name).map_err(invalid)?,
            city: CityName::parse(city).map_err(invalid)?,
        };
        issue(&institutions, &aggregate, command, &metadata).await?;
    }
    let mut course_ids = Vec::new();
    for (campus, name, capacity) in COURSES {
        let course_id = CourseId::from_uuid(id(&format!("course/{name}")));
        course_ids.push(course_id);
        let name = CourseName::parse(name).map_err(invalid)?;
        let capacity = Capacity::new(capacity).map_err(invalid)?;
        let offer = InstitutionCommand::OfferCourse {
            course_id,
            campus_id: campus_ids[campus],
            name: name.clone(),
            capacity,
        };
        issue(&institutions, &aggregate, offer, &metadata).await?;
        let open = CourseCommand::OpenCourse {
            institution_id,
            campus_id: campus_ids[campus],
            name,
            capacity,
        };
        issue(&courses, course_id, open, &metadata).await?;
    }

    let email_of = |name: &str| {
        let local: String = name
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
            .collect::<String>()
            .replace(' ', ".");
        Email::parse(&format!("{local}.{short}@demo.aula.example")).map_err(invalid)
    };

    // A person's account (`kind` names it in its id): created as the API would.
    let account_of = async |role: Role, kind: &str, name: &str| -> Result<Account, TaskError> {
        let user_id = UserId::from_uuid(id(&format!("user/{kind}/{name}")));
        let email = email_of(name)?;
        Account::create(
            pool,
            &users,
            user_id,
            role,
            name,
            email,
            institution_id,
            &metadata,
        )
        .await
    };

    let mut teacher_ids = Vec::new();
    for name in TEACHERS {
        let teacher_id = TeacherId::from_uuid(id(&format!("teacher/{name}")));
        teacher_ids.push(teacher_id);
        let account = account_of(Role::Teacher, "teacher", name).await?;
        let command = TeacherCommand::CreateTeacher {
            institution_id,
            user_id: account.user_id,
            name: account.name,
            email: account.email,
        };
        issue(&teachers, teacher_id, command, &metadata).await?;
    }

    let mut student_ids = Vec::new();
    for (name, born) in STUDENTS {
        let student_id = StudentId::from_uuid(id(&format!("student/{name}")));
        student_ids.push(student_id);
        let account = account_of(Role::Student, "student", name).await?;
        let command = StudentCommand::CreateStudent {
            institution_id,
            user_id: account.user_id,
            name: account.name,
            email: account.email,
            birth_date: birth_date(born, today)?,
        };
        issue(&students, student_id, command, &metadata).await?;
    }

    // Applications: everyone (and one extra applicant) to the 3-seat course; the first
    // two students also to the second course. The processor decides them.
    let mut applications: Vec<(CourseId, &str, &str)> = STUDENTS
        .iter()
        .map(|(name, born)| (course_ids[0], *name, *born))
        .collect();
    applications.push((course_ids[0], EXTRA_APPLICANT.0, EXTRA_APPLICANT.1));
    for (name, born) in &STUDENTS[..2] {
        applications.push((course_ids[1], name, born));
    }
    for (course_id, name, born) in applications {
        let command = CourseCommand::RequestEnrollment {
            application_id: ApplicationId::from_uuid(id(&format!(
                "application/{course_id}/{name}"
            ))),
            name: PersonName::parse(name).map_err(invalid)?,
            birth_date: birth_date(born, today)?,
            email: email_of(name)?,
            requested_at: now,
        };
        issue(&courses, course_id, command, &metadata).await?;
    }

    // Grades: the second course's midterm for every student.
    for (index, student_id) in student_ids.iter().enumerate() {
        let grade_id = ExamGradeId::from_uuid(id(&format!("grade/midterm/{student_id}")));
        let command = ExamGradeCommand::RecordNote {
            institution_id,
            course_id: course_ids[1],
            student_id: *student_id,
            teacher_id: teacher_ids[index % teacher_ids.len()],
            exam_name: ExamName::parse("Midterm").map_err(invalid)?,
            note: GradeNote::from_hundredths(600 + 75 * index as u16).map_err(invalid)?,
            at: now,
        };
        issue(&grades, grade_id, command, &metadata).await?;
    }
    tracing::info!(%institution, "demo data seeded");
    Ok(())
}

fn birth_date(raw: &str, today: NaiveDate) -> Result<BirthDate, TaskError> {
    BirthDate::parse_str(raw, today).map_err(invalid)
}

/// The login account of a demo student or teacher.
struct Account {
    user_id: UserId,
    name: PersonName,
    email: Email,
}

impl Account {
    /// Creates the account `user_id` of `name` in `role`, reserving its address in the
    /// API's e-mail index (`user_emails`) first, as the API does.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        pool: &PgPool,
        users: &CommandBus<User>,
        user_id: UserId,
        role: Role,
        name: &str,
        email: Email,
        institution_id: InstitutionId,
        metadata: &EventMetadata,
    ) -> Result<Account, TaskError> {
        let name = PersonName::parse(name).map_err(invalid)?;
        sqlx::query(
            "INSERT INTO user_emails (email, user_id) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING",
        )
        .bind(email.as_str())
        .bind(user_id.as_uuid())
        .execute(pool)
        .await?;
        let command = UserCommand::CreateUser {
            email: email.clone(),
            name: name.clone(),
            role,
            institution_id: Some(institution_id),
            password_hash: None,
        };
        issue(users, user_id, command, metadata).await?;
        Ok(Account {
            user_id,
            name,
            email,
        })
    }
}
