//! Queue controls for operators (issue #19): cancel a waiting task, force-release a
//! running one, change a waiting task's priority, pause and resume a task kind.
//!
//! Each control runs in one transaction that locks the task rows first (by id, like
//! every statement of [`crate::queue`]), records the status changes with
//! [`processing::record`] and writes its audit row in `task_controls` and its record
//! in the log (a `queue_control` event, which the audit log lists), so the audit trail
//! commits with the change or not at all.
//!
//! - **Cancel** (`pending`, `retrying`, `paused` to `cancelled`): the row is locked with
//!   `FOR UPDATE`; a claim (`SKIP LOCKED`) skips a row a cancel holds, and a cancel
//!   waiting on a row a claim holds sees it `running` afterwards and refuses. A
//!   cancelled task is never claimed: only `pending` rows are.
//! - **Force release** (`running`): the lease ends now, as if it had expired: `retrying`
//!   at once (or `dead` if that was its last attempt), the attempt recorded as
//!   `force_released`. The worker that held it is fenced out by the queue's existing
//!   fence (status, attempt number and claim time): its heartbeat, completion or
//!   failure changes nothing.
//! - **Priority** of a waiting task (`pending`, `retrying`, `paused`): lower runs first.
//! - **Pause / resume a kind**: a row in `task_kind_pauses`; pausing parks the kind's
//!   waiting tasks (`paused`, outside the claim index), and claims park any task of a
//!   paused kind they meet later (see the claim CTEs in [`crate::queue`]). Tasks already
//!   running finish. Resuming deletes the row and makes the parked tasks pending again;
//!   [`unpark_resumed`] (run with the lease rescue) catches a task a claim parked while
//!   a resume was committing.
//!
//! ## Priority levels
//! Lower runs first; the claim orders by `(priority, run_at)`. The kinds' defaults
//! ([`crate::kinds::policy`]) use these levels, and an operator may set any value in
//! [`PRIORITY_RANGE`]:
//!
//! | level | meaning | kinds by default |
//! |------:|---------|------------------|
//! | 0–9   | operator's urgent | none (reserved for operators) |
//! | 10    | account links | sign-up confirmation, password reset, e-mail change |
//! | 15    | applicant acknowledgement | `email.application_scheduled` |
//! | 20    | decisions | `enrollment.decide`, `institution.create` |
//! | 30    | result e-mails | enrolled, declined, cancelled, welcome, already registered |
//! | 35    | webhooks | `webhook.deliver` |
//! | 40    | notifications | grades, notification links |
//! | 50    | default | anything else |
//! | 60    | background | `webhook.recover` |
//! | 90    | bulk / demo | `demo.seed` |

use std::ops::RangeInclusive;

use aula_domain::queue_control::{QueueControlEvent, AGGREGATE_TYPE as QUEUE_CONTROL};
use aula_eventlog::{Actor, EventMetadata};
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::processing::{self, TaskChange};
use crate::queue::history_columns;

/// The priorities an operator may give a task (the column is a `smallint`; the levels
/// above stay well inside).
pub const PRIORITY_RANGE: RangeInclusive<i16> = 0..=100;

/// The status a list shows for a stored one: a pending task whose earlier attempt
/// failed is `retrying` (see `0035_queue_controls.sql`). Reads `status` and
/// `last_error` of the row in scope.
pub const DISPLAY_STATUS_SQL: &str =
    "CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 'retrying' ELSE status END";

/// Why a control was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("task {0} not found")]
    TaskNotFound(i64),
    /// The task is not in a status this control applies to.
    #[error("task {id} is {status}; {action} applies to {allowed} tasks")]
    WrongStatus {
        id: i64,
        status: String,
        action: &'static str,
        allowed: &'static str,
    },
    #[error("{0:?} is not a task kind")]
    UnknownKind(String),
    #[error("priority {0} is outside {min}..={max}", min = PRIORITY_RANGE.start(), max = PRIORITY_RANGE.end())]
    PriorityOutOfRange(i64),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a task control changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskControlled {
    pub task_id: i64,
    /// The status before, as lists show it (`retrying` included).
    pub from: String,
    /// The status after.
    pub to: String,
}

