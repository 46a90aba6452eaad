//! Rebuilding a read model from history while the live one keeps serving.
//!
//! 1. Copies of the projection's tables are created empty in a schema of their own,
//!    `rebuild_<name>` (`CREATE TABLE ... (LIKE live INCLUDING ALL)`, so the copies have
//!    every column, default and index the migrations declare).
//! 2. A fresh consumer fills them from position zero on a connection whose
//!    `search_path` puts that schema first: the handlers' SQL is the live one, unchanged.
//!    Progress is written to `projection_rebuilds` after every batch.
//! 3. One transaction swaps them in: it locks the subscription's checkpoint row (so the
//!    live subscription is between batches and stays there), catches up the last few
//!    events, carries over the columns other components own
//!    ([`crate::admin_events::PRESERVED_COLUMNS`]), moves the live tables out and the
//!    rebuilt ones in (`ALTER TABLE ... SET SCHEMA`), and sets the checkpoint to the
//!    rebuilt position.
//! 4. The live subscription's next batch finds the checkpoint moved (its compare-and-set
//!    fence), reloads it and continues from there on the new tables.
//!
//! **Invariant:** readers never see a half-built table: the swap is one transaction,
//! and until it commits every query reads the live tables.

use std::time::Instant;

use aula_eventlog::log::{read_batch, LogPosition, RecordedEvent};
use aula_eventlog::subscription::error_chain;
use aula_eventlog::Consumer;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::admin_events;

/// Events read and handled per transaction while rebuilding.
pub const REBUILD_BATCH: i64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the projection failed on the event at position {global_position}: {message}")]
    Consumer {
        global_position: i64,
        message: String,
    },
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildReport {
    pub name: String,
    pub events: i64,
    pub position: i64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// The latest rebuild of a projection, from `projection_rebuilds`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildProgress {
    pub name: String,
    /// `running`, `swapping`, `done` or `failed`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
    pub events_done: i64,
    pub events_per_second: f64,
    /// Events in the log after `position` (an estimate while running; 0 when done).
    pub remaining: i64,
    pub error: Option<String>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Rebuilds the projection `name` (one of [`crate::NAMES`]) and swaps it in. Runs on
/// its own connection, made with `connect`; `pool` only records failures.
pub async fn rebuild(
    pool: &PgPool,
    connect: PgConnectOptions,
    name: &str,
) -> Result<RebuildReport, RebuildError> {
    let tables = crate::tables(name).ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
    let consumer =
        crate::consumer(name).ok_or_else(|| RebuildError::UnknownProjection(name.into()))?;
    let mut conn = PgConnection::connect_with(
        &aula_eventlog::db::session_options(connect)
            .application_name(&format!("aula rebuild {name}")),
    )
    .await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended('aula.rebuild/' || $1, 0))",
    )
    .bind(name)
    .fetch_one(&mut conn)
    .await?;
    if !locked {
        return Err(RebuildError::AlreadyRunning(name.into()));
    }
    let shadow = format!("rebuild_{name}");
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let result = run(&mut conn, consumer, name, &tables, &shadow).await;
    if let Err(error) = &result {
        tracing::error!(projection = name, %error, "rebuild failed");
        let _ = sqlx::query(
            "UPDATE projection_rebuilds SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(error.to_string())
        .execute(pool)
        .await;
        // The shadow tables are worthless now; the connection may be broken, so use the pool.
        let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(&shadow));
        let _ = pool.execute(drop.as_str()).await;
    }
    let _ = conn.close().await;
    result
}

