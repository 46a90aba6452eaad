//! Queue controls (issue #19, `aula_processor::controls`): cancel a waiting task,
//! force-release a running one, change a waiting task's priority (admin: any task;
//! manager: its own institution's), pause and resume a task kind (admin only: a kind
//! is shared by every institution); the paused kinds and the controls' audit trail.

use async_graphql::{Context, Object, SimpleObject};
use aula_domain::user::Role as DomainRole;
use aula_eventlog::Actor;
use aula_processor::controls::{
    self, ControlError, KindControlled, TaskControlled, PRIORITY_RANGE,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::admin_ops::{ensure_owner, task_owner};
use super::query::paged;
use super::read_models::{STAFF, WATCHERS};
use super::types::{parse_status, BigInt, TaskStatus};
use super::{authorize, request, state};
use crate::auth::{self, Claims};
use crate::error::ApiError;
use crate::validate;

#[derive(Default)]
pub struct QueueControlMutation;

#[derive(Default)]
pub struct QueueControlQuery;

/// What `cancelTask` returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct CancelTaskPayload {
    /// The cancelled task.
    pub task_id: BigInt,
    /// Its status before: `PENDING`, `RETRYING` or `PAUSED`.
    pub previous_status: TaskStatus,
    /// `CANCELLED`.
    pub status: TaskStatus,
}

/// What `forceReleaseTask` returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct ForceReleaseTaskPayload {
    /// The released task.
    pub task_id: BigInt,
    /// `RETRYING` (claimable at once), or `DEAD` when that was its last attempt.
    pub status: TaskStatus,
}

/// What `setTaskPriority` returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct SetTaskPriorityPayload {
    /// The task.
    pub task_id: BigInt,
    /// Its priority before.
    pub previous_priority: i32,
    /// Its priority now (lower runs first).
    pub priority: i32,
}

/// What `pauseTaskKind` returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct PauseTaskKindPayload {
    /// The paused kind.
    pub kind: String,
    /// False when the kind was already paused (nothing changed).
    pub changed: bool,
    /// Waiting tasks of the kind parked by this pause.
    pub tasks_parked: BigInt,
}

/// What `resumeTaskKind` returns.
#[derive(SimpleObject, Debug, Clone)]
pub struct ResumeTaskKindPayload {
    /// The resumed kind.
    pub kind: String,
    /// False when the kind was not paused (nothing changed).
    pub changed: bool,
    /// Parked tasks of the kind made claimable again.
    pub tasks_resumed: BigInt,
}

row_object! {
    /// A paused task kind.
    PausedTaskKind from (controls::PausedKind, bool) as (p, sees_every_institution) {
        /// The kind (e.g. `email.welcome`).
        kind: String,
        /// When it was paused.
        paused_at: DateTime<Utc>,
        /// Who paused it (`user:<id>`).
        paused_by: String,
        /// Tasks waiting behind the pause, of every institution (admins only; null for
        /// managers).
        waiting: Option<BigInt> = sees_every_institution.then_some(BigInt(p.waiting)),
    }
}

row_object! {
    /// One queue control, as the audit trail keeps it (`task_controls`, written in the
    /// transaction of the change).
    QueueControlEntry from controls::ControlEntry as e {
        /// The entry's id (newest first).
        id: BigInt = BigInt(e.id),
        /// When.
        at: DateTime<Utc>,
        /// Who (`user:<id>`).
        actor: String,
        /// `cancel`, `force_release`, `set_priority`, `pause` or `resume`.
        action: String,
        /// The task, for task controls.
        task_id: Option<BigInt> = e.task_id.map(BigInt),
        /// The task's kind, or the kind paused or resumed.
        kind: Option<String>,
        /// The task's institution; null for kind-wide controls and platform tasks.
        institution_id: Option<Uuid>,
        /// What changed (e.g. `priority 30 -> 5`).
        detail: String,
    }
}

