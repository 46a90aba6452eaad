//! The admin dashboard's task list (`adminTasks`), an event's stored payload and
//! metadata for the details drawer (`adminEventDetail`), and the values its filters
//! offer (`dashboardFacets`). Admin: any institution; manager: its own (forced).

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use aula_processor::task_list::{self, TaskListQuery, TaskListRow};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::admin_ops::{ensure_owner, event_owner};
use super::query::{nodes, paged};
use super::read_models::{
    filter_list, filter_text, filter_time, DurationFilter, SortDirection, WATCHERS,
};
use super::types::{parse_status, status_name, BigInt, TaskStatus};
use super::{authorize, OperatorError};
use crate::auth::{self, Claims};
use crate::error::ApiError;

#[derive(Default)]
pub struct TaskQuery;

row_object! {
    /// One task as the admin task list shows it (live tasks; archived ones are listed per
    /// event by `eventTasks`).
    AdminTask try_from TaskListRow as r {
        /// The task's id.
        id: BigInt = r.id.into(),
        /// What the task does (e.g. `email.welcome`, `enrollment.decide`).
        kind: String,
        /// Where it stands in the queue.
        status: TaskStatus = parse_status(&r.status)?,
        /// Lower runs first.
        priority: i32 = i32::from(r.priority),
        /// Claims so far.
        attempt: i32,
        /// Claims it may take before it is dead.
        max_attempts: i32,
        /// The event that issued it.
        event_id: Option<Uuid>,
        /// The type of the event that issued it.
        event_type: Option<String>,
        /// The institution of its event; null for platform-wide tasks.
        institution_id: Option<Uuid>,
        /// The task this one retries (a manual retry).
        origin_task_id: Option<BigInt> = r.origin_task_id.map(BigInt),
        /// When it was queued.
        created_at: DateTime<Utc>,
        /// When it may run (next): a retrying task waits until then.
        run_at: DateTime<Utc>,
        /// When the running attempt's lease ends (extended by heartbeats); null unless
        /// running.
        lease_until: Option<DateTime<Utc>>,
        /// The worker running it; null unless running.
        worker: Option<String>,
        /// The first claim.
        started_at: Option<DateTime<Utc>>,
        /// When it finished; null until then.
        finished_at: Option<DateTime<Utc>>,
        /// From the first claim to the end, retries included; null until finished.
        duration_ms: Option<BigInt> = r.duration_ms.map(BigInt),
        /// The last error (full text for admins; others see that there was one).
        last_error: Option<OperatorError> = r.last_error.map(OperatorError),
    }
}

page! {
    /// One page of the admin task list.
    AdminTaskPage {
        /// The tasks of this page, in the requested order.
        nodes: AdminTask,
    }
}

/// Filters of the admin task list; they combine with AND. A manager always sees only
/// its own institution.
#[derive(InputObject, Debug, Clone, Default)]
pub struct AdminTaskFilter {
    /// Any of these kinds (`email.welcome`, `enrollment.decide`...).
    pub kinds: Option<Vec<String>>,
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this priority (lower runs first; see `setTaskPriority`).
    pub priority: Option<i32>,
    /// Queued at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    /// Finished at or after this time.
    pub finished_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub finished_to: Option<DateTime<Utc>>,
    /// Only tasks that took this long.
    pub duration: Option<DurationFilter>,
    /// Only this institution's tasks (admins; managers always see their own).
    pub institution_id: Option<Uuid>,
    /// Only the tasks of this event.
    pub event_id: Option<Uuid>,
    /// Only tasks whose last error holds this text (case-insensitive, 3 to 200
    /// characters). Error texts are for the platform's operators: admins and
    /// platform-wide observers only (others: FORBIDDEN).
    pub search: Option<String>,
}

/// The column a task list is sorted by (ties broken by task id).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[graphql(remote = "aula_processor::task_list::TaskSort")]
pub enum AdminTaskSortField {
    /// Task id: insertion order.
    #[default]
    Id,
    /// Task kind.
    Kind,
    /// Status.
    Status,
    /// When queued.
    CreatedAt,
    /// When finished.
    FinishedAt,
    /// Duration.
    Duration,
    /// Institution.
    Institution,
    /// Claims so far.
    Attempts,
}

/// How the admin task list is sorted.
#[derive(InputObject, Debug, Clone)]
pub struct AdminTaskSort {
    /// The column to sort by.
    #[graphql(default)]
    pub field: AdminTaskSortField,
    /// Ascending or descending.
    #[graphql(default_with = "SortDirection::Desc")]
    pub direction: SortDirection,
}

/// An event as stored in the log, for the details drawer.
#[derive(SimpleObject, Debug, Clone)]
pub struct AdminEventDetail {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The payload's version (an older one is upcast when read).
    pub event_version: String,
    /// The payload, as a JSON text.
    pub payload: String,
    /// Every metadata key, as a JSON text.
    pub metadata: String,
    /// `user:<id>`, `system` or `public`.
    pub actor: Option<String>,
    /// The id shared by every event one request set off.
    pub correlation_id: Option<String>,
    /// The id of what directly caused it (an event or a request).
    pub causation_id: Option<String>,
    /// The id of the HTTP request that recorded it, if any.
    pub request_id: Option<String>,
}

/// The values the dashboard's filters offer.
#[derive(SimpleObject, Debug, Clone)]
pub struct DashboardFacets {
    /// Every event type in the admin event list.
    pub event_types: Vec<String>,
    /// Every task kind among the live tasks.
    pub task_kinds: Vec<String>,
}

