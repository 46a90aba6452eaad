//! The throwaway database of one benchmark run.

use aula_eventlog::local_pg::{create_database_if_missing, LocalPgOptions, LocalPostgres};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

use crate::Settings;

/// A throwaway database for one benchmark run.
pub struct BenchDatabase {
    pub pool: PgPool,
    pub connect: PgConnectOptions,
    admin: PgConnectOptions,
    pub(crate) name: String,
    local: Option<LocalPostgres>,
}

impl BenchDatabase {
    pub async fn create(settings: &Settings) -> anyhow::Result<BenchDatabase> {
        let (admin, local) = match &settings.database_url {
            Some(url) => (url.parse::<PgConnectOptions>()?.database("postgres"), None),
            None => {
                let mut options = LocalPgOptions::new(settings.data_dir.join("bench-postgres"));
                options.database = "postgres".into();
                let local =
                    tokio::task::spawn_blocking(move || LocalPostgres::start(&options)).await??;
                (local.connect_options(), Some(local))
            }
        };
        let name = format!("aula_bench_{}", Uuid::new_v4().simple());
        create_database_if_missing(admin.clone(), &name, None).await?;
        let connect = admin.clone().database(&name);
        let pool = aula_eventlog::db::pool(connect.clone(), 48).await?;
        aula_eventlog::db::migrate(&pool).await?;
        Ok(BenchDatabase {
            pool,
            connect,
            admin,
            name,
            local,
        })
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut conn = self.admin.connect().await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        if let Some(local) = self.local {
            tokio::task::spawn_blocking(move || local.stop()).await?;
        }
        Ok(())
    }
}
