//! Resending one message, and "recover since T": for one endpoint, every event since T
//! that it wants gets its message (created if it was missed, queued again if it
//! failed), in batches.
//!
//! A recovery is a chain of `webhook.recover` tasks, one per batch: each batch's
//! messages, its progress and the task of the next batch commit in one transaction, so
//! a recovery survives the death of its process like any task (the queue's leases),
//! never does a batch twice, and stops before its next batch once cancelled.

use aula_domain::webhook_endpoint::WebhookEndpointEvent;
use aula_eventlog::EventMetadata;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::audit;
use super::endpoints::WebhookError;
use super::fanout::{delivery_task, institution_of, message_id, public_body, MessageRows};
use crate::handlers::{TaskContext, TaskError, TaskHandler};
use crate::kinds;
use crate::queue::{insert_tasks, NewTask};
use aula_eventlog::LogPosition;

/// Events read per batch.
pub const BATCH: i64 = 500;

/// Sends a message again now, as a new attempt with the same id and body. A failed or
/// delivered message gets one manual attempt; a pending one has its next attempt now.
/// Recorded for the audit log (`metadata`: who asked).
pub async fn resend(
    pool: &PgPool,
    message_id: Uuid,
    metadata: &EventMetadata,
) -> Result<(), WebhookError> {
    let mut tx = pool.begin().await?;
    let row: Option<(i32, String, Option<Uuid>, Uuid)> = sqlx::query_as(
        "SELECT attempts, status, institution_id, endpoint_id FROM webhook_messages
         WHERE id = $1 FOR UPDATE",
    )
    .bind(message_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((attempts, status, institution, endpoint_id)) = row else {
        return Err(WebhookError::NotFound);
    };
    sqlx::query(
        "UPDATE webhook_messages SET status = 'pending', finished_at = NULL, next_attempt_at = now()
         WHERE id = $1",
    )
    .bind(message_id)
    .execute(&mut *tx)
    .await?;
    let task = delivery_task(message_id, attempts + 1, status != "pending", institution);
    insert_tasks(&mut tx, &[task]).await?;
    // Last: the endpoint's row lock (see `deliver`'s order: message, counters, endpoint).
    let recorded = audit::record(
        &mut tx,
        endpoint_id,
        metadata,
        &[WebhookEndpointEvent::WebhookMessageResent {
            endpoint_id,
            message_id,
        }],
    )
    .await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    Ok(())
}

/// A recovery and its progress.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecoverJob {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub since: DateTime<Utc>,
    pub requested_by: String,
    /// `running`, `cancelled`, `done` or `failed`.
    pub status: String,
    /// Events since `since` when the job started (an upper bound of the work).
    pub total: i64,
    /// Events looked at so far.
    pub done: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub error: Option<String>,
}

const JOB_COLUMNS: &str =
    "id, endpoint_id, since, requested_by, status, total, done, created_at, updated_at, error";

/// Starts a recovery of `endpoint_id` since `since`; its first batch is a task.
/// Recorded for the audit log (`metadata`: who asked).
pub async fn start(
    pool: &PgPool,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
    requested_by: &str,
    metadata: &EventMetadata,
) -> Result<RecoverJob, WebhookError> {
    let mut tx = pool.begin().await?;
    let endpoint: Option<(Option<Uuid>,)> = sqlx::query_as(
        "SELECT institution_id FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(endpoint_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((institution,)) = endpoint else {
        return Err(WebhookError::NotFound);
    };
    // Where to start and stop: the first event since T, and the last one now.
    let bounds: (Option<i64>, Option<i64>, Option<i64>, i64) = sqlx::query_as(
        "SELECT min(tx_id::text::bigint), min(global_position), max(global_position), count(*)
         FROM events WHERE recorded_at >= $1",
    )
    .bind(since)
    .fetch_one(&mut *tx)
    .await?;
    let id = Uuid::new_v4();
    let job: RecoverJob = sqlx::query_as(&format!(
        "INSERT INTO webhook_recover_jobs (id, endpoint_id, since, requested_by, total)
         VALUES ($1, $2, $3, $4, $5) RETURNING {JOB_COLUMNS}"
    ))
    .bind(id)
    .bind(endpoint_id)
    .bind(since)
    .bind(requested_by)
    .bind(bounds.3)
    .fetch_one(&mut *tx)
    .await?;
    let after = LogPosition {
        tx_id: bounds.0.unwrap_or(0).saturating_sub(1),
        global_position: 0,
    };
    insert_tasks(
        &mut tx,
        &[batch_task(id, after, bounds.2.unwrap_or(0), institution, 0)],
    )
    .await?;
    let recorded = audit::record(
        &mut tx,
        endpoint_id,
        metadata,
        &[WebhookEndpointEvent::WebhookRecoveryStarted {
            endpoint_id,
            recovery_id: id,
            since,
        }],
    )
    .await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    Ok(job)
}

fn batch_task(
    job: Uuid,
    after: LogPosition,
    up_to: i64,
    institution: Option<Uuid>,
    batch: i64,
) -> NewTask {
    let mut task = NewTask::new(
        kinds::WEBHOOK_RECOVER,
        format!("webhook-recover:{job}:{batch}"),
        json!({"job_id": job, "after_tx": after.tx_id, "after_position": after.global_position,
               "up_to": up_to, "batch": batch}),
    );
    task.institution_id = institution;
    task
}