#[Object]
impl TaskQuery {
    /// The admin task list: filters, sort on any column (default: newest first) and
    /// keyset pagination. Admin: any institution; manager: own (forced; naming another
    /// is FORBIDDEN; tasks without an institution are admin-only).
    async fn admin_tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Filters; they combine with AND.")] filter: Option<AdminTaskFilter>,
        #[graphql(desc = "Sort column and direction.")] sort: Option<AdminTaskSort>,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<AdminTaskPage, ApiError> {
        let (claims, state, first) = paged(ctx, WATCHERS, first)?;
        let sort = sort.unwrap_or(AdminTaskSort {
            field: AdminTaskSortField::Id,
            direction: SortDirection::Desc,
        });
        let query = TaskListQuery {
            sort: sort.field.into(),
            descending: sort.direction == SortDirection::Desc,
            after: filter_text("after", after)?,
            limit: Some(first as i64),
            ..task_filters(claims, filter.unwrap_or_default())?
        };
        let page = task_list::list_tasks(&state.pool, &query).await?;
        Ok(AdminTaskPage {
            nodes: nodes(page.tasks)?,
            next_cursor: page.next,
        })
    }

    /// An event's stored payload and metadata (actor, correlation, causation). Admin:
    /// any; manager: own institution's (an event without an institution is admin-only).
    async fn admin_event_detail(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event's id.")] event_id: Uuid,
    ) -> Result<AdminEventDetail, ApiError> {
        let (claims, state) = authorize(ctx, WATCHERS)?;
        ensure_owner(claims, event_owner(state, event_id).await?)?;
        let row = aula_eventlog::lookups::stored_event(&state.pool, event_id).await?;
        let (event_type, event_version, payload, metadata) =
            row.ok_or_else(|| ApiError::not_found("EVENT_NOT_FOUND", "event not found"))?;
        let key = |name: &str| {
            metadata.get(name).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            })
        };
        Ok(AdminEventDetail {
            event_id,
            event_type,
            event_version,
            actor: key(aula_eventlog::metadata::ACTOR),
            correlation_id: key(aula_eventlog::metadata::CORRELATION_ID),
            causation_id: key(aula_eventlog::metadata::CAUSATION_ID),
            request_id: key(aula_eventlog::metadata::REQUEST_ID),
            payload: redacted(payload).to_string(),
            metadata: metadata.to_string(),
        })
    }

    /// The event types and task kinds the dashboard's filters offer. Admin, manager.
    async fn dashboard_facets(&self, ctx: &Context<'_>) -> Result<DashboardFacets, ApiError> {
        let (_, state) = authorize(ctx, WATCHERS)?;
        let pool = &state.pool;
        let event_types = aula_projections::lookups::admin_event_types(pool).await?;
        let task_kinds = task_list::task_kinds(pool).await?;
        Ok(DashboardFacets {
            event_types,
            task_kinds,
        })
    }
}

/// Task kinds of a filter, each one the processor knows: a typo is a VALIDATION error
/// naming the field, not a silently empty list.
fn task_kinds_filter(values: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let values = filter_list("kinds", values)?;
    if let Some(unknown) = values
        .iter()
        .find(|value| !aula_processor::kinds::ALL.contains(&value.as_str()))
    {
        return Err(ApiError::validation(
            "kinds",
            "UNKNOWN_TASK_KIND",
            format!("{unknown:?} is not a task kind (see `dashboardFacets`)"),
        ));
    }
    Ok(values)
}

/// The list query of a task filter; a manager is held to its own institution.
fn task_filters(claims: &Claims, filter: AdminTaskFilter) -> Result<TaskListQuery, ApiError> {
    let institution_id = auth::read_scope(claims, filter.institution_id)?;
    Ok(TaskListQuery {
        kinds: task_kinds_filter(filter.kinds)?,
        status: filter.status.map(|s| status_name(s).to_owned()),
        priority: filter
            .priority
            .map(|p| super::queue_controls::priority_arg("priority", p))
            .transpose()?,
        created_from: filter_time("createdFrom", filter.created_from)?,
        created_to: filter_time("createdTo", filter.created_to)?,
        finished_from: filter_time("finishedFrom", filter.finished_from)?,
        finished_to: filter_time("finishedTo", filter.finished_to)?,
        duration: filter.duration.as_ref().map(DurationFilter::to_query),
        institution_id,
        event_id: filter.event_id,
        error_search: error_search(claims, filter.search)?,
        ..TaskListQuery::default()
    })
}

/// A task list's error search: only for callers who may read error texts (see
/// `OperatorError`); a search would otherwise reveal what the list withholds.
fn error_search(claims: &Claims, value: Option<String>) -> Result<Option<String>, ApiError> {
    let text = super::read_models::search_text("search", value)?;
    if text.is_some() && !auth::sees_every_institution(claims) {
        return Err(ApiError::forbidden(
            "ERROR_TEXT_WITHHELD",
            "task error texts are searchable by the platform's operators only",
        ));
    }
    Ok(text)
}

/// `value` with the catalog's sensitive fields (password and token hashes), at any depth,
/// replaced by `"[redacted]"`: the log keeps them for the aggregates, not for readers.
fn redacted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    if aula_domain::catalog::SENSITIVE_FIELDS.contains(&key.as_str()) {
                        (key, Value::String("[redacted]".into()))
                    } else {
                        (key, redacted(value))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        other => other,
    }
}
