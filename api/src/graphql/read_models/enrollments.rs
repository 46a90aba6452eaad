//! The students enrolled in a course (`aula_projections::enrollments`).

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use aula_projections::enrollments;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct EnrollmentQuery;

/// One enrollment of a course (read model `course_enrollments`).
#[derive(SimpleObject, Debug, Clone)]
pub struct Enrollment {
    /// The course.
    pub course_id: Uuid,
    /// The application that won the seat.
    pub application_id: Uuid,
    /// The institution offering the course.
    pub institution_id: Uuid,
    /// The campus the course is taught on.
    pub campus_id: Uuid,
    /// The student's name.
    pub name: String,
    /// The student's e-mail.
    pub email: String,
    /// The student's date of birth.
    pub birth_date: NaiveDate,
    /// The student's age in years today.
    pub age_years: i32,
    /// The day the seat was given.
    pub enrolled_on: NaiveDate,
    /// Whether it still holds its seat.
    pub status: EnrollmentStatus,
    /// The day it was cancelled; null unless cancelled.
    pub cancelled_on: Option<NaiveDate>,
    /// The log position of its latest change.
    pub log_position: BigInt,
}

impl TryFrom<enrollments::EnrollmentRow> for Enrollment {
    type Error = ApiError;

    fn try_from(r: enrollments::EnrollmentRow) -> Result<Self, ApiError> {
        Ok(Self {
            course_id: r.course_id,
            application_id: r.application_id,
            institution_id: r.institution_id,
            campus_id: r.campus_id,
            name: r.name,
            email: r.email,
            birth_date: r.birth_date,
            age_years: r.age_years,
            enrolled_on: r.enrolled_on,
            status: parse_status(&r.status)?,
            cancelled_on: r.cancelled_on,
            log_position: r.global_position.into(),
        })
    }
}

page! {
    /// One page of a course's enrollments.
    EnrollmentPage {
        /// The enrollments of this page.
        nodes: Enrollment,
    }
}

/// The column an enrollment list is sorted by (ties broken by log position).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[graphql(remote = "aula_projections::enrollments::EnrollmentSort")]
pub enum EnrollmentSortField {
    /// Enrollment day.
    #[default]
    EnrolledOn,
    /// Student name.
    Name,
    /// Student age.
    AgeYears,
}

/// How a course's enrollments are sorted.
#[derive(InputObject, Debug, Clone, Default)]
pub struct EnrollmentSort {
    /// The column to sort by.
    #[graphql(default)]
    pub field: EnrollmentSortField,
    /// Ascending or descending.
    #[graphql(default)]
    pub direction: SortDirection,
}

#[Object]
impl EnrollmentQuery {
    /// The students enrolled in a course (cancelled ones only when asked). Admin: any;
    /// manager and teacher: own institution.
    async fn course_enrollments(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The course.")] course_id: Uuid,
        #[graphql(default = false, desc = "Also list cancelled enrollments.")]
        include_cancelled: bool,
        #[graphql(desc = "Sort column and direction.")] sort: Option<EnrollmentSort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<EnrollmentPage, ApiError> {
        let (claims, state, first) = paged(ctx, READERS, first)?;
        let owner = course_institution(state, course_id).await?;
        auth::ensure_institution(claims, owner)?;
        let sort = sort.unwrap_or_default();
        let after = parse_cursor::<Uuid>(after)?;
        let query = enrollments::EnrollmentListQuery {
            course_id,
            include_cancelled,
            sort: sort.field.into(),
            descending: sort.direction == SortDirection::Desc,
            after,
            limit: Some(first as i64),
        };
        let page = enrollments::page_course_enrollments(&state.pool, &query).await;
        let (nodes, next_cursor) = nodes_of(page)?;
        Ok(EnrollmentPage { nodes, next_cursor })
    }
}
