//! `aula bench tasks`: no-op tasks per second, drained by worker *processes*, history
//! kept (attempt records); measurements, not tests: nothing here asserts a target.
//!
//! The benchmark's shape (issue 6): N no-op tasks inserted in one statement, then
//! drained by worker processes. The binary starts the processes (itself, with the hidden
//! `bench task-worker` subcommand, [`task_worker`]); each reports ready once its workers
//! made their first claim on the empty queue, so their start-up is measured apart and not
//! counted. The drain is timed from the insert's commit until
//! [`open_tasks`](aula_processor::bench::open_tasks) is 0. [`bench_tasks`] is the same
//! measurement with the worker sets inside this process (the tests use it).

use std::time::{Duration, Instant};

use anyhow::Context;
use aula_eventlog::shutdown;
use aula_processor::bench::{
    attempt_records, insert_event_noop_tasks, insert_noop_tasks, run_noop_workers,
    wait_until_admin_caught_up, wait_until_drained,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::stats::load_average;
use crate::{BenchDatabase, Settings};

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

/// The server's WAL position, in bytes.
pub async fn wal_position(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8")
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

/// `aula bench tasks`: the shape. Starts `processes` worker processes (this
/// executable, `bench task-worker`) on the empty queue and waits until each prints
/// `ready` (the start-up, measured and not counted), inserts `count` no-op tasks in
/// one statement, and times the drain from the insert's commit until no task is
/// pending or running (polled on the status counts, not on the tasks table). With
/// `issued_by_events`, each task has an event of its own, written first (not counted):
/// production's path, where finishing a task also updates its event's admin row.
pub async fn run(
    settings: &Settings,
    count: i64,
    processes: usize,
    concurrency: usize,
    claim_batch: i64,
    issued_by_events: bool,
) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
    let result = tasks_on(
        &db,
        settings,
        count,
        (processes, concurrency, claim_batch),
        issued_by_events,
    )
    .await;
    let dropped = db.drop_database().await;
    let report = result?;
    dropped?;
    println!("aula bench tasks: {report}");
    Ok(())
}

/// A worker process; SIGKILLed if still running when dropped.
struct WorkerProcess {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

async fn tasks_on(
    db: &BenchDatabase,
    settings: &Settings,
    count: i64,
    (processes, concurrency, claim_batch): (usize, usize, i64),
    issued_by_events: bool,
) -> anyhow::Result<BenchTasksReport> {
    use tokio::io::AsyncBufReadExt;

    let exe = std::env::current_exe().context("finding this executable")?;
    let url = worker_database_url(settings, &db.connect)?;
    let log_format = settings.log_format;
    let load_before = load_average();
    let started = Instant::now();
    let mut workers = Vec::with_capacity(processes);
    for n in 0..processes {
        let mut command = tokio::process::Command::new(&exe);
        command
            .args([
                "--log-format",
                log_format,
                "bench",
                "task-worker",
                "--database",
            ])
            .arg(&db.name)
            .args(["--name", &format!("bench-{n}")])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--claim-batch", &claim_batch.to_string()])
            .env("DATABASE_URL", &url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("the worker's stdout")?;
        workers.push(WorkerProcess {
            child,
            stdout: tokio::io::BufReader::new(stdout).lines(),
        });
    }
    for (n, worker) in workers.iter_mut().enumerate() {
        let line = tokio::time::timeout(Duration::from_secs(120), worker.stdout.next_line())
            .await
            .with_context(|| format!("worker process {n} did not report ready"))??;
        anyhow::ensure!(
            line.as_deref() == Some("ready"),
            "worker process {n} said {line:?} instead of ready"
        );
    }
    let startup = started.elapsed();
    let insert = if issued_by_events {
        insert_event_noop_tasks(&db.pool, count).await?
    } else {
        insert_noop_tasks(&db.pool, count).await?
    };
    let worker_pids: Vec<u32> = workers.iter().filter_map(|w| w.child.id()).collect();
    let server_pids = database_pids(&db.pool).await?;
    let cpu_before = (cpu_seconds(&worker_pids), cpu_seconds(&server_pids));
    let wal_before = wal_position(&db.pool).await?;
    let drain_start = Instant::now();
    wait_until_drained(&db.pool).await?;
    let drain = drain_start.elapsed();
    let admin_catch_up = if issued_by_events {
        let drained = Instant::now();
        wait_until_admin_caught_up(&db.pool).await?;
        Some(drained.elapsed())
    } else {
        None
    };
    let wal_bytes = wal_position(&db.pool).await? - wal_before;
    let load_after = load_average();
    // Processes that appeared during the drain count from zero.
    let mut server_pids_after = database_pids(&db.pool).await?;
    server_pids_after.retain(|pid| !server_pids.contains(pid));
    let drain_cpu = match (
        cpu_before,
        cpu_seconds(&worker_pids),
        cpu_seconds(&server_pids),
    ) {
        ((Some(w0), Some(d0)), Some(w1), Some(d1)) => Some(DrainCpu {
            workers_seconds: w1 - w0,
            database_seconds: d1 - d0 + cpu_seconds(&server_pids_after).unwrap_or(0.0),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }),
        _ => None,
    };
    // Closing their stdin stops the workers (a graceful drain: nothing is left).
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    for (n, worker) in workers.iter_mut().enumerate() {
        let status = tokio::time::timeout(Duration::from_secs(60), worker.child.wait())
            .await
            .with_context(|| format!("worker process {n} did not stop"))??;
        anyhow::ensure!(status.success(), "worker process {n} exited with {status}");
    }
    Ok(BenchTasksReport {
        tasks: count,
        startup,
        insert,
        drain,
        tasks_per_second: count as f64 / drain.as_secs_f64().max(1e-9),
        worker_sets: processes,
        concurrency,
        claim_batch,
        separate_processes: true,
        attempts: attempt_records(&db.pool).await?,
        issued_by_events,
        drain_cpu,
        load_before,
        load_after,
        admin_catch_up,
        wal_bytes: Some(wal_bytes),
    })
}

/// The server processes working for the benchmark's database: its backends and the
/// server's own (WAL writer, checkpointer...).
pub(crate) async fn database_pids(pool: &PgPool) -> anyhow::Result<Vec<u32>> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR datname IS NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(pids
        .into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .collect())
}

/// User + system CPU seconds of these processes so far, from `/proc/<pid>/stat`;
/// `None` when one is not readable (e.g. the database runs on another machine).
pub(crate) fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which is in parentheses and may hold spaces):
        // state is field 3; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(total as f64 / ticks)
}

