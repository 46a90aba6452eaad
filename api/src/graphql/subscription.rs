//! Subscriptions over `/graphql/ws` (graphql-transport-ws or graphql-ws). The access
//! token goes in the `connection_init` payload: `{"authorization": "Bearer <token>"}`.

use async_graphql::{Context, Subscription};
use futures::Stream;

use super::types::BigInt;
use super::{authorize, state};
use crate::error::ApiError;

/// Live updates over `/graphql/ws` (graphql-transport-ws or graphql-ws).
pub struct SubscriptionRoot;

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
        // One poll of the log head for every subscriber (see `shared_poll`).
        let head = state.live.log_head.watch(());
        Ok(futures::stream::unfold(
            (head, None::<i64>),
            |(mut head, last)| async move {
                loop {
                    let position = *head.borrow_and_update();
                    if let Some(position) = position.filter(|p| Some(*p) != last) {
                        return Some((BigInt(position), (head, Some(position))));
                    }
                    head.changed().await.ok()?;
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
        // One poll of the job for every subscriber (see `shared_poll`).
        let polled = state(ctx).live.bulk_jobs.watch(id);
        // (polled job, job to send next, last sent (status, done, failed, outcomes), finished)
        type Key = (String, i64, i64, aula_processor::bulk::CopyOutcomes);
        Ok(futures::stream::unfold(
            (polled, Some(first), None::<Key>, false),
            move |(mut polled, next, last, finished)| async move {
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
                                Ok(job) => return Some((job, (polled, None, Some(key), over))),
                                Err(error) => {
                                    tracing::error!(?error, "bulk job progress not sent");
                                    return None;
                                }
                            }
                        }
                    }
                    polled.changed().await.ok()?;
                    let latest = polled.borrow_and_update().clone();
                    match latest {
                        Some(Some(job)) => next = Some(job),
                        // The job is gone.
                        Some(None) => return None,
                        None => {}
                    }
                }
            },
        ))
    }
}
