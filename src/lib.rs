//! The `aula` application: configuration, start-up and shutdown of the parts
//! (API, projections, processor) and the one-off commands. `main.rs` only parses the
//! command line and calls [`run`].

pub mod admin;
pub mod bench;
pub mod bench_broker;
pub mod catalog;
pub mod cli;
pub mod database;
pub mod projections;
pub mod serve;
pub mod telemetry;

use anyhow::Context;
use cli::{AdminCommand, BenchCommand, Cli, Command, EventsCommand};

/// Runs the command the user asked for (`serve` when none).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let telemetry = telemetry::Telemetry::init(cli.global.log_format);
    let command = cli
        .command
        .unwrap_or(Command::Serve(cli::ServeArgs::default()));
    if let Command::Events {
        command: EventsCommand::Catalog,
    } = command
    {
        // Byte for byte what docs/events.md holds: no trailing newline added.
        print!("{}", catalog::markdown());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        match command {
            Command::Serve(args) => {
                serve::serve(&cli.global, &args, serve::shutdown_signal()).await
            }
            Command::Migrate => {
                let database = database::Database::open(
                    cli.global.database_url.as_deref(),
                    &cli.global.data_dir,
                )
                .await?;
                let pool = aula_eventlog::db::pool(database.connect.clone(), 2).await?;
                aula_eventlog::db::migrate(&pool)
                    .await
                    .context("applying migrations")?;
                tracing::info!(
                    migrations = aula_migrations::count(),
                    "database schema is up to date"
                );
                pool.close().await;
                database.close().await;
                Ok(())
            }
            Command::Projections { command } => projections::run(&cli.global, command).await,
            Command::Admin {
                command: AdminCommand::Create { email },
            } => admin::create(&cli.global, &email).await,
            Command::Bench { command } => match command {
                BenchCommand::Append { seconds } => bench::append(&cli.global, seconds).await,
                BenchCommand::Log { events } => bench::log(&cli.global, events).await,
                BenchCommand::Rebuild { events } => bench::rebuild(&cli.global, events).await,
                BenchCommand::ListQuery {
                    events,
                    samples,
                    pages,
                    reuse_database,
                    keep,
                } => {
                    let options = aula_projections::list_bench::ListBenchOptions {
                        events,
                        samples,
                        pages,
                        ..Default::default()
                    };
                    bench::list_query(&cli.global, options, reuse_database, keep).await
                }
                BenchCommand::Tasks {
                    tasks,
                    processes,
                    concurrency,
                    claim_batch,
                    issued_by_events,
                } => {
                    let claim_batch = claim_batch.unwrap_or(concurrency as i64);
                    bench::tasks(
                        &cli.global,
                        tasks,
                        processes,
                        concurrency,
                        claim_batch,
                        issued_by_events,
                    )
                    .await
                }
                BenchCommand::TaskWorker {
                    database,
                    name,
                    concurrency,
                    claim_batch,
                } => {
                    bench::task_worker(&cli.global, &database, name, concurrency, claim_batch).await
                }
                BenchCommand::Latency { events } => bench::latency(&cli.global, events).await,
                BenchCommand::Broker {
                    events,
                    latency_events,
                } => bench_broker::run(&cli.global, events, latency_events).await,
                BenchCommand::Webhooks {
                    messages,
                    samples,
                    concurrency,
                } => bench::webhooks(&cli.global, messages, samples, concurrency).await,
                BenchCommand::Rush {
                    applicants,
                    courses,
                } => bench::rush(&cli.global, applicants, courses).await,
            },
            Command::Events { .. } => Ok(()),
        }
    });
    // Spans still buffered go out before the process ends.
    drop(runtime);
    telemetry.shutdown();
    result
}