/// The URL a worker process connects with: DATABASE_URL's (the database is passed
/// apart), or the private benchmark server's socket.
fn worker_database_url(settings: &Settings, connect: &PgConnectOptions) -> anyhow::Result<String> {
    if let Some(url) = &settings.database_url {
        return Ok(url.clone());
    }
    let socket = connect
        .get_socket()
        .context("the private benchmark server listens on a socket")?;
    Ok(format!(
        "postgresql://{}@localhost/postgres?host={}&port={}",
        connect.get_username(),
        socket.display(),
        connect.get_port()
    ))
}

/// `aula bench task-worker` (hidden): one worker process of [`run`]. Prints `ready`
/// once its workers claim on the empty queue; stops (draining) when stdin closes.
pub async fn task_worker(
    settings: &Settings,
    database: &str,
    name: String,
    concurrency: usize,
    claim_batch: i64,
) -> anyhow::Result<()> {
    let url = settings
        .database_url
        .as_deref()
        .context("DATABASE_URL is required")?;
    let options = url
        .parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a PostgreSQL URL")?
        .database(database);
    let pool = aula_eventlog::db::pool(options, (concurrency as u32 + 4).min(64)).await?;
    let (trigger, shutdown) = shutdown::channel();
    std::thread::spawn(move || {
        // Blocks until the parent closes our stdin (or dies).
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        trigger.trigger();
    });
    run_noop_workers(pool, name, concurrency, claim_batch, shutdown, || {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "ready");
        let _ = stdout.flush();
    })
    .await?;
    Ok(())
}
