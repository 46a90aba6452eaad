//! Applicants' ages per course, campus and institution (`aula_projections::age_metrics`).

use async_graphql::{Context, Enum, Object};
use aula_projections::age_metrics;
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct AgeMetricsQuery;

/// The grouping of an age metric.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "aula_projections::age_metrics::AgeScope")]
pub enum AgeScope {
    /// Per course.
    Course,
    /// Per campus.
    Campus,
    /// Per institution.
    Institution,
}

row_object! {
    /// Ages (whole years on the enrollment date) of the students enrolled in one course,
    /// campus or institution.
    AgeMetrics from age_metrics::AgeMetricsRow as r {
        /// What `scopeId` names: a course, a campus or an institution.
        scope: AgeScope = r.scope.into(),
        /// The id of the course, campus or institution.
        scope_id: Uuid,
        /// Enrolled students counted.
        students: BigInt = BigInt(r.students),
        /// The youngest student's age in years.
        min_age: i32,
        /// The oldest student's age in years.
        max_age: i32,
        /// The students' mean age in years.
        average_age: f64,
    }
}

page! {
    /// One page of age metrics.
    AgeMetricsPage {
        /// The metrics of this page.
        nodes: AgeMetrics,
    }
}

#[Object]
impl AgeMetricsQuery {
    /// Age metrics of courses, campuses or institutions, by id. Without `ids`: every
    /// one of that scope the caller may see (admin: all; others: their institution's).
    async fn age_metrics(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Courses, campuses or institutions.")] scope: AgeScope,
        #[graphql(desc = "Only these ids.")] ids: Option<Vec<Uuid>>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<AgeMetricsPage, ApiError> {
        let (claims, state, first) = paged(ctx, READERS, first)?;
        if ids
            .as_ref()
            .is_some_and(|ids| ids.len() > state.config.max_page_size)
        {
            return Err(ApiError::validation(
                "ids",
                "OUT_OF_RANGE",
                format!("at most {} ids", state.config.max_page_size),
            ));
        }
        let ids: Option<Vec<Uuid>> = if auth::sees_every_institution(claims) {
            ids
        } else {
            let (own_id, own) = own_institution(state, claims).await?;
            let visible: Vec<Uuid> = match scope {
                AgeScope::Institution => vec![own_id],
                AgeScope::Campus => own.campuses().keys().map(|c| c.as_uuid()).collect(),
                AgeScope::Course => {
                    let listed: Vec<Uuid> = own.courses().keys().map(|c| c.as_uuid()).collect();
                    courses_opened_by(state, own_id, &listed).await?
                }
            };
            match ids {
                None => Some(visible),
                Some(ids) => {
                    for id in &ids {
                        if !visible.contains(id) {
                            if scope == AgeScope::Course {
                                // Unknown course: NOT_FOUND; another's: FORBIDDEN.
                                course_institution(state, *id).await?;
                            }
                            return Err(other_institution());
                        }
                    }
                    Some(ids)
                }
            }
        };
        let after = parse_cursor::<Uuid>(after)?;
        let page = age_metrics::age_metrics(
            &state.pool,
            scope.into(),
            ids.as_deref(),
            after,
            first as i64,
        )
        .await?;
        let (nodes, next_cursor) = page_nodes(page)?;
        Ok(AgeMetricsPage { nodes, next_cursor })
    }
}