/// A priority argument, checked against [`PRIORITY_RANGE`].
pub(crate) fn priority_arg(field: &str, value: i32) -> Result<i16, ApiError> {
    i16::try_from(value)
        .ok()
        .filter(|p| PRIORITY_RANGE.contains(p))
        .ok_or_else(|| {
            ApiError::validation(
                field,
                "PRIORITY_OUT_OF_RANGE",
                format!(
                    "a priority is {}..={} (lower runs first)",
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                ),
            )
        })
}

fn kind_arg(value: String) -> Result<String, ApiError> {
    if aula_processor::kinds::ALL.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(ApiError::validation(
            "kind",
            "UNKNOWN_TASK_KIND",
            format!("{value:?} is not a task kind (see `dashboardFacets`)"),
        ))
    }
}

fn control_error(error: ControlError) -> ApiError {
    match error {
        ControlError::TaskNotFound(_) => ApiError::not_found("TASK_NOT_FOUND", "task not found"),
        e @ ControlError::WrongStatus { .. } => {
            let reason = match &e {
                ControlError::WrongStatus {
                    allowed: "running", ..
                } => "TASK_NOT_RUNNING",
                _ => "TASK_NOT_WAITING",
            };
            ApiError::conflict(reason, e.to_string())
        }
        e @ ControlError::UnknownKind(_) => {
            ApiError::validation("kind", "UNKNOWN_TASK_KIND", e.to_string())
        }
        e @ ControlError::PriorityOutOfRange(_) => {
            ApiError::validation("priority", "PRIORITY_OUT_OF_RANGE", e.to_string())
        }
        ControlError::Database(e) => e.into(),
    }
}

/// Staff, and for a manager only a task of its own institution.
async fn task_operator<'a>(ctx: &Context<'a>, task_id: i64) -> Result<&'a Claims, ApiError> {
    let (claims, state) = authorize(ctx, STAFF)?;
    ensure_owner(claims, task_owner(state, task_id).await?)?;
    Ok(claims)
}

/// Cancelling or releasing a task: by its operators ([`task_operator`]), recorded
/// under the caller.
async fn control_task(
    ctx: &Context<'_>,
    task_id: i64,
    control: impl AsyncFn(&PgPool, i64, &Actor) -> Result<TaskControlled, ControlError>,
) -> Result<TaskControlled, ApiError> {
    let claims = task_operator(ctx, task_id).await?;
    control(&state(ctx).pool, task_id, &actor(claims))
        .await
        .map_err(control_error)
}

/// Pausing or resuming a kind: admins only (a kind serves every institution), for a
/// known kind, recorded under the caller.
async fn control_kind(
    ctx: &Context<'_>,
    kind: String,
    control: impl AsyncFn(&PgPool, &str, &Actor) -> Result<KindControlled, ControlError>,
) -> Result<KindControlled, ApiError> {
    let (claims, state) = authorize(ctx, &[DomainRole::Admin])?;
    validate! {
        kind = kind_arg(kind),
    }
    control(&state.pool, &kind, &actor(claims))
        .await
        .map_err(control_error)
}

fn actor(claims: &Claims) -> Actor {
    Actor::User(claims.user_id)
}

