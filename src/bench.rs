//! `aula bench ...`: throughput figures printed by commands, not asserted by tests.
//! Run in release mode. Each run uses a fresh database (on `DATABASE_URL`'s server, or
//! a private durable server under `AULA_DATA_DIR/bench-postgres`) and drops it after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, Capacity, CourseId, CourseName, Email, InstitutionId,
    PersonName,
};
use aula_eventlog::local_pg::{create_database_if_missing, LocalPgOptions, LocalPostgres};
use aula_eventlog::subscription::{self, BoxError, SubscriptionState};
use aula_eventlog::{
    Actor, CommandBus, Consumer, EventMetadata, RecordedEvent, SubscriptionOptions, Wakeups,
};
use rand::Rng;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::cli::GlobalArgs;

/// A throwaway database for one benchmark run.
pub struct BenchDatabase {
    pub pool: PgPool,
    pub connect: PgConnectOptions,
    admin: PgConnectOptions,
    name: String,
    local: Option<LocalPostgres>,
}

impl BenchDatabase {
    pub async fn create(global: &GlobalArgs) -> anyhow::Result<BenchDatabase> {
        let (admin, local) = match &global.database_url {
            Some(url) => (url.parse::<PgConnectOptions>()?.database("postgres"), None),
            None => {
                let mut options = LocalPgOptions::new(global.data_dir.join("bench-postgres"));
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

/// Runs `op` from `concurrency` tasks for `duration`; returns operations per second.
async fn measure<F, Fut>(concurrency: usize, duration: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                op(n).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(counter.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

const COURSES: usize = 1000;

pub async fn append(global: &GlobalArgs, seconds: u64) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    let bus = Arc::new(CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    ));
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    let campus = CampusId::from_uuid(Uuid::new_v4());
    let metadata = Arc::new(EventMetadata::new(
        Actor::System,
        Some(institution.as_uuid()),
    ));
    let mut courses = Vec::with_capacity(COURSES);
    for i in 0..COURSES {
        let id = CourseId::from_uuid(Uuid::new_v4()).to_string();
        let command = CourseCommand::OpenCourse {
            institution_id: institution,
            campus_id: campus,
            name: CourseName::parse(&format!("Course {i}"))?,
            capacity: Capacity::new(10_000)?,
        };
        bus.execute(&id, command, &metadata)
            .await
            .context("opening a course")?;
        courses.push(id);
    }
    let courses = Arc::new(courses);
    let today = chrono::Utc::now().date_naive();
    let birth_date = BirthDate::parse_str("2001-04-12", today)?;
    let name = PersonName::parse("Ana Beatriz Souza")?;
    let email = Email::parse("ana.souza@example.edu")?;
    let payload = serde_json::json!({
        "type": "EnrollmentRequested", "application_id": Uuid::new_v4(), "name": "Ana Beatriz Souza",
        "birth_date": "2001-04-12", "email": "ana.souza@example.edu", "requested_at": chrono::Utc::now(),
    })
    .to_string();
    let metadata_json = serde_json::to_string(&metadata.to_map())?;

    println!(
        "aula bench append: {seconds} s per measurement, {COURSES} courses, one event per command"
    );
    println!(
        "{:>11} {:>16} {:>16} {:>8}",
        "concurrency", "bare INSERT/s", "command path/s", "ratio"
    );
    for concurrency in [1usize, 8, 32] {
        let pool = db.pool.clone();
        let (payload, metadata_json) = (payload.clone(), metadata_json.clone());
        let bare_courses = courses.clone();
        let offset = concurrency as i64 * 1_000_000_000;
        let bare = measure(concurrency, Duration::from_secs(seconds), move |n| {
            let (pool, payload, metadata_json) = (pool.clone(), payload.clone(), metadata_json.clone());
            // Same key shape as the command path (one of the courses, next sequence),
            // so both pay the same index costs.
            let course = bare_courses[rand::thread_rng().gen_range(0..bare_courses.len())].clone();
            async move {
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                     VALUES ('bare', $1, $4, 'EnrollmentRequested', '1.0', $2::json, $3::json)",
                )
                .bind(course)
                .bind(payload)
                .bind(metadata_json)
                .bind(offset + n as i64)
                .execute(&pool)
                .await?;
                Ok(())
            }
        })
        .await?;
        let (bus, courses, metadata) = (bus.clone(), courses.clone(), metadata.clone());
        let (name, email) = (name.clone(), email.clone());
        let command_path = measure(concurrency, Duration::from_secs(seconds), move |_| {
            let (bus, metadata) = (bus.clone(), metadata.clone());
            let course = courses[rand::thread_rng().gen_range(0..courses.len())].clone();
            let command = CourseCommand::RequestEnrollment {
                application_id: ApplicationId::from_uuid(Uuid::new_v4()),
                name: name.clone(),
                birth_date,
                email: email.clone(),
                requested_at: chrono::Utc::now(),
            };
            async move {
                bus.execute(&course, command, &metadata)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(())
            }
        })
        .await?;
        println!(
            "{concurrency:>11} {bare:>16.0} {command_path:>16.0} {:>7.0}%",
            100.0 * command_path / bare
        );
    }
    db.drop_database().await
}

struct NoOp;

#[async_trait::async_trait]
impl Consumer for NoOp {
    async fn handle(
        &mut self,
        _tx: &mut PgConnection,
        _events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

pub async fn log(global: &GlobalArgs, events: i64) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    println!("aula bench log: writing {events} events...");
    let chunk = 100_000i64;
    let mut written = 0i64;
    while written < events {
        let count = chunk.min(events - written);
        // One transaction per chunk, realistic EnrollmentRequested payloads, 100 events
        // per aggregate.
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'course', 'course-' || (g / 100), g % 100 + 1, 'EnrollmentRequested', '1.0',
                    json_build_object('type', 'EnrollmentRequested', 'application_id', gen_random_uuid(),
                                      'name', 'Applicant ' || g, 'birth_date', '2001-04-12',
                                      'email', 'applicant' || g || '@example.edu', 'requested_at', now()),
                    json_build_object('actor', 'public', 'correlation_id', gen_random_uuid(), 'causation_id', 'request')
             FROM generate_series($1::bigint, $2::bigint) AS g",
        )
        .bind(written)
        .bind(written + count - 1)
        .execute(&db.pool)
        .await?;
        written += count;
    }
    sqlx::query("ANALYZE events").execute(&db.pool).await?;
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&db.pool)
        .await?;

    let (stop, shutdown) = aula_eventlog::shutdown::channel();
    let mut options = SubscriptionOptions::new("bench-noop");
    options.batch_size = 5000;
    let started = Instant::now();
    let handle = subscription::spawn(
        db.connect.clone(),
        options,
        NoOp,
        Wakeups::polling_only(),
        shutdown,
    );
    let mut state = handle.state.clone();
    state
        .wait_for(|s| matches!(s, SubscriptionState::Active { position } if position.global_position == last))
        .await?;
    let elapsed = started.elapsed();
    stop.trigger();
    handle.task.await?;
    let aula_rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "delivered {events} events to a no-op subscription in {:.2} s: {aula_rate:.0} events/s (batches of 5000, checkpoint committed per batch)",
        elapsed.as_secs_f64(),
    );
    let (copy_seconds, bytes) = copy_out_log(&db.pool).await?;
    let copy_rate = events as f64 / copy_seconds;
    println!(
        "peer: COPY of the same commit-ordered read to this client (binary, {:.0} MB): {copy_seconds:.2} s, {copy_rate:.0} events/s; Aula / COPY = {:.2}",
        bytes as f64 / 1e6,
        aula_rate / copy_rate
    );
    db.drop_database().await
}

/// The log read's peer (issue #20): the subscription's own query, every column it
/// reads, in its commit order, streamed to this client by `COPY ... TO STDOUT` in
/// binary, so no row is decoded. What a reader of the log cannot beat on this server.
async fn copy_out_log(pool: &PgPool) -> anyhow::Result<(f64, u64)> {
    use futures::StreamExt;
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw(
            "COPY (SELECT tx_id::text::bigint AS tx, global_position, event_id, aggregate_type,
                          aggregate_id, sequence, event_type, event_version, payload, metadata,
                          recorded_at
                   FROM events
                   WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY events.tx_id, events.global_position)
             TO STDOUT (FORMAT binary)",
        )
        .await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok((started.elapsed().as_secs_f64(), bytes))
}

