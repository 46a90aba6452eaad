//! The processor's side of the admin screens: the dashboard header
//! (`processingSummary`, from the incremental rollups of `processor/src/processing.rs`
//! and the projections' checkpoints) and the tasks an event issued (`eventTasks`, live
//! and archived, each with its attempts).

use async_graphql::{Context, Object, SimpleObject};
use aula_processor::lookups;
use aula_projections::course_capacity::Page;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::admin_ops::{ensure_owner, event_owner};
use super::query::{paged, parse_cursor};
use super::read_models::WATCHERS;
use super::types::{parse_status, BigInt, CountedKind, TaskStatus};
use super::{authorize, OperatorError};
use crate::auth;
use crate::error::ApiError;

#[derive(Default)]
pub struct ProcessingQuery;

/// How many events or tasks are in one status now.
#[derive(SimpleObject, Debug, Clone)]
pub struct StatusCount {
    /// Whether `status` is an `EventStatus` or a `TaskStatus`.
    pub kind: CountedKind,
    /// An `EventStatus` (kind `event`) or a `TaskStatus` (kind `task`) value, as text:
    /// one list holds both.
    pub status: String,
    /// Events or tasks in that status now.
    pub count: BigInt,
}

row_object! {
    /// A projection's lag, for the dashboard header.
    ProjectionLag from aula_projections::ProjectionStatus as p {
        /// The projection's name.
        name: String,
        /// Committed events it has not handled yet.
        lag_events: BigInt = BigInt(p.lag_events),
        /// Age of the oldest event it has not handled, in seconds.
        lag_seconds: f64,
        /// The projection's last error (full text for admins; others see that there was one).
        last_error: Option<OperatorError> = p.last_error.map(OperatorError),
    }
}

/// The admin dashboard header.
#[derive(SimpleObject, Debug, Clone)]
pub struct ProcessingSummary {
    /// The institution the header covers; null for the whole platform.
    pub institution_id: Option<Uuid>,
    /// Events processed (succeeded or failed) since local midnight, per hour elapsed
    /// (the zone is the API's `processing_utc_offset_minutes`).
    pub rate_per_hour_today: f64,
    /// Every event status, then every task status (0 when none).
    pub status_counts: Vec<StatusCount>,
    /// Each projection's lag.
    pub projections: Vec<ProjectionLag>,
    /// Failed events whose latest reprocessed copy succeeded ("resolved by copy").
    pub failures_resolved_by_copy: BigInt,
    /// Failed events not resolved by a copy: the failures left to fix.
    pub unresolved_failures: BigInt,
}

row_object! {
    /// One claim of a task.
    TaskAttempt from lookups::TaskAttemptRow as a {
        /// The attempt's number (1 for the first claim).
        attempt: i32,
        /// The worker that ran it.
        worker: String,
        /// When it started.
        started_at: DateTime<Utc>,
        /// When it ended; null while running.
        finished_at: Option<DateTime<Utc>>,
        /// How long it ran, in milliseconds; null while running.
        duration_ms: Option<f64>,
        /// `running`, `succeeded`, `retry`, `failed`, `dead`, `lease_expired`, `released`
        /// or `force_released` (an operator ended its lease).
        outcome: String,
        /// The attempt's error (full text for admins; others see that there was one).
        error: Option<OperatorError> = a.error.map(OperatorError),
    }
}

row_object! {
    /// A task an event issued (or a manual retry of one).
    EventTask try_from (lookups::EventTaskRow, Vec<TaskAttempt>) as (t, its_attempts) {
        /// The task's id.
        id: BigInt = BigInt(t.id),
        /// What the task does (e.g. `email.welcome`).
        kind: String,
        /// Where it stands in the queue.
        status: TaskStatus = parse_status(&t.status)?,
        /// Lower runs first.
        priority: i32 = i32::from(t.priority),
        /// Claims so far.
        attempt: i32,
        /// Claims it may take before it is dead.
        max_attempts: i32,
        /// When it may run next (a retry waits until then).
        run_at: DateTime<Utc>,
        /// When it was queued.
        created_at: DateTime<Utc>,
        /// Its first claim; null until claimed.
        started_at: Option<DateTime<Utc>>,
        /// When it finished; null until then.
        finished_at: Option<DateTime<Utc>>,
        /// The task this one retries (a manual retry).
        origin_task_id: Option<BigInt> = t.origin_task_id.map(BigInt),
        /// Moved to the archive by the nightly job.
        archived: bool = t.archived_at.is_some(),
        /// When the nightly job archived it; null while live.
        archived_at: Option<DateTime<Utc>>,
        /// Oldest first.
        attempts: Vec<TaskAttempt> = its_attempts,
        /// The last error (full text for admins; others see that there was one).
        last_error: Option<OperatorError> = t.last_error.map(OperatorError),
    }
}

page! {
    /// One page of the tasks an event issued.
    EventTaskPage {
        /// Oldest first (by task id).
        nodes: EventTask,
    }
}

