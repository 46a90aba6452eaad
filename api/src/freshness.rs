//! Read-your-writes: wait, bounded, until every configured projection has consumed the
//! event at a given global position.
//!
//! A projection's checkpoint is `(tx_id, global_position)` in commit order (see
//! `aula_eventlog::log`), so "has consumed event P" is "checkpoint >= position_of(P)".

use std::time::Duration;

use sqlx::PgPool;

/// `Ok(true)` once every projection in `projections` reached `global_position` (at once
/// if the list is empty), `Ok(false)` when `timeout` passed first.
pub async fn wait_for_projections(
    pool: &PgPool,
    projections: &[String],
    global_position: i64,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    if projections.is_empty() {
        return Ok(true);
    }
    let position = {
        let mut conn = pool.acquire().await?;
        aula_eventlog::log::position_of(&mut conn, global_position).await?
    };
    // No such event: nothing to wait for.
    let Some(position) = position else {
        return Ok(true);
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let reached =
            aula_eventlog::lookups::subscriptions_at_or_past(pool, projections, position).await?;
        if reached as usize >= projections.len() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
