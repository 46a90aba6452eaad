//! Subscriptions over `/graphql/ws` (graphql-transport-ws or graphql-ws). The access
//! token goes in the `connection_init` payload: `{"authorization": "Bearer <token>"}`.

use std::time::Duration;

use async_graphql::{Context, Subscription};
use futures::Stream;
use sqlx::PgPool;

use super::types::BigInt;
use super::{authorize, state};
use crate::error::ApiError;

/// Live updates over `/graphql/ws` (graphql-transport-ws or graphql-ws).
pub struct SubscriptionRoot;

async fn head(pool: &PgPool) -> Option<i64> {
    match aula_eventlog::lookups::log_head(pool).await {
        Ok(position) => Some(position.unwrap_or(0)),
        Err(error) => {
            tracing::warn!(%error, "logPosition subscription: reading the log head failed");
            None
        }
    }
}

/// What a polling subscription's stream reads with: a handle on the pool it can own,
/// and how often it polls (the configured interval, 10 ms at the least).
fn polling(state: &crate::state::AppState) -> (PgPool, Duration) {
    let interval = state
        .config
        .subscription_poll_interval
        .max(Duration::from_millis(10));
    (state.pool.clone(), interval)
}

/// Live updates over `/graphql/ws` (graphql-transport-ws or graphql-ws).
#[Subscription]
impl SubscriptionRoot {
    /// Admins, managers and observers. The global position of the newest event, sent at
    /// once and then each time it moves (polled): the dashboard's tick to refresh its
    /// header and the visible list. A number only; it names no event.
    async fn log_position(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = BigInt>, ApiError> {
        let (_, state) = authorize(ctx, super::read_models::WATCHERS)?;
        let (pool, interval) = polling(state);
        Ok(futures::stream::unfold(
            (pool, None::<i64>, true),
            move |(pool, last, first)| async move {
                loop {
                    if !first || last.is_some() {
                        tokio::time::sleep(interval).await;
                    }
                    if let Some(position) = head(&pool).await {
                        if Some(position) != last {
                            return Some((BigInt(position), (pool, Some(position), false)));
                        }
                    }
                }
            },
        ))
    }

    /// Progress of a bulk reprocessing job: sent at once, then each time it changes
    /// (copies written, and their tasks' outcomes), ending after the job finishes
    /// (done, cancelled or failed), or with `untilSettled` once none of its copies'
    /// tasks is still running either. Admin: any job; manager: its institution's.
    async fn bulk_reprocess_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The job's id.")] id: uuid::Uuid,
        #[graphql(
            desc = "Keep reporting after the job finished, until its copies' tasks have all succeeded or failed (default false)."
        )]
        until_settled: Option<bool>,
    ) -> Result<impl Stream<Item = super::bulk::BulkReprocessJob>, ApiError> {
        let until_settled = until_settled.unwrap_or(false);
        let first = super::bulk::visible_job(ctx, id).await?;
        let (pool, interval) = polling(state(ctx));
        // (pool, job to send next, last sent (status, done, failed, outcomes), finished)
        type Key = (String, i64, i64, aula_processor::bulk::CopyOutcomes);
        Ok(futures::stream::unfold(
            (pool, Some(first), None::<Key>, false),
            move |(pool, next, last, finished)| async move {
                if finished {
                    return None;
                }
                let mut next = next;
                loop {
                    if let Some(job) = next.take() {
                        let key = (job.status.clone(), job.done, job.failed, job.outcomes);
                        if Some(&key) != last.as_ref() {
                            let over = job.status != "running"
                                && (!until_settled || job.outcomes.running == 0);
                            match super::bulk::BulkReprocessJob::try_from(job) {
                                Ok(job) => return Some((job, (pool, None, Some(key), over))),
                                Err(error) => {
                                    tracing::error!(?error, "bulk job progress not sent");
                                    return None;
                                }
                            }
                        }
                    }
                    tokio::time::sleep(interval).await;
                    match aula_processor::bulk::job(&pool, id).await {
                        Ok(Some(job)) => next = Some(job),
                        Ok(None) => return None,
                        Err(error) => {
                            tracing::warn!(%error, "bulkReprocessProgress: reading the job failed");
                        }
                    }
                }
            },
        ))
    }
}
