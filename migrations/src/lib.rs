//! Aula's database schema. This crate is the only place the schema changes: every
//! change is a new numbered file in `migrations/sql/`, embedded in the binary at build
//! time and applied at start-up (`aula serve`) or by `aula migrate`.
//!
//! **Invariant:** a migration that has landed is never edited; sqlx checks the stored
//! checksum and refuses to start when a file changed.
#![forbid(unsafe_code)]

/// The embedded migrations, in file-name order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql");

/// Applies every migration not yet applied. Safe to run concurrently from several
/// processes: sqlx takes an advisory lock for the duration.
pub async fn run(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Number of migrations this binary knows; `/ready` compares it with the database.
pub fn count() -> usize {
    MIGRATOR.iter().count()
}
