//! Projection `course_capacity`: per course, its capacity, enrolled students, seats
//! left, applications pending a decision, declined and cancelled ones. Pending counts
//! both shapes of an application: `ApplicationSubmitted` (its own stream, naming its
//! course) and the older `EnrollmentRequested` (in the course's stream).

use std::collections::BTreeMap;

use aula_domain::application::{Application, ApplicationEvent};
use aula_domain::course::CourseEvent;
use aula_eventlog::db::{column, page_size};
use aula_eventlog::RecordedEvent;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::decode::{aggregate_uuid, decode, is_reprocessed};
use crate::ProjectionError;

pub const NAME: &str = "course_capacity";
pub const TABLES: &[&str] = &["course_capacity"];

/// The consumer; it keeps no state between batches.
#[derive(Debug, Default)]
pub struct CourseCapacity;

struct Opened {
    institution_id: Uuid,
    campus_id: Uuid,
    name: String,
    capacity: i32,
    at: DateTime<Utc>,
}

#[derive(Default)]
struct Delta {
    opened: Option<Opened>,
    capacity: Option<i32>,
    enrolled: i32,
    pending: i32,
    declined: i32,
    cancelled: i32,
    closed: bool,
    updated_at: Option<DateTime<Utc>>,
}

read_model_consumer!(CourseCapacity);

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let mut deltas: BTreeMap<Uuid, Delta> = BTreeMap::new();
    for event in events {
        if is_reprocessed(event) {
            continue;
        }
        if event.aggregate_type == Application::TYPE {
            // An application waits in its own stream until its course decides it.
            let ApplicationEvent::ApplicationSubmitted { course_id, .. } =
                decode::<ApplicationEvent>(event)?;
            let delta = deltas.entry(course_id.as_uuid()).or_default();
            delta.updated_at = Some(event.recorded_at);
            delta.pending += 1;
            continue;
        }
        if event.aggregate_type != "course" {
            continue;
        }
        let course = aggregate_uuid(event)?;
        let delta = deltas.entry(course).or_default();
        delta.updated_at = Some(event.recorded_at);
        match decode::<CourseEvent>(event)? {
            CourseEvent::CourseOpened {
                institution_id,
                campus_id,
                name,
                capacity,
            } => {
                delta.opened = Some(Opened {
                    institution_id: institution_id.into(),
                    campus_id: campus_id.into(),
                    name: name.as_str().to_owned(),
                    capacity: capacity.get() as i32,
                    at: event.recorded_at,
                })
            }
            CourseEvent::EnrollmentRequested { .. } => delta.pending += 1,
            CourseEvent::StudentEnrolled { .. } => {
                delta.pending -= 1;
                delta.enrolled += 1;
            }
            CourseEvent::EnrollmentDeclined { .. } => {
                delta.pending -= 1;
                delta.declined += 1;
            }
            CourseEvent::EnrollmentCancelled { .. } => {
                delta.enrolled -= 1;
                delta.cancelled += 1;
            }
            CourseEvent::CapacityChanged { to, .. } => delta.capacity = Some(to.get() as i32),
            CourseEvent::CourseClosed => delta.closed = true,
        }
    }
    if deltas.is_empty() {
        return Ok(());
    }

    let opened: Vec<(&Uuid, &Opened)> = deltas
        .iter()
        .filter_map(|(id, d)| d.opened.as_ref().map(|o| (id, o)))
        .collect();
    if !opened.is_empty() {
        sqlx::query(
            "INSERT INTO course_capacity (course_id, institution_id, campus_id, name, capacity, opened_at, updated_at)
             SELECT c, i, p, n, k, t, t FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int[], $6::timestamptz[]) AS u(c, i, p, n, k, t)
             ON CONFLICT (course_id) DO UPDATE SET institution_id = EXCLUDED.institution_id,
                 campus_id = EXCLUDED.campus_id, name = EXCLUDED.name, capacity = EXCLUDED.capacity,
                 opened_at = EXCLUDED.opened_at",
        )
        .bind(column(&opened, |(id, _)| **id))
        .bind(column(&opened, |(_, o)| o.institution_id))
        .bind(column(&opened, |(_, o)| o.campus_id))
        .bind(column(&opened, |(_, o)| o.name.clone()))
        .bind(column(&opened, |(_, o)| o.capacity))
        .bind(column(&opened, |(_, o)| o.at))
        .execute(&mut *tx)
        .await?;
    }

    let ids: Vec<Uuid> = deltas.keys().copied().collect();
    let updated = sqlx::query(
        "UPDATE course_capacity c SET capacity = COALESCE(d.capacity, c.capacity),
             enrolled = c.enrolled + d.enrolled, pending = c.pending + d.pending,
             declined = c.declined + d.declined, cancelled = c.cancelled + d.cancelled,
             closed = c.closed OR d.closed, updated_at = d.updated_at
         FROM unnest($1::uuid[], $2::int[], $3::int[], $4::int[], $5::int[], $6::int[], $7::bool[], $8::timestamptz[])
              AS d(course_id, capacity, enrolled, pending, declined, cancelled, closed, updated_at)
         WHERE c.course_id = d.course_id",
    )
    .bind(&ids)
    .bind(deltas.values().map(|d| d.capacity).collect::<Vec<_>>())
    .bind(deltas.values().map(|d| d.enrolled).collect::<Vec<_>>())
    .bind(deltas.values().map(|d| d.pending).collect::<Vec<_>>())
    .bind(deltas.values().map(|d| d.declined).collect::<Vec<_>>())
    .bind(deltas.values().map(|d| d.cancelled).collect::<Vec<_>>())
    .bind(deltas.values().map(|d| d.closed).collect::<Vec<_>>())
    .bind(deltas.values().map(|d| d.updated_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != ids.len() as u64 {
        return Err(ProjectionError::Inconsistent(format!(
            "{} of {} courses in the batch were never opened",
            ids.len() as u64 - updated.rows_affected(),
            ids.len()
        )));
    }
    Ok(())
}

/// One course's seats.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct CourseCapacityRow {
    pub course_id: Uuid,
    pub institution_id: Option<Uuid>,
    pub campus_id: Option<Uuid>,
    pub name: Option<String>,
    pub capacity: i32,
    pub enrolled: i32,
    pub seats_left: i32,
    /// Applications recorded and not yet decided.
    pub pending: i32,
    pub declined: i32,
    pub cancelled: i32,
    pub closed: bool,
    pub opened_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "course_id, institution_id, campus_id, name, capacity, enrolled, seats_left, \
                       pending, declined, cancelled, closed, opened_at, updated_at";

/// One course, if it was opened.
pub async fn course_capacity(
    pool: &PgPool,
    course_id: Uuid,
) -> Result<Option<CourseCapacityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_capacity WHERE course_id = $1"
    ))
    .bind(course_id)
    .fetch_optional(pool)
    .await
}

