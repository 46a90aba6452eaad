//! The `aula` application: configuration, start-up and shutdown of the parts
//! (API, projections, processor) and the one-off commands. `main.rs` only parses the
//! command line and calls [`run`].

pub mod admin;
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
    // No subcommand is `serve`, with its settings from the environment exactly as
    // `aula serve` reads them: the README's run command honours AULA_HTTP_ADDR,
    // AULA_TOKEN_SECRET, AULA_TRUSTED_PROXIES and the rest.
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(cli::ServeArgs::from_env()));
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
            Command::Bench { command } => bench(&cli.global, command).await,
            Command::Events { .. } => Ok(()),
        }
    });
    // Spans still buffered go out before the process ends.
    drop(runtime);
    telemetry.shutdown();
    result
}

/// `aula bench ...`: the command line's side; the benchmarks live in `aula-bench`.
async fn bench(global: &cli::GlobalArgs, command: BenchCommand) -> anyhow::Result<()> {
    let settings = aula_bench::Settings {
        database_url: global.database_url.clone(),
        data_dir: global.data_dir.clone(),
        log_format: match global.log_format {
            cli::LogFormat::Text => "text",
            cli::LogFormat::Json => "json",
        },
    };
    let settings = &settings;
    match command {
        BenchCommand::Append { seconds } => aula_bench::append::run(settings, seconds).await,
        BenchCommand::Log { events, rounds } => {
            aula_bench::log::run(settings, events, rounds).await
        }
        BenchCommand::Rebuild { events } => aula_bench::rebuild::run(settings, events).await,
        BenchCommand::ListQuery {
            events,
            samples,
            pages,
            reuse_database,
            keep,
        } => {
            let options = aula_bench::lists::ListBenchOptions {
                events,
                samples,
                pages,
                ..Default::default()
            };
            aula_bench::lists::run(settings, options, reuse_database, keep).await
        }
        BenchCommand::Tasks {
            tasks,
            processes,
            concurrency,
            claim_batch,
            issued_by_events,
        } => {
            let claim_batch = claim_batch.unwrap_or(concurrency as i64);
            aula_bench::tasks::run(
                settings,
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
            aula_bench::tasks::task_worker(settings, &database, name, concurrency, claim_batch)
                .await
        }
        BenchCommand::Latency { events } => aula_bench::latency::run(settings, events).await,
        BenchCommand::Broker {
            events,
            latency_events,
        } => aula_bench::broker::run(settings, events, latency_events).await,
        BenchCommand::Webhooks {
            messages,
            samples,
            concurrency,
        } => aula_bench::webhooks::run(settings, messages, samples, concurrency).await,
        BenchCommand::Rush {
            applicants,
            courses,
        } => aula_bench::rush::run(settings, applicants, courses).await,
    }
}
