//! `aula bench latency`: event commit -> task start, and task insert -> task start, of
//! events appended one at a time.

use std::time::Duration;

use aula_domain::event_types;
use aula_eventlog::shutdown;
use aula_eventlog::Wakeups;
use aula_processor::config::ProcessorConfig;
use aula_processor::handlers::{Noop, Registry};
use aula_processor::reactions::{kinds_for, reactions_options, spawn_reactions_with};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::stats::Percentiles;
use crate::{BenchDatabase, Settings};

#[derive(Debug, Clone, Copy)]
pub struct BenchLatencyReport {
    pub events: usize,
    /// Event commit (its `recorded_at`) -> task start.
    pub event_to_task_start: Percentiles,
    /// Task insert (`created_at`) -> task start.
    pub task_insert_to_start: Percentiles,
}

/// Appends `events` events one at a time (an event type the reactions map to one task,
/// handled as a no-op), each awaited until its task has started, and reports the
/// latencies measured with the database clock.
pub async fn bench_latency(
    pool: &PgPool,
    connect: PgConnectOptions,
    events: usize,
) -> Result<BenchLatencyReport, sqlx::Error> {
    let (trigger, shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(pool, shutdown.clone()).await?;
    let mut options = reactions_options();
    options.batch_size = 100;
    let reactions = spawn_reactions_with(connect, options, wakeups, shutdown.clone());
    let mut registry = Registry::new();
    for kind in kinds_for(event_types::TEACHER_CREATED) {
        registry.register(kind.name(), Noop);
    }
    let config = ProcessorConfig {
        worker_name: "bench-latency".into(),
        concurrency: 4,
        ..ProcessorConfig::default()
    };
    let workers = tokio::spawn(aula_processor::worker::run_workers(
        pool.clone(),
        config,
        registry,
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut event_to_start = Vec::with_capacity(events);
    let mut insert_to_start = Vec::with_capacity(events);
    for _ in 0..events {
        let event_id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('bench', gen_random_uuid()::text, 1, 'TeacherCreated', '1.0', '{}', '{}')
             RETURNING event_id",
        )
        .fetch_one(pool)
        .await?;
        // What CommandBus does after every append: wake the log's subscribers.
        aula_eventlog::store::notify_now(pool).await?;
        loop {
            let row: Option<(f64, f64)> = sqlx::query_as(
                "SELECT extract(epoch FROM t.started_at - e.recorded_at)::float8 * 1000,
                        extract(epoch FROM t.started_at - t.created_at)::float8 * 1000
                 FROM tasks t JOIN events e ON e.event_id = t.event_id
                 WHERE t.event_id = $1 AND t.started_at IS NOT NULL",
            )
            .bind(event_id)
            .fetch_optional(pool)
            .await?;
            if let Some((a, b)) = row {
                event_to_start.push(a);
                insert_to_start.push(b);
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    trigger.trigger();
    let _ = reactions.task.await;
    let _ = workers.await;
    Ok(BenchLatencyReport {
        events,
        event_to_task_start: Percentiles::of(event_to_start),
        task_insert_to_start: Percentiles::of(insert_to_start),
    })
}

pub async fn run(settings: &Settings, events: usize) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
    let report = bench_latency(&db.pool, db.connect.clone(), events).await?;
    println!("aula bench latency: {} sequential events", report.events);
    println!(
        "  event commit -> task start (ms): {}",
        report.event_to_task_start
    );
    println!(
        "  task insert  -> task start (ms): {}",
        report.task_insert_to_start
    );
    db.drop_database().await
}
