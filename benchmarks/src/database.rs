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

    /// Writes `events` realistic `EnrollmentRequested` events, 100 per course stream, one
    /// transaction per 100,000, then `ANALYZE`s them; `institution`, if any, is named in
    /// every event's metadata. Returns the last event's global position.
    pub async fn write_enrollment_requests(
        &self,
        events: i64,
        institution: Option<&str>,
    ) -> anyhow::Result<i64> {
        let institution = institution
            .map(|id| format!(", 'institution_id', '{id}'"))
            .unwrap_or_default();
        let insert = format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'course', 'course-' || (g / 100), g % 100 + 1, 'EnrollmentRequested', '1.0',
                    json_build_object('type', 'EnrollmentRequested', 'application_id', gen_random_uuid(),
                                      'name', 'Applicant ' || g, 'birth_date', '2001-04-12',
                                      'email', 'applicant' || g || '@example.edu', 'requested_at', now()),
                    json_build_object('actor', 'public', 'correlation_id', gen_random_uuid(), 'causation_id', 'request'{institution})
             FROM generate_series($1::bigint, $2::bigint) AS g"
        );
        let chunk = 100_000i64;
        let mut written = 0i64;
        while written < events {
            let count = chunk.min(events - written);
            sqlx::query(&insert)
                .bind(written)
                .bind(written + count - 1)
                .execute(&self.pool)
                .await?;
            written += count;
        }
        sqlx::query("ANALYZE events").execute(&self.pool).await?;
        let last = sqlx::query_scalar("SELECT max(global_position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last)
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
