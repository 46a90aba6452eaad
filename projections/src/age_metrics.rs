//! Projection `age_metrics`: count, minimum, maximum and average age of the enrolled
//! students per course, per campus and per institution.
//!
//! The age is the one the `StudentEnrolled` event recorded (whole years on the
//! enrollment date), so a rebuild gives the same numbers on any day. The table keeps
//! how many students of each age a scope has, not a running minimum: when the youngest
//! student cancels, the minimum is simply the next age with a non-zero count.

use std::collections::{BTreeMap, HashMap};

use aula_domain::course::CourseEvent;
use aula_domain::event_types;
use aula_eventlog::RecordedEvent;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::copy_rows::CopyRows;
use crate::decode::{aggregate_uuid, course_events, decode};
use crate::ProjectionError;
use aula_eventlog::db::Page;

pub const NAME: &str = "age_metrics";
pub const TABLES: &[&str] = &["age_counts"];

/// The grouping an age metric is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum AgeScope {
    Course,
    Campus,
    Institution,
}

impl AgeScope {
    pub const fn as_str(&self) -> &'static str {
        match self {
            AgeScope::Course => "course",
            AgeScope::Campus => "campus",
            AgeScope::Institution => "institution",
        }
    }
}

#[derive(Debug, Default)]
pub struct AgeMetrics;

read_model_consumer!(AgeMetrics);

/// The course events this read model reads.
pub const EVENT_TYPES: &[&str] = &[
    event_types::STUDENT_ENROLLED,
    event_types::ENROLLMENT_CANCELLED,
];

/// A count's key: the scope, its id, the age.
type Key = (AgeScope, Uuid, i32);

/// The changes of a batch's enrollments and cancellations to the counts, those that
/// cancel out within the batch left out.
fn deltas(events: &[RecordedEvent]) -> Result<BTreeMap<Key, i32>, ProjectionError> {
    let mut deltas: BTreeMap<Key, i32> = BTreeMap::new();
    for event in course_events(events, EVENT_TYPES) {
        let course = aggregate_uuid(event)?;
        let (campus, institution, age, change) = match decode::<CourseEvent>(event)? {
            CourseEvent::StudentEnrolled {
                age_years,
                campus_id,
                institution_id,
                ..
            } => (campus_id, institution_id, age_years, 1),
            CourseEvent::EnrollmentCancelled {
                age_years,
                campus_id,
                institution_id,
                ..
            } => (campus_id, institution_id, age_years, -1),
            _ => continue,
        };
        let age = age as i32;
        for key in [
            (AgeScope::Course, course, age),
            (AgeScope::Campus, campus.into(), age),
            (AgeScope::Institution, institution.into(), age),
        ] {
            *deltas.entry(key).or_default() += change;
        }
    }
    deltas.retain(|_, change| *change != 0);
    Ok(deltas)
}

/// What a cancellation that no enrolled student matches does to the projection.
fn negative() -> ProjectionError {
    ProjectionError::Inconsistent("a cancellation took out an age no enrolled student had".into())
}

async fn handle(tx: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let deltas = deltas(events)?;
    if deltas.is_empty() {
        return Ok(());
    }
    let scopes: Vec<&str> = deltas.keys().map(|(s, _, _)| s.as_str()).collect();
    let ids: Vec<Uuid> = deltas.keys().map(|(_, id, _)| *id).collect();
    let ages: Vec<i32> = deltas.keys().map(|(_, _, age)| *age).collect();
    let changes: Vec<i32> = deltas.values().copied().collect();
    sqlx::query(
        "INSERT INTO age_counts AS a (scope, scope_id, age, students)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::int[], $4::int[])
         ON CONFLICT (scope, scope_id, age) DO UPDATE SET students = a.students + EXCLUDED.students",
    )
    .bind(&scopes)
    .bind(&ids)
    .bind(&ages)
    .bind(&changes)
    .execute(&mut *tx)
    .await?;
    // Ages nobody has any more disappear; a negative count means a cancellation the
    // log never enrolled, which must stop the projection rather than skew the metrics.
    let removed: Vec<i32> = sqlx::query_scalar(
        "DELETE FROM age_counts a USING unnest($1::text[], $2::uuid[], $3::int[]) AS k(scope, scope_id, age)
         WHERE a.scope = k.scope AND a.scope_id = k.scope_id AND a.age = k.age AND a.students <= 0
         RETURNING a.students",
    )
    .bind(&scopes)
    .bind(&ids)
    .bind(&ages)
    .fetch_all(&mut *tx)
    .await?;
    if removed.iter().any(|students| *students < 0) {
        return Err(negative());
    }
    Ok(())
}

