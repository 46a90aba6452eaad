//! A processor worker process: runs the task workers (no reactions, no API) until
//! SIGTERM or Ctrl-C, then drains. Used by the crash test, which starts several of
//! these on one database and SIGKILLs one. (`aula bench tasks` starts its worker
//! processes from the `aula` binary itself: `aula bench task-worker`.)
//!
//! Configuration: `DATABASE_URL` (required) and the `AULA_WORKER_*` / `AULA_TASK_*`
//! variables of `ProcessorConfig::from_env`. `AULA_WORKER_TEST_EFFECTS=1` registers the
//! `test.effect` kind, which records its effect in the tables `test_effects` and
//! `test_executions` (created by the test that inserts such tasks).

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use aula_processor::handlers::{Registry, TaskContext, TaskError, TaskHandler};
use aula_processor::{mail, MailConfig, ProcessorConfig};
use sqlx::postgres::PgConnectOptions;

pub const TEST_EFFECT: &str = "test.effect";

/// Records the attempt (`test_executions`, no key: duplicates would show) and the
/// effect (`test_effects`, one row per task), after a short pause so that a kill is
/// likely to land while tasks are running.
struct TestEffect;

#[async_trait::async_trait]
impl TaskHandler for TestEffect {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        sqlx::query("INSERT INTO test_executions (task_id, attempt, worker) VALUES ($1, $2, $3)")
            .bind(ctx.task.id)
            .bind(ctx.task.attempt)
            .bind(&ctx.worker)
            .execute(&ctx.pool)
            .await?;
        let pause = ctx
            .task
            .payload
            .get("sleep_ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        sqlx::query(
            "INSERT INTO test_effects (task_id, worker) VALUES ($1, $2) ON CONFLICT (task_id) DO NOTHING",
        )
        .bind(ctx.task.id)
        .bind(&ctx.worker)
        .execute(&ctx.pool)
        .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is required")?;
    let options =
        PgConnectOptions::from_str(&url).context("DATABASE_URL is not a PostgreSQL URL")?;
    let config = ProcessorConfig::from_env().context("invalid worker settings")?;
    // Our sessions carry the worker's name (the crash test waits for the killed one's
    // sessions to end).
    let options = options.application_name(&config.worker_name);
    let pool = aula_eventlog::db::pool(options, (config.concurrency as u32 + 4).min(64))
        .await
        .context("connecting to the database")?;
    let mail_config = MailConfig::from_env().context("invalid e-mail settings")?;
    let mailer: Arc<dyn mail::Mailer> = Arc::from(mail::from_config(&mail_config)?);
    let mut registry = Registry::standard(mailer, mail_config);
    if std::env::var("AULA_WORKER_TEST_EFFECTS").as_deref() == Ok("1") {
        registry.register(TEST_EFFECT, TestEffect);
    }
    let (trigger, shutdown) = aula_eventlog::shutdown::channel();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        trigger.trigger();
    });
    aula_processor::run_workers(pool, config, registry, shutdown).await?;
    Ok(())
}
