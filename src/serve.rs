//! `aula serve`: the service's parts in one process, started in order and stopped in
//! reverse: first stop taking work (HTTP, subscriptions), drain, then the database.

use std::future::Future;

use anyhow::Context;
use aula_eventlog::shutdown::{self, Shutdown};
use aula_eventlog::Wakeups;

use crate::cli::{GlobalArgs, Part, ServeArgs};
use crate::database::Database;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested: draining");
}

/// Runs until `stop` resolves, then shuts down cleanly.
pub async fn serve(
    global: &GlobalArgs,
    args: &ServeArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runs = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let database = Database::open(global.database_url.as_deref(), &global.data_dir).await?;
    let pool = aula_eventlog::db::pool(database.connect.clone(), 32)
        .await
        .context("connecting to PostgreSQL")?;
    aula_eventlog::db::migrate(&pool)
        .await
        .context("applying migrations")?;

    let (trigger, shutdown): (_, Shutdown) = shutdown::channel();
    let _wakeups = Wakeups::listen(&pool, shutdown.clone()).await?;
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();

    if runs(Part::Api) {
        tracing::info!(addr = %args.http_addr, "API part enabled");
    }
    if runs(Part::Projections) {
        tracing::info!("projections part enabled");
    }
    if runs(Part::Processor) {
        tracing::info!("processor part enabled");
    }

    stop.await;
    trigger.trigger();
    for task in tasks.drain(..) {
        let _ = task.await;
    }
    pool.close().await;
    database.close().await;
    tracing::info!("stopped");
    Ok(())
}
