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
use super::types::{
    parse_status, status_name, BigInt, EnrollmentStatus, EventStatus, RebuildState,
};
use super::{request, state};
use crate::auth::{self, Claims};
use crate::error::ApiError;
use crate::state::AppState;

/// Who may change what the staff screens show (create, reprocess, retry, bulk, webhooks).
pub(crate) const STAFF: &[DomainRole] = &[DomainRole::Admin, DomainRole::Manager];
/// Who may read the staff screens: staff, and observers (support staff who watch and
/// search but change nothing). Every read also checks the institution
/// (`auth::read_scope`, `auth::ensure_institution`).
pub(crate) const WATCHERS: &[DomainRole] =
    &[DomainRole::Admin, DomainRole::Manager, DomainRole::Observer];
const READERS: &[DomainRole] = &[
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
        Err(ApiError::forbidden(
            "ROLE_NOT_ALLOWED",
            "your role may not perform this operation",
        ))
    }
}
/// Longest accepted filter string (event type, aggregate id, status).
const MAX_FILTER_CHARS: usize = 200;
/// Most values in one list filter (`types`).
const MAX_FILTER_VALUES: usize = 50;

#[derive(Default)]
pub struct ReadModelQuery;

/// Ascending or descending.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDirection {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// One course's seats (read model `course_capacity`).
#[derive(SimpleObject, Debug, Clone)]
pub struct CourseCapacity {
    /// The course's id.
    pub course_id: Uuid,
    /// The institution offering it.
    pub institution_id: Option<Uuid>,
    /// The campus it is taught on.
    pub campus_id: Option<Uuid>,
    /// Its name.
    pub name: Option<String>,
    /// Seats in all.
    pub capacity: i32,
    /// Seats taken by enrolled students.
    pub enrolled: i32,
    /// Seats still free (`capacity - enrolled`).
    pub seats_left: i32,
    /// Applications recorded and not yet decided.
    pub pending: i32,
    /// Applications declined (the course was full or closed).
    pub declined: i32,
    /// Enrollments cancelled by a manager (their seats were given back).
    pub cancelled: i32,
    /// Whether it takes no more applications.
    pub closed: bool,
    /// When it was offered.
    pub opened_at: Option<DateTime<Utc>>,
    /// When its seats last changed.
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

/// One page of courses with their seats.
#[derive(SimpleObject, Debug, Clone)]
pub struct CourseCapacityPage {
    /// The courses of this page.
    pub nodes: Vec<CourseCapacity>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The column a course list is sorted by (ties broken by course id).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// The grouping of an age metric.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeScope {
    /// Per course.
    Course,
    /// Per campus.
    Campus,
    /// Per institution.
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
    /// What `scopeId` names: a course, a campus or an institution.
    pub scope: AgeScope,
    /// The id of the course, campus or institution.
    pub scope_id: Uuid,
    /// Enrolled students counted.
    pub students: BigInt,
    /// The youngest student's age in years.
    pub min_age: i32,
    /// The oldest student's age in years.
    pub max_age: i32,
    /// The students' mean age in years.
    pub average_age: f64,
}

/// One page of age metrics.
#[derive(SimpleObject, Debug, Clone)]
pub struct AgeMetricsPage {
    /// The metrics of this page.
    pub nodes: Vec<AgeMetrics>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

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

/// One page of a course's enrollments.
#[derive(SimpleObject, Debug, Clone)]
pub struct EnrollmentPage {
    /// The enrollments of this page.
    pub nodes: Vec<Enrollment>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The column an enrollment list is sorted by (ties broken by log position).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// Who did what and when (read model `audit_log`).
#[derive(SimpleObject, Debug, Clone)]
pub struct AuditEntry {
    /// The id of the event this entry records.
    pub event_id: Uuid,
    /// The event's global position in the log.
    pub log_position: BigInt,
    /// When the event was committed.
    pub recorded_at: DateTime<Utc>,
    /// `user:<id>`, `system` or `public`.
    pub actor: Option<String>,
    /// The user who acted, when a user did.
    pub actor_user_id: Option<Uuid>,
    /// The institution concerned; null for platform-wide events.
    pub institution_id: Option<Uuid>,
    /// What happened (the event's type).
    pub event_type: String,
    /// The type of the aggregate that recorded it.
    pub aggregate_type: String,
    /// The id of the stream it belongs to.
    pub aggregate_id: String,
    /// Its sequence number within its stream.
    pub sequence: BigInt,
    /// The id shared by every event one request set off.
    pub correlation_id: Option<Uuid>,
    /// What directly caused it (an event id or a request).
    pub causation: Option<String>,
    /// The id of the HTTP request that recorded it, if any.
    pub request_id: Option<String>,
    /// The original event, when this entry records a reprocessed copy.
    pub reprocessed_from: Option<Uuid>,
}

impl From<audit_log::AuditEntry> for AuditEntry {
    fn from(e: audit_log::AuditEntry) -> Self {
        Self {
            event_id: e.event_id,
            log_position: BigInt(e.global_position),
            recorded_at: e.recorded_at,
            actor: e.actor,
            actor_user_id: e.actor_user_id,
            institution_id: e.institution_id,
            event_type: e.event_type,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: BigInt(e.sequence),
            correlation_id: e.correlation_id,
            causation: e.causation,
            request_id: e.request_id,
            reprocessed_from: e.reprocessed_from,
        }
    }
}

/// One page of the audit log.
#[derive(SimpleObject, Debug, Clone)]
pub struct AuditLogPage {
    /// The entries of this page.
    pub nodes: Vec<AuditEntry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of the audit log; they combine with AND. A manager always sees only its own
/// institution.
#[derive(InputObject, Debug, Clone, Default)]
pub struct AuditLogFilter {
    /// Only this institution's entries (admins; managers always see their own).
    pub institution_id: Option<Uuid>,
    /// Only what this user did.
    pub actor_user_id: Option<Uuid>,
    /// Only the events one request set off.
    pub correlation_id: Option<Uuid>,
    /// Any of these event types.
    pub types: Option<Vec<String>>,
    /// Only events of this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only events of this stream.
    pub aggregate_id: Option<String>,
    /// Recorded at or after this time.
    pub recorded_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub recorded_to: Option<DateTime<Utc>>,
}

/// One event as the admin list shows it (read model `admin_events`).
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct AdminEvent {
    /// The event's id (stable across rebuilds).
    pub event_id: Uuid,
    /// The event's global position in the log.
    pub log_position: BigInt,
    /// The event's type (see docs/events.md).
    pub event_type: String,
    /// The type of the aggregate that recorded it.
    pub aggregate_type: String,
    /// The id of the stream it belongs to.
    pub aggregate_id: String,
    /// Its sequence number within its stream.
    pub sequence: BigInt,
    /// The institution it concerns; null for platform-wide events.
    pub institution_id: Option<Uuid>,
    /// When it was committed.
    pub recorded_at: DateTime<Utc>,
    /// The original, when this event is a reprocessed copy.
    pub reprocessed_from: Option<Uuid>,
    /// How many reprocessed copies this event has.
    pub copy_count: i32,
    /// Processing status, as the processor reports it.
    pub status: EventStatus,
    /// When its last task finished; null while pending.
    pub processed_at: Option<DateTime<Utc>>,
    /// From recording to the end of its last task, in milliseconds; null while pending.
    pub duration_ms: Option<BigInt>,
    #[graphql(skip)]
    pub error: Option<String>,
    /// Its tasks waiting to run.
    pub tasks_pending: i32,
    /// Its tasks running now.
    pub tasks_running: i32,
    /// Its tasks that succeeded.
    pub tasks_succeeded: i32,
    /// Its tasks that failed for good (failed or dead). Only each kind's latest task
    /// counts: a manual retry's outcome replaces the retried task's.
    pub tasks_failed: i32,
    /// The latest reprocessed copy of this event; null on copies and on events never
    /// reprocessed.
    pub latest_copy_id: Option<Uuid>,
    /// That copy's processing status.
    pub latest_copy_status: Option<EventStatus>,
    /// Whether its latest copy's tasks all succeeded ("resolved by copy"): a failure
    /// reprocessing fixed. The event's own status stays what its own tasks say.
    pub resolved_by_copy: bool,
}

impl TryFrom<admin_events::AdminEventRow> for AdminEvent {
    type Error = ApiError;

