//! `aula projections status|rebuild`.

use crate::cli::{GlobalArgs, ProjectionsCommand};
use crate::database::Database;

pub async fn run(global: &GlobalArgs, command: ProjectionsCommand) -> anyhow::Result<()> {
    let database = Database::open(global.database_url.as_deref(), &global.data_dir).await?;
    let pool = aula_eventlog::db::pool(database.connect.clone(), 4).await?;
    aula_eventlog::db::migrate(&pool).await?;
    let result = match command {
        ProjectionsCommand::Status => status(&pool).await,
        ProjectionsCommand::Rebuild { name, all } => {
            let names: Vec<&str> = if all {
                aula_projections::NAMES.to_vec()
            } else {
                name.as_deref().into_iter().collect()
            };
            rebuild(&pool, database.connect.clone(), &names).await
        }
    };
    pool.close().await;
    database.close().await;
    result
}

async fn status(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    println!(
        "{:<20} {:>10} {:>10} {:>10}  last error",
        "projection", "position", "lag", "lag (s)"
    );
    for status in aula_projections::status(pool).await? {
        println!(
            "{:<20} {:>10} {:>10} {:>10.1}  {}",
            status.name,
            status.position,
            status.lag_events,
            status.lag_seconds,
            match (&status.last_error, status.failed_position) {
                (Some(error), Some(at)) => format!("at event {at}: {error}"),
                (Some(error), None) => error.clone(),
                _ => "-".into(),
            }
        );
    }
    Ok(())
}

async fn rebuild(
    pool: &sqlx::PgPool,
    connect: sqlx::postgres::PgConnectOptions,
    names: &[&str],
) -> anyhow::Result<()> {
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    // Progress while it runs, from the same table the GraphQL query reads.
    let progress_pool = pool.clone();
    let progress = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut done_rx => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
            if let Ok(rows) = aula_projections::rebuild_progress(&progress_pool).await {
                for row in rows.iter().filter(|r| r.state != "done") {
                    eprintln!(
                        "  {}: position {}, {} events done, {:.0} events/s, {} remaining",
                        row.name,
                        row.position,
                        row.events_done,
                        row.events_per_second,
                        row.remaining
                    );
                }
            }
        }
    });
    let reports = aula_projections::rebuild_many(pool, connect, names)
        .await
        .map_err(|e| anyhow::anyhow!("rebuild failed: {e}"));
    let _ = done_tx.send(());
    let _ = progress.await;
    for report in reports? {
        println!(
            "rebuilt {:<20} {:>9} events up to position {} in {:.2} s ({:.0} events/s)",
            report.name, report.events, report.position, report.seconds, report.events_per_second
        );
    }
    Ok(())
}
