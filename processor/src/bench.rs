//! What `aula bench tasks` (the `aula-bench` crate) needs from the processor: no-op
//! workers, and seeding and measuring the queue's tables, which only this crate names.
//! Measurements, not tests: nothing here asserts a target.

use std::time::{Duration, Instant};

use aula_eventlog::shutdown::Shutdown;
use serde_json::json;
use sqlx::PgPool;

use crate::config::ProcessorConfig;
use crate::handlers::{Noop, Registry};
use crate::kinds;
use crate::queue::{insert_tasks, NewTask};

/// One process's no-op workers (`aula bench tasks`'s worker processes): `ready` is
/// called once they claim (see [`crate::worker::run_workers_with_ready`]).
pub async fn run_noop_workers(
    pool: PgPool,
    worker_name: String,
    concurrency: usize,
    claim_batch: i64,
    shutdown: Shutdown,
    ready: impl FnOnce(),
) -> Result<(), sqlx::Error> {
    let mut registry = Registry::new();
    registry.register(kinds::NOOP, Noop);
    let config = ProcessorConfig {
        worker_name,
        concurrency,
        claim_batch: claim_batch.max(1),
        ..ProcessorConfig::default()
    };
    crate::worker::run_workers_with_ready(pool, config, registry, shutdown, ready).await
}

/// Inserts `count` no-op tasks in one statement; returns how long it took.
pub async fn insert_noop_tasks(pool: &PgPool, count: i64) -> Result<Duration, sqlx::Error> {
    let tasks: Vec<NewTask> = (0..count)
        .map(|i| NewTask::new(kinds::NOOP, format!("bench:{i}"), json!({})))
        .collect();
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    insert_tasks(&mut conn, &tasks).await?;
    Ok(started.elapsed())
}

/// [`insert_noop_tasks`], each task issued by an event of its own, as in production:
/// finishing one then also goes through [`crate::queue::complete`] and
/// [`crate::processing::record`] (the event's row in `admin_events`, its status, the
/// event counts). The events and their `admin_events` rows (what the log and the admin
/// projection hold by the time reactions issue tasks) are written first and not counted;
/// the returned time is the tasks' one INSERT.
pub async fn insert_event_noop_tasks(pool: &PgPool, count: i64) -> Result<Duration, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let events: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "WITH inserted AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'BenchTask', 'bench-' || g, 0, 'BenchTaskIssued', '1.0', '{}', '{}'
             FROM generate_series(1, $1) g
             RETURNING event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                       recorded_at, tx_id
         ), rows AS (
             INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
                                       sequence, recorded_at, tx_id)
             SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                    recorded_at, tx_id::text::bigint
             FROM inserted
         )
         SELECT event_id, event_type FROM inserted",
    )
    .bind(count)
    .fetch_all(&mut *conn)
    .await?;
    let tasks: Vec<NewTask> = events
        .into_iter()
        .map(|(event_id, event_type)| NewTask {
            event_id: Some(event_id),
            event_type: Some(event_type),
            ..NewTask::new(kinds::NOOP, format!("bench:{event_id}"), json!({}))
        })
        .collect();
    let started = Instant::now();
    insert_tasks(&mut conn, &tasks).await?;
    Ok(started.elapsed())
}

/// Tasks pending, retrying or running, from the status counts (a few rows, exact: they move in
/// the transactions that change the tasks), so that polling it costs the workers being
/// measured nothing, unlike a count over the tasks table.
pub async fn open_tasks(pool: &PgPool) -> Result<i64, sqlx::Error> {
    crate::processing::open_tasks(pool).await
}

/// Waits until [`open_tasks`] is 0, polling every 5 ms.
pub async fn wait_until_drained(pool: &PgPool) -> Result<(), sqlx::Error> {
    while open_tasks(pool).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Waits until every queued admin row refresh is done and no event is unfinished (in the
/// status counts), polling every 5 ms.
pub async fn wait_until_admin_caught_up(pool: &PgPool) -> Result<(), sqlx::Error> {
    loop {
        let caught_up: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM admin_event_refresh)
                    AND (SELECT COALESCE(sum(count), 0) FROM task_status_counts
                         WHERE kind = 'event' AND status IN ('pending', 'retrying')) = 0",
        )
        .fetch_one(pool)
        .await?;
        if caught_up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Attempt records written (after a run; counts the table).
pub async fn attempt_records(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM task_attempts")
        .fetch_one(pool)
        .await
}
