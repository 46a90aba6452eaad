//! Projection `course_enrollments`: the students of each course with their
//! enrollment dates (and cancellation dates, for those who left).

use std::collections::{BTreeMap, HashSet};

use aula_domain::course::CourseEvent;
use aula_domain::event_types;
use aula_eventlog::db::column;
use aula_eventlog::RecordedEvent;
use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use aula_eventlog::db::Page;

use crate::copy_rows::CopyRows;
use crate::course_capacity::{keyset_order, keyset_page, PageError};
use crate::decode::{aggregate_uuid, course_events, decode};
use crate::ProjectionError;

pub const NAME: &str = "course_enrollments";
pub const TABLES: &[&str] = &["course_enrollments"];

#[derive(Debug, Default)]
pub struct CourseEnrollments;

read_model_consumer!(CourseEnrollments);

/// One enrollment of one course.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct EnrollmentRow {
    pub course_id: Uuid,
    pub application_id: Uuid,
    pub institution_id: Uuid,
    pub campus_id: Uuid,
    pub name: String,
    pub email: String,
    pub birth_date: NaiveDate,
    pub age_years: i32,
    pub enrolled_on: NaiveDate,
    /// `enrolled` or `cancelled`.
    pub status: String,
    pub cancelled_on: Option<NaiveDate>,
    pub global_position: i64,
}

enum Change {
    Enrolled(EnrollmentRow),
    Cancelled(NaiveDate),
}

/// The course events this read model reads.
pub const EVENT_TYPES: &[&str] = &[
    event_types::STUDENT_ENROLLED,
    event_types::ENROLLMENT_CANCELLED,
];

/// What a batch does: new enrollments (with their cancellations in the batch folded in)
/// and cancellations of enrollments of earlier batches.
type Changes = (Vec<EnrollmentRow>, Vec<(Uuid, Uuid, NaiveDate)>);

fn changes(events: &[RecordedEvent]) -> Result<Changes, ProjectionError> {
    let mut changes: BTreeMap<(Uuid, Uuid), Change> = BTreeMap::new();
    for event in course_events(events, EVENT_TYPES) {
        let course = aggregate_uuid(event)?;
        match decode::<CourseEvent>(event)? {
            CourseEvent::StudentEnrolled {
                application_id,
                name,
                email,
                birth_date,
                age_years,
                enrolled_on,
                campus_id,
                institution_id,
            } => {
                let application: Uuid = application_id.into();
                changes.insert(
                    (course, application),
                    Change::Enrolled(EnrollmentRow {
                        course_id: course,
                        application_id: application,
                        institution_id: institution_id.into(),
                        campus_id: campus_id.into(),
                        name: name.as_str().to_owned(),
                        email: email.as_str().to_owned(),
                        birth_date: birth_date.date(),
                        age_years: age_years as i32,
                        enrolled_on,
                        status: "enrolled".into(),
                        cancelled_on: None,
                        global_position: event.global_position(),
                    }),
                );
            }
            CourseEvent::EnrollmentCancelled {
                application_id,
                cancelled_on,
                ..
            } => {
                let key = (course, application_id.into());
                match changes.get_mut(&key) {
                    Some(Change::Enrolled(row)) => {
                        row.status = "cancelled".into();
                        row.cancelled_on = Some(cancelled_on);
                    }
                    _ => {
                        changes.insert(key, Change::Cancelled(cancelled_on));
                    }
                }
            }
            _ => {}
        }
    }
    let mut inserts = Vec::new();
    let mut cancels = Vec::new();
    for ((course, application), change) in changes {
        match change {
            Change::Enrolled(row) => inserts.push(row),
            Change::Cancelled(on) => cancels.push((course, application, on)),
        }
    }
    Ok((inserts, cancels))
}

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let (inserts, cancels) = changes(events)?;
    if !inserts.is_empty() {
        sqlx::query(
            "INSERT INTO course_enrollments (course_id, application_id, institution_id, campus_id, name, email,
                 birth_date, age_years, enrolled_on, status, cancelled_on, global_position)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                 $7::date[], $8::int[], $9::date[], $10::text[], $11::date[], $12::bigint[])
             ON CONFLICT (course_id, application_id) DO NOTHING",
        )
        .bind(column(&inserts, |r| r.course_id))
        .bind(column(&inserts, |r| r.application_id))
        .bind(column(&inserts, |r| r.institution_id))
        .bind(column(&inserts, |r| r.campus_id))
        .bind(column(&inserts, |r| r.name.as_str()))
        .bind(column(&inserts, |r| r.email.as_str()))
        .bind(column(&inserts, |r| r.birth_date))
        .bind(column(&inserts, |r| r.age_years))
        .bind(column(&inserts, |r| r.enrolled_on))
        .bind(column(&inserts, |r| r.status.as_str()))
        .bind(column(&inserts, |r| r.cancelled_on))
        .bind(column(&inserts, |r| r.global_position))
        .execute(&mut *tx)
        .await?;
    }
    cancel(tx, &cancels).await
}