pub async fn rebuild(global: &GlobalArgs, events: usize) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    println!("aula bench rebuild: generating {events} course events...");
    let report = aula_projections::bench_rebuild(&db.pool, db.connect.clone(), events)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "generated {} events in {:.1} s",
        report.events_generated, report.generate_seconds
    );
    println!("each read model alone (the log read once per model):");
    for each in &report.each {
        println!(
            "  {:<20} {:>9} events {:>7.2} s (read {:.2} s, handle {:.2} s) {:>9.0} events/s",
            each.name,
            each.events,
            each.seconds,
            each.read_seconds,
            each.handle_seconds,
            each.events_per_second
        );
    }
    println!(
        "all {} read models together (the log read once): {:.2} s, {:.0} log events/s",
        report.all.len(),
        report.all_seconds,
        report.all_events_per_second
    );
    if let Some(first) = report.all.first() {
        let swaps =
            report.all_seconds - first.load_seconds - first.carry_seconds - first.index_seconds;
        println!(
            "  phases: load {:.2} s (log read {:.2} s), carry-over {:.2} s, indexes {:.2} s, swaps {:.2} s",
            first.load_seconds, first.read_seconds, first.carry_seconds, first.index_seconds, swaps
        );
        for each in &report.all {
            println!("  {:<20} handle {:>6.2} s", each.name, each.handle_seconds);
        }
        let tables: Vec<&str> = report
            .all
            .iter()
            .filter_map(|each| aula_projections::tables(&each.name))
            .flatten()
            .copied()
            .collect();
        let floor = rebuild_floor(&db.pool, &tables).await?;
        println!(
            "floor on this server: the same rows written into empty tables ({} tables, 2 sessions) {:.2} s, then their {} other indexes built (2 sessions) {:.2} s = {:.2} s; rebuild / floor = {:.2}",
            tables.len(),
            floor.load_seconds,
            floor.indexes,
            floor.index_seconds,
            floor.total(),
            report.all_seconds / floor.total()
        );
    }
    db.drop_database().await
}