/// What pausing or resuming a kind changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindControlled {
    pub kind: String,
    /// False when the kind already was in the asked state (nothing changed).
    pub changed: bool,
    /// Tasks parked (pause) or made pending again (resume).
    pub tasks: i64,
}

impl KindControlled {
    fn unchanged(kind: &str) -> Self {
        KindControlled {
            kind: kind.to_owned(),
            changed: false,
            tasks: 0,
        }
    }

    fn changed(kind: &str, tasks: i64) -> Self {
        KindControlled {
            kind: kind.to_owned(),
            changed: true,
            tasks,
        }
    }
}

/// A paused kind, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PausedKind {
    pub kind: String,
    pub paused_at: DateTime<Utc>,
    pub paused_by: String,
    /// Tasks parked behind the pause (waiting for the resume).
    pub waiting: i64,
}

/// One audit row of `task_controls`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ControlEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub task_id: Option<i64>,
    pub kind: Option<String>,
    pub institution_id: Option<Uuid>,
    pub detail: String,
}

/// The task row a control reads under its lock.
#[derive(Debug, sqlx::FromRow)]
struct Locked {
    status: String,
    display: String,
    event_id: Option<Uuid>,
    institution_id: Option<Uuid>,
    kind: String,
    priority: i16,
    worker: Option<String>,
}

/// What a control may do to a task: its name for the operator, the statuses it
/// applies to, and those statuses as the operator reads them.
struct Allowed {
    action: &'static str,
    statuses: &'static [&'static str],
    described: &'static str,
}

const WAITING: &str = "pending, retrying or paused";

const CANCEL: Allowed = Allowed {
    action: "cancel",
    statuses: &["pending", "paused"],
    described: WAITING,
};
const FORCE_RELEASE: Allowed = Allowed {
    action: "force release",
    statuses: &["running"],
    described: "running",
};
const SET_PRIORITY: Allowed = Allowed {
    action: "changing the priority",
    statuses: &["pending", "paused"],
    described: WAITING,
};

/// Opens a control's transaction with the task locked, refused unless the control is
/// `allowed` in the task's status. The task is locked if it is still in the queue
/// (unfinished); a finished one is read from the history, where it never changes again
/// (every control refuses it). A task that finishes while this waits for its lock is
/// gone from the queue once the lock is granted, and the history's read, a later
/// statement, sees it.
async fn lock_task(
    pool: &PgPool,
    task_id: i64,
    allowed: Allowed,
) -> Result<(Transaction<'static, Postgres>, Locked), ControlError> {
    let mut tx = pool.begin().await?;
    let task = match read_task(&mut tx, task_id, "task_queue WHERE id = $1 FOR UPDATE").await? {
        Some(task) => task,
        None => read_task(&mut tx, task_id, "task_history WHERE id = $1")
            .await?
            .ok_or(ControlError::TaskNotFound(task_id))?,
    };
    if !allowed.statuses.contains(&task.status.as_str()) {
        return Err(ControlError::WrongStatus {
            id: task_id,
            status: task.display,
            action: allowed.action,
            allowed: allowed.described,
        });
    }
    Ok((tx, task))
}

/// The row of task `$1` as a control reads it, `FROM` `source`.
async fn read_task(
    conn: &mut PgConnection,
    task_id: i64,
    source: &str,
) -> Result<Option<Locked>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT status, {DISPLAY_STATUS_SQL} AS display, event_id, institution_id, kind, priority, worker
         FROM {source}"
    ))
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await
}

/// Records a control of one task (see [`audit`]).
async fn audit_task(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &str,
    task_id: i64,
    task: &Locked,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let kind = &task.kind;
    audit(
        conn,
        actor,
        action,
        Some(task_id),
        kind,
        task.institution_id,
        detail,
    )
    .await
}

