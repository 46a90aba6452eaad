//! The rows of the directory's tables and the queries other crates read them with.

use super::*;
use crate::like_pattern;

/// A student or teacher.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PersonRow {
    pub person_id: Uuid,
    pub user_id: Uuid,
    pub institution_id: Uuid,
    /// `student` or `teacher`.
    pub role: String,
    pub name: String,
    pub email: String,
    pub birth_date: Option<NaiveDate>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub global_position: i64,
}

/// An exam grade with its current note.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GradeRow {
    pub grade_id: Uuid,
    pub institution_id: Uuid,
    pub course_id: Uuid,
    pub student_id: Uuid,
    pub teacher_id: Uuid,
    pub exam_name: String,
    pub note: String,
    pub recorded_at: DateTime<Utc>,
    pub changed_at: Option<DateTime<Utc>>,
    pub global_position: i64,
}

/// An application and its decision.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApplicationRow {
    pub application_id: Uuid,
    pub course_id: Uuid,
    pub institution_id: Option<Uuid>,
    pub name: String,
    pub email: String,
    /// `pending`, `enrolled`, `declined` or `cancelled`.
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub global_position: i64,
}

/// The columns of each row type, in its fields' order.
const PERSON_COLUMNS: &str = "person_id, user_id, institution_id, role, name, email, \
    birth_date, active, created_at, global_position";
const GRADE_COLUMNS: &str = "grade_id, institution_id, course_id, student_id, teacher_id, \
    exam_name, note, recorded_at, changed_at, global_position";
const APPLICATION_COLUMNS: &str = "application_id, course_id, institution_id, name, email, \
    status, requested_at, global_position";

/// Sort columns of the people lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeopleSort {
    #[default]
    Name,
    CreatedAt,
}

/// One page request of a people list.
#[derive(Debug, Clone, Default)]
pub struct PeopleQuery {
    /// `student` or `teacher`.
    pub role: &'static str,
    /// None: every institution (admins).
    pub institution_id: Option<Uuid>,
    /// Case-insensitive text in the name or e-mail.
    pub search: Option<String>,
    /// Only active (true) or deactivated (false) people.
    pub active: Option<bool>,
    pub sort: PeopleSort,
    pub descending: bool,
    pub limit: i64,
    /// The last row of the previous page: its sort key and id.
    pub after: Option<(String, Uuid)>,
}

/// One page of a people list and the key of its last row, when more follow.
#[derive(Debug)]
pub struct PeoplePage {
    pub rows: Vec<PersonRow>,
    pub next: Option<(String, Uuid)>,
}

/// A keyset page of one role's people, sorted by name or creation (ties by id). The
/// caller checks that a cursor's key parses for the sort.
pub async fn people_page(pool: &PgPool, query: &PeopleQuery) -> Result<PeoplePage, sqlx::Error> {
    let (column, key_cast) = match query.sort {
        PeopleSort::Name => ("name", "text"),
        PeopleSort::CreatedAt => ("created_at", "timestamptz"),
    };
    let (cmp, dir) = if query.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let sql = format!(
        "SELECT {PERSON_COLUMNS}
         FROM directory_people
         WHERE role = $1
           AND ($2::uuid IS NULL OR institution_id = $2)
           AND ($3::text IS NULL OR name ILIKE $3 OR email ILIKE $3)
           AND ($4::bool IS NULL OR active = $4)
           AND ($5::text IS NULL OR ({column}, person_id) {cmp} ($5::{key_cast}, $6::uuid))
         ORDER BY {column} {dir}, person_id {dir}
         LIMIT $7"
    );
    let rows: Vec<PersonRow> = sqlx::query_as(&sql)
        .bind(query.role)
        .bind(query.institution_id)
        .bind(query.search.as_deref().map(like_pattern))
        .bind(query.active)
        .bind(query.after.as_ref().map(|(key, _)| key.as_str()))
        .bind(query.after.as_ref().map(|(_, id)| *id))
        .bind(query.limit + 1)
        .fetch_all(pool)
        .await?;
    let page = Page::from_overfetch(rows, query.limit, |last| {
        let key = match query.sort {
            PeopleSort::Name => last.name.clone(),
            PeopleSort::CreatedAt => last.created_at.to_rfc3339(),
        };
        (key, last.person_id)
    });
    Ok(PeoplePage {
        rows: page.rows,
        next: page.next,
    })
}

/// The student or teacher rows of one account (one per role it holds).
pub async fn people_of_user(pool: &PgPool, user_id: Uuid) -> Result<Vec<PersonRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PERSON_COLUMNS} FROM directory_people WHERE user_id = $1 ORDER BY role, person_id",
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// The people with these ids.
pub async fn people_by_id(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<PersonRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PERSON_COLUMNS} FROM directory_people WHERE person_id = ANY($1) ORDER BY name, person_id",
    ))
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A student's grades, oldest first.
pub async fn grades_of_student(
    pool: &PgPool,
    student_id: Uuid,
) -> Result<Vec<GradeRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRADE_COLUMNS} FROM directory_grades WHERE student_id = $1 ORDER BY recorded_at, grade_id",
    ))
    .bind(student_id)
    .fetch_all(pool)
    .await
}

/// The grades a teacher recorded or last changed, by course then student.
pub async fn grades_by_teacher(
    pool: &PgPool,
    teacher_id: Uuid,
) -> Result<Vec<GradeRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRADE_COLUMNS} FROM directory_grades WHERE teacher_id = $1
         ORDER BY course_id, student_id, recorded_at, grade_id",
    ))
    .bind(teacher_id)
    .fetch_all(pool)
    .await
}

/// The applications made with an e-mail, newest first.
pub async fn applications_of_email(
    pool: &PgPool,
    email: &str,
) -> Result<Vec<ApplicationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {APPLICATION_COLUMNS} FROM directory_applications WHERE email = $1
         ORDER BY requested_at DESC, application_id",
    ))
    .bind(email)
    .fetch_all(pool)
    .await
}

/// One grade.
pub async fn grade(pool: &PgPool, grade_id: Uuid) -> Result<Option<GradeRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRADE_COLUMNS} FROM directory_grades WHERE grade_id = $1",
    ))
    .bind(grade_id)
    .fetch_optional(pool)
    .await
}

/// One application.
pub async fn application(
    pool: &PgPool,
    application_id: Uuid,
) -> Result<Option<ApplicationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {APPLICATION_COLUMNS} FROM directory_applications WHERE application_id = $1",
    ))
    .bind(application_id)
    .fetch_optional(pool)
    .await
}

/// The names of these courses (from `course_capacity`), by id.
pub async fn course_names(
    pool: &PgPool,
    course_ids: &[Uuid],
) -> Result<Vec<(Uuid, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT course_id, name FROM course_capacity WHERE course_id = ANY($1)")
        .bind(course_ids)
        .fetch_all(pool)
        .await
}