#[Object]
impl QueueControlMutation {
    /// Cancels a waiting task (`PENDING`, `RETRYING` or `PAUSED`): it becomes
    /// `CANCELLED`, keeps its history and is never claimed. A running task is
    /// `CONFLICT TASK_NOT_WAITING` (force-release it first). Admin: any task; manager:
    /// own institution's. Recorded in `queueControlLog`.
    async fn cancel_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task to cancel.")] task_id: BigInt,
    ) -> Result<CancelTaskPayload, ApiError> {
        let done = control_task(ctx, task_id.0, controls::cancel_task).await?;
        Ok(CancelTaskPayload {
            task_id,
            previous_status: parse_status(&done.from)?,
            status: parse_status(&done.to)?,
        })
    }

    /// Ends a running task's lease now: it is `RETRYING` at once (or `DEAD` if that
    /// was its last attempt), the attempt recorded as `force_released`. Whatever the
    /// worker that held it reports afterwards is refused (the queue's fence). A task
    /// not running is `CONFLICT TASK_NOT_RUNNING`. Admin: any task; manager: own
    /// institution's. Recorded in `queueControlLog`.
    async fn force_release_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The running task to release.")] task_id: BigInt,
    ) -> Result<ForceReleaseTaskPayload, ApiError> {
        let done = control_task(ctx, task_id.0, controls::force_release).await?;
        Ok(ForceReleaseTaskPayload {
            task_id,
            status: parse_status(&done.to)?,
        })
    }

    /// Changes a waiting task's priority (`PENDING`, `RETRYING` or `PAUSED`; lower
    /// runs first, 0 to 100: the levels are in docs/queue.md). Admin: any task;
    /// manager: own institution's. Recorded in `queueControlLog`.
    async fn set_task_priority(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The waiting task.")] task_id: BigInt,
        #[graphql(desc = "The new priority, 0 (first) to 100.")] priority: i32,
    ) -> Result<SetTaskPriorityPayload, ApiError> {
        auth::require_role(request(ctx).claims.as_ref(), STAFF)?;
        validate! {
            priority = priority_arg("priority", priority),
        }
        let claims = task_operator(ctx, task_id.0).await?;
        let previous = controls::set_priority(
            &state(ctx).pool,
            task_id.0,
            i64::from(priority),
            &actor(claims),
        )
        .await
        .map_err(control_error)?;
        Ok(SetTaskPriorityPayload {
            task_id,
            previous_priority: i32::from(previous),
            priority: i32::from(priority),
        })
    }

    /// Pauses a task kind: no worker claims its tasks until `resumeTaskKind`; its
    /// waiting tasks become `PAUSED`; tasks of it already running finish. Admin only
    /// (a kind serves every institution). Recorded in `queueControlLog`.
    async fn pause_task_kind(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task kind (see `dashboardFacets`).")] kind: String,
    ) -> Result<PauseTaskKindPayload, ApiError> {
        let done = control_kind(ctx, kind, controls::pause_kind).await?;
        Ok(PauseTaskKindPayload {
            kind: done.kind,
            changed: done.changed,
            tasks_parked: BigInt(done.tasks),
        })
    }

    /// Resumes a paused task kind: its `PAUSED` tasks are claimable again at once.
    /// Admin only. Recorded in `queueControlLog`.
    async fn resume_task_kind(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task kind.")] kind: String,
    ) -> Result<ResumeTaskKindPayload, ApiError> {
        let done = control_kind(ctx, kind, controls::resume_kind).await?;
        Ok(ResumeTaskKindPayload {
            kind: done.kind,
            changed: done.changed,
            tasks_resumed: BigInt(done.tasks),
        })
    }
}

#[Object]
impl QueueControlQuery {
    /// The paused task kinds and how many tasks wait behind each (the counts: admins
    /// and platform-wide observers). Admin, manager, observer.
    async fn paused_task_kinds(&self, ctx: &Context<'_>) -> Result<Vec<PausedTaskKind>, ApiError> {
        let (claims, state) = authorize(ctx, WATCHERS)?;
        // The waiting counts span every institution: the platform's readers only.
        let admin = auth::sees_every_institution(claims);
        Ok(controls::paused_kinds(&state.pool)
            .await?
            .into_iter()
            .map(|p| PausedTaskKind::from((p, admin)))
            .collect())
    }

    /// The latest queue controls, newest first: who cancelled, released, re-prioritized
    /// a task or paused a kind, and when. Admin and platform-wide observer: all; manager and
    /// an institution's observer: those on its institution's tasks, and the kind-wide
    /// pauses.
    async fn queue_control_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "How many (1 to the configured maximum).")] first: i32,
    ) -> Result<Vec<QueueControlEntry>, ApiError> {
        let (claims, state, first) = paged(ctx, WATCHERS, first)?;
        let institution = auth::read_scope(claims, None)?;
        Ok(
            controls::control_log(&state.pool, institution, first as i64)
                .await?
                .into_iter()
                .map(Into::into)
                .collect(),
        )
    }
}