/// Courses of an institution and/or campus (both optional), by name.
pub async fn list_course_capacity(
    pool: &PgPool,
    institution_id: Option<Uuid>,
    campus_id: Option<Uuid>,
) -> Result<Vec<CourseCapacityRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_capacity
         WHERE ($1::uuid IS NULL OR institution_id = $1) AND ($2::uuid IS NULL OR campus_id = $2)
         ORDER BY name, course_id"
    ))
    .bind(institution_id)
    .bind(campus_id)
    .fetch_all(pool)
    .await
}

/// The column a course list is sorted by (ties broken by course id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapacitySort {
    #[default]
    Name,
    Capacity,
    Enrolled,
    SeatsLeft,
    Pending,
    Declined,
    OpenedAt,
}

impl CapacitySort {
    /// The sort expression. Names compare byte-wise (`COLLATE "C"`) and a missing value
    /// sorts first, whatever the database's locale.
    fn expression(&self) -> &'static str {
        match self {
            CapacitySort::Name => "COALESCE(name, '') COLLATE \"C\"",
            CapacitySort::Capacity => "capacity",
            CapacitySort::Enrolled => "enrolled",
            CapacitySort::SeatsLeft => "seats_left",
            CapacitySort::Pending => "pending",
            CapacitySort::Declined => "declined",
            CapacitySort::OpenedAt => "COALESCE(opened_at, '-infinity'::timestamptz)",
        }
    }
}

/// Filters, sort and page of the course list.
#[derive(Debug, Clone, Default)]
pub struct CapacityListQuery {
    pub institution_id: Option<Uuid>,
    pub campus_id: Option<Uuid>,
    pub sort: CapacitySort,
    pub descending: bool,
    /// The course id of the last row of the previous page.
    pub after: Option<Uuid>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
}

/// The page type and error of every list (they began here, with the course list).
pub use aula_eventlog::db::{Page, PageError};

/// `ORDER BY` direction of a keyset-paginated list, and the comparison with the cursor
/// row's key that selects the rows after it.
pub(crate) fn keyset_order(descending: bool) -> (&'static str, &'static str) {
    if descending {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    }
}

/// One page of a keyset-paginated list whose statements take the list's two filters
/// (`$1`, `$2`), the cursor row's id (`$3`) and the row count (`$4`). `exists_sql`
/// selects whether the cursor row passes the filters: a cursor that names no row of the
/// list is refused. `page_sql` selects up to `$4` rows after it; one more than the page
/// size is fetched to learn whether there is a next page.
pub(crate) async fn keyset_page<'q, R, F1, F2>(
    pool: &PgPool,
    exists_sql: &'q str,
    page_sql: &'q str,
    filters: (F1, F2),
    after: Option<Uuid>,
    limit: Option<i64>,
    key: impl Fn(&R) -> Uuid,
) -> Result<Page<R, Uuid>, PageError>
where
    R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    F1: 'q + Copy + Send + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    F2: 'q + Copy + Send + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    let limit = page_size(limit);
    if let Some(after) = after {
        let found: bool = sqlx::query_scalar(exists_sql)
            .bind(filters.0)
            .bind(filters.1)
            .bind(after)
            .fetch_one(pool)
            .await?;
        if !found {
            return Err(PageError::BadCursor);
        }
    }
    let rows: Vec<R> = sqlx::query_as(page_sql)
        .bind(filters.0)
        .bind(filters.1)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    Ok(Page::from_overfetch(rows, limit, key))
}

/// One page of courses, keyset-paginated in SQL: the cursor row's sort key is looked
/// up by id, so a page costs the same however deep it is.
pub async fn page_course_capacity(
    pool: &PgPool,
    query: &CapacityListQuery,
) -> Result<Page<CourseCapacityRow, Uuid>, PageError> {
    let filters =
        "($1::uuid IS NULL OR institution_id = $1) AND ($2::uuid IS NULL OR campus_id = $2)";
    let key = query.sort.expression();
    let (direction, comparison) = keyset_order(query.descending);
    keyset_page(
        pool,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM course_capacity WHERE {filters} AND course_id = $3)"
        ),
        &format!(
            "SELECT {COLUMNS} FROM course_capacity
             WHERE {filters}
               AND ($3::uuid IS NULL OR ({key}, course_id) {comparison}
                    (SELECT {key}, course_id FROM course_capacity WHERE course_id = $3))
             ORDER BY {key} {direction}, course_id {direction}
             LIMIT $4"
        ),
        (query.institution_id, query.campus_id),
        query.after,
        query.limit,
        |row: &CourseCapacityRow| row.course_id,
    )
    .await
}
