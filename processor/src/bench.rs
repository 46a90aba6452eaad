//! `aula bench tasks` and `aula bench latency`: measurements, not tests. They print
//! what they measured; nothing here asserts a target.
//!
//! The task benchmark's shape (issue 6): N no-op tasks inserted in one statement, then
//! drained by worker *processes*, history kept (attempt records). The binary starts
//! the processes (itself, with a hidden subcommand that calls [`run_noop_workers`]);
//! each reports ready once its workers made their first claim on the empty queue, so
//! their start-up is measured apart and not counted. The drain is timed from the
//! insert's commit until [`open_tasks`] is 0. [`bench_tasks`] is the same measurement
//! with the worker sets inside this process (the tests use it).

use std::time::{Duration, Instant};

use aula_domain::event_types;
use aula_eventlog::shutdown::{self, Shutdown};
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
    /// From starting the workers on the empty queue until every one reported ready
    /// (not counted in the throughput).
    pub startup: Duration,
    /// The one INSERT of every task (not counted).
    pub insert: Duration,
    /// From the insert's commit until no task is pending or running.
    pub drain: Duration,
    /// `tasks / drain`.
    pub tasks_per_second: f64,
    /// Worker processes (or sets, in one process).
    pub worker_sets: usize,
    pub concurrency: usize,
    pub claim_batch: i64,
    /// Separate OS processes, or sets inside one process.
    pub separate_processes: bool,
    /// Attempt records written (history kept: one per task).
    pub attempts: i64,
    /// Each task issued by an event of its own ([`insert_event_noop_tasks`]).
    pub issued_by_events: bool,
    /// CPU seconds spent during the drain by the worker processes and by the database
    /// server's processes, when they run on this machine (read from `/proc`).
    pub drain_cpu: Option<DrainCpu>,
    /// `/proc/loadavg` before the start-up and after the drain (others' load skews
    /// the figures; the CPU per task does not depend on it as much).
    pub load_before: String,
    pub load_after: String,
    /// With `issued_by_events`: from the end of the drain until every event's admin row
    /// had its final status (the refresher's lag behind the tasks at that moment).
    /// The CPU and WAL figures include it.
    pub admin_catch_up: Option<Duration>,
    /// WAL written from the insert's commit until the drain (and the admin rows'
    /// catch-up) ended, when measured.
    pub wal_bytes: Option<f64>,
}

/// CPU time spent during a drain.
#[derive(Debug, Clone, Copy)]
pub struct DrainCpu {
    pub workers_seconds: f64,
    pub database_seconds: f64,
    /// CPUs of this machine.
    pub cpus: usize,
}

/// The first three fields of `/proc/loadavg` (empty when unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl std::fmt::Display for BenchTasksReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape = if self.separate_processes {
            "worker processes"
        } else {
            "worker sets in one process"
        };
        writeln!(
            f,
            "{} no-op tasks{}, {} {shape} x {} concurrency (claims of at most {}), history kept ({} attempt records)",
            self.tasks,
            if self.issued_by_events { " each issued by an event" } else { "" },
            self.worker_sets,
            self.concurrency,
            self.claim_batch,
            self.attempts
        )?;
        writeln!(
            f,
            "  start-up on the empty queue: {:.3} s (not counted)",
            self.startup.as_secs_f64()
        )?;
        writeln!(
            f,
            "  insert, one statement:       {:.3} s (not counted)",
            self.insert.as_secs_f64()
        )?;
        writeln!(
            f,
            "  drain:                       {:.3} s",
            self.drain.as_secs_f64()
        )?;
        writeln!(
            f,
            "  throughput:                  {:.0} tasks/s",
            self.tasks_per_second
        )?;
        if let Some(catch_up) = self.admin_catch_up {
            writeln!(
                f,
                "  admin rows final:            {:.3} s after the drain (the admin view's lag then)",
                catch_up.as_secs_f64()
            )?;
        }
        if let Some(wal) = self.wal_bytes {
            writeln!(
                f,
                "  WAL:                         {:.0} MB = {:.0} bytes per task",
                wal / 1e6,
                wal / self.tasks.max(1) as f64
            )?;
        }
        if let Some(cpu) = self.drain_cpu {
            let total = cpu.workers_seconds + cpu.database_seconds;
            let per_task_us = total * 1e6 / self.tasks.max(1) as f64;
            writeln!(
                f,
                "  CPU during the drain:        {:.1} s workers + {:.1} s database = {:.0} us per task \
                 (at most {:.0} tasks/s if {} CPUs did nothing else)",
                cpu.workers_seconds,
                cpu.database_seconds,
                per_task_us,
                cpu.cpus as f64 * 1e6 / per_task_us.max(1e-9),
                cpu.cpus
            )?;
        }
        write!(
            f,
            "  load average before / after: {} / {}",
            self.load_before, self.load_after
        )
    }
}

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
    sqlx::query_scalar(
        "SELECT COALESCE(sum(count), 0)::bigint FROM task_status_counts
         WHERE kind = 'task' AND status IN ('pending', 'retrying', 'running')",
    )
    .fetch_one(pool)
    .await
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

/// The server's WAL position, in bytes.
pub async fn wal_position(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
        .fetch_one(pool)
        .await
}

/// Attempt records written (after a run; counts the table).
pub async fn attempt_records(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM task_attempts")
        .fetch_one(pool)
        .await
}

/// The task benchmark with `worker_sets` x `concurrency` workers inside this process
/// (each set with its own listener, claimer and completer, sharing `pool`).
pub async fn bench_tasks(
    pool: &PgPool,
    count: i64,
    worker_sets: usize,
    concurrency: usize,
) -> Result<BenchTasksReport, sqlx::Error> {
    let (trigger, shutdown) = shutdown::channel();
    let claim_batch = (concurrency as i64).max(1);
    let load_before = load_average();
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut readies = Vec::new();
    for set in 0..worker_sets {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        readies.push(ready_rx);
        handles.push(tokio::spawn(run_noop_workers(
            pool.clone(),
            format!("bench-{set}"),
            concurrency,
            claim_batch,
            shutdown.clone(),
            move || {
                let _ = ready_tx.send(());
            },
        )));
    }
    for ready in readies {
        let _ = ready.await;
    }
    let startup = started.elapsed();
    let insert = insert_noop_tasks(pool, count).await?;
    let drain_start = Instant::now();
    wait_until_drained(pool).await?;
    let drain = drain_start.elapsed();
    trigger.trigger();
    for handle in handles {
        let _ = handle.await;
    }
    Ok(BenchTasksReport {
        tasks: count,
        startup,
        insert,
        drain,
        tasks_per_second: count as f64 / drain.as_secs_f64().max(1e-9),
        worker_sets,
        concurrency,
        claim_batch,
        separate_processes: false,
        attempts: attempt_records(pool).await?,
        issued_by_events: false,
        drain_cpu: None,
        load_before,
        load_after: load_average(),
        admin_catch_up: None,
        wal_bytes: None,
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
    pub(crate) fn of(mut samples: Vec<f64>) -> Self {
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
    for kind in kinds_for(event_types::TEACHER_CREATED) {
        registry.register(kind.name(), Noop);
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
