//! The physical floor of a rebuild, which `aula bench rebuild` prints beside it.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;

/// What [`rebuild_floor`] measured.
pub(crate) struct Floor {
    pub(crate) load_seconds: f64,
    pub(crate) index_seconds: f64,
    pub(crate) indexes: usize,
}

impl Floor {
    pub(crate) fn total(&self) -> f64 {
        self.load_seconds + self.index_seconds
    }
}

/// The physical floor of a rebuild (issue #20): the rows the rebuild just wrote, written
/// again by `INSERT ... SELECT` into empty copies of their tables that keep only their
/// constraint indexes (as the rebuild's shadow tables do), the tables shared by two
/// sessions, then every other index built by two sessions, the GIN indexes and then the
/// largest tables' first, with the rebuild's session settings. A rebuild cannot go below it without writing fewer rows or
/// fewer indexes; the rebuild's own time on top of it is the log read, the decoding and
/// the projections' logic.
pub(crate) async fn rebuild_floor(pool: &PgPool, tables: &[&str]) -> anyhow::Result<Floor> {
    const SCHEMA: &str = "aula_bench_floor";
    const SETTINGS: &str = "SET synchronous_commit = off; SET maintenance_work_mem = '256MB'";
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}"
    ))
    .execute(pool)
    .await?;
    // Largest first, so the two sessions finish close together.
    let mut sized: Vec<(String, i64)> = Vec::new();
    for table in tables {
        let size: i64 = sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
            .bind(format!("public.{table}"))
            .fetch_one(pool)
            .await?;
        sized.push((table.to_string(), size));
        sqlx::raw_sql(&format!(
            "CREATE TABLE {SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(pool)
        .await?;
    }
    sized.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    // The indexes a rebuild defers (all but the constraints'), dropped now, built later:
    // the longest builds first, as the rebuild orders them (the GIN indexes, then the
    // largest tables'), so the floor is not longer than it need be.
    let deferred: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid)
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_am am ON am.oid = c.relam
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
         ORDER BY am.amname = 'gin' DESC, pg_relation_size(i.indrelid) DESC",
    )
    .bind(SCHEMA)
    .fetch_all(pool)
    .await?;
    for (name, _) in &deferred {
        sqlx::raw_sql(&format!("DROP INDEX {SCHEMA}.{name}"))
            .execute(pool)
            .await?;
    }
    let mut statements: Vec<String> = Vec::new();
    for (table, _) in &sized {
        let columns: String = sqlx::query_scalar(
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
             WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
        )
        .bind(format!("public.{table}"))
        .fetch_one(pool)
        .await?;
        statements.push(format!(
            "INSERT INTO {SCHEMA}.{table} ({columns}) SELECT {columns} FROM public.{table}"
        ));
    }
    let started = Instant::now();
    run_on_two_sessions(pool, SETTINGS, statements).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    let indexes = deferred.len();
    let started = Instant::now();
    run_on_two_sessions(
        pool,
        SETTINGS,
        deferred.into_iter().map(|(_, ddl)| ddl).collect(),
    )
    .await?;
    let index_seconds = started.elapsed().as_secs_f64();
    sqlx::raw_sql(&format!("DROP SCHEMA {SCHEMA} CASCADE"))
        .execute(pool)
        .await?;
    Ok(Floor {
        load_seconds,
        index_seconds,
        indexes,
    })
}

/// Runs `statements` in their order on two sessions that each take the next one.
async fn run_on_two_sessions(
    pool: &PgPool,
    settings: &str,
    statements: Vec<String>,
) -> anyhow::Result<()> {
    let queue = Arc::new(std::sync::Mutex::new(statements.into_iter()));
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (pool, queue, settings) = (pool.clone(), queue.clone(), settings.to_owned());
        sessions.push(tokio::spawn(async move {
            use sqlx::Executor as _;
            let mut conn = pool.acquire().await?;
            conn.execute(settings.as_str()).await?;
            loop {
                let next = queue.lock().expect("the queue's lock").next();
                let Some(sql) = next else { break };
                conn.execute(sql.as_str()).await?;
            }
            conn.execute("RESET ALL").await?;
            anyhow::Ok(())
        }));
    }
    for session in sessions {
        session.await??;
    }
    Ok(())
}