async fn projections(state: &crate::state::AppState) -> Result<Vec<ProjectionLag>, ApiError> {
    Ok(aula_projections::status(&state.pool)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// The header of one institution, from the dashboard's rollups (minute rows since the
/// local midnight).
async fn institution_summary(
    state: &crate::state::AppState,
    institution: Uuid,
) -> Result<ProcessingSummary, ApiError> {
    let now = state.clock.now();
    let since =
        aula_processor::processing::local_midnight(now, state.config.processing_utc_offset_minutes);
    let mut status_counts = Vec::new();
    let mut events_done = 0;
    for (kind, counted) in [("event", CountedKind::Event), ("task", CountedKind::Task)] {
        let (succeeded, failed) =
            aula_processor::dashboard::finished_since(&state.pool, Some(institution), kind, since)
                .await?;
        if kind == "event" {
            events_done = succeeded + failed;
        }
        for (status, count) in [("succeeded", succeeded), ("failed", failed)] {
            status_counts.push(StatusCount {
                kind: counted,
                status: status.to_owned(),
                count: BigInt(count),
            });
        }
    }
    let hours = ((now - since).num_milliseconds() as f64 / 3_600_000.0).max(1.0 / 60.0);
    let resolved =
        aula_projections::admin_events::failures_resolved_by_copy(&state.pool, Some(institution))
            .await?;
    // Its `statusCounts` say what failed today; the failures left to fix are all of them.
    let failed = aula_projections::admin_events::failed_events(&state.pool, institution).await?;
    Ok(ProcessingSummary {
        institution_id: Some(institution),
        rate_per_hour_today: events_done as f64 / hours,
        status_counts,
        projections: projections(state).await?,
        failures_resolved_by_copy: BigInt(resolved),
        unresolved_failures: BigInt((failed - resolved).max(0)),
    })
}

#[Object]
impl ProcessingQuery {
    /// The dashboard header: today's processing rate, current counts by status and the
    /// projections' lag. Reads only the rollups and the checkpoints. Admins and
    /// platform-wide observers: the platform. Managers and an institution's observers:
    /// their institution (`institutionId` set): the rate from its rollups, and in
    /// `statusCounts` the events and tasks that succeeded and failed today (the current
    /// counts by status are kept for the platform only).
    async fn processing_summary(&self, ctx: &Context<'_>) -> Result<ProcessingSummary, ApiError> {
        let (claims, state) = authorize(ctx, WATCHERS)?;
        if !auth::sees_every_institution(claims) {
            let institution = auth::target_institution(claims, None)?;
            return institution_summary(state, institution).await;
        }
        let rate_per_hour_today = aula_processor::processing_rate_today(
            &state.pool,
            state.clock.now(),
            state.config.processing_utc_offset_minutes,
        )
        .await?;
        let status_counts: Vec<StatusCount> = aula_processor::status_counts(&state.pool)
            .await?
            .into_iter()
            .map(|(kind, status, count)| {
                Ok(StatusCount {
                    kind: parse_status(&kind)?,
                    status,
                    count: count.into(),
                })
            })
            .collect::<Result<_, ApiError>>()?;
        let resolved =
            aula_projections::admin_events::failures_resolved_by_copy(&state.pool, None).await?;
        let failed = status_counts
            .iter()
            .find(|c: &&StatusCount| c.kind == CountedKind::Event && c.status == "failed")
            .map_or(0, |c| c.count.0);
        Ok(ProcessingSummary {
            institution_id: None,
            rate_per_hour_today,
            status_counts,
            projections: projections(state).await?,
            failures_resolved_by_copy: BigInt(resolved),
            unresolved_failures: BigInt((failed - resolved).max(0)),
        })
    }

    /// The tasks an event issued, live and archived (manual retries included), each with
    /// its attempts. Admin: any event; manager: own institution's (an event without an
    /// institution is admin-only).
    async fn event_tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event's id.")] event_id: Uuid,
        #[graphql(default = 20, desc = "Page size (1 to the configured maximum).")] first: i32,
        #[graphql(desc = "The `nextCursor` of the previous page.")] after: Option<String>,
    ) -> Result<EventTaskPage, ApiError> {
        let (claims, state, first) = paged(ctx, WATCHERS, first)?;
        let after = parse_cursor::<i64>(after)?;
        ensure_owner(claims, event_owner(state, event_id).await?)?;
        let rows = lookups::event_tasks(&state.pool, event_id, after, first as i64 + 1).await?;
        let page = Page::from_overfetch(rows, first as i64, |row| row.id.to_string());
        let ids: Vec<i64> = page.rows.iter().map(|r| r.id).collect();
        let attempts = lookups::task_attempts(&state.pool, &ids).await?;
        let nodes = page
            .rows
            .into_iter()
            .map(|row| {
                let its_attempts = attempts
                    .iter()
                    .filter(|a| a.task_id == row.id)
                    .cloned()
                    .map(TaskAttempt::from)
                    .collect();
                EventTask::try_from((row, its_attempts))
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(EventTaskPage {
            nodes,
            next_cursor: page.next,
        })
    }
}
