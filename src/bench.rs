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
    println!(
        "delivered {events} events to a no-op subscription in {:.2} s: {:.0} events/s (batches of 5000, checkpoint committed per batch)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    db.drop_database().await
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
    db.drop_database().await
}

pub async fn tasks(
    global: &GlobalArgs,
    tasks: i64,
    worker_sets: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let db = BenchDatabase::create(global).await?;
    let report =
        aula_processor::bench::bench_tasks(&db.pool, tasks, worker_sets, concurrency).await?;
    println!("aula bench tasks: {report}");
    db.drop_database().await
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
