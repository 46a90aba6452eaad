//! Connecting to the database: settings every connection of ours carries.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Our session settings. A transaction left idle (a bug, a stalled client) would hold
/// back every log reader, which waits for all older transactions to end; the server
/// ends such a session after 60 s instead.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("idle_in_transaction_session_timeout", "60s"),
        ("lock_timeout", "30s"),
    ])
}

/// A pool for request handling and workers.
pub async fn pool(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(session_options(options))
        .await
}

/// Applies the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    aula_migrations::run(pool).await
}