/// A rebuild's load of `events` into its empty copy of `course_enrollments`, which no
/// one else writes: the rows [`handle`] leaves, the new ones by a binary `COPY`
/// ([`crate::copy_rows`]) instead of its upsert. `loaded` holds the keys of the rows
/// loaded so far: an enrollment whose key is among them is left out, as the upsert's
/// `ON CONFLICT DO NOTHING` would leave it.
pub(crate) async fn load(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
    loaded: &mut HashSet<(Uuid, Uuid)>,
) -> Result<(), ProjectionError> {
    let (inserts, cancels) = changes(events)?;
    let mut rows = CopyRows::new();
    for row in inserts {
        if !loaded.insert((row.course_id, row.application_id)) {
            continue;
        }
        rows.row(12)
            .uuid(row.course_id)
            .uuid(row.application_id)
            .uuid(row.institution_id)
            .uuid(row.campus_id)
            .text(&row.name)
            .text(&row.email)
            .date(row.birth_date)
            .int(row.age_years)
            .date(row.enrolled_on)
            .text(&row.status)
            .opt_date(row.cancelled_on)
            .bigint(row.global_position);
    }
    rows.copy_in(
        &mut *conn,
        "COPY course_enrollments (course_id, application_id, institution_id, campus_id, name, email,
             birth_date, age_years, enrolled_on, status, cancelled_on, global_position)
         FROM STDIN (FORMAT binary)",
    )
    .await?;
    cancel(conn, &cancels).await
}

/// Cancels enrollments written before the batch; each must be a current one.
async fn cancel(
    tx: &mut PgConnection,
    cancels: &[(Uuid, Uuid, NaiveDate)],
) -> Result<(), ProjectionError> {
    if !cancels.is_empty() {
        let updated = sqlx::query(
            "UPDATE course_enrollments e SET status = 'cancelled', cancelled_on = c.cancelled_on
             FROM unnest($1::uuid[], $2::uuid[], $3::date[]) AS c(course_id, application_id, cancelled_on)
             WHERE e.course_id = c.course_id AND e.application_id = c.application_id AND e.status = 'enrolled'",
        )
        .bind(column(cancels, |c| c.0))
        .bind(column(cancels, |c| c.1))
        .bind(column(cancels, |c| c.2))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != cancels.len() as u64 {
            return Err(ProjectionError::Inconsistent(format!(
                "{} cancellations name no current enrollment",
                cancels.len() as u64 - updated.rows_affected()
            )));
        }
    }
    Ok(())
}

/// The enrollments of one course, oldest first; cancelled ones only when asked.
pub async fn course_enrollments(
    pool: &PgPool,
    course_id: Uuid,
    include_cancelled: bool,
) -> Result<Vec<EnrollmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT course_id, application_id, institution_id, campus_id, name, email, birth_date,
                age_years, enrolled_on, status, cancelled_on, global_position
         FROM course_enrollments
         WHERE course_id = $1 AND ($2 OR status = 'enrolled')
         ORDER BY enrolled_on, global_position",
    )
    .bind(course_id)
    .bind(include_cancelled)
    .fetch_all(pool)
    .await
}

/// The enrollments made with an e-mail (a student's own), newest first, cancelled ones
/// included.
pub async fn enrollments_of_email(
    pool: &PgPool,
    email: &str,
) -> Result<Vec<EnrollmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT course_id, application_id, institution_id, campus_id, name, email, birth_date,
                age_years, enrolled_on, status, cancelled_on, global_position
         FROM course_enrollments WHERE email = $1
         ORDER BY enrolled_on DESC, global_position DESC",
    )
    .bind(email)
    .fetch_all(pool)
    .await
}

/// How many students each course has enrolled now, per course id.
pub async fn enrolled_counts(
    pool: &PgPool,
    course_ids: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT course_id, count(*) FROM course_enrollments
         WHERE course_id = ANY($1) AND status = 'enrolled' GROUP BY course_id ORDER BY course_id",
    )
    .bind(course_ids)
    .fetch_all(pool)
    .await
}

/// The column an enrollment list is sorted by (ties broken by log position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnrollmentSort {
    #[default]
    EnrolledOn,
    /// Byte-wise (`COLLATE "C"`), whatever the database's locale.
    Name,
    AgeYears,
}

impl EnrollmentSort {
    fn expression(&self) -> &'static str {
        match self {
            EnrollmentSort::EnrolledOn => "enrolled_on",
            EnrollmentSort::Name => "name COLLATE \"C\"",
            EnrollmentSort::AgeYears => "age_years",
        }
    }
}

/// One course's enrollments: filter, sort and page.
#[derive(Debug, Clone)]
pub struct EnrollmentListQuery {
    pub course_id: Uuid,
    pub include_cancelled: bool,
    pub sort: EnrollmentSort,
    pub descending: bool,
    /// The application id of the last row of the previous page.
    pub after: Option<Uuid>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
}

/// One page of a course's enrollments, keyset-paginated in SQL (the cursor row's sort
/// key is looked up by its application id).
pub async fn page_course_enrollments(
    pool: &PgPool,
    query: &EnrollmentListQuery,
) -> Result<Page<EnrollmentRow, Uuid>, PageError> {
    let filters = "course_id = $1 AND ($2 OR status = 'enrolled')";
    let key = query.sort.expression();
    let (direction, comparison) = keyset_order(query.descending);
    keyset_page(
        pool,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM course_enrollments WHERE {filters} AND application_id = $3)"
        ),
        &format!(
            "SELECT course_id, application_id, institution_id, campus_id, name, email, birth_date,
                    age_years, enrolled_on, status, cancelled_on, global_position
             FROM course_enrollments
             WHERE {filters}
               AND ($3::uuid IS NULL OR ({key}, global_position) {comparison}
                    (SELECT {key}, global_position FROM course_enrollments
                     WHERE course_id = $1 AND application_id = $3))
             ORDER BY {key} {direction}, global_position {direction}
             LIMIT $4"
        ),
        (query.course_id, query.include_cancelled),
        query.after,
        query.limit,
        |row: &EnrollmentRow| row.application_id,
    )
    .await
}
