//! Reprocessing: events are immutable, so "process this event again" appends a copy.
//!
//! The copy is a new event (new `event_id`, new position) with the original's type,
//! version and payload, in a stream of its own (`aggregate_type = 'reprocessed'`,
//! `aggregate_id` = a new UUID, sequence 1), so no aggregate's state changes. Its
//! metadata is the original's plus `reprocessed_from` (the id of the root original),
//! the reprocessing actor and the causation `event:<original>`; its request id is the
//! reprocess request's (`bulk-reprocess:<job id>` for a bulk job's copies), and its trace context is the
//! reprocessing's own, the original's kept as `original_traceparent`: the copy's tasks
//! start a new trace linked to the original's (an OpenTelemetry span link), instead of
//! joining a request that ended long ago. Domain projections skip copies; the
//! reactions treat a copy like its original, act on its original's subject, and issue
//! fresh tasks linked to the copy. The original is never modified.
//!
//! A manual task retry inserts a new task naming the retried one (`origin_task_id`),
//! with the same kind, payload, event and idempotency key; the old task and all its
//! attempts stay as they were.

use aula_domain::event_types;
use aula_eventlog::metadata::{
    ACTOR, CAUSATION_ID, ORIGINAL_TRACEPARENT, REPROCESSED_FROM, REQUEST_ID, TASK_PRIORITY,
    TRACEPARENT, TRACESTATE,
};
use aula_eventlog::Actor;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The aggregate type of reprocessed copies' streams.
pub const REPROCESSED_AGGREGATE_TYPE: &str = "reprocessed";

#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error("event {0} not found")]
    EventNotFound(Uuid),
    #[error("task {0} not found")]
    TaskNotFound(i64),
    #[error("task {id} is {status}; only failed, dead or succeeded tasks can be retried")]
    TaskNotFinished { id: i64, status: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What reprocessing an event of `event_type` cannot do, for the reprocess previews:
/// events whose e-mail carries a one-time link. Only the link's hash is stored and the
/// raw token is deleted once the original's e-mail went out, so the copy's e-mail task
/// fails at once (`failed`, no retries) saying so. `None` for every other type.
pub fn one_time_link_note(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        event_types::PENDING_USER_REGISTER_CREATED => {
            "PendingUserRegisterCreated: once the original's e-mail went out, a copy cannot \
             send the sign-up confirmation link again (only its hash is stored, the raw token \
             is gone), so its e-mail task fails at once. Instead, the person signs up again \
             with the same address and gets a new link."
        }
        event_types::RESET_PASSWORD_TOKEN_CREATED => {
            "ResetPasswordTokenCreated: once the original's e-mail went out, a copy cannot \
             send the password-reset link again (only its hash is stored, the raw token is \
             gone), so its e-mail task fails at once. Instead, the person requests a new \
             password reset."
        }
        event_types::EMAIL_CHANGE_REQUESTED => {
            "EmailChangeRequested: once the original's e-mail went out, a copy cannot send \
             the confirmation link again (only its hash is stored, the raw token is gone), so \
             its confirmation e-mail fails at once (the notice to the old address is sent \
             again). Instead, request the e-mail change again."
        }
        _ => return None,
    })
}

/// A copy appended by [`reprocess_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reprocessed {
    pub event_id: Uuid,
    pub global_position: i64,
    /// The root original (a copy of a copy names the first original).
    pub original_event_id: Uuid,
}

/// Appends an immutable copy of `event_id` (see the module docs).
pub async fn reprocess_event(
    pool: &PgPool,
    event_id: Uuid,
    actor: Actor,
) -> Result<Reprocessed, ReprocessError> {
    reprocess_event_for(pool, event_id, actor, None, None).await
}

/// [`reprocess_event`] whose copy's tasks get `priority` instead of their kinds'
/// (metadata `task_priority`, read by the reactions; see `controls` for the levels).
pub async fn reprocess_event_with_priority(
    pool: &PgPool,
    event_id: Uuid,
    actor: Actor,
    priority: Option<i16>,
) -> Result<Reprocessed, ReprocessError> {
    reprocess_event_for(pool, event_id, actor, None, priority).await
}

/// [`reprocess_event`] for a request: the copy records `request_id` (the reprocess
/// request's, not the original's) and, when spans are exported, the current span's
/// trace context; its tasks get `priority` when given.
pub async fn reprocess_event_for(
    pool: &PgPool,
    event_id: Uuid,
    actor: Actor,
    request_id: Option<&str>,
    priority: Option<i16>,
) -> Result<Reprocessed, ReprocessError> {
    let mut conn = pool.acquire().await?;
    // Autocommit: the copy is committed when the INSERT returns.
    let (copy, event_type) =
        append_copy_with(&mut conn, event_id, actor, request_id, priority).await?;
    count_appended(&event_type);
    Ok(copy)
}

/// Counts a committed copy in `aula_events_appended_total`, like the command bus does
/// for the events it appends.
pub(crate) fn count_appended(event_type: &str) {
    aula_eventlog::metrics::EVENTS_APPENDED
        .with([event_type])
        .inc();
}

/// [`reprocess_event`] on `conn`, in its transaction if it is in one (bulk jobs commit
/// a batch of copies with their progress).
pub async fn reprocess_event_on(
    conn: &mut PgConnection,
    event_id: Uuid,
    actor: Actor,
) -> Result<Reprocessed, ReprocessError> {
    append_copy(conn, event_id, actor, None)
        .await
        .map(|(copy, _)| copy)
}