/// What [`rebuild_floor`] measured.
struct Floor {
    load_seconds: f64,
    index_seconds: f64,
    indexes: usize,
}

impl Floor {
    fn total(&self) -> f64 {
        self.load_seconds + self.index_seconds
    }
}

/// The physical floor of a rebuild (issue #20): the rows the rebuild just wrote, written
/// again by `INSERT ... SELECT` into empty copies of their tables that keep only their
/// constraint indexes (as the rebuild's shadow tables do), the tables shared by two
/// sessions, then every other index built by two sessions, largest table first, with the
/// rebuild's session settings. A rebuild cannot go below it without writing fewer rows or
/// fewer indexes; the rebuild's own time on top of it is the log read, the decoding and
/// the projections' logic.
async fn rebuild_floor(pool: &PgPool, tables: &[&str]) -> anyhow::Result<Floor> {
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
    // The indexes a rebuild defers (all but the constraints'), dropped now, built later.
    let deferred: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid)
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
         ORDER BY pg_relation_size(i.indrelid) DESC",
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

pub async fn list_query(
    global: &GlobalArgs,
    options: aula_projections::list_bench::ListBenchOptions,
    reuse_database: Option<String>,
    keep: bool,
) -> anyhow::Result<()> {
    use aula_projections::list_bench;
    let err = |e: aula_projections::bench::BenchError| anyhow::anyhow!("{e}");
    if let Some(name) = reuse_database {
        let url = global
            .database_url
            .as_deref()
            .context("--reuse-database needs DATABASE_URL")?;
        let connect = url.parse::<PgConnectOptions>()?.database(&name);
        let pool = aula_eventlog::db::pool(connect, 4).await?;
        sqlx::query("ANALYZE admin_events").execute(&pool).await?;
        println!("aula bench list-query: measuring database {name}...");
        let report = list_bench::ListBenchReport {
            events: sqlx::query_scalar("SELECT count(*) FROM admin_events")
                .fetch_one(&pool)
                .await?,
            tasks: sqlx::query_scalar("SELECT count(*) FROM tasks")
                .fetch_one(&pool)
                .await?,
            generate_seconds: 0.0,
            measurements: list_bench::measure(&pool, &options).await.map_err(err)?,
        };
        print!("{}", report.render());
        task_error_search(&pool).await?;
        return Ok(());
    }
    if keep && global.database_url.is_none() {
        anyhow::bail!("--keep needs DATABASE_URL (the private server stops with this process)");
    }
    let db = BenchDatabase::create(global).await?;
    println!(
        "aula bench list-query: generating {} events and about {} tasks...",
        options.events,
        2 * options.events
    );
    let report = list_bench::bench_list_query(&db.pool, &options)
        .await
        .map_err(err)?;
    print!("{}", report.render());
    task_error_search(&db.pool).await?;
    if keep {
        println!("kept database {}", db.name);
        return Ok(());
    }
    db.drop_database().await
}

