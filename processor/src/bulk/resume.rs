//! Resuming abandoned jobs: any processor takes over a `running` job whose lease has
//! expired and runs it on (see "Resuming" in the parent module's docs).

use std::time::Duration;

use aula_eventlog::shutdown::Shutdown;
use sqlx::PgPool;
use uuid::Uuid;

use super::{run_job, runner_name, BulkOptions};

/// Takes over one `running` job whose lease has expired (or that never had one), for
/// `owner`; returns its id. Any process may call it.
pub async fn take_over_expired(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE bulk_reprocess_jobs j
         SET owner = $1, lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
         WHERE j.id = (
             SELECT id FROM bulk_reprocess_jobs
             WHERE status = 'running' AND (lease_until IS NULL OR lease_until < now())
             ORDER BY created_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED
         )
         RETURNING j.id",
    )
    .bind(owner)
    .bind(lease.as_millis() as f64)
    .fetch_optional(pool)
    .await
}

/// Resumes abandoned jobs until `shutdown`: every `lease / 2` (at least 100 ms), takes
/// over the expired ones ([`take_over_expired`]) and runs them, one at a time.
pub async fn run_resumer(pool: PgPool, options: BulkOptions, mut shutdown: Shutdown) {
    let owner = runner_name();
    let period = (options.lease / 2).max(Duration::from_millis(100));
    loop {
        loop {
            match take_over_expired(&pool, &owner, options.lease).await {
                Ok(Some(id)) => {
                    tracing::warn!(job = %id, owner, "resuming a bulk reprocessing job whose runner was lost");
                    tokio::select! {
                        _ = run_job(&pool, id, &owner, options) => {}
                        // Our lease expires and another service resumes the job.
                        _ = shutdown.wait() => return,
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "looking for abandoned bulk jobs failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait() => return,
        }
    }
}
