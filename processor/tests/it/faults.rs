//! Processing under faults, created rather than argued: a starved connection pool while
//! tasks load their aggregates, and an e-mail whose record fails after the SMTP server
//! accepted it. Each test failed before its fix (see docs/reliability.md).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::student::{Student, StudentCommand, StudentServices};
use aula_domain::values::*;
use aula_eventlog::shutdown::{self, Shutdown};
use aula_eventlog::subscription::SubscriptionHandle;
use aula_eventlog::testing::{fast_subscription, TestDatabase};
use aula_eventlog::{CommandBus, SubscriptionOptions, Wakeups};
use aula_processor::handlers::Registry;
use aula_processor::mail::SmtpMailer;
use aula_processor::reactions::spawn_reactions_with;
use aula_processor::{ProcessorConfig, REACTIONS_SUBSCRIPTION};
use chrono::Utc;
use common::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

/// The application of `name`, born 2004-03-14, with `email`.
fn enrollment_request(name: &str, email: &str) -> CourseCommand {
    CourseCommand::RequestEnrollment {
        application_id: ApplicationId::from_uuid(Uuid::new_v4()),
        name: PersonName::parse(name).unwrap(),
        birth_date: born_on(2004, 3, 14),
        email: Email::parse(email).unwrap(),
        requested_at: Utc::now(),
    }
}

/// Runs `command` on `course` of `institution`.
async fn course_command(
    courses: &CommandBus<Course>,
    course: &str,
    institution: Uuid,
    command: CourseCommand,
) {
    courses
        .execute(course, command, &meta(Some(institution)))
        .await
        .unwrap();
}

/// Opens `course` in `institution`, named `name`, with `seats` seats.
async fn open_course(
    courses: &CommandBus<Course>,
    course: &str,
    institution: Uuid,
    name: &str,
    seats: u32,
) {
    let open = CourseCommand::OpenCourse {
        institution_id: InstitutionId::from_uuid(institution),
        campus_id: CampusId::from_uuid(Uuid::new_v4()),
        name: CourseName::parse(name).unwrap(),
        capacity: Capacity::new(seats).unwrap(),
    };
    course_command(courses, course, institution, open).await;
}

/// A pool of `connections` connections that waits at most `wait` for one: small enough
/// for a test to exhaust it.
async fn tiny_pool(db: &TestDatabase, connections: u32, wait: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(wait)
        .connect_with(aula_eventlog::db::session_options(db.connect.clone()))
        .await
        .unwrap()
}

/// Waits until the workers' task listener holds its connection (a session LISTENing
/// on the tasks' channel), so that a test may then take every other connection of the
/// workers' pool. Asked of the server, not of the pool's idle count: the workers'
/// other loops may have opened connections of their own by then, idle or not.
async fn listener_connected(pool: &PgPool) {
    eventually("the task listener to take its connection", || async {
        let listening: bool = sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND query LIKE 'LISTEN "aula_tasks"%')"#,
        )
        .fetch_one(pool)
        .await
        .unwrap();
        listening.then_some(())
    })
    .await;
}

/// The task of `kind` issued for the first event of `aggregate_id`, once it has
/// finished (succeeded, failed or dead): `(status, attempt)`.
async fn finished_task(pool: &PgPool, aggregate_id: &str, kind: &str) -> (String, i32) {
    eventually(&format!("the {kind} task to finish"), || async {
        let row: Option<(String, i32)> = sqlx::query_as(
            "SELECT t.status, t.attempt FROM tasks t JOIN events e ON e.event_id = t.event_id
             WHERE e.aggregate_id = $1 AND t.kind = $2",
        )
        .bind(aggregate_id)
        .bind(kind)
        .fetch_optional(pool)
        .await
        .unwrap();
        row.filter(|(status, _)| matches!(status.as_str(), "succeeded" | "failed" | "dead"))
    })
    .await
}

fn reaction_options() -> SubscriptionOptions {
    fast_subscription(REACTIONS_SUBSCRIPTION)
}