/// Wakes the workers: tasks are due now.
async fn wake_workers(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify('aula_tasks', '')")
        .execute(pool)
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &str,
    task_id: Option<i64>,
    kind: &str,
    institution_id: Option<Uuid>,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO task_controls (actor, action, task_id, kind, institution_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor.to_string())
    .bind(action)
    .bind(task_id)
    .bind(kind)
    .bind(institution_id)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    // The audit log's record (built from events, like every operator action's): in
    // this transaction, so it commits with the change or not at all.
    if let Some(record) = QueueControlEvent::of_action(action, task_id, kind, detail) {
        let metadata =
            serde_json::to_value(EventMetadata::new(actor.clone(), institution_id).to_map())
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let payload =
            serde_json::to_value(&record).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        // One stream per control (a new id), so no other writer appends to it.
        let record = aula_eventlog::Record {
            event_type: record.event_type(),
            event_version: record.event_version(),
            payload,
        };
        aula_eventlog::append_records(
            conn,
            QUEUE_CONTROL,
            &Uuid::new_v4().to_string(),
            &[record],
            &metadata,
        )
        .await?;
    }
    tracing::info!(%actor, action, task = ?task_id, kind, detail, "queue control");
    Ok(())
}

/// Cancels a waiting task (`pending`, `retrying` or `paused`): `cancelled`, finished
/// now, kept with its attempts; never claimed again.
pub async fn cancel_task(
    pool: &PgPool,
    task_id: i64,
    actor: &Actor,
) -> Result<TaskControlled, ControlError> {
    let (mut tx, task) = lock_task(pool, task_id, CANCEL).await?;
    let finished_at: DateTime<Utc> = sqlx::query_scalar(concat!(
        "WITH gone AS (DELETE FROM task_queue WHERE id = $1 RETURNING *)
         ",
        history_columns!(),
        "
         SELECT id, kind, priority, 'cancelled', run_at, attempt, max_attempts, lease_until, worker,
                event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
                correlation_id, created_at, started_at, now(), last_error, claimed_at
         FROM gone
         RETURNING finished_at"
    ))
    .bind(task_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut change = TaskChange::moved(task.event_id, &task.display, "cancelled");
    change.finished_at = Some(finished_at);
    processing::record(&mut tx, &[change], &[]).await?;
    let detail = format!("{} -> cancelled", task.display);
    audit_task(&mut tx, actor, "cancel", task_id, &task, &detail).await?;
    tx.commit().await?;
    Ok(TaskControlled {
        task_id,
        from: task.display,
        to: "cancelled".into(),
    })
}

/// Ends a running task's lease now: `retrying` at once (`dead` if it was its last
/// attempt), the attempt recorded as `force_released`. The worker that held it is
/// fenced out (see the module docs).
pub async fn force_release(
    pool: &PgPool,
    task_id: i64,
    actor: &Actor,
) -> Result<TaskControlled, ControlError> {
    let (mut tx, task) = lock_task(pool, task_id, FORCE_RELEASE).await?;
    let error = format!(
        "force-released by {actor} (worker {} was still running it)",
        task.worker.as_deref().unwrap_or("?")
    );
    let (status, finished_at): (String, Option<DateTime<Utc>>) = sqlx::query_as(concat!(
        "WITH requeued AS (
             UPDATE task_queue t
             SET status = 'pending', finished_at = NULL,
                 run_at = now(), lease_until = NULL, worker = NULL, last_error = $2
             WHERE t.id = $1 AND t.attempt < t.max_attempts
             RETURNING t.id, t.attempt, t.status, t.finished_at
         ), gone AS (
             -- Its last attempt: dead, out of the queue, into the history.
             DELETE FROM task_queue t WHERE t.id = $1 AND t.attempt >= t.max_attempts RETURNING t.*
         ), buried AS (
             ",
        history_columns!(),
        "
             SELECT id, kind, priority, 'dead', now(), attempt, max_attempts, NULL, NULL, event_id,
                    event_type, origin_task_id, idempotency_key, payload, institution_id,
                    correlation_id, created_at, started_at, now(), $2, claimed_at
             FROM gone
             RETURNING id, attempt, status, finished_at
         ), released AS (
             SELECT * FROM requeued UNION ALL SELECT * FROM buried
         ), recorded AS (
             UPDATE task_attempts a
             SET outcome = 'force_released', finished_at = now(), error = $2,
                 duration_ms = extract(epoch FROM now() - a.started_at) * 1000
             FROM released WHERE a.task_id = released.id AND a.attempt = released.attempt
         )
         SELECT CASE status WHEN 'pending' THEN 'retrying' ELSE status END, finished_at
         FROM released"
    ))
    .bind(task_id)
    .bind(&error)
    .fetch_one(&mut *tx)
    .await?;
    let mut change = TaskChange::moved(task.event_id, "running", &status);
    change.finished_at = finished_at;
    change.error = Some(error);
    processing::record(&mut tx, &[change], &[]).await?;
    let worker = task.worker.as_deref().unwrap_or("?");
    let detail = format!("running on {worker} -> {status}");
    audit_task(&mut tx, actor, "force_release", task_id, &task, &detail).await?;
    tx.commit().await?;
    wake_workers(pool).await?;
    Ok(TaskControlled {
        task_id,
        from: "running".into(),
        to: status,
    })
}