/// The copy and its event type; the caller counts it once its transaction commits.
pub(crate) async fn append_copy(
    conn: &mut PgConnection,
    event_id: Uuid,
    actor: Actor,
    request_id: Option<&str>,
) -> Result<(Reprocessed, String), ReprocessError> {
    append_copy_with(conn, event_id, actor, request_id, None).await
}

/// [`append_copy`], with the priority of the copy's tasks when given.
pub(crate) async fn append_copy_with(
    conn: &mut PgConnection,
    event_id: Uuid,
    actor: Actor,
    request_id: Option<&str>,
    priority: Option<i16>,
) -> Result<(Reprocessed, String), ReprocessError> {
    let mut original = event_id;
    let copy = aula_eventlog::copy::append_copy(
        &mut *conn,
        event_id,
        REPROCESSED_AGGREGATE_TYPE,
        |metadata| {
            original = metadata
                .get(REPROCESSED_FROM)
                .and_then(Value::as_str)
                .and_then(|id| id.parse::<Uuid>().ok())
                .unwrap_or(event_id);
            copy_metadata(metadata, original, event_id, &actor, request_id, priority);
        },
    )
    .await?
    .ok_or(ReprocessError::EventNotFound(event_id))?;
    let event_type = copy.event_type;
    tracing::info!(original = %event_id, copy = %copy.event_id, %actor, event_type, "event reprocessed");
    Ok((
        Reprocessed {
            event_id: copy.event_id,
            global_position: copy.global_position,
            original_event_id: original,
        },
        event_type,
    ))
}

/// A copy's metadata: the original's (`metadata`) plus what names the copy (see the
/// module docs). `original` is the root original, `event_id` the event copied.
fn copy_metadata(
    metadata: &mut serde_json::Map<String, Value>,
    original: Uuid,
    event_id: Uuid,
    actor: &Actor,
    request_id: Option<&str>,
    priority: Option<i16>,
) {
    metadata.insert(REPROCESSED_FROM.into(), Value::String(original.to_string()));
    metadata.insert(ACTOR.into(), Value::String(actor.to_string()));
    // A copy of a copy keeps its original's priority unless a new one is asked.
    if let Some(priority) = priority {
        metadata.insert(TASK_PRIORITY.into(), Value::String(priority.to_string()));
    }
    metadata.insert(
        CAUSATION_ID.into(),
        Value::String(format!("event:{event_id}")),
    );
    // The original's request ended long ago: the copy names the request that asked
    // for it, or none.
    metadata.remove(REQUEST_ID);
    if let Some(request_id) = request_id.filter(|id| !id.is_empty()) {
        metadata.insert(REQUEST_ID.into(), Value::String(request_id.to_owned()));
    }
    // A new trace for the copy, linked to the original's (a copy of a copy links to the
    // first original's trace, as `reprocessed_from` names the first original).
    let original_trace = metadata
        .remove(ORIGINAL_TRACEPARENT)
        .or_else(|| metadata.get(TRACEPARENT).cloned());
    metadata.remove(TRACEPARENT);
    metadata.remove(TRACESTATE);
    if let Some(trace) = original_trace {
        metadata.insert(ORIGINAL_TRACEPARENT.into(), trace);
    }
    if let Some(context) = aula_eventlog::trace::TraceContext::current() {
        metadata.insert(TRACEPARENT.into(), Value::String(context.traceparent));
        if let Some(state) = context.tracestate {
            metadata.insert(TRACESTATE.into(), Value::String(state));
        }
    }
}

/// Retries a finished task manually: a new pending task linked to it (see the module
/// docs). Returns the new task's id.
pub async fn retry_task(pool: &PgPool, task_id: i64) -> Result<i64, ReprocessError> {
    let mut tx = pool.begin().await?;
    // Finished tasks are in the history (locked: the archive moves them); an unfinished
    // one is in the queue, read after the history so that a task finishing meanwhile is
    // found in one or the other.
    let mut status: Option<String> =
        sqlx::query_scalar("SELECT status FROM task_history WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
    if status.is_none() {
        status = sqlx::query_scalar("SELECT status FROM task_queue WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
    }
    let status = status.ok_or(ReprocessError::TaskNotFound(task_id))?;
    if !matches!(status.as_str(), "failed" | "dead" | "succeeded") {
        return Err(ReprocessError::TaskNotFinished {
            id: task_id,
            status,
        });
    }
    let (new_id, event_id): (i64, Option<Uuid>) = sqlx::query_as(
        "INSERT INTO task_queue (kind, priority, max_attempts, event_id, event_type, origin_task_id,
                            idempotency_key, payload, institution_id, correlation_id)
         SELECT kind, priority,
                max_attempts - (SELECT count(*) FROM task_attempts a
                                WHERE a.task_id = t.id AND a.outcome = 'released')::int,
                event_id, event_type, id, idempotency_key, payload, institution_id, correlation_id
         FROM task_history t WHERE id = $1
         RETURNING id, event_id",
    )
    .bind(task_id)
    .fetch_one(&mut *tx)
    .await?;
    crate::processing::record(
        &mut tx,
        &[crate::processing::TaskChange::inserted(event_id)],
        &[],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(task = task_id, retry = new_id, "task retried manually");
    Ok(new_id)
}
