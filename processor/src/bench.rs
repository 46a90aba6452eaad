//! `aula bench tasks` and `aula bench latency`: measurements, not tests. They print
//! what they measured; nothing here asserts a target.
//!
//! Both run the worker sets inside this process (each set has its own listener,
//! claimer, completer and pool share, like a separate process would); starting real
//! processes is the caller's choice (`aula-worker`).

use std::time::{Duration, Instant};

use aula_eventlog::shutdown;
use aula_eventlog::{SubscriptionOptions, Wakeups};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::config::ProcessorConfig;
use crate::handlers::{Noop, Registry};
use crate::kinds;
use crate::queue::{insert_tasks, NewTask};
use crate::reactions::{kinds_for, spawn_reactions_with, REACTIONS_SUBSCRIPTION};

#[derive(Debug, Clone)]
pub struct BenchTasksReport {
    pub tasks: i64,
    pub insert: Duration,
    pub drain: Duration,
    pub tasks_per_second: f64,
    pub worker_sets: usize,
    pub concurrency: usize,
}

impl std::fmt::Display for BenchTasksReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} no-op tasks inserted in {:.2?}; drained by {} worker sets x {} concurrency in {:.2?}: {:.0} tasks/s (history kept)",
            self.tasks, self.insert, self.worker_sets, self.concurrency, self.drain, self.tasks_per_second
        )
    }
}

/// Inserts `count` no-op tasks in one statement, then drains them with `worker_sets` x
/// `concurrency` workers that were started beforehand on the empty queue (so their
/// start-up is not counted). The drain is timed from the insert's commit until no task
/// is pending or running.
pub async fn bench_tasks(
    pool: &PgPool,
    count: i64,
    worker_sets: usize,
    concurrency: usize,
) -> Result<BenchTasksReport, sqlx::Error> {
    let (trigger, shutdown) = shutdown::channel();
    let mut handles = Vec::new();
    for set in 0..worker_sets {
        let mut registry = Registry::new();
        registry.register(kinds::NOOP, Noop);
        let config = ProcessorConfig {
            worker_name: format!("bench-{set}"),
            concurrency,
            claim_batch: (concurrency as i64).max(1),
            ..ProcessorConfig::default()
        };
        handles.push(tokio::spawn(crate::worker::run_workers(
            pool.clone(),
            config,
            registry,
            shutdown.clone(),
        )));
    }
    // Let every set reach its first (empty) claim.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks: Vec<NewTask> = (0..count)
        .map(|i| NewTask::new(kinds::NOOP, format!("bench:{i}"), json!({})))
        .collect();
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    insert_tasks(&mut conn, &tasks).await?;
    drop(conn);
    let insert = started.elapsed();
    let drain_start = Instant::now();
    // Polled with EXISTS on the partial claim and lease indexes: counting 200,000 rows
    // every few milliseconds would take a core away from the workers being measured.
    loop {
        let open: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending')
                 OR EXISTS (SELECT 1 FROM tasks WHERE status = 'running')",
        )
        .fetch_one(pool)
        .await?;
        if !open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = drain_start.elapsed();
    trigger.trigger();
    for handle in handles {
        let _ = handle.await;
    }
    Ok(BenchTasksReport {
        tasks: count,
        insert,
        drain,
        tasks_per_second: count as f64 / drain.as_secs_f64().max(1e-9),
        worker_sets,
        concurrency,
    })
}

/// Minimum, median, 99th percentile and maximum, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            min: samples[0],
            p50: at(0.5),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.min, self.p50, self.p99, self.max
        )
    }
}

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
    let mut options = SubscriptionOptions::new(REACTIONS_SUBSCRIPTION);
    options.batch_size = 100;
    let reactions = spawn_reactions_with(connect, options, wakeups, shutdown.clone());
    let mut registry = Registry::new();
    for kind in kinds_for("TeacherCreated") {
        registry.register(kind, Noop);
    }
    let config = ProcessorConfig {
        worker_name: "bench-latency".into(),
        concurrency: 4,
        ..ProcessorConfig::default()
    };
    let workers = tokio::spawn(crate::worker::run_workers(
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