/// Changes a waiting task's priority (lower runs first). Returns the previous one.
pub async fn set_priority(
    pool: &PgPool,
    task_id: i64,
    priority: i64,
    actor: &Actor,
) -> Result<i16, ControlError> {
    let priority = i16::try_from(priority)
        .ok()
        .filter(|p| PRIORITY_RANGE.contains(p))
        .ok_or(ControlError::PriorityOutOfRange(priority))?;
    let (mut tx, task) = lock_task(pool, task_id, SET_PRIORITY).await?;
    sqlx::query("UPDATE task_queue SET priority = $2 WHERE id = $1")
        .bind(task_id)
        .bind(priority)
        .execute(&mut *tx)
        .await?;
    let detail = format!("priority {} -> {priority}", task.priority);
    audit_task(&mut tx, actor, "set_priority", task_id, &task, &detail).await?;
    tx.commit().await?;
    // Wake the workers: the task may now sort before where their claims start
    // (`queue::ClaimHint`).
    wake_workers(pool).await?;
    Ok(task.priority)
}

fn known_kind(kind: &str) -> Result<(), ControlError> {
    if crate::kinds::ALL.contains(&kind) {
        Ok(())
    } else {
        Err(ControlError::UnknownKind(kind.to_owned()))
    }
}

/// Moves the tasks of `kind` in status `from` to `to` (`pending` and `paused`), locking
/// them in id order; records the counters' moves. The events' own counts do not change
/// (a parked task is still unfinished), so no event row is touched.
async fn move_waiting(
    conn: &mut PgConnection,
    kind: &str,
    from: &str,
    to: &str,
) -> Result<i64, sqlx::Error> {
    let retried: Vec<bool> = sqlx::query_scalar(
        "WITH locked AS (
             SELECT id FROM task_queue WHERE status = $2 AND kind = $1 ORDER BY id FOR UPDATE
         )
         UPDATE task_queue t SET status = $3
         WHERE t.id = ANY(ARRAY(SELECT id FROM locked)) AND t.status = $2
         RETURNING t.last_error IS NOT NULL",
    )
    .bind(kind)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let changes: Vec<TaskChange> = retried
        .iter()
        .map(|&retried| {
            let waiting = if retried { "retrying" } else { "pending" };
            if to == "paused" {
                TaskChange::moved(None, waiting, "paused")
            } else {
                TaskChange::moved(None, "paused", waiting)
            }
        })
        .collect();
    if !changes.is_empty() {
        processing::record(conn, &changes, &[]).await?;
    }
    Ok(changes.len() as i64)
}

/// Pauses `kind`: claims stop taking its tasks; its waiting tasks are parked. Tasks of
/// it already running finish.
pub async fn pause_kind(
    pool: &PgPool,
    kind: &str,
    actor: &Actor,
) -> Result<KindControlled, ControlError> {
    switch_kind(pool, kind, actor, true).await
}

