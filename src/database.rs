//! Finding the database: `DATABASE_URL` when given, else the private PostgreSQL.

use std::path::Path;
use std::str::FromStr;

use std::time::Duration;

use anyhow::Context;
use aula_eventlog::local_pg::{LocalPgOptions, LocalPostgres};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

/// The database in use, and the private server behind it if we started one.
pub struct Database {
    pub connect: PgConnectOptions,
    pub local: Option<LocalPostgres>,
}

impl Database {
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Database> {
        if let Some(url) = database_url {
            let connect = PgConnectOptions::from_str(url)
                .context("DATABASE_URL is not a valid PostgreSQL URL")?;
            check_reachable(&connect).await?;
            return Ok(Database {
                connect,
                local: None,
            });
        }
        let mut options = LocalPgOptions::new(data_dir.join("postgres"));
        if let Some(tries) = std::env::var("AULA_PG_MAX_RESTARTS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            options.max_restarts = tries;
        }
        tracing::info!(data_dir = %options.data_dir.display(), "no DATABASE_URL: starting a private PostgreSQL");
        let local = tokio::task::spawn_blocking(move || LocalPostgres::start(&options))
            .await
            .context("the PostgreSQL start-up thread panicked")??;
        tracing::info!(url = %local.url(), "private PostgreSQL ready (connect with psql using this URL)");
        Ok(Database {
            connect: local.connect_options(),
            local: Some(local),
        })
    }

    /// Resolves, with the reason, if the private server died and could not be
    /// restarted (see `LocalPostgres::failed`); never with `DATABASE_URL` (whoever runs
    /// that server supervises it).
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let failed = self.local.as_ref().map(|local| local.failed());
        async move {
            match failed {
                Some(failed) => failed.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Stops the private server, if any, after everything else has stopped.
    pub async fn close(self) {
        if let Some(local) = self.local {
            let stopped = tokio::task::spawn_blocking(move || local.stop()).await;
            if matches!(stopped, Ok(true)) {
                tracing::info!("private PostgreSQL stopped");
            }
        }
    }
}

/// How long the first connection to `DATABASE_URL` may take before start-up gives up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// Connects once, so that a database that cannot be reached is reported at once with
/// its cause (refused, unknown host, authentication) and where it was looked for,
/// rather than as a pool timing out. The password is never part of the message.
async fn check_reachable(options: &PgConnectOptions) -> anyhow::Result<()> {
    let location = match options.get_socket() {
        Some(socket) => format!("socket {}", socket.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let database = options.get_database().unwrap_or(options.get_username());
    let described = format!(
        "PostgreSQL at {location} (database {database:?}, user {:?}, from DATABASE_URL)",
        options.get_username()
    );
    match tokio::time::timeout(CONNECT_PATIENCE, options.connect()).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(anyhow::anyhow!("cannot connect to {described}: {error}")),
        Err(_) => Err(anyhow::anyhow!(
            "cannot connect to {described}: no answer within {} s",
            CONNECT_PATIENCE.as_secs()
        )),
    }
}