    fn try_from(r: admin_events::AdminEventRow) -> Result<Self, ApiError> {
        let resolved_by_copy = r.resolved_by_copy();
        Ok(Self {
            event_id: r.event_id,
            log_position: BigInt(r.global_position),
            event_type: r.event_type,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: BigInt(r.sequence),
            institution_id: r.institution_id,
            recorded_at: r.recorded_at,
            reprocessed_from: r.reprocessed_from,
            copy_count: r.copies,
            status: parse_status(&r.status)?,
            processed_at: r.processed_at,
            duration_ms: r.duration_ms.map(BigInt),
            error: r.error,
            tasks_pending: r.tasks_pending,
            tasks_running: r.tasks_running,
            tasks_succeeded: r.tasks_succeeded,
            tasks_failed: r.tasks_failed,
            resolved_by_copy,
            latest_copy_id: r.latest_copy_id,
            latest_copy_status: r
                .latest_copy_status
                .as_deref()
                .map(parse_status)
                .transpose()?,
        })
    }
}

#[ComplexObject]
impl AdminEvent {
    /// The last error any of its tasks reported (full text for admins; others see that there was one).
    async fn error(&self, ctx: &Context<'_>) -> Option<String> {
        super::operator_error(ctx, self.error.as_deref())
    }

    /// What reprocessing this event cannot do, shown before reprocessing it: a copy of
    /// a sign-up, password-reset or e-mail-change event cannot send its one-time link
    /// again (and what to do instead). Null for every other type.
    async fn reprocess_note(&self) -> Option<&'static str> {
        aula_processor::reprocess::one_time_link_note(&self.event_type)
    }

