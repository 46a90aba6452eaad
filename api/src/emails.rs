//! The e-mail index (`user_emails`, migration 0003): e-mail uniqueness across users and
//! e-mail -> user id look-ups. See the migration for why it exists.

use sqlx::PgPool;
use uuid::Uuid;

/// Reserves `email` for `candidate` unless someone holds it; returns the holder.
pub async fn reserve(pool: &PgPool, email: &str, candidate: Uuid) -> Result<Uuid, sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_emails (email, user_id) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING",
    )
    .bind(email)
    .bind(candidate)
    .execute(pool)
    .await?;
    let (holder,): (Uuid,) = sqlx::query_as("SELECT user_id FROM user_emails WHERE email = $1")
        .bind(email)
        .fetch_one(pool)
        .await?;
    Ok(holder)
}

/// Moves `email` from `holder` to `candidate`, unless someone else took it meanwhile;
/// returns whether it moved.
pub async fn hand_over(
    pool: &PgPool,
    email: &str,
    holder: Uuid,
    candidate: Uuid,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE user_emails SET user_id = $3, reserved_at = now() WHERE email = $1 AND user_id = $2",
    )
    .bind(email)
    .bind(holder)
    .bind(candidate)
    .execute(pool)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Gives `email` up, if `user_id` holds it.
pub async fn release(pool: &PgPool, email: &str, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_emails WHERE email = $1 AND user_id = $2")
        .bind(email)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn user_id_of(pool: &PgPool, email: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> = sqlx::query_as("SELECT user_id FROM user_emails WHERE email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(id,)| id))
}