/// Workers on `pool`, once their task listener holds its connection, and no reactions
/// yet: the returned shutdown starts them ([`start_reactions`]) when the test is ready.
async fn start_workers_on(
    db: &TestDatabase,
    pool: &PgPool,
    registry: Registry,
    config: ProcessorConfig,
) -> (Running, Shutdown) {
    let (trigger, stop) = shutdown::channel();
    let workers = tokio::spawn(aula_processor::run_workers(
        pool.clone(),
        config,
        registry,
        stop.clone(),
    ));
    listener_connected(&db.pool).await;
    let running = Running {
        trigger,
        reactions: None,
        admissions: None,
        workers,
    };
    (running, stop)
}

fn start_reactions(db: &TestDatabase, stop: Shutdown) -> SubscriptionHandle {
    spawn_reactions_with(
        db.connect.clone(),
        reaction_options(),
        Wakeups::polling_only(),
        stop,
    )
}

/// Finding 13: with every connection of the workers' pool held by others, the
/// `enrollment.decide` task times out loading its `Course`. That is a transient
/// failure: the task is retried when connections free up and decides the application.
/// (Before the fix the pool timeout was classed as corrupt stored events and the task
/// failed for good.)
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_timeout_while_loading_an_aggregate_is_retried_not_failed_for_good() {
    let db = TestDatabase::new().await;
    let institution = Uuid::new_v4();
    let course = Uuid::new_v4().to_string();
    let courses = bus::<Course>(&db.pool, CourseServices);
    open_course(&courses, &course, institution, "Física I", 3).await;

    // The workers' pool: 3 connections (one goes to the task listener), short waits.
    let tiny = tiny_pool(&db, 3, Duration::from_millis(300)).await;
    let mailer = RecordingMailer::default();
    let registry = Registry::standard(Arc::new(mailer.clone()), mail_config());
    let (mut running, stop) =
        start_workers_on(&db, &tiny, registry, fast_config("starved-worker")).await;
    // Someone else holds every other connection of the pool (the rescuer may hold one
    // for a moment: wait for it rather than fail on the short acquire timeout).
    let mut held = Vec::new();
    for _ in 0..50 {
        match tiny.acquire().await {
            Ok(conn) => held.push(conn),
            Err(sqlx::Error::PoolTimedOut) => {}
            Err(error) => panic!("{error}"),
        }
        if held.len() == 2 {
            break;
        }
    }
    assert_eq!(held.len(), 2, "could not take the pool's connections");
    running.reactions = Some(start_reactions(&db, stop));
    let request = enrollment_request("Ana Souza", "ana@example.org");
    course_command(&courses, &course, institution, request).await;
    // The decision task is claimed (the claim has its own connection) and runs while
    // the pool is starved: its load waits 300 ms and times out.
    eventually("the decision task to be claimed", || async {
        let running: i64 = scalar_i64(
            &db.pool,
            "SELECT count(*) FROM tasks WHERE kind = 'enrollment.decide' AND status = 'running'",
        )
        .await;
        (running == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(held);
    let released = Instant::now();

    let (status, attempt) = finished_task(&db.pool, &course, "enrollment.decide").await;
    assert_eq!(
        status, "succeeded",
        "the decision task must not fail for good"
    );
    assert!(
        attempt >= 2,
        "the first attempt hit the pool timeout (attempt {attempt})"
    );
    let first_error: Option<String> = sqlx::query_scalar(
        "SELECT a.error FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.kind = 'enrollment.decide' AND a.attempt = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let first_error = first_error.unwrap_or_default();
    assert!(
        first_error.contains("pool timed out"),
        "the first attempt failed on the pool: {first_error}"
    );
    let decided: i64 = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM events WHERE event_type = 'StudentEnrolled'",
    )
    .await;
    assert_eq!(decided, 1, "the application was decided");
    let (scheduled, _) = finished_task(&db.pool, &course, "email.application_scheduled").await;
    assert_eq!(scheduled, "succeeded");
    let lost: i64 = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM tasks WHERE status IN ('failed', 'dead')",
    )
    .await;
    assert_eq!(lost, 0, "no task failed for good");
    eprintln!(
        "starved pool: the decision succeeded on attempt {attempt}, {:.1} s after the connections were released",
        released.elapsed().as_secs_f64()
    );

    running.stop().await;
}

/// Finding 16: the SMTP server accepted the message, then recording it in
/// `outbox_emails` fails (a trigger raises) for longer than the task's lease. The task
/// retries the record, not the send, keeps its lease meanwhile, and succeeds on its
/// first attempt: exactly one message is delivered. (Before the fix the failed record
/// failed the task, whose next attempt sent the message again.)
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_record_of_a_sent_email_is_retried_without_sending_again() {
    let db = TestDatabase::new().await;
    sqlx::raw_sql(
        "CREATE TABLE fault_block (on_purpose boolean);
         INSERT INTO fault_block VALUES (true);
         CREATE SEQUENCE fault_failures;
         CREATE FUNCTION fail_outbox_record() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM fault_block) THEN
                 PERFORM nextval('fault_failures');
                 RAISE EXCEPTION 'injected fault: the outbox record fails';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER fail_outbox_record BEFORE INSERT ON outbox_emails
             FOR EACH ROW EXECUTE FUNCTION fail_outbox_record();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sink = SmtpSink::start().await;
    let mailer = SmtpMailer::from_url(&sink.url(), "Aula <no-reply@aula.test>").unwrap();
    let registry = Registry::standard(Arc::new(mailer), mail_config());
    let config = fast_config("smtp-worker");
    let lease = config.lease;
    let running = start(&db, registry, config, true).await;

    let institution = Uuid::new_v4();
    let student = Uuid::new_v4().to_string();
    bus::<Student>(&db.pool, StudentServices)
        .execute(
            &student,
            StudentCommand::CreateStudent {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Bia Nunes").unwrap(),
                email: Email::parse("bia@example.org").unwrap(),
                birth_date: born_on(2004, 1, 1),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();

    eventually("the first failed record", || async {
        (!sink.to("bia@example.org").is_empty()
            && scalar_i64(
                &db.pool,
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM fault_failures",
            )
            .await
                >= 1)
            .then_some(())
    })
    .await;
    // The record keeps failing for longer than the lease: the heartbeat must keep it.
    let blocked = Instant::now();
    tokio::time::sleep(lease + Duration::from_secs(1)).await;
    sqlx::query("DELETE FROM fault_block")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, attempt) = finished_task(&db.pool, &student, "email.welcome").await;
    let recovered = blocked.elapsed();
    assert_eq!(status, "succeeded");
    assert_eq!(attempt, 1, "the send was not repeated by another attempt");
    let failures = scalar_i64(&db.pool, "SELECT last_value FROM fault_failures").await;
    assert!(
        failures >= 2,
        "the record was retried ({failures} failures)"
    );
    assert_eq!(
        sink.to("bia@example.org").len(),
        1,
        "exactly one message was delivered"
    );
    let recorded = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM outbox_emails WHERE kind = 'email.welcome' AND transport = 'smtp'",
    )
    .await;
    assert_eq!(recorded, 1);
    eprintln!(
        "record failures: {failures}; task succeeded {:.1} s after the fault began (fault held {:.1} s)",
        recovered.as_secs_f64(),
        (lease + Duration::from_secs(1)).as_secs_f64()
    );
    running.stop().await;
}

/// Fails its first four attempts as if the pool had no connection for it, then works.
struct UnreachableDatabase;

#[async_trait::async_trait]
impl aula_processor::TaskHandler for UnreachableDatabase {
    async fn run(
        &self,
        ctx: &aula_processor::TaskContext,
    ) -> Result<(), aula_processor::TaskError> {
        if ctx.task.attempt <= 4 {
            return Err(sqlx::Error::PoolTimedOut.into());
        }
        Ok(())
    }
}

/// Fails every attempt with an error that says nothing about the database.
struct AlwaysBroken;

#[async_trait::async_trait]
impl aula_processor::TaskHandler for AlwaysBroken {
    async fn run(
        &self,
        _ctx: &aula_processor::TaskContext,
    ) -> Result<(), aula_processor::TaskError> {
        Err(aula_processor::TaskError::retry(
            "the remote service said no",
        ))
    }
}

/// Finding 13, for outages longer than a task's retry budget: an attempt that could
/// not use the database says nothing about the task and does not use up its
/// attempts; any other failure still does.
#[tokio::test(flavor = "multi_thread")]
async fn attempts_that_could_not_reach_the_database_do_not_use_up_the_retry_budget() {
    let db = TestDatabase::new().await;
    let mut registry = Registry::new();
    registry
        .register("test.unreachable", UnreachableDatabase)
        .register("test.broken", AlwaysBroken);
    let mut tasks = Vec::new();
    for (kind, key) in [("test.unreachable", "u-1"), ("test.broken", "b-1")] {
        let mut task = aula_processor::NewTask::new(kind, key, serde_json::json!({}));
        task.max_attempts = 2;
        tasks.push(task);
    }
    let mut conn = db.pool.acquire().await.unwrap();
    aula_processor::queue::insert_tasks(&mut conn, &tasks)
        .await
        .unwrap();
    drop(conn);
    let running = start(&db, registry, fast_config("budget-worker"), false).await;
    let finished = |key: &'static str| {
        let pool = db.pool.clone();
        async move {
            eventually(&format!("task {key} to finish"), || async {
                let row: (String, i32, i32) = sqlx::query_as(
                    "SELECT status, attempt, max_attempts FROM tasks WHERE idempotency_key = $1",
                )
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap();
                matches!(row.0.as_str(), "succeeded" | "failed" | "dead").then_some(row)
            })
            .await
        }
    };
    let (status, attempt, max_attempts) = finished("u-1").await;
    assert_eq!(
        (status.as_str(), attempt, max_attempts),
        ("succeeded", 5, 6),
        "four unavailable attempts were spared"
    );
    let (status, attempt, _) = finished("b-1").await;
    assert_eq!(
        (status.as_str(), attempt),
        ("dead", 2),
        "other failures count"
    );
    running.stop().await;
}

/// Finding 16 at scale: a burst of welcome e-mails over a real SMTP conversation while
/// the workers' pool keeps being exhausted by someone else. Every student gets exactly
/// one e-mail and every task succeeds. (Before the fix, a record that timed out waiting
/// for the pool after the send failed the task, and its retry sent again.)
#[tokio::test(flavor = "multi_thread")]
async fn e_mails_sent_while_the_pool_is_exhausted_are_sent_once() {
    const STUDENTS: usize = 40;
    let db = TestDatabase::new().await;
    let sink = SmtpSink::start().await;
    let mailer = SmtpMailer::from_url(&sink.url(), "Aula <no-reply@aula.test>").unwrap();
    let registry = Registry::standard(Arc::new(mailer), mail_config());
    let (running, starver) = start_exhausted(&db, registry, "exhausted-worker").await;
    let institution = Uuid::new_v4();
    let students = bus::<Student>(&db.pool, StudentServices);
    for n in 0..STUDENTS {
        students
            .execute(
                &Uuid::new_v4().to_string(),
                StudentCommand::CreateStudent {
                    institution_id: InstitutionId::from_uuid(institution),
                    user_id: UserId::from_uuid(Uuid::new_v4()),
                    name: PersonName::parse("Student Burst").unwrap(),
                    email: Email::parse(&format!("s{n}@example.org")).unwrap(),
                    birth_date: born_on(2004, 1, 1),
                },
                &meta(Some(institution)),
            )
            .await
            .unwrap();
    }
    let started = Instant::now();
    eventually("every welcome e-mail task to finish", || async {
        let open: i64 = scalar_i64(
            &db.pool,
            "SELECT count(*) FROM tasks WHERE kind = 'email.welcome'
             AND status NOT IN ('succeeded', 'failed', 'dead')",
        )
        .await;
        let total: i64 = scalar_i64(
            &db.pool,
            "SELECT count(*) FROM tasks WHERE kind = 'email.welcome'",
        )
        .await;
        (total == STUDENTS as i64 && open == 0).then_some(())
    })
    .await;
    let took = started.elapsed();
    let rounds = starver.stop().await;
    let retried: i64 = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.kind = 'email.welcome' AND a.outcome = 'retry'",
    )
    .await;
    let succeeded: i64 = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM tasks WHERE kind = 'email.welcome' AND status = 'succeeded'",
    )
    .await;
    let delivered = sink.delivered.lock().unwrap().len();
    let duplicates: Vec<String> = (0..STUDENTS)
        .map(|n| format!("s{n}@example.org"))
        .filter(|a| sink.to(a).len() != 1)
        .collect();
    eprintln!(
        "pool exhausted {rounds} times: {succeeded}/{STUDENTS} e-mail tasks succeeded in {:.1} s after {retried} retried attempts; {delivered} messages delivered",
        took.as_secs_f64()
    );
    assert_eq!(succeeded, STUDENTS as i64, "every e-mail task succeeded");
    assert!(
        duplicates.is_empty(),
        "not exactly one e-mail: {duplicates:?}"
    );
    assert_eq!(delivered, STUDENTS);
    running.stop().await;
}