    /// The reprocessed copies of this event, oldest first.
    async fn copies(&self, ctx: &Context<'_>) -> Result<Vec<AdminEvent>, ApiError> {
        let rows = admin_events::event_copies(&state(ctx).pool, self.event_id).await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

/// One page of the admin event list.
#[derive(SimpleObject, Debug, Clone)]
pub struct AdminEventPage {
    /// The events of this page, in the requested order.
    pub nodes: Vec<AdminEvent>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// How a duration filter compares.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationComparison {
    /// Exactly this long.
    Eq,
    /// Longer than this.
    Gt,
    /// Shorter than this.
    Lt,
}

/// `duration = ms`, `> ms` or `< ms`.
#[derive(InputObject, Debug, Clone)]
pub struct DurationFilter {
    /// How to compare.
    pub op: DurationComparison,
    /// The duration to compare with, in milliseconds.
    pub ms: BigInt,
}

impl DurationFilter {
    /// The comparison as the list queries take it (events and tasks alike).
    pub(crate) fn to_query(&self) -> (DurationOp, i64) {
        let op = match self.op {
            DurationComparison::Eq => DurationOp::Eq,
            DurationComparison::Gt => DurationOp::Gt,
            DurationComparison::Lt => DurationOp::Lt,
        };
        (op, self.ms.0)
    }
}

/// Filters of the admin event list; they combine with AND. A manager always sees only
/// its own institution.
#[derive(InputObject, Debug, Clone, Default)]
pub struct AdminEventFilter {
    /// Any of these event types.
    pub types: Option<Vec<String>>,
    /// Recorded at or after this time.
    pub recorded_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub recorded_to: Option<DateTime<Utc>>,
    /// Processed at or after this time.
    pub processed_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub processed_to: Option<DateTime<Utc>>,
    /// Only events in this processing status.
    pub status: Option<EventStatus>,
    /// Only events whose processing took this long.
    pub duration: Option<DurationFilter>,
    /// Only this institution's events (admins; managers always see their own).
    pub institution_id: Option<Uuid>,
    /// Only events with (true) or without (false) failed tasks.
    pub has_failed_tasks: Option<bool>,
    /// Only events their latest reprocessed copy resolved (true: its tasks succeeded),
    /// or only the others (false). With status FAILED and false: the failures left to
    /// fix.
    pub resolved: Option<bool>,
    /// Only events whose payload holds this text (case-insensitive, 3 to 200
    /// characters; an e-mail address, an id, a name). Sensitive fields are not searched.
    pub search: Option<String>,
}

/// The column the admin event list is sorted by (ties broken by log position).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminEventSortField {
    /// Log position (commit order).
    #[default]
    Position,
    /// When recorded.
    RecordedAt,
    /// When processed.
    ProcessedAt,
    /// Processing duration.
    Duration,
    /// Event type.
    EventType,
    /// Processing status.
    Status,
}

/// How the admin event list is sorted.
#[derive(InputObject, Debug, Clone)]
pub struct AdminEventSort {
    /// The column to sort by.
    #[graphql(default)]
    pub field: AdminEventSortField,
    /// Ascending or descending.
    #[graphql(default_with = "SortDirection::Desc")]
    pub direction: SortDirection,
}

/// Where a projection stands.
#[derive(SimpleObject, Debug, Clone)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Log position of the last event handled (0: none yet).
    pub position: BigInt,
    /// Events handled since it started (or was rebuilt).
    pub events_handled: BigInt,
    /// Committed events not handled yet.
    pub lag_events: BigInt,
    /// Age of the oldest event it has not handled, in seconds.
    pub lag_seconds: f64,
    /// Why its last batch failed, if it did.
    pub last_error: Option<String>,
    /// The event it keeps failing on, if any.
    pub failed_position: Option<BigInt>,
    /// When it started failing on `failedPosition`.
    pub failing_since: Option<DateTime<Utc>>,
    /// Tries on the failing event so far.
    pub attempts: i32,
    /// When its checkpoint last moved.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<aula_projections::ProjectionStatus> for ProjectionStatus {
    fn from(s: aula_projections::ProjectionStatus) -> Self {
        Self {
            name: s.name,
            position: BigInt(s.position),
            events_handled: BigInt(s.events_handled),
            lag_events: BigInt(s.lag_events),
            lag_seconds: s.lag_seconds,
            last_error: s.last_error,
            failed_position: s.failed_position.map(BigInt),
            failing_since: s.failing_since,
            attempts: s.attempts,
            updated_at: s.updated_at,
        }
    }
}

/// The latest rebuild of a projection.
#[derive(SimpleObject, Debug, Clone)]
pub struct RebuildProgress {
    /// The projection's name.
    pub name: String,
    /// Where the rebuild stands.
    pub state: RebuildState,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished; null while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// When its progress last moved.
    pub updated_at: DateTime<Utc>,
    /// The log position replayed so far.
    pub position: BigInt,
    /// Events replayed so far.
    pub events_done: BigInt,
    /// Replay rate.
    pub events_per_second: f64,
    /// Events in the log after `position` (an estimate while running; 0 when done).
    pub remaining: BigInt,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl TryFrom<aula_projections::RebuildProgress> for RebuildProgress {
    type Error = ApiError;

    fn try_from(p: aula_projections::RebuildProgress) -> Result<Self, ApiError> {
        Ok(Self {
            name: p.name,
            state: parse_status(&p.state)?,
            started_at: p.started_at,
            finished_at: p.finished_at,
            updated_at: p.updated_at,
            position: BigInt(p.position),
            events_done: BigInt(p.events_done),
            events_per_second: p.events_per_second,
            remaining: BigInt(p.remaining),
            error: p.error,
        })
    }
}

/// The list query of an admin event filter (default sort and page); a manager is held
/// to its own institution (naming another one is FORBIDDEN).
pub(crate) fn admin_event_filters(
    claims: &Claims,
    filter: AdminEventFilter,
) -> Result<EventListQuery, ApiError> {
    let institution_id = auth::read_scope(claims, filter.institution_id)?;
    Ok(EventListQuery {
        event_types: event_types_filter(filter.types)?,
        recorded_from: filter_time("recordedFrom", filter.recorded_from)?,
        recorded_to: filter_time("recordedTo", filter.recorded_to)?,
        processed_from: filter_time("processedFrom", filter.processed_from)?,
        processed_to: filter_time("processedTo", filter.processed_to)?,
        status: filter.status.map(|s| status_name(s).to_owned()),
        duration: filter.duration.as_ref().map(DurationFilter::to_query),
        institution_id,
        has_failed_tasks: filter.has_failed_tasks,
        resolved: filter.resolved,
        search: search_text("search", filter.search)?,
        ..EventListQuery::default()
    })
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
        n if n < admin_events::MIN_SEARCH_CHARS => Err(ApiError::validation(
            field,
            "TOO_SHORT",
            format!(
                "must be at least {} characters",
                admin_events::MIN_SEARCH_CHARS
            ),
        )),
        _ => Ok(Some(text.to_owned())),
    }
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
        #[graphql(desc = "The course.")] course_id: Uuid,
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
        #[graphql(desc = "The institution (admins; others get their own).")] institution_id: Option<
            Uuid,
        >,
        #[graphql(desc = "Only this campus's courses.")] campus_id: Option<Uuid>,
        #[graphql(desc = "Sort column and direction.")] sort: Option<CourseCapacitySort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<CourseCapacityPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), READERS)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
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
        #[graphql(desc = "Courses, campuses or institutions.")] scope: AgeScope,
        #[graphql(desc = "Only these ids.")] ids: Option<Vec<Uuid>>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
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
                    students: BigInt(r.students),
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
        #[graphql(desc = "The course.")] course_id: Uuid,
        #[graphql(default = false, desc = "Also list cancelled enrollments.")]
        include_cancelled: bool,
        #[graphql(desc = "Sort column and direction.")] sort: Option<EnrollmentSort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
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
            nodes: rows
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            next_cursor,
        })
    }

