//! Shared test helpers: a course "world" driven through the real command bus, and
//! running projections until they have caught up with the log.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use aula_domain::application::{Application, ApplicationCommand};
use aula_domain::course::{ApplicationToDecide, Course, CourseCommand};
use aula_domain::values::{BirthDate, Capacity, CourseName, Email, PersonName};
use aula_eventlog::shutdown::{self, Shutdown, ShutdownTrigger};
use aula_eventlog::subscription::SubscriptionHandle;
use aula_eventlog::testing::{fast_subscription, TestDatabase};
use aula_eventlog::{Actor, CommandBus, CommandError, EventMetadata, SubscriptionOptions, Wakeups};
use chrono::{NaiveDate, TimeZone, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 2, 3).unwrap()
}

/// A birth date that makes someone `age` whole years old on [`today`].
pub fn born_aged(age: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026 - age, 1, 15).unwrap()
}

pub struct World {
    pub bus: CommandBus<Course>,
    pub applications: CommandBus<Application>,
    pub metadata: EventMetadata,
    counter: std::sync::atomic::AtomicUsize,
}

impl World {
    pub fn new(pool: &PgPool, actor: Actor, institution: Uuid) -> World {
        World {
            bus: CommandBus::with_upcasters(
                pool.clone(),
                Default::default(),
                aula_domain::upcasters(),
            ),
            applications: CommandBus::with_upcasters(
                pool.clone(),
                Default::default(),
                aula_domain::upcasters(),
            ),
            metadata: EventMetadata::new(actor, Some(institution)),
            counter: Default::default(),
        }
    }

    pub async fn run(&self, course: Uuid, command: CourseCommand) -> Result<(), String> {
        match self
            .bus
            .execute(&course.to_string(), command, &self.metadata)
            .await
        {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(e)) => Err(e.to_string()),
            Err(e) => panic!("infrastructure failure: {e}"),
        }
    }

    pub async fn open(
        &self,
        course: Uuid,
        institution: Uuid,
        campus: Uuid,
        name: &str,
        capacity: u32,
    ) {
        self.run(
            course,
            CourseCommand::OpenCourse {
                institution_id: institution.into(),
                campus_id: campus.into(),
                name: CourseName::parse(name).unwrap(),
                capacity: Capacity::new(capacity).unwrap(),
            },
        )
        .await
        .unwrap();
    }

    /// Records an application (not decided yet).
    pub async fn request(&self, course: Uuid, age: i32) -> Uuid {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let application = Uuid::new_v4();
        self.run(
            course,
            CourseCommand::RequestEnrollment {
                application_id: application.into(),
                name: PersonName::parse(&format!("Applicant {n}")).unwrap(),
                birth_date: BirthDate::parse(born_aged(age), today()).unwrap(),
                email: Email::parse(&format!(
                    "applicant{n}.{}@example.org",
                    Uuid::new_v4().simple()
                ))
                .unwrap(),
                requested_at: Utc.with_ymd_and_hms(2026, 2, 1, 10, 0, 0).unwrap(),
            },
        )
        .await
        .unwrap();
        application
    }

    /// Submits an application in its own stream (the API's way), not decided yet; the
    /// returned value is what the admissions hand the course.
    pub async fn submit(&self, course: Uuid, age: i32) -> ApplicationToDecide {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = PersonName::parse(&format!("Applicant {n}")).unwrap();
        let email = Email::parse(&format!(
            "applicant{n}.{}@example.org",
            Uuid::new_v4().simple()
        ))
        .unwrap();
        let birth_date = BirthDate::parse(born_aged(age), today()).unwrap();
        let application_id = aula_domain::application::application_id_for(course.into(), &email);
        self.applications
            .execute(
                &application_id.to_string(),
                ApplicationCommand::SubmitApplication {
                    course_id: course.into(),
                    institution_id: self
                        .metadata
                        .institution_id
                        .expect("worlds name their institution")
                        .into(),
                    name: name.clone(),
                    birth_date,
                    email: email.clone(),
                    requested_at: Utc.with_ymd_and_hms(2026, 2, 1, 10, 0, 0).unwrap(),
                    idempotency_key: None,
                },
                &self.metadata,
            )
            .await
            .unwrap();
        ApplicationToDecide {
            application_id,
            name,
            email,
            birth_date,
        }
    }

    /// Decides applications in one batch, as the admissions do.
    pub async fn decide_batch(
        &self,
        course: Uuid,
        applications: Vec<ApplicationToDecide>,
    ) -> Result<(), String> {
        self.run(
            course,
            CourseCommand::DecideApplications {
                applications,
                today: today(),
            },
        )
        .await
    }

    pub async fn decide(&self, course: Uuid, application: Uuid) {
        self.run(
            course,
            CourseCommand::DecideEnrollment {
                application_id: application.into(),
                today: today(),
            },
        )
        .await
        .unwrap();
    }

    /// Applies and has the application decided (enrolled or declined).
    pub async fn apply(&self, course: Uuid, age: i32) -> Uuid {
        let application = self.request(course, age).await;
        self.decide(course, application).await;
        application
    }

    pub async fn cancel(&self, course: Uuid, application: Uuid) -> Result<(), String> {
        self.run(
            course,
            CourseCommand::CancelEnrollment {
                application_id: application.into(),
                at: Utc.with_ymd_and_hms(2026, 2, 10, 9, 0, 0).unwrap(),
            },
        )
        .await
    }
}

pub fn fast(name: &str) -> SubscriptionOptions {
    let mut options = fast_subscription(name);
    options.batch_size = 37; // odd, so batches split streams at arbitrary points
    options.poll_interval = Duration::from_millis(50);
    options
}

pub struct Running {
    pub trigger: ShutdownTrigger,
    pub handles: Vec<SubscriptionHandle>,
}

pub fn start(db: &TestDatabase, names: &[&str]) -> Running {
    let (trigger, shutdown): (ShutdownTrigger, Shutdown) = shutdown::channel();
    let handles = names
        .iter()
        .map(|name| {
            aula_projections::spawn_one(
                db.connect.clone(),
                fast(name),
                Wakeups::polling_only(),
                shutdown.clone(),
            )
        })
        .collect();
    Running { trigger, handles }
}

impl Running {
    pub async fn stop(self) {
        self.trigger.trigger();
        for handle in self.handles {
            handle.task.await.unwrap();
        }
    }
}

/// Waits until every projection in `names` has handled every committed event.
pub async fn wait_caught_up(pool: &PgPool, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = aula_projections::status(pool).await.unwrap();
        let behind: Vec<_> = status
            .iter()
            .filter(|s| names.contains(&s.name.as_str()) && s.lag_events > 0)
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "projections still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the projections until they have caught up, then stops them.
pub async fn catch_up(db: &TestDatabase, names: &[&str]) {
    let running = start(db, names);
    wait_caught_up(&db.pool, names).await;
    running.stop().await;
}

/// Every row of every projection table, as text, sorted: equal snapshots mean equal tables.
pub async fn snapshot(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    aula_projections::snapshot(pool).await.unwrap()
}

/// Waits until a session of this test's database whose `application_name` is like
/// `application` (`%` for any) waits for a lock; panics after a minute with `what`.
pub async fn wait_for_a_lock_wait(pool: &PgPool, application: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND wait_event_type = 'Lock'
                              AND application_name LIKE $1)",
        )
        .bind(application)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