/// Takes every free connection of a pool for 300 ms out of every 500 ms until stopped.
struct Starver {
    starving: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
}

impl Starver {
    /// Takes every connection of `pool` it can get, at most `free` (those the pool's
    /// owner does not hold), for 300 ms of every 500 ms.
    fn start(pool: PgPool, free: usize) -> Starver {
        let starving = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let starving = starving.clone();
            async move {
                let mut rounds = 0u32;
                while starving.load(Ordering::Relaxed) {
                    let mut held = Vec::new();
                    while held.len() < free {
                        match pool.acquire().await {
                            Ok(conn) => held.push(conn),
                            Err(_) => break,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(held);
                    rounds += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                rounds
            }
        });
        Starver { starving, task }
    }

    /// Gives the pool back; how many times it was taken.
    async fn stop(self) -> u32 {
        self.starving.store(false, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// 8 workers on a pool of 4 connections (one is the task listener's) with short waits,
/// and the reactions; someone else takes every free connection of that pool for 300 ms
/// of every 500 ms.
async fn start_exhausted(
    db: &TestDatabase,
    registry: Registry,
    worker: &str,
) -> (Running, Starver) {
    let tiny = tiny_pool(db, 4, Duration::from_millis(200)).await;
    let mut config = fast_config(worker);
    config.concurrency = 8;
    let (mut running, stop) = start_workers_on(db, &tiny, registry, config).await;
    let starver = Starver::start(tiny, 3);
    running.reactions = Some(start_reactions(db, stop));
    (running, starver)
}

/// Finding 13 at scale: 30 applications to a course of 10 seats are decided while the
/// workers' pool keeps being exhausted. Every application is decided (10 enrolled, 20
/// declined) and no task fails for good. (Before the fix, each decision whose load hit
/// the pool timeout failed permanently and its application was never decided.)
#[tokio::test(flavor = "multi_thread")]
async fn applications_decided_while_the_pool_is_exhausted_are_all_decided() {
    const APPLICANTS: usize = 30;
    let db = TestDatabase::new().await;
    let institution = Uuid::new_v4();
    let course = Uuid::new_v4().to_string();
    let courses = bus::<Course>(&db.pool, CourseServices);
    open_course(&courses, &course, institution, "Cálculo I", 10).await;
    let mailer = RecordingMailer::default();
    let registry = Registry::standard(Arc::new(mailer.clone()), mail_config());
    let (running, starver) = start_exhausted(&db, registry, "exhausted-decider").await;
    for n in 0..APPLICANTS {
        let request = enrollment_request("Applicant Burst", &format!("a{n}@example.org"));
        course_command(&courses, &course, institution, request).await;
    }
    let started = Instant::now();
    eventually("every task to finish", || async {
        let (total, open, decisions): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed', 'dead')),
                    (SELECT count(*) FROM events
                     WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined'))
             FROM tasks WHERE kind IN ('enrollment.decide', 'email.application_scheduled', 'email.enrolled', 'email.declined')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        // 2 tasks per application (decision, scheduled e-mail) + 1 answer e-mail per
        // decision taken.
        (total == 2 * APPLICANTS as i64 + decisions && open == 0).then_some(())
    })
    .await;
    let took = started.elapsed();
    let rounds = starver.stop().await;
    let count = |sql: &'static str| scalar_i64(&db.pool, sql);
    let enrolled = count("SELECT count(*) FROM events WHERE event_type = 'StudentEnrolled'").await;
    let declined =
        count("SELECT count(*) FROM events WHERE event_type = 'EnrollmentDeclined'").await;
    let lost = count("SELECT count(*) FROM tasks WHERE status IN ('failed', 'dead')").await;
    let retried = count(
        "SELECT count(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE a.outcome = 'retry' AND a.error LIKE '%pool timed out%'",
    )
    .await;
    eprintln!(
        "pool exhausted {rounds} times: {enrolled} enrolled + {declined} declined of {APPLICANTS} in {:.1} s; {retried} attempts retried after a pool timeout; {lost} tasks failed for good",
        took.as_secs_f64()
    );
    assert_eq!(lost, 0, "no task failed for good");
    assert_eq!(
        (enrolled, declined),
        (10, 20),
        "every application was decided"
    );
    running.stop().await;
}