async fn run(
    conn: &mut PgConnection,
    mut consumer: Box<dyn Consumer>,
    name: &str,
    tables: &[String],
    shadow: &str,
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let live: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *conn)
        .await?;
    let mut ddl = format!(
        "DROP SCHEMA IF EXISTS {shadow} CASCADE; CREATE SCHEMA {shadow};",
        shadow = quote(shadow)
    );
    for table in tables {
        ddl.push_str(&format!(
            "CREATE TABLE {shadow}.{table} (LIKE {live}.{table} INCLUDING ALL);",
            shadow = quote(shadow),
            live = quote(&live),
            table = quote(table)
        ));
    }
    ddl.push_str(&format!(
        "SET search_path TO {}, {};",
        quote(shadow),
        quote(&live)
    ));
    (&mut *conn).execute(ddl.as_str()).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO projection_rebuilds (name, state, started_at, updated_at, events_total)
         VALUES ($1, 'running', now(), now(), $2)
         ON CONFLICT (name) DO UPDATE SET state = 'running', started_at = now(), updated_at = now(),
             finished_at = NULL, global_position = 0, events_done = 0, events_total = $2,
             events_per_second = 0, error = NULL",
    )
    .bind(name)
    .bind(total)
    .execute(&mut *conn)
    .await?;

    let mut position = LogPosition::START;
    let mut done = 0i64;
    let mut last_recorded_at = None;
    loop {
        let batch = read_batch(conn, position, REBUILD_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let mut tx = conn.begin().await?;
        apply(&mut *consumer, &mut tx, &batch).await?;
        done += batch.len() as i64;
        if let Some(last) = batch.last() {
            position = last.position;
            last_recorded_at = Some(last.recorded_at);
        }
        sqlx::query(
            "UPDATE projection_rebuilds SET global_position = $2, events_done = $3,
                 events_per_second = $4, updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(position.global_position)
        .bind(done)
        .bind(done as f64 / started.elapsed().as_secs_f64().max(1e-6))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }

    // The swap.
    sqlx::query("UPDATE projection_rebuilds SET state = 'swapping', updated_at = now() WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let mut tx = conn.begin().await?;
    sqlx::query("INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    // Waits for the live subscription's batch in flight, and holds off the next one.
    sqlx::query("SELECT 1 FROM subscription_checkpoints WHERE name = $1 FOR UPDATE")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    // Writers of the live tables (the processor's columns) wait until the swap is done;
    // readers go on.
    for table in tables {
        let lock = format!(
            "LOCK TABLE {}.{} IN EXCLUSIVE MODE",
            quote(&live),
            quote(table)
        );
        (&mut *tx).execute(lock.as_str()).await?;
    }
    loop {
        let batch = read_batch(&mut tx, position, REBUILD_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        apply(&mut *consumer, &mut tx, &batch).await?;
        done += batch.len() as i64;
        if let Some(last) = batch.last() {
            position = last.position;
            last_recorded_at = Some(last.recorded_at);
        }
    }
    if name == admin_events::NAME {
        let assignments: Vec<String> = admin_events::PRESERVED_COLUMNS
            .iter()
            .map(|c| format!("{c} = l.{c}", c = quote(c)))
            .collect();
        let carry = format!(
            "UPDATE {shadow}.admin_events s SET {} FROM {live}.admin_events l WHERE s.event_id = l.event_id",
            assignments.join(", "),
            shadow = quote(shadow),
            live = quote(&live),
        );
        (&mut *tx).execute(carry.as_str()).await?;
    }
    let retired = quote(&format!("retired_{name}"));
    let mut ddl = format!("DROP SCHEMA IF EXISTS {retired} CASCADE; CREATE SCHEMA {retired};");
    for table in tables {
        ddl.push_str(&format!(
            "ALTER TABLE {live}.{table} SET SCHEMA {retired}; ALTER TABLE {shadow}.{table} SET SCHEMA {live};",
            live = quote(&live),
            shadow = quote(shadow),
            table = quote(table)
        ));
    }
    ddl.push_str(&format!(
        "DROP SCHEMA {retired} CASCADE; DROP SCHEMA {shadow};",
        shadow = quote(shadow)
    ));
    (&mut *tx).execute(ddl.as_str()).await?;
    sqlx::query(
        "UPDATE subscription_checkpoints
         SET tx_id = $2::text::xid8, global_position = $3, events_handled = $4,
             last_event_at = $5, updated_at = now(), last_error = NULL, failed_position = NULL,
             failing_since = NULL, attempts = 0
         WHERE name = $1",
    )
    .bind(name)
    .bind(position.tx_id.to_string())
    .bind(position.global_position)
    .bind(done)
    .bind(last_recorded_at)
    .execute(&mut *tx)
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let events_per_second = done as f64 / seconds.max(1e-6);
    sqlx::query(
        "UPDATE projection_rebuilds SET state = 'done', finished_at = now(), updated_at = now(),
             global_position = $2, events_done = $3, events_per_second = $4 WHERE name = $1",
    )
    .bind(name)
    .bind(position.global_position)
    .bind(done)
    .bind(events_per_second)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(projection = name, events = done, seconds, events_per_second, "rebuilt");
    Ok(RebuildReport {
        name: name.into(),
        events: done,
        position: position.global_position,
        seconds,
        events_per_second,
    })
}

async fn apply(
    consumer: &mut dyn Consumer,
    tx: &mut PgConnection,
    batch: &[RecordedEvent],
) -> Result<(), RebuildError> {
    consumer
        .handle(tx, batch)
        .await
        .map_err(|error| RebuildError::Consumer {
            global_position: batch.first().map_or(0, |e| e.global_position()),
            message: error_chain(&*error),
        })
}

type ProgressRow = (
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    i64,
    i64,
    f64,
    i64,
    Option<String>,
);

/// The latest rebuild of every projection that was ever rebuilt, by name.
pub async fn rebuild_progress(pool: &PgPool) -> Result<Vec<RebuildProgress>, sqlx::Error> {
    let rows: Vec<ProgressRow> = sqlx::query_as(
        "SELECT r.name, r.state, r.started_at, r.finished_at, r.updated_at, r.global_position,
                r.events_done, r.events_per_second,
                CASE WHEN r.state = 'done' THEN 0
                     ELSE (SELECT count(*) FROM events e WHERE e.global_position > r.global_position) END,
                r.error
         FROM projection_rebuilds r ORDER BY r.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                name,
                state,
                started_at,
                finished_at,
                updated_at,
                position,
                events_done,
                events_per_second,
                remaining,
                error,
            )| RebuildProgress {
                name,
                state,
                started_at,
                finished_at,
                updated_at,
                position,
                events_done,
                events_per_second,
                remaining,
                error,
            },
        )
        .collect())
}
