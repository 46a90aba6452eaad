//! The `aula` application: configuration, start-up and shutdown of the parts
//! (API, projections, processor) and the one-off commands. `main.rs` only parses the
//! command line and calls [`run`].

pub mod admin;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod database;
pub mod projections;
pub mod serve;

use anyhow::Context;
use cli::{AdminCommand, BenchCommand, Cli, Command, EventsCommand, LogFormat};

/// Runs the command the user asked for (`serve` when none).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.global.log_format);
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
    runtime.block_on(async move {
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
                BenchCommand::Tasks {
                    tasks,
                    worker_sets,
                    concurrency,
                } => bench::tasks(&cli.global, tasks, worker_sets, concurrency).await,
                BenchCommand::Latency { events } => bench::latency(&cli.global, events).await,
            },
            Command::Events { .. } => Ok(()),
        }
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,aula_eventlog::local_pg=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling run twice) is harmless: ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
