//! The students enrolled in a course (`aula_projections::enrollments`).

use async_graphql::{Context, Enum, InputObject, Object};
use aula_projections::enrollments;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct EnrollmentQuery;

row_object! {
    /// One enrollment of a course (read model `course_enrollments`).
    Enrollment try_from enrollments::EnrollmentRow as r {
        /// The course.
        course_id: Uuid,
        /// The application that won the seat.
        application_id: Uuid,
        /// The institution offering the course.
        institution_id: Uuid,
        /// The campus the course is taught on.
        campus_id: Uuid,
        /// The student's name.
        name: String,
        /// The student's e-mail.
        email: String,
        /// The student's date of birth.
        birth_date: NaiveDate,
        /// The student's age in years today.
        age_years: i32,
        /// The day the seat was given.
        enrolled_on: NaiveDate,
        /// Whether it still holds its seat.
        status: EnrollmentStatus = parse_status(&r.status)?,
        /// The day it was cancelled; null unless cancelled.
        cancelled_on: Option<NaiveDate>,
        /// The log position of its latest change.
        log_position: BigInt = r.global_position.into(),
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
        let page = enrollments::page_course_enrollments(&state.pool, &query).await?;
        let (nodes, next_cursor) = page_nodes(page)?;
        Ok(EnrollmentPage { nodes, next_cursor })
    }
}