/// A rebuild's counts, kept in memory while the log is loaded and written once at the
/// end ([`BulkCounts::write`]) into its empty copy of `age_counts`, which no one else
/// writes: the upsert and delete of [`handle`] per batch rewrote the same few thousand
/// rows (each scope's counts) over and over. Each batch is applied as [`handle`] applies
/// it: an age that falls to zero goes away, one that would fall below fails the same
/// batch.
#[derive(Debug, Default)]
pub(crate) struct BulkCounts {
    counts: HashMap<Key, i32>,
}

impl BulkCounts {
    pub(crate) fn load(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        for (key, change) in deltas(events)? {
            let students = self.counts.entry(key).or_default();
            *students += change;
            match (*students).cmp(&0) {
                std::cmp::Ordering::Less => return Err(negative()),
                std::cmp::Ordering::Equal => {
                    self.counts.remove(&key);
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        Ok(())
    }

    /// Writes the counts (by a binary `COPY`, [`crate::copy_rows`]) and forgets them.
    pub(crate) async fn write(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let mut rows = CopyRows::new();
        for ((scope, id, age), students) in std::mem::take(&mut self.counts) {
            rows.row(4)
                .text(scope.as_str())
                .uuid(id)
                .int(age)
                .int(students);
        }
        rows.copy_in(
            conn,
            "COPY age_counts (scope, scope_id, age, students) FROM STDIN (FORMAT binary)",
        )
        .await?;
        Ok(())
    }
}

/// The age metrics of one course, campus or institution.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgeMetricsRow {
    pub scope: AgeScope,
    pub scope_id: Uuid,
    pub students: i64,
    pub min_age: i32,
    pub max_age: i32,
    pub average_age: f64,
}

/// One page of the metrics of every `scope` whose id is in `ids` (all of that scope
/// when `ids` is `None`), ordered by id, after the id `after` (keyset: a cursor stays
/// valid when its scope loses its last student). A scope with no enrolled student has
/// no row. The aggregate runs over the primary key's order, so a page reads only its
/// own scopes' age counts.
pub async fn age_metrics(
    pool: &PgPool,
    scope: AgeScope,
    ids: Option<&[Uuid]>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<AgeMetricsRow, Uuid>, sqlx::Error> {
    let limit = limit.clamp(1, 10_000);
    let rows: Vec<(Uuid, i64, i32, i32, f64)> = sqlx::query_as(
        "SELECT scope_id, sum(students)::bigint, min(age), max(age),
                (sum(age::bigint * students)::float8 / sum(students)::float8)
         FROM age_counts
         WHERE scope = $1 AND ($2::uuid[] IS NULL OR scope_id = ANY($2))
           AND ($3::uuid IS NULL OR scope_id > $3)
         GROUP BY scope_id ORDER BY scope_id
         LIMIT $4",
    )
    .bind(scope.as_str())
    .bind(ids)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let rows: Vec<AgeMetricsRow> = rows
        .into_iter()
        .map(
            |(scope_id, students, min_age, max_age, average_age)| AgeMetricsRow {
                scope,
                scope_id,
                students,
                min_age,
                max_age,
                average_age,
            },
        )
        .collect();
    Ok(Page::from_overfetch(rows, limit, |r| r.scope_id))
}

/// The metrics of one course, campus or institution (`None`: no enrolled student).
pub async fn age_metrics_of(
    pool: &PgPool,
    scope: AgeScope,
    id: Uuid,
) -> Result<Option<AgeMetricsRow>, sqlx::Error> {
    Ok(age_metrics(pool, scope, Some(&[id]), None, 1)
        .await?
        .rows
        .pop())
}
