//! `aula bench rebuild`: fill the log with synthetic but valid course events, then
//! rebuild every read model from it and measure events per second.
//!
//! **Boundary:** it appends to whatever database it is given. Use a scratch database.

use std::time::Instant;

use aula_domain::course::{CourseEvent, DeclineReason};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, Capacity, CourseName, Email, InstitutionId, PersonName,
};
use aula_eventlog::db::column;
use aula_eventlog::{Actor, EventMetadata};
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use cqrs_es::DomainEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use uuid::Uuid;

use aula_projections::rebuild::{rebuild, rebuild_many, RebuildError, RebuildReport};

use crate::floor::rebuild_floor;
use crate::{BenchDatabase, Settings};

/// What `bench_rebuild` measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// Events appended for the benchmark (the log may hold more).
    pub events_generated: usize,
    pub generate_seconds: f64,
    /// Events in the log when rebuilding.
    pub log_events: i64,
    /// Every projection rebuilt together ([`rebuild_many`]: the log read once): wall
    /// time, log events per second, and each projection's share.
    pub all_seconds: f64,
    pub all_events_per_second: f64,
    pub all: Vec<RebuildReport>,
    /// Each projection alone, one after the other.
    pub each: Vec<RebuildReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not build a synthetic event: {0}")]
    Generate(String),
}

/// Appends `events` synthetic course events (courses opened, applications, enrollments,
/// declines, cancellations, in valid order per course), then rebuilds every projection
/// alone and then all of them together.
pub async fn bench_rebuild(
    pool: &PgPool,
    connect: PgConnectOptions,
    events: usize,
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    generate_events(pool, events, 42).await?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let log_events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let mut each = Vec::new();
    for name in aula_projections::NAMES {
        each.push(rebuild(pool, connect.clone(), name).await?);
    }
    let started = Instant::now();
    let all = rebuild_many(pool, connect, aula_projections::NAMES).await?;
    let all_seconds = started.elapsed().as_secs_f64();
    Ok(BenchReport {
        events_generated: events,
        generate_seconds,
        log_events,
        all_seconds,
        all_events_per_second: log_events as f64 / all_seconds.max(1e-6),
        all,
        each,
    })
}

struct Pending {
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: String,
    metadata: String,
}

const APPEND_SQL: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'course', e.aggregate_id, e.sequence, e.event_type, '1.0', e.payload::json, e.metadata::json
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
     AS e(aggregate_id, sequence, event_type, payload, metadata)";

fn invalid(e: impl std::fmt::Display) -> BenchError {
    BenchError::Generate(e.to_string())
}

/// Appends `count` valid course events, generated from `seed`, in chunks.
pub async fn generate_events(pool: &PgPool, count: usize, seed: u64) -> Result<(), BenchError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let day = NaiveDate::from_ymd_opt(2026, 2, 3).ok_or_else(|| invalid("bad day"))?;
    let start = Utc
        .with_ymd_and_hms(2026, 2, 3, 8, 0, 0)
        .single()
        .ok_or_else(|| invalid("bad instant"))?;
    let institutions: Vec<InstitutionId> = (0..4).map(|_| Uuid::new_v4().into()).collect();
    let campuses: Vec<(CampusId, usize)> =
        (0..20).map(|i| (Uuid::new_v4().into(), i % 4)).collect();
    let mut chunk: Vec<Pending> = Vec::with_capacity(10_000);
    let mut produced = 0usize;
    let mut course_no = 0usize;
    while produced < count {
        course_no += 1;
        let course = Uuid::new_v4().to_string();
        let (campus_id, institution_index) = campuses[course_no % campuses.len()];
        let institution_id = institutions[institution_index];
        let metadata = serde_json::to_string(
            &EventMetadata::new(Actor::System, Some(institution_id.into())).to_map(),
        )
        .map_err(invalid)?;
        let capacity = rng.gen_range(10..=40u32);
        let mut stream = vec![CourseEvent::CourseOpened {
            institution_id,
            campus_id,
            name: CourseName::parse(&format!("Course {course_no}")).map_err(invalid)?,
            capacity: Capacity::new(capacity).map_err(invalid)?,
        }];
        let mut enrolled: Vec<(ApplicationId, Email, u32)> = Vec::new();
        for application in 0..rng.gen_range(20..60) {
            let application_id: ApplicationId = Uuid::new_v4().into();
            let name = PersonName::parse(&format!("Student {course_no}-{application}"))
                .map_err(invalid)?;
            let email = Email::parse(&format!("s{course_no}.{application}@example.org"))
                .map_err(invalid)?;
            let born = day - Duration::days(rng.gen_range(16 * 365..60 * 365));
            let birth_date = BirthDate::parse(born, day).map_err(invalid)?;
            stream.push(CourseEvent::EnrollmentRequested {
                application_id,
                name: name.clone(),
                birth_date,
                email: email.clone(),
                requested_at: start + Duration::seconds(application as i64),
            });
            if (enrolled.len() as u32) < capacity {
                let age_years = birth_date.age_on(day);
                enrolled.push((application_id, email.clone(), age_years));
                stream.push(CourseEvent::StudentEnrolled {
                    application_id,
                    name,
                    email,
                    birth_date,
                    age_years,
                    enrolled_on: day,
                    campus_id,
                    institution_id,
                });
            } else {
                stream.push(CourseEvent::EnrollmentDeclined {
                    application_id,
                    name,
                    email,
                    reason: DeclineReason::ClassFull,
                });
            }
        }
        for (application_id, email, age_years) in enrolled.iter().take(capacity as usize / 10) {
            stream.push(CourseEvent::EnrollmentCancelled {
                application_id: *application_id,
                email: email.clone(),
                age_years: *age_years,
                campus_id,
                institution_id,
                cancelled_on: day,
            });
        }
        for (index, event) in stream.into_iter().enumerate() {
            if produced == count {
                break;
            }
            chunk.push(Pending {
                aggregate_id: course.clone(),
                sequence: index as i64 + 1,
                event_type: event.event_type(),
                payload: serde_json::to_string(&event).map_err(invalid)?,
                metadata: metadata.clone(),
            });
            produced += 1;
            if chunk.len() == 10_000 {
                flush(pool, &mut chunk).await?;
            }
        }
    }
    flush(pool, &mut chunk).await?;
    Ok(())
}

async fn flush(pool: &PgPool, chunk: &mut Vec<Pending>) -> Result<(), BenchError> {
    if chunk.is_empty() {
        return Ok(());
    }
    sqlx::query(APPEND_SQL)
        .bind(column(chunk, |p| p.aggregate_id.as_str()))
        .bind(column(chunk, |p| p.sequence))
        .bind(column(chunk, |p| p.event_type.as_str()))
        .bind(column(chunk, |p| p.payload.as_str()))
        .bind(column(chunk, |p| p.metadata.as_str()))
        .execute(pool)
        .await?;
    chunk.clear();
    Ok(())
}
pub async fn run(settings: &Settings, events: usize) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
    println!("aula bench rebuild: generating {events} course events...");
    let report = bench_rebuild(&db.pool, db.connect.clone(), events)
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
        // The carry-over runs within the index phase, beside the first builds.
        let swaps = report.all_seconds - first.load_seconds - first.index_seconds;
        println!(
            "  phases: load {:.2} s (log read {:.2} s), indexes {:.2} s (the carry-over beside them {:.2} s), swaps {:.2} s",
            first.load_seconds, first.read_seconds, first.index_seconds, first.carry_seconds, swaps
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
