//! Raw one-time tokens on their way to an e-mail.
//!
//! Events carry only a token's SHA-256 (hex), never the token: the log is kept forever
//! and shown to admins. But the confirmation and reset e-mails must contain the raw
//! token. So the API, which generates the token, stashes it here keyed by its hash
//! ([`stash_token`]); the e-mail task of the event with that hash reads it
//! ([`take_token`]) and deletes it in the same transaction that records the e-mail as
//! sent. Rows whose token expired are purged by the nightly archive.
//!
//! The API stashes the token *before* the command that records its hash, so a crash
//! between the two loses nothing (a token whose command failed, or recorded no token
//! because the e-mail already has an account, is never read and is purged when it
//! expires). Should a task still find no token (one stashed elsewhere),
//! it fails with a retryable error until the token has expired, then permanently.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Stores `raw_token` under `token_hash` until `expires_at`. Idempotent.
pub async fn stash_token(
    pool: &PgPool,
    token_hash: &str,
    raw_token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_tokens (token_hash, raw_token, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (token_hash) DO NOTHING",
    )
    .bind(token_hash)
    .bind(raw_token)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The raw token stashed under `token_hash`, if any.
pub async fn find_token(pool: &PgPool, token_hash: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT raw_token FROM pending_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(pool)
        .await
}

/// Deletes the stashed token (after its e-mail was sent).
pub async fn take_token(conn: &mut PgConnection, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pending_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes tokens that expired before `now`. Returns how many.
pub async fn purge_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM pending_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
