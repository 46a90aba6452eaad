//! The LISTEN loop: one connection listening on a PostgreSQL channel, turning each
//! notification into a bump of a watch counter that any number of waiters share.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// LISTENs on `channel` on one connection of `pool` until `shutdown`; each notification
/// bumps the returned counter. The listener reconnects by itself; a lost connection or
/// an error bumps the counter too (notifications sent meanwhile are lost, so everyone
/// is woken to look for themselves).
pub async fn listen(
    pool: &PgPool,
    channel: &'static str,
    shutdown: Shutdown,
) -> Result<watch::Receiver<u64>, sqlx::Error> {
    listen_with(pool, channel, shutdown, |_| {}).await
}

/// [`listen`], handing each notification's payload to `each` before the counter is
/// bumped (`None` when the connection was lost or failed: notifications may have been
/// missed), so a waiter that sees the bump finds what it announced.
pub async fn listen_with(
    pool: &PgPool,
    channel: &'static str,
    mut shutdown: Shutdown,
    mut each: impl FnMut(Option<&str>) + Send + 'static,
) -> Result<watch::Receiver<u64>, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut counter = 0u64;
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = shutdown.wait() => return,
            };
            counter += 1;
            match received {
                Ok(Some(notification)) => each(Some(notification.payload())),
                Ok(None) => {
                    tracing::warn!(
                        channel,
                        "the notification connection was lost; reconnecting"
                    );
                    each(None);
                }
                Err(error) => {
                    tracing::warn!(%error, channel, "listening for notifications failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    each(None);
                }
            }
            if tx.send(counter).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
