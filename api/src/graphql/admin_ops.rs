//! Admin operations of the processor and the projections: reprocessing an event,
//! retrying a task, rebuilding a read model.

use async_graphql::{Context, Object, SimpleObject};
use aula_domain::user::Role as DomainRole;
use aula_eventlog::Actor;
use aula_processor::ReprocessError;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::mutations::settle;
use super::read_models::STAFF;
use super::types::BigInt;
use super::{authorize, request};
use crate::auth::{self, Claims};
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

#[derive(Default)]
pub struct AdminMutation;

/// A reprocessed copy of an event.
#[derive(SimpleObject, Debug, Clone)]
pub struct ReprocessResult {
    /// The new copy's event id.
    pub event_id: Uuid,
    /// The root original (a copy of a copy names the first original).
    pub original_event_id: Uuid,
    /// Global log position of the copy.
    pub log_position: BigInt,
    /// As in `CommandResult`.
    pub projections_caught_up: Option<bool>,
}

/// A manual task retry.
#[derive(SimpleObject, Debug, Clone)]
pub struct RetryTaskResult {
    /// The new pending task.
    pub task_id: BigInt,
    /// The task it retries (kept with all its attempts).
    pub retried_task_id: BigInt,
}

/// A rebuild started in the background; follow it with `rebuildProgress`.
#[derive(SimpleObject, Debug, Clone)]
pub struct RebuildStarted {
    /// The projection being rebuilt.
    pub name: String,
    /// When the rebuild was asked for.
    pub requested_at: DateTime<Utc>,
}

fn reprocess_error(error: ReprocessError) -> ApiError {
    match error {
        ReprocessError::EventNotFound(_) => {
            ApiError::not_found("EVENT_NOT_FOUND", "event not found")
        }
        ReprocessError::TaskNotFound(_) => ApiError::not_found("TASK_NOT_FOUND", "task not found"),
        e @ ReprocessError::TaskNotFinished { .. } => {
            ApiError::conflict("TASK_NOT_FINISHED", e.to_string())
        }
        ReprocessError::Database(e) => e.into(),
    }
}

/// A manager may act only on what belongs to its institution; `owner` `None` (e.g.
/// system events) is admin-only.
pub(crate) fn ensure_owner(claims: &Claims, owner: Option<Uuid>) -> Result<(), ApiError> {
    if auth::sees_every_institution(claims) {
        return Ok(());
    }
    match owner {
        Some(owner) => auth::ensure_institution(claims, owner),
        None => Err(ApiError::forbidden(
            "OTHER_INSTITUTION",
            "this belongs to another institution",
        )),
    }
}

pub(crate) async fn event_owner(
    state: &AppState,
    event_id: Uuid,
) -> Result<Option<Uuid>, ApiError> {
    let owner = aula_eventlog::lookups::event_institution(&state.pool, event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("EVENT_NOT_FOUND", "event not found"))?;
    Ok(owner.and_then(|id| id.parse().ok()))
}

pub(crate) async fn task_owner(state: &AppState, task_id: i64) -> Result<Option<Uuid>, ApiError> {
    aula_processor::lookups::task_institution(&state.pool, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("TASK_NOT_FOUND", "task not found"))
}

#[Object]
impl AdminMutation {
    /// Re-emits an immutable copy of an event (new id, linked to the original; no
    /// aggregate changes); the processor issues fresh tasks for it, at `priority` when
    /// given (else each kind's own). Admin: any event; manager: own institution's.
    async fn reprocess_event(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event's id.")] event_id: Uuid,
        #[graphql(
            desc = "When true, the answer waits (bounded) until every projection has read this command's events, so a following query sees them (`projectionsCaughtUp` says whether it did)."
        )]
        wait_for_projections: Option<bool>,
        #[graphql(
            desc = "The priority of the copy's tasks, 0 (first) to 100 (docs/queue.md); null: each task kind's own."
        )]
        priority: Option<i32>,
    ) -> Result<ReprocessResult, ApiError> {
        let (claims, state) = authorize(ctx, STAFF)?;
        validate! {
            priority = priority
                .map(|p| super::queue_controls::priority_arg("priority", p))
                .transpose(),
        }
        ensure_owner(claims, event_owner(state, event_id).await?)?;
        // The copy records this request (its id, this trace), not the original's.
        let copy = aula_processor::reprocess::reprocess_event_for(
            &state.pool,
            event_id,
            Actor::User(claims.user_id),
            Some(&request(ctx).request_id),
            priority,
        )
        .await
        .map_err(reprocess_error)?;
        Ok(ReprocessResult {
            event_id: copy.event_id,
            original_event_id: copy.original_event_id,
            log_position: BigInt(copy.global_position),
            projections_caught_up: settle(state, Some(copy.global_position), wait_for_projections)
                .await?,
        })
    }

    /// Retries a finished (failed, dead or succeeded) task as a new task linked to it.
    /// Admin: any task; manager: own institution's.
    async fn retry_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task to retry.")] task_id: BigInt,
    ) -> Result<RetryTaskResult, ApiError> {
        let task_id = task_id.0;
        let (claims, state) = authorize(ctx, STAFF)?;
        ensure_owner(claims, task_owner(state, task_id).await?)?;
        let new_id = aula_processor::retry_task(&state.pool, task_id)
            .await
            .map_err(reprocess_error)?;
        Ok(RetryTaskResult {
            task_id: BigInt(new_id),
            retried_task_id: BigInt(task_id),
        })
    }

    /// Rebuilds a read model from position zero in the background (the live one keeps
    /// serving until the swap). Admin only. `CONFLICT REBUILD_RUNNING` while one runs.
    async fn rebuild_projection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection's name.")] name: String,
    ) -> Result<RebuildStarted, ApiError> {
        let (_, state) = authorize(ctx, &[DomainRole::Admin])?;
        let Some(name) = aula_projections::NAMES.iter().find(|n| **n == name) else {
            return Err(ApiError::validation(
                "name",
                "UNKNOWN_PROJECTION",
                format!("one of {}", aula_projections::NAMES.join(", ")),
            ));
        };
        let running = aula_projections::rebuild_progress(&state.pool)
            .await?
            .into_iter()
            .any(|p| p.name == *name && matches!(p.state.as_str(), "running" | "swapping"));
        if running {
            return Err(ApiError::conflict(
                "REBUILD_RUNNING",
                format!("a rebuild of {name} is already running"),
            ));
        }
        let pool = state.pool.clone();
        let connect = state.connect_options();
        tokio::spawn(async move {
            match aula_projections::rebuild(&pool, connect, name).await {
                Ok(report) => tracing::info!(
                    projection = name,
                    events = report.events,
                    seconds = report.seconds,
                    "projection rebuilt"
                ),
                Err(error) => {
                    tracing::error!(projection = name, %error, "projection rebuild failed")
                }
            }
        });
        Ok(RebuildStarted {
            name: name.to_string(),
            requested_at: state.clock.now(),
        })
    }
}
