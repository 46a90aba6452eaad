//! Facts about the processor's tables that other crates ask for: an event's tasks and
//! their attempts (live and archived), a task's institution, and a user's in-app
//! notifications. The processor owns `tasks`, `task_attempts`, their archives and the
//! notification tables (see ARCHITECTURE.md, "Who owns which table"): the API reads and
//! marks them only through these functions.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// One task an event issued, live or archived, as [`event_tasks`] reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventTaskRow {
    pub id: i64,
    pub kind: String,
    /// The display status (`controls::DISPLAY_STATUS_SQL`).
    pub status: String,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub origin_task_id: Option<i64>,
    /// Null while the task is live.
    pub archived_at: Option<DateTime<Utc>>,
}

/// One attempt of a task, live or archived, as [`task_attempts`] reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskAttemptRow {
    pub task_id: i64,
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<f64>,
    pub outcome: String,
    pub error: Option<String>,
}

/// The tasks `event_id` issued, live and archived, in id order after `after`, at most
/// `limit`.
pub async fn event_tasks(
    pool: &PgPool,
    event_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<EventTaskRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT id, kind, {status} AS status, priority, attempt, max_attempts, run_at, created_at,
                    started_at, finished_at, last_error, origin_task_id, archived_at
             FROM (SELECT id, kind, status, priority, attempt, max_attempts, run_at, created_at,
                          started_at, finished_at, last_error, origin_task_id,
                          NULL::timestamptz AS archived_at
                   FROM tasks WHERE event_id = $1
                   UNION ALL
                   SELECT id, kind, status, priority, attempt, max_attempts, run_at, created_at,
                          started_at, finished_at, last_error, origin_task_id, archived_at
                   FROM tasks_archive WHERE event_id = $1) t
             WHERE $2::bigint IS NULL OR id > $2
             ORDER BY id
             LIMIT $3",
        status = crate::controls::DISPLAY_STATUS_SQL
    ))
    .bind(event_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The attempts of `task_ids`, live and archived, by task and attempt. A task and its
/// attempts are archived together; reading both tables also covers a task read just
/// before the archive moved it.
pub async fn task_attempts(
    pool: &PgPool,
    task_ids: &[i64],
) -> Result<Vec<TaskAttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT task_id, attempt, worker, started_at, finished_at, duration_ms, outcome, error
             FROM (SELECT task_id, attempt, worker, started_at, finished_at, duration_ms, outcome, error
                   FROM task_attempts WHERE task_id = ANY($1)
                   UNION ALL
                   SELECT task_id, attempt, worker, started_at, finished_at, duration_ms, outcome, error
                   FROM task_attempts_archive WHERE task_id = ANY($1)) a
             ORDER BY task_id, attempt",
    )
    .bind(task_ids)
    .fetch_all(pool)
    .await
}

/// `None` when there is no live task `task_id`; else the institution it works for, if any.
pub async fn task_institution(
    pool: &PgPool,
    task_id: i64,
) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar("SELECT institution_id FROM tasks WHERE id = $1")
        .bind(task_id)
        .fetch_optional(pool)
        .await
}

/// One notification as one recipient sees it: id, audience, title, body, data (JSON
/// text), institution, event, created at, linked at, read at.
pub type NotificationRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<Uuid>,
    Option<Uuid>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const NOTIFICATION_COLUMNS: &str =
    "n.id, n.audience, n.title, n.body, n.data::text, n.institution_id,
                       n.event_id, n.created_at, r.linked_at, r.read_at";

/// Notification `notification_id` if it is addressed to `recipient` and belongs to
/// `institution` (or to none; `None` institution: any).
pub async fn notification_for(
    pool: &PgPool,
    notification_id: i64,
    recipient: Uuid,
    institution: Option<Uuid>,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notification_recipients r
         JOIN notifications n ON n.id = r.notification_id
         WHERE r.notification_id = $1 AND r.recipient_id = $2
           AND ($3::uuid IS NULL OR n.institution_id IS NULL OR n.institution_id = $3)"
    ))
    .bind(notification_id)
    .bind(recipient)
    .bind(institution)
    .fetch_optional(pool)
    .await
}

/// `recipient`'s notifications of `institution` (or of none), newest first, before
/// `before`, at most `limit`; only unread ones when `unread_only`.
pub async fn notifications_of(
    pool: &PgPool,
    recipient: Uuid,
    institution: Option<Uuid>,
    unread_only: bool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notification_recipients r
             JOIN notifications n ON n.id = r.notification_id
             WHERE r.recipient_id = $1
               AND ($2::uuid IS NULL OR n.institution_id IS NULL OR n.institution_id = $2)
               AND (NOT $3 OR r.read_at IS NULL)
               AND ($4::bigint IS NULL OR n.id < $4)
             ORDER BY n.id DESC
             LIMIT $5"
    ))
    .bind(recipient)
    .bind(institution)
    .bind(unread_only)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks `notification_id` read for `recipient` only; the first read time is kept.
pub async fn mark_notification_read(
    pool: &PgPool,
    notification_id: i64,
    recipient: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notification_recipients SET read_at = COALESCE(read_at, $3)
                 WHERE notification_id = $1 AND recipient_id = $2",
    )
    .bind(notification_id)
    .bind(recipient)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether notification `notification_id` exists (for anyone).
pub async fn notification_exists(pool: &PgPool, notification_id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM notifications WHERE id = $1)")
        .bind(notification_id)
        .fetch_one(pool)
        .await
}