/// Resumes `kind`: its parked tasks are pending (or retrying) again, claimable at once.
pub async fn resume_kind(
    pool: &PgPool,
    kind: &str,
    actor: &Actor,
) -> Result<KindControlled, ControlError> {
    switch_kind(pool, kind, actor, false).await
}

/// Pauses (`pause`) or resumes `kind`: its pause row is added or removed, and only if
/// that changed anything its waiting tasks move and the change is audited.
async fn switch_kind(
    pool: &PgPool,
    kind: &str,
    actor: &Actor,
    pause: bool,
) -> Result<KindControlled, ControlError> {
    known_kind(kind)?;
    let mut tx = pool.begin().await?;
    let switched = if pause {
        sqlx::query(
            "INSERT INTO task_kind_pauses (kind, paused_by) VALUES ($1, $2) ON CONFLICT (kind) DO NOTHING",
        )
        .bind(kind)
        .bind(actor.to_string())
    } else {
        sqlx::query("DELETE FROM task_kind_pauses WHERE kind = $1").bind(kind)
    }
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if switched == 0 {
        return Ok(KindControlled::unchanged(kind));
    }
    let (from, to, action, moved_what) = if pause {
        ("pending", "paused", "pause", "waiting tasks parked")
    } else {
        ("paused", "pending", "resume", "parked tasks pending again")
    };
    let moved = move_waiting(&mut tx, kind, from, to).await?;
    let detail = format!("{moved} {moved_what}");
    audit(&mut tx, actor, action, None, kind, None, &detail).await?;
    tx.commit().await?;
    if !pause {
        wake_workers(pool).await?;
    }
    Ok(KindControlled::changed(kind, moved))
}

/// Makes pending again the parked tasks of kinds no longer paused: a claim that started
/// before a resume committed may park a task after the resume looked. Reads only the
/// parked tasks (`task_queue_paused_idx`). Returns how many.
///
/// Planned at each run, not prepared once: the statement has no parameter, so a
/// prepared one keeps the plan of its first run for good, and a first run on an empty
/// queue (a plan PostgreSQL makes by scanning the table) went on scanning it after a
/// burst filled it. In a drain of 1,000,000 tasks, its 144 runs read 980,000 buffers
/// each, until the queue's statistics caught up. Planning costs half a millisecond,
/// every few seconds; a fresh plan sees the table's real size and takes the index.
pub async fn unpark_resumed(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT kind FROM task_queue t WHERE status = 'paused'
         AND NOT EXISTS (SELECT 1 FROM task_kind_pauses p WHERE p.kind = t.kind)",
    )
    .persistent(false)
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    for kind in kinds {
        let mut tx = pool.begin().await?;
        // Under the pause row's absence: a pause committed meanwhile keeps its tasks.
        let paused: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM task_kind_pauses WHERE kind = $1)")
                .bind(&kind)
                .fetch_one(&mut *tx)
                .await?;
        if !paused {
            total += move_waiting(&mut tx, &kind, "paused", "pending").await?;
        }
        tx.commit().await?;
    }
    if total > 0 {
        tracing::info!(
            count = total,
            "unparked tasks of kinds resumed during a claim"
        );
        wake_workers(pool).await?;
    }
    Ok(total)
}

/// The paused kinds and how many tasks wait behind each.
pub async fn paused_kinds(pool: &PgPool) -> Result<Vec<PausedKind>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.kind, p.paused_at, p.paused_by,
                (SELECT count(*) FROM task_queue t WHERE t.status = 'paused' AND t.kind = p.kind) AS waiting
         FROM task_kind_pauses p ORDER BY p.kind",
    )
    .fetch_all(pool)
    .await
}

/// The latest queue controls, newest first: all of them, or those on one
/// institution's tasks (kind-wide pauses concern every institution and are listed
/// too).
pub async fn control_log(
    pool: &PgPool,
    institution_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ControlEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, action, task_id, kind, institution_id, detail FROM task_controls
         WHERE $1::uuid IS NULL OR institution_id = $1 OR task_id IS NULL
         ORDER BY id DESC LIMIT $2",
    )
    .bind(institution_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
