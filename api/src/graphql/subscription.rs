//! Subscriptions over `/graphql/ws` (graphql-transport-ws or graphql-ws). The access
//! token goes in the `connection_init` payload: `{"authorization": "Bearer <token>"}`.

use std::time::Duration;

use async_graphql::{Context, Subscription};
use aula_domain::user::Role as DomainRole;
use futures::Stream;
use sqlx::PgPool;

use super::{request, state};
use crate::auth;
use crate::error::ApiError;

pub struct SubscriptionRoot;

async fn head(pool: &PgPool) -> Option<i64> {
    match sqlx::query_as::<_, (Option<i64>,)>("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
    {
        Ok((position,)) => Some(position.unwrap_or(0)),
        Err(error) => {
            tracing::warn!(%error, "logPosition subscription: reading the log head failed");
            None
        }
    }
}

#[Subscription]
impl SubscriptionRoot {
    /// Admin only. The global position of the newest event, sent at once and then each
    /// time it moves (polled).
    async fn log_position(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = i64>, ApiError> {
        auth::require_role(request(ctx).claims.as_ref(), &[DomainRole::Admin])?;
        let state = state(ctx);
        let pool = state.pool.clone();
        let interval = state
            .config
            .subscription_poll_interval
            .max(Duration::from_millis(10));
        Ok(futures::stream::unfold(
            (pool, None::<i64>, true),
            move |(pool, last, first)| async move {
                loop {
                    if !first || last.is_some() {
                        tokio::time::sleep(interval).await;
                    }
                    if let Some(position) = head(&pool).await {
                        if Some(position) != last {
                            return Some((position, (pool, Some(position), false)));
                        }
                    }
                }
            },
        ))
    }
}
