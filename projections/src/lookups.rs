//! Named queries over the admin event list for the API's dashboard: the event types it
//! lists, and institutions by id prefix or name. The projections own `admin_events`
//! (see ARCHITECTURE.md, "Who owns which table"); the API asks these functions.

use sqlx::PgPool;

/// The distinct event types of the admin list, in order: a loose index scan over
/// `admin_events_type_idx`, one probe per distinct type.
pub async fn admin_event_types(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE t(event_type) AS (
                 (SELECT event_type FROM admin_events ORDER BY event_type LIMIT 1)
                 UNION ALL
                 SELECT (SELECT a.event_type FROM admin_events a WHERE a.event_type > t.event_type
                         ORDER BY a.event_type LIMIT 1)
                 FROM t WHERE t.event_type IS NOT NULL)
             SELECT event_type FROM t WHERE event_type IS NOT NULL",
    )
    .fetch_all(pool)
    .await
}

/// Institutions (id, name) whose id matches the `LIKE` pattern `id_like` or whose name
/// matches the `ILIKE` pattern `name_like`, by name, at most `limit`. One row per
/// institution (its creation event, through the admin list's type index): as many rows
/// as institutions, never the log.
pub async fn institutions_matching(
    pool: &PgPool,
    id_like: &str,
    name_like: &str,
    limit: i64,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.aggregate_id, e.payload->>'name'
             FROM admin_events a JOIN events e ON e.global_position = a.global_position
             WHERE a.event_type = 'InstitutionCreated' AND a.reprocessed_from IS NULL
               AND (a.aggregate_id LIKE $1 OR (e.payload->>'name') ILIKE $2)
             ORDER BY e.payload->>'name', a.aggregate_id
             LIMIT $3",
    )
    .bind(id_like)
    .bind(name_like)
    .bind(limit)
    .fetch_all(pool)
    .await
}
