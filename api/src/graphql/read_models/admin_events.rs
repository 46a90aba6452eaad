//! The admin event list and one event with its copies (`aula_projections::admin_events`).

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object};
use aula_projections::admin_events::{self, DurationOp, EventListQuery};
use uuid::Uuid;

use super::*;
use crate::graphql::OperatorError;

#[derive(Default)]
pub struct AdminEventQuery;

row_object! {
    /// One event as the admin list shows it (read model `admin_events`).
    #[graphql(complex)]
    AdminEvent try_from admin_events::AdminEventRow as r {
        /// The event's id (stable across rebuilds).
        event_id: Uuid,
        /// The event's global position in the log.
        log_position: BigInt = BigInt(r.global_position),
        /// The event's type (see docs/events.md).
        event_type: String,
        /// The type of the aggregate that recorded it.
        aggregate_type: String,
        /// The id of the stream it belongs to.
        aggregate_id: String,
        /// Its sequence number within its stream.
        sequence: BigInt = BigInt(r.sequence),
        /// The institution it concerns; null for platform-wide events.
        institution_id: Option<Uuid>,
        /// When it was committed.
        recorded_at: DateTime<Utc>,
        /// The original, when this event is a reprocessed copy.
        reprocessed_from: Option<Uuid>,
        /// How many reprocessed copies this event has.
        copy_count: i32 = r.copies,
        /// Processing status, as the processor reports it.
        status: EventStatus = parse_status(&r.status)?,
        /// When its last task finished; null while pending.
        processed_at: Option<DateTime<Utc>>,
        /// From recording to the end of its last task, in milliseconds; null while pending.
        duration_ms: Option<BigInt> = r.duration_ms.map(BigInt),
        /// Its tasks waiting to run.
        tasks_pending: i32,
        /// Its tasks running now.
        tasks_running: i32,
        /// Its tasks that succeeded.
        tasks_succeeded: i32,
        /// Its tasks that failed for good (failed or dead). Only each kind's latest task
        /// counts: a manual retry's outcome replaces the retried task's.
        tasks_failed: i32,
        /// The latest reprocessed copy of this event; null on copies and on events never
        /// reprocessed.
        latest_copy_id: Option<Uuid>,
        /// That copy's processing status.
        latest_copy_status: Option<EventStatus> = r
            .latest_copy_status
            .as_deref()
            .map(parse_status)
            .transpose()?,
        /// Whether its latest copy's tasks all succeeded ("resolved by copy"): a failure
        /// reprocessing fixed. The event's own status stays what its own tasks say.
        resolved_by_copy: bool = r.resolved_by_copy(),
        /// The last error any of its tasks reported (full text for admins; others see that there was one).
        error: Option<OperatorError> = r.error.map(OperatorError),
    }
}

#[ComplexObject]
impl AdminEvent {
    /// What reprocessing this event cannot do, shown before reprocessing it: a copy of
    /// a sign-up, password-reset or e-mail-change event cannot send its one-time link
    /// again (and what to do instead). Null for every other type.
    async fn reprocess_note(&self) -> Option<&'static str> {
        aula_processor::reprocess::one_time_link_note(&self.event_type)
    }

    /// The reprocessed copies of this event, oldest first.
    async fn copies(&self, ctx: &Context<'_>) -> Result<Vec<AdminEvent>, ApiError> {
        let rows = admin_events::event_copies(&state(ctx).pool, self.event_id).await?;
        nodes(rows)
    }
}

page! {
    /// One page of the admin event list.
    AdminEventPage {
        /// The events of this page, in the requested order.
        nodes: AdminEvent,
    }
}

/// How a duration filter compares.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "aula_projections::admin_events::DurationOp")]
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
        (self.op.into(), self.ms.0)
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
#[graphql(remote = "aula_projections::admin_events::EventSort")]
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

#[Object]
impl AdminEventQuery {
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
        let (claims, state, first) = paged(ctx, WATCHERS, first)?;
        let filtered = admin_event_filters(claims, filter.unwrap_or_default())?;
        let sort = sort.unwrap_or(AdminEventSort {
            field: AdminEventSortField::Position,
            direction: SortDirection::Desc,
        });
        let query = EventListQuery {
            sort: sort.field.into(),
            descending: sort.direction == SortDirection::Desc,
            after: filter_text("after", after)?,
            limit: Some(first as i64),
            ..filtered
        };
        let page = admin_events::list_admin_events(&state.pool, &query).await?;
        Ok(AdminEventPage {
            nodes: nodes(page.events)?,
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
        let (claims, state) = authorize(ctx, WATCHERS)?;
        let row = admin_events::admin_event(&state.pool, event_id)
            .await?
            .ok_or_else(|| ApiError::not_found("EVENT_NOT_FOUND", "event not found"))?;
        if !auth::sees_every_institution(claims) {
            auth::ensure_institution(claims, row.institution_id.ok_or_else(other_institution)?)?;
        }
        row.try_into()
    }
}
