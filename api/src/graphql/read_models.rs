//! Queries over the read models (`aula-projections`) and the admin views. Each
//! resolver checks the caller's role first, then the institution that owns what is
//! asked for; lists are cursor-paginated (`first` capped by the maximum page size,
//! `after` = the previous page's `nextCursor`).

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject};
use aula_domain::user::Role as DomainRole;
use aula_projections::admin_events::{self, DurationOp, EventListError, EventListQuery, EventSort};
use aula_projections::age_metrics::{self, AgeScope as ProjectionAgeScope};
use aula_projections::audit_log::{self, AuditQuery};
use aula_projections::{course_capacity, enrollments};
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::mutation::{course_institution, courses_opened_by};
use super::query::page_size;
use super::{request, state};
use crate::auth::{self, Claims};
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) const STAFF: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager];
const READERS: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager, DomainRole::Teacher];
const ADMIN: &[DomainRole] = &[DomainRole::Admin];
/// Longest accepted filter string (event type, aggregate id, status).
const MAX_FILTER_CHARS: usize = 200;
/// Most values in one list filter (`types`).
const MAX_FILTER_VALUES: usize = 50;

#[derive(Default)]
pub struct ReadModelQuery;

/// Ascending or descending.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDirection {
    #[default]
    Asc,
    Desc,
}