    /// Who did what and when, newest first unless `direction: ASC`. Admin: any
    /// institution (all without `institutionId`); manager: own.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<AuditLogFilter>,
        #[graphql(
            default_with = "SortDirection::Desc",
            desc = "Newest first (DESC, default) or oldest first."
        )]
        direction: SortDirection,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<AuditLogPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), WATCHERS)?;
        let state = state(ctx);
        let first = page_size(first, state.config.max_page_size)?;
        let filter = filter.unwrap_or_default();
        let institution_id = auth::read_scope(claims, filter.institution_id)?;
        let after = after
            .map(|a| a.parse::<i64>().map_err(|_| bad_cursor()))
            .transpose()?;
        let query = AuditQuery {
            institution_id,
            actor_user_id: filter.actor_user_id,
            correlation_id: filter.correlation_id,
            event_types: event_types_filter(filter.types)?,
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
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<AdminEventFilter>,
        #[graphql(desc = "Sort column and direction.")] sort: Option<AdminEventSort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<AdminEventPage, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), WATCHERS)?;
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
            nodes: page
                .events
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next,
        })
    }

    /// One event of the admin view, with its reprocessed copies. Admin: any; manager:
    /// own institution's.
    async fn admin_event(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event's id.")] event_id: Uuid,
    ) -> Result<AdminEvent, ApiError> {
        let claims = auth::require_role(request(ctx).claims.as_ref(), WATCHERS)?;
        let state = state(ctx);
        let row = admin_events::admin_event(&state.pool, event_id)
            .await?
            .ok_or_else(|| ApiError::not_found("EVENT_NOT_FOUND", "event not found"))?;
        if !auth::sees_every_institution(claims) {
            auth::ensure_institution(claims, row.institution_id.ok_or_else(other_institution)?)?;
        }
        row.try_into()
    }

    /// Each projection's position, lag and last error. Admins and platform-wide observers.
    async fn projection_status(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<ProjectionStatus>, ApiError> {
        require_platform_reader(request(ctx).claims.as_ref())?;
        let rows = aula_projections::status(&state(ctx).pool).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The latest rebuild of each projection ever rebuilt (or only `name`'s). Admins and platform-wide observers.
    async fn rebuild_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection's name.")] name: Option<String>,
    ) -> Result<Vec<RebuildProgress>, ApiError> {
        require_platform_reader(request(ctx).claims.as_ref())?;
        let rows = aula_projections::rebuild_progress(&state(ctx).pool).await?;
        rows.into_iter()
            .filter(|p| name.as_deref().is_none_or(|n| n == p.name))
            .map(TryInto::try_into)
            .collect()
    }
}
