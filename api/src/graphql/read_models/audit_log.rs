//! Who did what and when (`aula_projections::audit_log`).

use async_graphql::{Context, InputObject, Object};
use aula_projections::audit_log::{self, AuditQuery};
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub struct AuditLogQuery;

row_object! {
    /// Who did what and when (read model `audit_log`).
    AuditEntry from audit_log::AuditEntry as e {
        /// The id of the event this entry records.
        event_id: Uuid,
        /// The event's global position in the log.
        log_position: BigInt = BigInt(e.global_position),
        /// When the event was committed.
        recorded_at: DateTime<Utc>,
        /// `user:<id>`, `system` or `public`.
        actor: Option<String>,
        /// The user who acted, when a user did.
        actor_user_id: Option<Uuid>,
        /// The institution concerned; null for platform-wide events.
        institution_id: Option<Uuid>,
        /// What happened (the event's type).
        event_type: String,
        /// The type of the aggregate that recorded it.
        aggregate_type: String,
        /// The id of the stream it belongs to.
        aggregate_id: String,
        /// Its sequence number within its stream.
        sequence: BigInt = BigInt(e.sequence),
        /// The id shared by every event one request set off.
        correlation_id: Option<Uuid>,
        /// What directly caused it (an event id or a request).
        causation: Option<String>,
        /// The id of the HTTP request that recorded it, if any.
        request_id: Option<String>,
        /// The original event, when this entry records a reprocessed copy.
        reprocessed_from: Option<Uuid>,
    }
}

page! {
    /// One page of the audit log.
    AuditLogPage {
        /// The entries of this page.
        nodes: AuditEntry,
    }
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

#[Object]
impl AuditLogQuery {
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
        let (claims, state, first) = paged(ctx, WATCHERS, first)?;
        let filter = filter.unwrap_or_default();
        let institution_id = auth::read_scope(claims, filter.institution_id)?;
        let after = parse_cursor::<i64>(after)?;
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
}
