//! Queries over the read models (`aula-projections`) and the admin views. Each
//! resolver checks the caller's role first, then the institution that owns what is
//! asked for; lists are cursor-paginated (`first` capped by the maximum page size,
//! `after` = the previous page's `nextCursor`).
//!
//! One file per read model, mirroring `projections/src/*`, merged into one GraphQL type
//! in the order below (the order of the fields in the schema).

mod admin_events;
mod age_metrics;
mod audit_log;
mod course_capacity;
mod enrollments;
mod status;

use async_graphql::{Enum, MergedObject};
use aula_domain::user::Role as DomainRole;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::mutations::{course_institution, courses_opened_by};
use super::query::{nodes, page_nodes, paged, parse_cursor};
use super::types::{
    parse_status, status_name, BigInt, EnrollmentStatus, EventStatus, RebuildState,
};
use super::{authorize, load, request, state};
use crate::auth::{self, Claims};
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) use admin_events::{admin_event_filters, AdminEventFilter, DurationFilter};
pub(crate) use course_capacity::CourseCapacity;
pub(crate) use enrollments::Enrollment;

/// Every query over the read models, by read model.
#[derive(MergedObject, Default)]
pub struct ReadModelQuery(
    course_capacity::CourseCapacityQuery,
    age_metrics::AgeMetricsQuery,
    enrollments::EnrollmentQuery,
    audit_log::AuditLogQuery,
    admin_events::AdminEventQuery,
    status::StatusQuery,
);

/// Who may change what the staff screens show (create, reprocess, retry, bulk, webhooks).
pub(crate) const STAFF: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager];
/// Who may read the staff screens: staff, and observers (support staff who watch and
/// search but change nothing). Every read also checks the institution
/// (`auth::read_scope`, `auth::ensure_institution`).
pub(crate) const WATCHERS: &[DomainRole] =
    &[DomainRole::Admin, DomainRole::Manager, DomainRole::Observer];
/// Who may read an institution's campuses, courses and their figures: staff, its
/// teachers and observers.
pub(crate) const READERS: &[DomainRole] = &[
    DomainRole::Admin,
    DomainRole::Manager,
    DomainRole::Teacher,
    DomainRole::Observer,
];
/// The platform's own reads (projections, rebuilds): admins and platform-wide observers.
pub(crate) const PLATFORM: &[DomainRole] = &[DomainRole::Admin, DomainRole::Observer];
/// Requires an admin or an observer of the whole platform (an institution's observer
/// sees no platform-wide figure).
pub(crate) fn require_platform_reader(claims: Option<&Claims>) -> Result<&Claims, ApiError> {
    let claims = auth::require_role(claims, PLATFORM)?;
    if auth::sees_every_institution(claims) {
        Ok(claims)
    } else {
        Err(auth::role_not_allowed())
    }
}
/// Longest accepted filter string (event type, aggregate id, status).
const MAX_FILTER_CHARS: usize = 200;
/// Most values in one list filter (`types`).
const MAX_FILTER_VALUES: usize = 50;
/// Ascending or descending.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDirection {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}
/// A search text: trimmed, at least `MIN_SEARCH_CHARS` (what a trigram index can use)
/// and at most `MAX_FILTER_CHARS` characters; empty means no search.
pub(crate) fn search_text(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(text) = filter_text(field, value)? else {
        return Ok(None);
    };
    let text = text.trim();
    match text.chars().count() {
        0 => Ok(None),
        n if n < aula_projections::admin_events::MIN_SEARCH_CHARS => Err(ApiError::validation(
            field,
            "TOO_SHORT",
            format!(
                "must be at least {} characters",
                aula_projections::admin_events::MIN_SEARCH_CHARS
            ),
        )),
        _ => Ok(Some(text.to_owned())),
    }
}
pub(crate) fn filter_text(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(ApiError::validation(
            field,
            "TOO_LONG",
            format!("must be at most {MAX_FILTER_CHARS} characters"),
        )),
        other => Ok(other),
    }
}
/// A time filter PostgreSQL can compare: `timestamptz` spans 4713 BC to 294276 AD,
/// and a time outside it came back as an internal error.
pub(crate) fn filter_time(
    field: &'static str,
    value: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    use chrono::Datelike as _;
    match value {
        // Year -4712 is 4713 BC (there is no year 0).
        Some(time) if !(-4712..=294_275).contains(&time.year()) => Err(ApiError::validation(
            field,
            "OUT_OF_RANGE",
            "must be between the years 4713 BC and 294275 AD",
        )),
        other => Ok(other),
    }
}
pub(crate) fn filter_list(
    field: &'static str,
    values: Option<Vec<String>>,
) -> Result<Vec<String>, ApiError> {
    let values = values.unwrap_or_default();
    if values.len() > MAX_FILTER_VALUES {
        return Err(ApiError::validation(
            field,
            "OUT_OF_RANGE",
            format!("at most {MAX_FILTER_VALUES} values"),
        ));
    }
    for value in &values {
        filter_text(field, Some(value.clone()))?;
    }
    Ok(values)
}
/// Event types of a filter, each one of the catalog's: a typo is a VALIDATION error
/// naming the field, not a silently empty list.
pub(crate) fn event_types_filter(values: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let values = filter_list("types", values)?;
    if let Some(unknown) = values
        .iter()
        .find(|value| !aula_domain::catalog::is_event_type(value))
    {
        return Err(ApiError::validation(
            "types",
            "UNKNOWN_EVENT_TYPE",
            format!("{unknown:?} is not an event type (see `dashboardFacets` or docs/events.md)"),
        ));
    }
    Ok(values)
}
/// The own institution of a non-admin, loaded (campuses and courses).
async fn own_institution(
    state: &AppState,
    claims: &Claims,
) -> Result<(Uuid, aula_domain::institution::Institution), ApiError> {
    let id = auth::target_institution(claims, None)?;
    let institution = load(&state.buses.institution, id).await?;
    Ok((id, institution))
}
fn other_institution() -> ApiError {
    ApiError::forbidden("OTHER_INSTITUTION", "this belongs to another institution")
}
