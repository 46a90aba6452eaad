//! The seats of courses (`aula_projections::course_capacity`).

use async_graphql::{Context, Enum, InputObject, Object};
use aula_projections::course_capacity;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct CourseCapacityQuery;

row_object! {
    /// One course's seats (read model `course_capacity`).
    CourseCapacity from course_capacity::CourseCapacityRow as r {
        /// The course's id.
        course_id: Uuid,
        /// The institution offering it.
        institution_id: Option<Uuid>,
        /// The campus it is taught on.
        campus_id: Option<Uuid>,
        /// Its name.
        name: Option<String>,
        /// Seats in all.
        capacity: i32,
        /// Seats taken by enrolled students.
        enrolled: i32,
        /// Seats still free (`capacity - enrolled`).
        seats_left: i32,
        /// Applications recorded and not yet decided.
        pending: i32,
        /// Applications declined (the course was full or closed).
        declined: i32,
        /// Enrollments cancelled by a manager (their seats were given back).
        cancelled: i32,
        /// Whether it takes no more applications.
        closed: bool,
        /// When it was offered.
        opened_at: Option<DateTime<Utc>>,
        /// When its seats last changed.
        updated_at: Option<DateTime<Utc>>,
    }
}

page! {
    /// One page of courses with their seats.
    CourseCapacityPage {
        /// The courses of this page.
        nodes: CourseCapacity,
    }
}

/// The column a course list is sorted by (ties broken by course id).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[graphql(remote = "aula_projections::course_capacity::CapacitySort")]
pub enum CourseCapacitySortField {
    /// Course name.
    #[default]
    Name,
    /// Seats in all.
    Capacity,
    /// Seats taken.
    Enrolled,
    /// Seats left.
    SeatsLeft,
    /// Applications not yet decided.
    Pending,
    /// Applications declined.
    Declined,
    /// When offered.
    OpenedAt,
}

/// How the course list is sorted.
#[derive(InputObject, Debug, Clone, Default)]
pub struct CourseCapacitySort {
    /// The column to sort by.
    #[graphql(default)]
    pub field: CourseCapacitySortField,
    /// Ascending or descending.
    #[graphql(default)]
    pub direction: SortDirection,
}

#[Object]
impl CourseCapacityQuery {
    /// The seats of one course. Admin: any; manager and teacher: own institution.
    async fn course_capacity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The course.")] course_id: Uuid,
    ) -> Result<CourseCapacity, ApiError> {
        let (claims, state) = authorize(ctx, READERS)?;
        let owner = course_institution(state, course_id).await?;
        auth::ensure_institution(claims, owner)?;
        course_capacity::course_capacity(&state.pool, course_id)
            .await?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found("COURSE_NOT_FOUND", "course not found"))
    }

    /// Courses with their seats, of an institution (a non-admin's own by default; an
    /// admin without `institutionId` sees every institution) and/or a campus.
    async fn course_capacities(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The institution (admins; others get their own).")] institution_id: Option<
            Uuid,
        >,
        #[graphql(desc = "Only this campus's courses.")] campus_id: Option<Uuid>,
        #[graphql(desc = "Sort column and direction.")] sort: Option<CourseCapacitySort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<CourseCapacityPage, ApiError> {
        let (claims, state, first) = paged(ctx, READERS, first)?;
        let institution = if auth::sees_every_institution(claims) {
            institution_id
        } else {
            let id = auth::target_institution(claims, institution_id)?;
            if let Some(campus) = campus_id {
                let (_, own) = own_institution(state, claims).await?;
                if !own.campuses().keys().any(|c| c.as_uuid() == campus) {
                    return Err(other_institution());
                }
            }
            Some(id)
        };
        let sort = sort.unwrap_or_default();
        let after = parse_cursor::<Uuid>(after)?;
        let query = course_capacity::CapacityListQuery {
            institution_id: institution,
            campus_id,
            sort: sort.field.into(),
            descending: sort.direction == SortDirection::Desc,
            after,
            limit: Some(first as i64),
        };
        let page = course_capacity::page_course_capacity(&state.pool, &query).await?;
        let (nodes, next_cursor) = page_nodes(page)?;
        Ok(CourseCapacityPage { nodes, next_cursor })
    }
}
