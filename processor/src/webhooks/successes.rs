//! Successful attempts, recorded in batches: the common case of every delivery, and
//! the database work that bounded `aula bench webhooks` (one statement per delivery,
//! each with its own commit).
//!
//! Each delivery task hands its success to one recorder per process and waits for the
//! answer before it completes (so a task is never completed before its attempt is
//! recorded). The recorder takes whatever has gathered (up to [`MAX_BATCH`]) and writes
//! it in one statement: the attempts, the messages delivered, and the endpoints'
//! health. While one batch is written the next gathers, so under load batches grow and
//! alone a success is written at once. A batch that fails is written again one success
//! at a time, so one bad row fails only its own task.
//!
//! Like one success alone: the endpoint's row is written only when that changes
//! something visible (a healthy endpoint's `last_success_at` moves at most once a
//! second), and the commit is asynchronous (a record lost in a database crash is lost
//! with everything after it in the WAL, its task's completion included, so the task
//! runs again and sends the same message again: at least once, same id and body).

use std::collections::HashSet;

use aula_eventlog::db::column;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::batcher::{self, Batcher};

/// Most successes in one statement.
pub const MAX_BATCH: usize = 256;

/// One successful attempt.
#[derive(Debug, Clone)]
pub(crate) struct Success {
    pub message_id: Uuid,
    pub attempt: i32,
    pub endpoint_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub latency_ms: f64,
    pub status_code: Option<i32>,
    pub excerpt: Option<String>,
}

type Job = batcher::Job<Success, ()>;

/// The recorder of one process (see [`Batcher`]).
#[derive(Clone, Default)]
pub(crate) struct Successes {
    batcher: Batcher<Success, ()>,
}

impl Successes {
    /// Records `success` (in a batch with whatever else is waiting); returns once it is
    /// committed, or why it could not be.
    pub(crate) async fn record(&self, pool: &PgPool, success: Success) -> Result<(), String> {
        match self
            .batcher
            .ask(pool, success, "success recorder", MAX_BATCH, serve)
            .await
        {
            Ok(answer) => answer,
            // The recorder is gone (its runtime is shutting down): write it here.
            Err(success) => write(pool, std::slice::from_ref(&success))
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

async fn serve(pool: PgPool, jobs: Vec<Job>) {
    // One row per message in a statement (an UPDATE ... FROM meets each row once):
    // a second attempt of a message in the same batch (a resend racing a retry) is
    // written after it, alone.
    let mut seen = HashSet::with_capacity(jobs.len());
    let (batch, later): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|(success, _)| seen.insert(success.message_id));
    let rows: Vec<Success> = batch.iter().map(|(s, _)| s.clone()).collect();
    match write(&pool, &rows).await {
        Ok(()) => {
            for (_, reply) in batch {
                let _ = reply.send(Ok(()));
            }
        }
        Err(error) => {
            tracing::debug!(%error, successes = rows.len(), "a batch of webhook successes failed; writing them one by one");
            for (success, reply) in batch {
                let result = write(&pool, std::slice::from_ref(&success)).await;
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
        }
    }
    for (success, reply) in later {
        let result = write(&pool, std::slice::from_ref(&success)).await;
        let _ = reply.send(result.map_err(|e| e.to_string()));
    }
}

/// One statement for `rows` (distinct messages): attempts, messages, endpoints.
async fn write(pool: &PgPool, rows: &[Success]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH s AS (
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::timestamptz[],
                                  $5::float8[], $6::int[], $7::text[])
                 AS s(message_id, attempt, endpoint_id, started_at, latency_ms, status_code, excerpt)
         ), attempt AS (
             INSERT INTO webhook_attempts (message_id, attempt, endpoint_id, started_at, latency_ms,
                                           status_code, outcome, response_excerpt, error)
             SELECT message_id, attempt, endpoint_id, started_at, latency_ms, status_code,
                    'succeeded', left(excerpt, 1024), NULL
             FROM s
             ON CONFLICT (message_id, attempt) DO UPDATE SET
                 started_at = EXCLUDED.started_at, latency_ms = EXCLUDED.latency_ms,
                 status_code = EXCLUDED.status_code, outcome = EXCLUDED.outcome,
                 response_excerpt = EXCLUDED.response_excerpt, error = NULL
         ), message AS (
             UPDATE webhook_messages m
             SET attempts = s.attempt, status = 'delivered', last_error = NULL,
                 next_attempt_at = NULL, finished_at = now()
             FROM s WHERE m.id = s.message_id
         ), endpoint AS (
             UPDATE webhook_endpoints e SET failing_since = NULL, last_success_at = now()
             WHERE e.id IN (SELECT endpoint_id FROM s)
               AND (e.failing_since IS NOT NULL OR e.last_success_at IS NULL
                    OR e.last_success_at < now() - interval '1 second')
         )
         SELECT set_config('synchronous_commit', 'off', true)",
    )
    .bind(column(rows, |r| r.message_id))
    .bind(column(rows, |r| r.attempt))
    .bind(column(rows, |r| r.endpoint_id))
    .bind(column(rows, |r| r.started_at))
    .bind(column(rows, |r| r.latency_ms))
    .bind(column(rows, |r| r.status_code))
    .bind(column(rows, |r| r.excerpt.as_deref()))
    .execute(pool)
    .await?;
    Ok(())
}
