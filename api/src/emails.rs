//! The e-mail index (`user_emails`, migration 0003): e-mail uniqueness across users and
//! e-mail -> user id look-ups. See the migration for why it exists.

use aula_domain::user::{User, UserStatus};
use chrono::{DateTime, Utc};
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

/// How long an address stays with an account id that has no event yet: the command
/// that reserved it may still be on its way (a request runs 30 s at most, a task's
/// retries come back within minutes). Past this, the command was cut short (its caller
/// hung up between the reservation and the command) and will not come.
const UNUSED_RESERVATION_GRACE_SECONDS: i64 = 3600;

/// Moves `email` from `holder` (as loaded: `held_by`) to `candidate` when the holder
/// can no longer use it, and nobody else took it meanwhile: a sign-up nobody confirmed
/// whose every link expired at `now`, or an account id that never got an event,
/// reserved more than [`UNUSED_RESERVATION_GRACE_SECONDS`] ago (by the database's
/// clock, which wrote `reserved_at`). Returns whether it moved.
///
/// Anyone may sign up with anyone's address, and hanging up right after the request
/// leaves the reservation without its account: neither may keep an address for ever.
pub async fn reclaim(
    pool: &PgPool,
    email: &str,
    (holder, held_by): (Uuid, &User),
    candidate: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let unused = held_by.status() == UserStatus::Unregistered;
    if !unused && !held_by.sign_up_lapsed(now) {
        return Ok(false);
    }
    let moved = sqlx::query(
        "UPDATE user_emails SET user_id = $3, reserved_at = now()
         WHERE email = $1 AND user_id = $2
           AND (NOT $4 OR reserved_at < now() - make_interval(secs => $5))",
    )
    .bind(email)
    .bind(holder)
    .bind(candidate)
    .bind(unused)
    .bind(UNUSED_RESERVATION_GRACE_SECONDS as f64)
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

/// The reservation of one address, locked (`FOR UPDATE`) until this is settled or
/// dropped: whoever holds it decides alone who the address goes to. A staff action
/// that takes an address from a pending sign-up and the confirmation of that sign-up
/// both hold it, so exactly one of them wins: the confirmation records its account
/// while holding it (a claim waiting behind it then sees the account confirmed), and a
/// claim that moved the address first leaves the confirmation a reservation that is no
/// longer its own.
pub struct Held {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    email: String,
    /// The account holding the address when the lock was taken, if any.
    pub holder: Option<Uuid>,
}

/// Locks the reservation of `email` (waiting for whoever holds it).
pub async fn hold(pool: &PgPool, email: &str) -> Result<Held, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let holder: Option<(Uuid,)> =
        sqlx::query_as("SELECT user_id FROM user_emails WHERE email = $1 FOR UPDATE")
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(Held {
        tx,
        email: email.to_owned(),
        holder: holder.map(|(id,)| id),
    })
}

impl Held {
    /// Gives the address to `candidate` and lets the lock go.
    pub async fn hand_over(mut self, candidate: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE user_emails SET user_id = $2, reserved_at = now() WHERE email = $1")
            .bind(&self.email)
            .bind(candidate)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await
    }

    /// Lets the lock go, the address unchanged.
    pub async fn settle(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}