/// The task list's error search (issue #23) over the generated tasks, through the very
/// function `adminTasks` calls: one task's error (it names its event) and an error text
/// every failed task holds, first pages in both directions, 10 samples each.
async fn task_error_search(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    use aula_processor::task_list::{list_tasks, TaskListQuery};
    let failed: Option<i64> = sqlx::query_scalar(
        "SELECT min(a.global_position) FROM admin_events a WHERE a.tasks_failed > 0",
    )
    .fetch_one(pool)
    .await?;
    let Some(position) = failed else {
        println!("task error search: no failed task to find");
        return Ok(());
    };
    println!("task error search (adminTasks first page, 50 rows):");
    println!(
        "  {:<26} {:>7} {:>8} {:>8}",
        "search", "samples", "p50 ms", "p95 ms"
    );
    for (label, text) in [
        ("one task's error", format!("(event {position})")),
        ("every failed task", "smtp timeout".to_owned()),
    ] {
        let mut samples = Vec::new();
        for descending in [true, false] {
            for _ in 0..10 {
                let query = TaskListQuery {
                    error_search: Some(text.clone()),
                    descending,
                    limit: Some(50),
                    ..TaskListQuery::default()
                };
                let started = std::time::Instant::now();
                list_tasks(pool, &query)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        println!(
            "  {label:<26} {:>7} {:>8.2} {:>8.2}",
            samples.len(),
            aula_projections::list_bench::quantile(&samples, 0.5),
            aula_projections::list_bench::quantile(&samples, 0.95)
        );
    }
    Ok(())
}

/// `aula bench tasks`: the shape. Starts `processes` worker processes (this
/// executable, `bench task-worker`) on the empty queue and waits until each prints
/// `ready` (the start-up, measured and not counted), inserts `count` no-op tasks in
/// one statement, and times the drain from the insert's commit until no task is
/// pending or running (polled on the status counts, not on the tasks table). With
/// `issued_by_events`, each task has an event of its own, written first (not counted):
/// production's path, where finishing a task also updates its event's admin row.
pub async fn tasks(
    global: &GlobalArgs,
    count: i64,
    processes: usize,
    concurrency: usize,
    claim_batch: i64,
    issued_by_events: bool,
) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    let result = tasks_on(
        &db,
        global,
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
    global: &GlobalArgs,
    count: i64,
    (processes, concurrency, claim_batch): (usize, usize, i64),
    issued_by_events: bool,
) -> anyhow::Result<aula_processor::bench::BenchTasksReport> {
    use tokio::io::AsyncBufReadExt;

    let exe = std::env::current_exe().context("finding this executable")?;
    let url = worker_database_url(global, &db.connect)?;
    let log_format = match global.log_format {
        crate::cli::LogFormat::Text => "text",
        crate::cli::LogFormat::Json => "json",
    };
    let load_before = aula_processor::bench::load_average();
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
        aula_processor::bench::insert_event_noop_tasks(&db.pool, count).await?
    } else {
        aula_processor::bench::insert_noop_tasks(&db.pool, count).await?
    };
    let worker_pids: Vec<u32> = workers.iter().filter_map(|w| w.child.id()).collect();
    let server_pids = database_pids(&db.pool).await?;
    let cpu_before = (cpu_seconds(&worker_pids), cpu_seconds(&server_pids));
    let wal_before = aula_processor::bench::wal_position(&db.pool).await?;
    let drain_start = Instant::now();
    aula_processor::bench::wait_until_drained(&db.pool).await?;
    let drain = drain_start.elapsed();
    let admin_catch_up = if issued_by_events {
        let drained = Instant::now();
        aula_processor::bench::wait_until_admin_caught_up(&db.pool).await?;
        Some(drained.elapsed())
    } else {
        None
    };
    let wal_bytes = aula_processor::bench::wal_position(&db.pool).await? - wal_before;
    let load_after = aula_processor::bench::load_average();
    // Processes that appeared during the drain count from zero.
    let mut server_pids_after = database_pids(&db.pool).await?;
    server_pids_after.retain(|pid| !server_pids.contains(pid));
    let drain_cpu = match (
        cpu_before,
        cpu_seconds(&worker_pids),
        cpu_seconds(&server_pids),
    ) {
        ((Some(w0), Some(d0)), Some(w1), Some(d1)) => Some(aula_processor::bench::DrainCpu {
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
    Ok(aula_processor::bench::BenchTasksReport {
        tasks: count,
        startup,
        insert,
        drain,
        tasks_per_second: count as f64 / drain.as_secs_f64().max(1e-9),
        worker_sets: processes,
        concurrency,
        claim_batch,
        separate_processes: true,
        attempts: aula_processor::bench::attempt_records(&db.pool).await?,
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
async fn database_pids(pool: &PgPool) -> anyhow::Result<Vec<u32>> {
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
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
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
fn worker_database_url(global: &GlobalArgs, connect: &PgConnectOptions) -> anyhow::Result<String> {
    if let Some(url) = &global.database_url {
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

/// `aula bench task-worker` (hidden): one worker process of [`tasks`]. Prints `ready`
/// once its workers claim on the empty queue; stops (draining) when stdin closes.
pub async fn task_worker(
    global: &GlobalArgs,
    database: &str,
    name: String,
    concurrency: usize,
    claim_batch: i64,
) -> anyhow::Result<()> {
    let url = global
        .database_url
        .as_deref()
        .context("DATABASE_URL is required")?;
    let options = url
        .parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a PostgreSQL URL")?
        .database(database);
    let pool = aula_eventlog::db::pool(options, (concurrency as u32 + 4).min(64)).await?;
    let (trigger, shutdown) = aula_eventlog::shutdown::channel();
    std::thread::spawn(move || {
        // Blocks until the parent closes our stdin (or dies).
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        trigger.trigger();
    });
    aula_processor::bench::run_noop_workers(pool, name, concurrency, claim_batch, shutdown, || {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "ready");
        let _ = stdout.flush();
    })
    .await?;
    Ok(())
}

pub async fn latency(global: &GlobalArgs, events: usize) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    let report = aula_processor::bench::bench_latency(&db.pool, db.connect.clone(), events).await?;
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

/// `aula bench webhooks`: see `aula_processor::webhooks::bench`.
pub async fn webhooks(
    global: &GlobalArgs,
    messages: usize,
    samples: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    let load_before = aula_processor::bench::load_average();
    let report = aula_processor::webhooks::bench::bench_webhooks(
        &db.pool,
        db.connect.clone(),
        messages,
        samples,
        concurrency.max(1),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "aula bench webhooks: {} messages to a local receiver, {} deliveries at once",
        report.messages, report.concurrency
    );
    println!(
        "  throughput: {:.0} messages/s ({:.2} s from the events' commit to the last request)",
        report.messages_per_second,
        report.drain.as_secs_f64()
    );
    println!(
        "  event commit -> request received (ms, {} sequential events): {}",
        report.latency_samples, report.commit_to_received
    );
    println!(
        "  load average before: {load_before}, after: {}",
        aula_processor::bench::load_average()
    );
    db.drop_database().await
}

/// What `aula bench rush` measured.
struct RushReport {
    accepted: usize,
    refused: usize,
    accepting: Duration,
    last_decision: Duration,
    scheduled_p50_ms: f64,
    scheduled_p95_ms: f64,
    all_emails: Duration,
}

/// `aula bench rush`: `applicants` apply at once (each from its own loopback address,
/// at most 300 requests in flight) over HTTP to `courses` courses of 30 seats, with
/// the API, the projections, the admissions, the reactions and the workers running in
/// this process (the processor with its own connections) and e-mails written to a file
/// outbox.
pub async fn rush(global: &GlobalArgs, applicants: usize, courses: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        applicants > 0 && courses > 0,
        "--applicants and --courses must be positive"
    );
    anyhow::ensure!(
        applicants <= 250 * 250,
        "at most 62,500 applicants (one loopback address each)"
    );
    let db = BenchDatabase::create(global).await?;
    let result = rush_on(&db, applicants, courses).await;
    db.drop_database().await?;
    let report = result?;
    println!(
        "aula bench rush: {applicants} applicants, {courses} course(s) of 30 seats, 300 in flight"
    );
    println!(
        "  applications accepted:        {} in {:.2} s = {:.0}/s",
        report.accepted,
        report.accepting.as_secs_f64(),
        report.accepted as f64 / report.accepting.as_secs_f64()
    );
    println!("  first-try refusals:           {}", report.refused);
    println!(
        "  first application -> last decision: {:.2} s (last application + {:.2} s)",
        report.last_decision.as_secs_f64(),
        (report.last_decision.saturating_sub(report.accepting)).as_secs_f64()
    );
    println!(
        "  \"scheduled\" e-mail after its application: p50 {:.0} ms, p95 {:.0} ms",
        report.scheduled_p50_ms, report.scheduled_p95_ms
    );
    println!(
        "  all e-mails (scheduled + result) sent {:.2} s after the first application",
        report.all_emails.as_secs_f64()
    );
    Ok(())
}

async fn rush_on(
    db: &BenchDatabase,
    applicants: usize,
    courses: usize,
) -> anyhow::Result<RushReport> {
    const IN_FLIGHT: usize = 300;
    const SEATS: u32 = 30;
    let (trigger, shutdown) = aula_eventlog::shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, shutdown.clone()).await?;
    let mut handles =
        aula_projections::spawn_all(db.connect.clone(), wakeups.clone(), shutdown.clone());
    let reactions =
        aula_processor::spawn_reactions(db.connect.clone(), wakeups.clone(), shutdown.clone());
    // The processor's connections apart from the API's, as with `aula serve --only
    // processor` beside `--only api`: the e-mails do not queue for connections behind
    // hundreds of requests in flight.
    let processor_pool = aula_eventlog::db::pool(db.connect.clone(), 16).await?;
    let admissions = aula_processor::spawn_admissions(
        processor_pool.clone(),
        db.connect.clone(),
        wakeups.clone(),
        shutdown.clone(),
    );
    let outbox = std::env::temp_dir().join(format!("aula-bench-rush-{}", Uuid::new_v4().simple()));
    let mail = aula_processor::MailConfig {
        outbox_dir: outbox.clone(),
        ..aula_processor::MailConfig::default()
    };
    let mailer = Arc::new(aula_processor::FileMailer::new(&outbox, mail.from.clone()));
    let registry = aula_processor::Registry::standard(mailer, mail);
    let workers = tokio::spawn(aula_processor::run_workers(
        processor_pool.clone(),
        aula_processor::ProcessorConfig::from_env(),
        registry,
        shutdown.clone(),
    ));
    let mut config = aula_api::ApiConfig::new(aula_api::Secret::new(
        b"bench rush secret of at least 32 bytes".to_vec(),
    ));
    config.projections = Vec::new();
    let state = aula_api::AppState::new(db.pool.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(aula_api::serve(
        listener,
        aula_api::router(state),
        async move { server_shutdown.wait().await },
    ));

    let bus = CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
    let mut course_ids = Vec::new();
    for i in 0..courses {
        let course = Uuid::new_v4();
        bus.execute(
            &course.to_string(),
            CourseCommand::OpenCourse {
                institution_id: InstitutionId::from_uuid(Uuid::new_v4()),
                campus_id: CampusId::from_uuid(Uuid::new_v4()),
                name: CourseName::parse(&format!("Rush course {i}"))?,
                capacity: Capacity::new(SEATS)?,
            },
            &EventMetadata::new(Actor::System, None),
        )
        .await?;
        course_ids.push(course);
    }
    // Let the projections see the courses (the API reads course_capacity first).
    tokio::time::sleep(Duration::from_millis(500)).await;

    const APPLY: &str =
        "mutation($input: ApplyToCourseInput!) { applyToCourse(input: $input) { id } }";
    // The clients first (each bound to its own loopback address), outside the timing.
    let mut clients = Vec::with_capacity(applicants);
    for i in 0..applicants {
        let address = std::net::Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8);
        clients.push(
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(address))
                .timeout(Duration::from_secs(60))
                .build()?,
        );
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut requests = Vec::with_capacity(applicants);
    for (i, client) in clients.into_iter().enumerate() {
        let (gate, base) = (gate.clone(), base.clone());
        let course = course_ids[i % courses];
        requests.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let body = serde_json::json!({ "query": APPLY, "variables": { "input": {
                "courseId": course, "name": format!("Applicant {i}"), "birthDate": "2004-05-06",
                "email": format!("applicant{i}@bench.test"), "idempotencyKey": format!("k{i}"),
            }}});
            let answer: serde_json::Value = client
                .post(format!("{base}/graphql"))
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(answer["data"]["applyToCourse"]["id"].is_string())
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for request in requests {
        if request.await?? {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    let accepting = started.elapsed();

    let decided = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_type = 'course'
               AND event_type IN ('StudentEnrolled', 'EnrollmentDeclined')",
        )
        .fetch_one(&db.pool)
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while decided().await? < accepted as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "decisions did not finish within 10 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_decision = started.elapsed();
    let sent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox_emails")
            .fetch_one(&db.pool)
            .await
    };
    while sent().await? < 2 * accepted as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "e-mails did not finish within 10 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_emails = started.elapsed();
    let (p50, p95): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM o.sent_at - e.recorded_at) * 1000 AS ms
               FROM outbox_emails o JOIN tasks t ON t.id = o.task_id JOIN events e ON e.event_id = t.event_id
               WHERE o.kind = 'email.application_scheduled') s",
    )
    .fetch_one(&db.pool)
    .await?;

    trigger.trigger();
    let _ = server.await;
    let _ = workers.await;
    let _ = reactions.task.await;
    let _ = admissions.task.await;
    for (_, handle) in handles.drain(..) {
        let _ = handle.task.await;
    }
    processor_pool.close().await;
    let _ = std::fs::remove_dir_all(&outbox);
    Ok(RushReport {
        accepted,
        refused,
        accepting,
        last_decision,
        scheduled_p50_ms: p50.unwrap_or(f64::NAN),
        scheduled_p95_ms: p95.unwrap_or(f64::NAN),
        all_emails,
    })
}