/// Stops a running recovery before its next batch. Returns whether it was running (only
/// then is the cancellation recorded for the audit log).
pub async fn cancel(
    pool: &PgPool,
    job_id: Uuid,
    metadata: &EventMetadata,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cancelled: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE webhook_recover_jobs SET status = 'cancelled', updated_at = now()
         WHERE id = $1 AND status = 'running'
         RETURNING endpoint_id",
    )
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((endpoint_id,)) = cancelled else {
        return Ok(false);
    };
    let recorded = audit::record(
        &mut tx,
        endpoint_id,
        metadata,
        &[WebhookEndpointEvent::WebhookRecoveryCancelled {
            endpoint_id,
            recovery_id: job_id,
        }],
    )
    .await?;
    tx.commit().await?;
    recorded.committed(pool).await;
    Ok(true)
}

pub async fn job(pool: &PgPool, job_id: Uuid) -> Result<Option<RecoverJob>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM webhook_recover_jobs WHERE id = $1"
    ))
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// The recoveries of one endpoint, newest first.
pub async fn jobs(pool: &PgPool, endpoint_id: Uuid) -> Result<Vec<RecoverJob>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM webhook_recover_jobs WHERE endpoint_id = $1
         ORDER BY created_at DESC LIMIT 50"
    ))
    .bind(endpoint_id)
    .fetch_all(pool)
    .await
}

/// The handler of `webhook.recover`: one batch of a recovery.
pub struct WebhookRecover;

#[async_trait::async_trait]
impl TaskHandler for WebhookRecover {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let p = &ctx.task.payload;
        let number = |key: &str| p.get(key).and_then(Value::as_i64);
        let (Some(job_id), Some(after_tx), Some(after_position), Some(up_to), Some(batch)) = (
            p.get("job_id")
                .and_then(Value::as_str)
                .and_then(|id| id.parse::<Uuid>().ok()),
            number("after_tx"),
            number("after_position"),
            number("up_to"),
            number("batch"),
        ) else {
            return Err(TaskError::permanent("malformed webhook.recover payload"));
        };
        let mut tx = ctx.pool.begin().await?;
        let job: Option<(
            String,
            Uuid,
            DateTime<Utc>,
            i64,
            Option<Uuid>,
            Option<Vec<String>>,
        )> = sqlx::query_as(
            "SELECT j.status, j.endpoint_id, j.since, j.done, e.institution_id, e.event_types
                 FROM webhook_recover_jobs j JOIN webhook_endpoints e ON e.id = j.endpoint_id
                 WHERE j.id = $1 FOR UPDATE OF j",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((status, endpoint_id, since, done, institution, types)) = job else {
            return Err(TaskError::permanent(format!("recovery {job_id} not found")));
        };
        // Cancelled, finished, or this batch already committed (a rerun after a crash
        // between the commit and the task's completion).
        if status != "running" || done > batch * BATCH {
            return Ok(());
        }
        let events = aula_eventlog::log::read_batch(
            &mut tx,
            LogPosition {
                tx_id: after_tx,
                global_position: after_position,
            },
            BATCH,
        )
        .await?;
        let in_scope: Vec<_> = events
            .iter()
            .filter(|e| e.global_position() <= up_to)
            .collect();
        let mut rows = MessageRows::default();
        let mut again: Vec<Uuid> = Vec::new();
        for event in in_scope.iter().filter(|e| e.recorded_at >= since) {
            let owner = institution_of(event);
            let wanted = super::fanout::is_deliverable(event)
                && (institution.is_none() || institution == owner)
                && types.as_ref().is_none_or(|t| t.contains(&event.event_type));
            if !wanted {
                continue;
            }
            let id = message_id(event.event_id, endpoint_id);
            again.push(id);
            let body = public_body(
                &event.event_type,
                event.event_id,
                event.recorded_at,
                owner,
                event.reprocessed_from(),
                &event.payload,
            );
            rows.push(id, endpoint_id, event, owner, body);
        }
        let created = rows.len();
        let changes = rows.insert(&mut tx).await?;
        crate::processing::record(&mut tx, &changes, &[]).await?;
        // Messages that existed and failed are queued again (one manual attempt each).
        let failed: Vec<(Uuid, i32, Option<Uuid>)> = sqlx::query_as(
            "UPDATE webhook_messages SET status = 'pending', finished_at = NULL, next_attempt_at = now()
             WHERE id = ANY($1) AND status = 'failed'
             RETURNING id, attempts, institution_id",
        )
        .bind(&again)
        .fetch_all(&mut *tx)
        .await?;
        let resends: Vec<NewTask> = failed
            .into_iter()
            .map(|(id, attempts, owner)| delivery_task(id, attempts + 1, true, owner))
            .collect();
        insert_tasks(&mut tx, &resends).await?;
        let finished = in_scope.len() < events.len() || (events.len() as i64) < BATCH;
        let looked_at = in_scope.len() as i64;
        sqlx::query(
            "UPDATE webhook_recover_jobs
             SET done = $2, status = CASE WHEN $3 THEN 'done' ELSE status END, updated_at = now()
             WHERE id = $1",
        )
        .bind(job_id)
        .bind(if finished {
            done + looked_at
        } else {
            (batch + 1) * BATCH
        })
        .bind(finished)
        .execute(&mut *tx)
        .await?;
        if !finished {
            let last = events
                .last()
                .map(|e| e.position)
                .unwrap_or(LogPosition::START);
            insert_tasks(
                &mut tx,
                &[batch_task(
                    job_id,
                    last,
                    up_to,
                    ctx.task.institution_id,
                    batch + 1,
                )],
            )
            .await?;
        }
        tx.commit().await?;
        tracing::debug!(job = %job_id, batch, created, "webhook recovery batch done");
        Ok(())
    }
}
