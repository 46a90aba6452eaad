//! Facts other crates need from the log, as named queries. The eventlog owns `events`
//! and `subscription_checkpoints` (see ARCHITECTURE.md, "Who owns which table"): the API
//! asks these functions instead of reading stored event JSON itself.
//!
//! They read the stored format (event types, payload and metadata keys), which is a
//! contract, so these answers are as stable as the events they come from.

use sqlx::PgPool;
use uuid::Uuid;

use crate::log::LogPosition;

/// A user's standing for its tokens: whether it was deactivated, and how many
/// password resets it had (its credential version). One indexed look-up on the user's
/// own stream.
pub async fn user_credential_state(
    pool: &PgPool,
    user_id: Uuid,
) -> Result<(bool, i64), sqlx::Error> {
    summarize_stream(
        pool,
        "SELECT coalesce(bool_or(event_type = 'UserDeactivated'), false),
                count(*) FILTER (WHERE event_type = 'PasswordReset')
         FROM events
         WHERE aggregate_type = 'user' AND aggregate_id = $1
           AND event_type IN ('UserDeactivated', 'PasswordReset')",
        user_id,
    )
    .await
}

/// The one row `sql` sums up of the stream whose id (`$1`) is `id`.
async fn summarize_stream<T>(pool: &PgPool, sql: &'static str, id: Uuid) -> Result<T, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(id.to_string())
        .fetch_one(pool)
        .await
}

/// The `institution_id` a course was opened in, from its `CourseOpened` event; `None`
/// when the course was never opened.
pub async fn course_opened_in(
    pool: &PgPool,
    course_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let opened: Option<Option<String>> = sqlx::query_scalar(
        "SELECT payload->>'institution_id' FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = $1 AND event_type = 'CourseOpened'
         LIMIT 1",
    )
    .bind(course_id.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(opened.flatten())
}

/// From a course's stream: the `institution_id` of its opening (if opened) and whether
/// it was closed (`None` when it has neither event).
pub async fn course_opening_and_closing(
    pool: &PgPool,
    course_id: Uuid,
) -> Result<(Option<String>, Option<bool>), sqlx::Error> {
    summarize_stream(
        pool,
        "SELECT (array_agg(payload->>'institution_id') FILTER (WHERE event_type = 'CourseOpened'))[1],
                bool_or(event_type = 'CourseClosed')
         FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = $1
           AND event_type IN ('CourseOpened', 'CourseClosed')",
        course_id,
    )
    .await
}

/// The ids among `candidates` of the courses whose `CourseOpened` names `institution`.
pub async fn courses_opened_by(
    pool: &PgPool,
    institution: Uuid,
    candidates: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<String> = candidates.iter().map(Uuid::to_string).collect();
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT aggregate_id FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = ANY($1) AND event_type = 'CourseOpened'
           AND payload->>'institution_id' = $2",
    )
    .bind(&ids)
    .bind(institution.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Whether the stream `aggregate_type`/`aggregate_id` has any event.
pub async fn stream_exists(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2)",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
}

/// `None` when there is no event `event_id`; else the `institution_id` of its metadata,
/// if any.
pub async fn event_institution(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("SELECT metadata->>'institution_id' FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
}

/// One stored event as recorded: type, version, payload and metadata.
pub type StoredEvent = (String, String, serde_json::Value, serde_json::Value);

/// Event `event_id` as stored, if there is one.
pub async fn stored_event(
    pool: &PgPool,
    event_id: Uuid,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_type, event_version, payload::jsonb, metadata::jsonb
                 FROM events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await
}

/// The global position of the newest event (`None` for an empty log).
pub async fn log_head(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    let (position,): (Option<i64>,) = sqlx::query_as("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(position)
}

const CAUGHT_UP_SQL: &str = "
SELECT count(*) FROM subscription_checkpoints
WHERE name = ANY($1) AND (tx_id::text::bigint, global_position) >= ($2, $3)";

/// How many of the subscriptions `names` have a checkpoint at or past `position`.
pub async fn subscriptions_at_or_past(
    pool: &PgPool,
    names: &[String],
    position: LogPosition,
) -> Result<i64, sqlx::Error> {
    let (reached,): (i64,) = sqlx::query_as(CAUGHT_UP_SQL)
        .bind(names)
        .bind(position.tx_id)
        .bind(position.global_position)
        .fetch_one(pool)
        .await?;
    Ok(reached)
}
