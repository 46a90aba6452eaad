//! `aula bench append`: events appended per second, a bare `INSERT` beside the command
//! path (aggregate load, decision, append) at a few concurrencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, Capacity, CourseId, CourseName, Email, InstitutionId,
    PersonName,
};
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use rand::Rng;
use uuid::Uuid;

use crate::{BenchDatabase, Settings};

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

pub async fn run(settings: &Settings, seconds: u64) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
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