/// One course's seats (read model `course_capacity`).
#[derive(SimpleObject, Debug, Clone)]
pub struct CourseCapacity {
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

impl From<course_capacity::CourseCapacityRow> for CourseCapacity {
    fn from(r: course_capacity::CourseCapacityRow) -> Self {
        Self {
            course_id: r.course_id,
            institution_id: r.institution_id,
            campus_id: r.campus_id,
            name: r.name,
            capacity: r.capacity,
            enrolled: r.enrolled,
            seats_left: r.seats_left,
            pending: r.pending,
            declined: r.declined,
            cancelled: r.cancelled,
            closed: r.closed,
            opened_at: r.opened_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct CourseCapacityPage {
    pub nodes: Vec<CourseCapacity>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The column a course list is sorted by (ties broken by course id).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CourseCapacitySortField {
    #[default]
    Name,
    Capacity,
    Enrolled,
    SeatsLeft,
    Pending,
    Declined,
    OpenedAt,
}

#[derive(InputObject, Debug, Clone, Default)]
pub struct CourseCapacitySort {
    #[graphql(default)]
    pub field: CourseCapacitySortField,
    #[graphql(default)]
    pub direction: SortDirection,
}

/// The grouping of an age metric.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeScope {
    Course,
    Campus,
    Institution,
}

impl From<AgeScope> for ProjectionAgeScope {
    fn from(scope: AgeScope) -> Self {
        match scope {
            AgeScope::Course => ProjectionAgeScope::Course,
            AgeScope::Campus => ProjectionAgeScope::Campus,
            AgeScope::Institution => ProjectionAgeScope::Institution,
        }
    }
}

/// Ages (whole years on the enrollment date) of the students enrolled in one course,
/// campus or institution.
#[derive(SimpleObject, Debug, Clone)]
pub struct AgeMetrics {
    pub scope: AgeScope,
    pub scope_id: Uuid,
    pub students: i64,
    pub min_age: i32,
    pub max_age: i32,
    pub average_age: f64,
}

#[derive(SimpleObject, Debug, Clone)]
pub struct AgeMetricsPage {
    pub nodes: Vec<AgeMetrics>,
    pub next_cursor: Option<String>,
}

/// One enrollment of a course (read model `course_enrollments`).
#[derive(SimpleObject, Debug, Clone)]
pub struct Enrollment {
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
    pub log_position: i64,
}

impl From<enrollments::EnrollmentRow> for Enrollment {
    fn from(r: enrollments::EnrollmentRow) -> Self {
        Self {
            course_id: r.course_id,
            application_id: r.application_id,
            institution_id: r.institution_id,
            campus_id: r.campus_id,
            name: r.name,
            email: r.email,
            birth_date: r.birth_date,
            age_years: r.age_years,
            enrolled_on: r.enrolled_on,
            status: r.status,
            cancelled_on: r.cancelled_on,
            log_position: r.global_position,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct EnrollmentPage {
    pub nodes: Vec<Enrollment>,
    pub next_cursor: Option<String>,
}

/// The column an enrollment list is sorted by (ties broken by log position).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnrollmentSortField {
    #[default]
    EnrolledOn,
    Name,
    AgeYears,
}

#[derive(InputObject, Debug, Clone, Default)]
pub struct EnrollmentSort {
    #[graphql(default)]
    pub field: EnrollmentSortField,
    #[graphql(default)]
    pub direction: SortDirection,
}

/// Who did what and when (read model `audit_log`).
#[derive(SimpleObject, Debug, Clone)]
pub struct AuditEntry {
    pub event_id: Uuid,
    pub log_position: i64,
    pub recorded_at: DateTime<Utc>,
    /// `user:<id>`, `system` or `public`.
    pub actor: Option<String>,
    pub actor_user_id: Option<Uuid>,
    pub institution_id: Option<Uuid>,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub correlation_id: Option<Uuid>,
    pub causation: Option<String>,
    pub request_id: Option<String>,
    pub reprocessed_from: Option<Uuid>,
}

impl From<audit_log::AuditEntry> for AuditEntry {
    fn from(e: audit_log::AuditEntry) -> Self {
        Self {
            event_id: e.event_id,
            log_position: e.global_position,
            recorded_at: e.recorded_at,
            actor: e.actor,
            actor_user_id: e.actor_user_id,
            institution_id: e.institution_id,
            event_type: e.event_type,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            correlation_id: e.correlation_id,
            causation: e.causation,
            request_id: e.request_id,
            reprocessed_from: e.reprocessed_from,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct AuditLogPage {
    pub nodes: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Filters of the audit log; they combine with AND. A manager always sees only its own
/// institution.
#[derive(InputObject, Debug, Clone, Default)]
pub struct AuditLogFilter {
    pub institution_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub types: Option<Vec<String>>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub recorded_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub recorded_to: Option<DateTime<Utc>>,
}

/// One event as the admin list shows it (read model `admin_events`).
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct AdminEvent {
    pub event_id: Uuid,
    pub log_position: i64,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub institution_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
    /// The original, when this event is a reprocessed copy.
    pub reprocessed_from: Option<Uuid>,
    /// How many reprocessed copies this event has.
    pub copy_count: i32,
    /// Processing status, as the processor reports it.
    pub status: String,
    pub processed_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    #[graphql(skip)]
    pub error: Option<String>,
    pub tasks_pending: i32,
    pub tasks_running: i32,
    pub tasks_succeeded: i32,
    pub tasks_failed: i32,
}

impl From<admin_events::AdminEventRow> for AdminEvent {
    fn from(r: admin_events::AdminEventRow) -> Self {
        Self {
            event_id: r.event_id,
            log_position: r.global_position,
            event_type: r.event_type,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            institution_id: r.institution_id,
            recorded_at: r.recorded_at,
            reprocessed_from: r.reprocessed_from,
            copy_count: r.copies,
            status: r.status,
            processed_at: r.processed_at,
            duration_ms: r.duration_ms,
            error: r.error,
            tasks_pending: r.tasks_pending,
            tasks_running: r.tasks_running,
            tasks_succeeded: r.tasks_succeeded,
            tasks_failed: r.tasks_failed,
        }
    }
}

#[ComplexObject]
impl AdminEvent {
    /// The last error any of its tasks reported (full text for admins; others see that there was one).
    async fn error(&self, ctx: &Context<'_>) -> Option<String> {
        super::operator_error(ctx, self.error.as_deref())
    }

    /// The reprocessed copies of this event, oldest first.
    async fn copies(&self, ctx: &Context<'_>) -> Result<Vec<AdminEvent>, ApiError> {
        let rows = admin_events::event_copies(&state(ctx).pool, self.event_id).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct AdminEventPage {
    pub nodes: Vec<AdminEvent>,
    pub next_cursor: Option<String>,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationComparison {
    Eq,
    Gt,
    Lt,
}

/// `duration = ms`, `> ms` or `< ms`.
#[derive(InputObject, Debug, Clone)]
pub struct DurationFilter {
    pub op: DurationComparison,
    pub ms: i64,
}

impl DurationFilter {
    /// The comparison as the list queries take it (events and tasks alike).
    pub(crate) fn to_query(&self) -> (DurationOp, i64) {
        let op = match self.op {
            DurationComparison::Eq => DurationOp::Eq,
            DurationComparison::Gt => DurationOp::Gt,
            DurationComparison::Lt => DurationOp::Lt,
        };
        (op, self.ms)
    }
}

/// Filters of the admin event list; they combine with AND. A manager always sees only
/// its own institution.
#[derive(InputObject, Debug, Clone, Default)]
pub struct AdminEventFilter {
    /// Any of these event types.
    pub types: Option<Vec<String>>,
    pub recorded_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub recorded_to: Option<DateTime<Utc>>,
    pub processed_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub processed_to: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub duration: Option<DurationFilter>,
    pub institution_id: Option<Uuid>,
    pub has_failed_tasks: Option<bool>,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminEventSortField {
    #[default]
    Position,
    RecordedAt,
    ProcessedAt,
    Duration,
    EventType,
    Status,
}

#[derive(InputObject, Debug, Clone)]
pub struct AdminEventSort {
    #[graphql(default)]
    pub field: AdminEventSortField,
    #[graphql(default_with = "SortDirection::Desc")]
    pub direction: SortDirection,
}

/// Where a projection stands.
#[derive(SimpleObject, Debug, Clone)]
pub struct ProjectionStatus {
    pub name: String,
    /// Log position of the last event handled (0: none yet).
    pub position: i64,
    pub events_handled: i64,
    /// Committed events not handled yet.
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    /// The event it keeps failing on, if any.
    pub failed_position: Option<i64>,
    pub failing_since: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<aula_projections::ProjectionStatus> for ProjectionStatus {
    fn from(s: aula_projections::ProjectionStatus) -> Self {
        Self {
            name: s.name,
            position: s.position,
            events_handled: s.events_handled,
            lag_events: s.lag_events,
            lag_seconds: s.lag_seconds,
            last_error: s.last_error,
            failed_position: s.failed_position,
            failing_since: s.failing_since,
            attempts: s.attempts,
            updated_at: s.updated_at,
        }
    }
}

/// The latest rebuild of a projection.
#[derive(SimpleObject, Debug, Clone)]
pub struct RebuildProgress {
    pub name: String,
    /// `running`, `swapping`, `done` or `failed`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
    pub events_done: i64,
    pub events_per_second: f64,
    /// Events in the log after `position` (an estimate while running; 0 when done).
    pub remaining: i64,
    pub error: Option<String>,
}

impl From<aula_projections::RebuildProgress> for RebuildProgress {
    fn from(p: aula_projections::RebuildProgress) -> Self {
        Self {
            name: p.name,
            state: p.state,
            started_at: p.started_at,
            finished_at: p.finished_at,
            updated_at: p.updated_at,
            position: p.position,
            events_done: p.events_done,
            events_per_second: p.events_per_second,
            remaining: p.remaining,
            error: p.error,
        }
    }
}

/// The list query of an admin event filter (default sort and page); a manager is held
/// to its own institution (naming another one is FORBIDDEN).
pub(crate) fn admin_event_filters(
    claims: &Claims,
    filter: AdminEventFilter,
) -> Result<EventListQuery, ApiError> {
    let institution_id = match claims.role {
        DomainRole::Admin => filter.institution_id,
        _ => Some(auth::target_institution(claims, filter.institution_id)?),
    };
    Ok(EventListQuery {
        event_types: filter_list("types", filter.types)?,
        recorded_from: filter_time("recordedFrom", filter.recorded_from)?,
        recorded_to: filter_time("recordedTo", filter.recorded_to)?,
        processed_from: filter_time("processedFrom", filter.processed_from)?,
        processed_to: filter_time("processedTo", filter.processed_to)?,
        status: filter_text("status", filter.status)?,
        duration: filter.duration.as_ref().map(DurationFilter::to_query),
        institution_id,
        has_failed_tasks: filter.has_failed_tasks,
        ..EventListQuery::default()
    })
}

pub(crate) fn bad_cursor() -> ApiError {
    ApiError::validation("after", "INVALID_CURSOR", "not a cursor of this list")
}

fn page_error(error: course_capacity::PageError) -> ApiError {
    match error {
        course_capacity::PageError::BadCursor => bad_cursor(),
        course_capacity::PageError::Database(e) => e.into(),
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

/// The own institution of a non-admin, loaded (campuses and courses).
async fn own_institution(
    state: &AppState,
    claims: &Claims,
) -> Result<(Uuid, aula_domain::institution::Institution), ApiError> {
    let id = auth::target_institution(claims, None)?;
    let (institution, _) = state.buses.institution.load(&id.to_string()).await?;
    Ok((id, institution))
}

fn other_institution() -> ApiError {
    ApiError::forbidden("OTHER_INSTITUTION", "this belongs to another institution")
}

#[Object]
impl ReadModelQuery {
    /// The seats of one course. Admin: any; manager and teacher: own institution.
    async fn course_capacity(
        &self,
        ctx: &Context<'_>,
        course_id: Uuid,
    ) -> Result<CourseCapacity, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), READERS)?;
        let state = state(ctx);
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
        institution_id: Option<Uuid>,
        campus_id: Option<Uuid>,
        sort: Option<CourseCapacitySort>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<CourseCapacityPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), READERS)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
        let institution = match claims.role {
            DomainRole::Admin => institution_id,
            _ => {
                let id = auth::target_institution(claims, institution_id)?;
                if let Some(campus) = campus_id {
                    let (_, own) = own_institution(state, claims).await?;
                    if !own.campuses().keys().any(|c| c.as_uuid() == campus) {
                        return Err(other_institution());
                    }
                }
                Some(id)
            }
        };
        let sort = sort.unwrap_or_default();
        let after = after
            .map(|a| a.parse::<Uuid>().map_err(|_| bad_cursor()))
            .transpose()?;
        let query = course_capacity::CapacityListQuery {
            institution_id: institution,
            campus_id,
            sort: {
                use course_capacity::CapacitySort as S;
                use CourseCapacitySortField as F;
                match sort.field {
                    F::Name => S::Name,
                    F::Capacity => S::Capacity,
                    F::Enrolled => S::Enrolled,
                    F::SeatsLeft => S::SeatsLeft,
                    F::Pending => S::Pending,
                    F::Declined => S::Declined,
                    F::OpenedAt => S::OpenedAt,
                }
            },
            descending: sort.direction == SortDirection::Desc,
            after,
            limit: Some(first as i64),
        };
        let page = course_capacity::page_course_capacity(&state.pool, &query)
            .await
            .map_err(page_error)?;
        let (rows, next_cursor) = (page.rows, page.next.map(|id| id.to_string()));
        Ok(CourseCapacityPage {
            nodes: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })
    }

    /// Age metrics of courses, campuses or institutions, by id. Without `ids`: every
    /// one of that scope the caller may see (admin: all; others: their institution's).
    async fn age_metrics(
        &self,
        ctx: &Context<'_>,
        scope: AgeScope,
        ids: Option<Vec<Uuid>>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<AgeMetricsPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), READERS)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
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
        let ids: Option<Vec<Uuid>> = if claims.role == DomainRole::Admin {
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
        let after = after
            .map(|a| a.parse::<Uuid>().map_err(|_| bad_cursor()))
            .transpose()?;
        let page = age_metrics::age_metrics(
            &state.pool,
            scope.into(),
            ids.as_deref(),
            after,
            first as i64,
        )
        .await?;
        let next_cursor = page.next.map(|id| id.to_string());
        Ok(AgeMetricsPage {
            nodes: page
                .rows
                .into_iter()
                .map(|r| AgeMetrics {
                    scope,
                    scope_id: r.scope_id,
                    students: r.students,
                    min_age: r.min_age,
                    max_age: r.max_age,
                    average_age: r.average_age,
                })
                .collect(),
            next_cursor,
        })
    }

    /// The students enrolled in a course (cancelled ones only when asked). Admin: any;
    /// manager and teacher: own institution.
    async fn course_enrollments(
        &self,
        ctx: &Context<'_>,
        course_id: Uuid,
        #[graphql(default = false)] include_cancelled: bool,
        sort: Option<EnrollmentSort>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<EnrollmentPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), READERS)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
        let owner = course_institution(state, course_id).await?;
        auth::ensure_institution(claims, owner)?;
        let sort = sort.unwrap_or_default();
        let after = after
            .map(|a| a.parse::<Uuid>().map_err(|_| bad_cursor()))
            .transpose()?;
        let query = enrollments::EnrollmentListQuery {
            course_id,
            include_cancelled,
            sort: match sort.field {
                EnrollmentSortField::EnrolledOn => enrollments::EnrollmentSort::EnrolledOn,
                EnrollmentSortField::Name => enrollments::EnrollmentSort::Name,
                EnrollmentSortField::AgeYears => enrollments::EnrollmentSort::AgeYears,
            },
            descending: sort.direction == SortDirection::Desc,
            after,
            limit: Some(first as i64),
        };
        let page = enrollments::page_course_enrollments(&state.pool, &query)
            .await
            .map_err(page_error)?;
        let (rows, next_cursor) = (page.rows, page.next.map(|id| id.to_string()));
        Ok(EnrollmentPage {
            nodes: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })
    }

    /// Who did what and when, newest first unless `direction: ASC`. Admin: any
    /// institution (all without `institutionId`); manager: own.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditLogFilter>,
        #[graphql(default_with = "SortDirection::Desc")] direction: SortDirection,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<AuditLogPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
        let filter = filter.unwrap_or_default();
        let institution_id = match claims.role {
            DomainRole::Admin => filter.institution_id,
            _ => Some(auth::target_institution(claims, filter.institution_id)?),
        };
        let after = after
            .map(|a| a.parse::<i64>().map_err(|_| bad_cursor()))
            .transpose()?;
        let query = AuditQuery {
            institution_id,
            actor_user_id: filter.actor_user_id,
            correlation_id: filter.correlation_id,
            event_types: filter_list("types", filter.types)?,
            aggregate_type: filter_text("aggregateType", filter.aggregate_type)?,
            aggregate_id: filter_text("aggregateId", filter.aggregate_id)?,
            recorded_from: filter_time("recordedFrom", filter.recorded_from)?,
            recorded_to: filter_time("recordedTo", filter.recorded_to)?,
            ascending: direction == SortDirection::Asc,
            after,
            limit: Some(first as i64),
        };
        let page = audit_log::audit_log(&state.pool, &query).await?;
        Ok(AuditLogPage {
            nodes: page.entries.into_iter().map(Into::into).collect(),
            next_cursor: page.next.map(|p| p.to_string()),
        })
    }

    /// The admin event list: filters, sort on any column (default: newest first) and
    /// keyset pagination. Admin: any institution; manager: own.
    async fn admin_events(
        &self,
        ctx: &Context<'_>,
        filter: Option<AdminEventFilter>,
        sort: Option<AdminEventSort>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<AdminEventPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
        let filtered = admin_event_filters(claims, filter.unwrap_or_default())?;
        let sort = sort.unwrap_or(AdminEventSort {
            field: AdminEventSortField::Position,
            direction: SortDirection::Desc,
        });
        let query = EventListQuery {
            sort: match sort.field {
                AdminEventSortField::Position => EventSort::Position,
                AdminEventSortField::RecordedAt => EventSort::RecordedAt,
                AdminEventSortField::ProcessedAt => EventSort::ProcessedAt,
                AdminEventSortField::Duration => EventSort::Duration,
                AdminEventSortField::EventType => EventSort::EventType,
                AdminEventSortField::Status => EventSort::Status,
            },
            descending: sort.direction == SortDirection::Desc,
            after: filter_text("after", after)?,
            limit: Some(first as i64),
            ..filtered
        };
        let page = admin_events::list_admin_events(&state.pool, &query)
            .await
            .map_err(|e| match e {
                EventListError::BadCursor => bad_cursor(),
                EventListError::Database(e) => e.into(),
            })?;
        Ok(AdminEventPage {
            nodes: page.events.into_iter().map(Into::into).collect(),
            next_cursor: page.next,
        })
    }

    /// One event of the admin view, with its reprocessed copies. Admin: any; manager:
    /// own institution's.
    async fn admin_event(&self, ctx: &Context<'_>, event_id: Uuid) -> Result<AdminEvent, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        let state = state(ctx);
        let row = admin_events::admin_event(&state.pool, event_id)
            .await?
            .ok_or_else(|| ApiError::not_found("EVENT_NOT_FOUND", "event not found"))?;
        if claims.role != DomainRole::Admin {
            auth::ensure_institution(claims, row.institution_id.ok_or_else(other_institution)?)?;
        }
        Ok(row.into())
    }

    /// Each projection's position, lag and last error. Admin only.
    async fn projection_status(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<ProjectionStatus>, ApiError> {
        auth::require_role(request(ctx).claims.as_ref(), ADMIN)?;
        let rows = aula_projections::status(&state(ctx).pool).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The latest rebuild of each projection ever rebuilt (or only `name`'s). Admin only.
    async fn rebuild_progress(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
    ) -> Result<Vec<RebuildProgress>, ApiError> {
        auth::require_role(request(ctx).claims.as_ref(), ADMIN)?;
        let rows = aula_projections::rebuild_progress(&state(ctx).pool).await?;
        Ok(rows
            .into_iter()
            .filter(|p| name.as_deref().is_none_or(|n| n == p.name))
            .map(Into::into)
            .collect())
    }
}
