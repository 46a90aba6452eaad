//! A class never holds more students than its capacity, whatever the concurrency:
//! many deciders race for the last seats of one course through the real event store,
//! one by one (the older `DecideEnrollment`) and in overlapping batches
//! (`DecideApplications`, as the admissions subscription issues them); the admissions
//! seat the first applications in commit order and decide nothing twice.

use std::sync::Arc;

use aula_domain::application::{application_id_for, Application, ApplicationCommand};
use aula_domain::course::{
    ApplicationToDecide, Course, CourseCommand, CourseEvent, CourseServices, DeclineReason,
    EnrollmentError,
};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, Capacity, CourseId, CourseName, Email, InstitutionId,
    PersonName,
};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, CommandError, EventMetadata};
use uuid::Uuid;

/// The races below: this many applicants for this many seats of one course.
const SEATS: u32 = 5;
const APPLICANTS: usize = 40;

/// A command bus for courses over `pool`, with its own cache of aggregates (what one
/// process has).
fn course_bus(pool: sqlx::PgPool) -> CommandBus<Course> {
    CommandBus::with_upcasters(pool, CourseServices, aula_domain::upcasters())
}

/// Two command buses over two pools (two "processes" deciding at once), the system's
/// metadata, and a course of `seats` seats opened through the first: `(buses, metadata,
/// course id)`.
async fn two_processes_and_a_course(
    db: &TestDatabase,
    name: &str,
    seats: u32,
) -> (Vec<Arc<CommandBus<Course>>>, EventMetadata, String) {
    let second_pool = aula_eventlog::db::pool(db.connect.clone(), 20)
        .await
        .unwrap();
    let buses: Vec<Arc<CommandBus<Course>>> = [db.pool.clone(), second_pool]
        .into_iter()
        .map(|pool| Arc::new(course_bus(pool)))
        .collect();
    let metadata = EventMetadata::new(Actor::System, None);
    let course = aula_bench::seed::open_course(&buses[0], name, seats)
        .await
        .unwrap();
    (buses, metadata, course.to_string())
}

/// Executes `command` on `course` until no concurrent writer takes its place: the bus
/// retries lost races itself; a caller that still loses retries as the processor would.
async fn execute_until_not_lost(
    bus: &CommandBus<Course>,
    course: &str,
    command: CourseCommand,
    metadata: &EventMetadata,
) -> Result<Vec<CourseEvent>, CommandError<EnrollmentError>> {
    loop {
        match bus.execute(course, command.clone(), metadata).await {
            Ok(committed) => return Ok(committed.events),
            Err(CommandError::Conflict { .. }) => continue,
            Err(other) => return Err(other),
        }
    }
}

/// What the log holds is what counts: `course`'s stream holds one decision for each of
/// `applicants` applications, `seats` of them enrolled and the others declined.
async fn assert_decided_once_each(
    pool: &sqlx::PgPool,
    course: &str,
    seats: u32,
    applicants: usize,
) {
    let stored: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT event_type, count(*), count(DISTINCT payload->>'application_id') FROM events
         WHERE aggregate_id = $1 AND event_type IN ('StudentEnrolled', 'EnrollmentDeclined')
         GROUP BY 1 ORDER BY 1",
    )
    .bind(course)
    .fetch_all(pool)
    .await
    .unwrap();
    let (seats, declined) = (i64::from(seats), (applicants - seats as usize) as i64);
    assert_eq!(
        stored,
        vec![
            ("EnrollmentDeclined".to_string(), declined, declined),
            ("StudentEnrolled".to_string(), seats, seats)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_never_exceed_capacity() {
    let db = TestDatabase::new().await;
    // Two buses over two pools: two "processes" deciding at once.
    let (buses, metadata, course) = two_processes_and_a_course(&db, "Physics I", SEATS).await;
    let today = chrono::Utc::now().date_naive();
    let mut applications = Vec::new();
    for i in 0..APPLICANTS {
        let application_id = ApplicationId::from_uuid(Uuid::new_v4());
        buses[0]
            .execute(
                &course,
                CourseCommand::RequestEnrollment {
                    application_id,
                    name: PersonName::parse(&format!("Applicant {i}")).unwrap(),
                    birth_date: BirthDate::parse_str("2000-02-29", today).unwrap(),
                    email: Email::parse(&format!("applicant{i}@example.edu")).unwrap(),
                    requested_at: chrono::Utc::now(),
                },
                &metadata,
            )
            .await
            .unwrap();
        applications.push(application_id);
    }

    let mut deciders = Vec::new();
    for (i, application_id) in applications.into_iter().enumerate() {
        let bus = buses[i % 2].clone();
        let (course, metadata) = (course.clone(), metadata.clone());
        deciders.push(tokio::spawn(async move {
            let command = CourseCommand::DecideEnrollment {
                application_id,
                today,
            };
            match execute_until_not_lost(&bus, &course, command, &metadata).await {
                Ok(events) => events,
                Err(CommandError::Rejected(EnrollmentError::AlreadyDecided)) => Vec::new(),
                Err(other) => panic!("deciding failed: {other}"),
            }
        }));
    }
    let mut enrolled = 0;
    let mut declined_full = 0;
    for decider in deciders {
        for event in decider.await.unwrap() {
            match event {
                CourseEvent::StudentEnrolled { .. } => enrolled += 1,
                CourseEvent::EnrollmentDeclined {
                    reason: DeclineReason::ClassFull,
                    ..
                } => declined_full += 1,
                other => panic!("unexpected decision {other:?}"),
            }
        }
    }
    assert_eq!(enrolled, SEATS as usize, "decisions returned to callers");
    assert_eq!(declined_full, APPLICANTS - SEATS as usize);

    assert_decided_once_each(&db.pool, &course, SEATS, APPLICANTS).await;
}

/// Two buses (two processes) with their own aggregate caches: answers never rest on a
/// stale cached copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_aggregates_never_answer_from_stale_state() {
    let db = TestDatabase::new().await;
    let first = course_bus(db.pool.clone());
    let second = course_bus(db.pool.clone());
    let metadata = EventMetadata::new(Actor::System, None);
    let course = CourseId::from_uuid(Uuid::new_v4()).to_string();
    let today = chrono::Utc::now().date_naive();
    let apply = |i: u32| CourseCommand::RequestEnrollment {
        application_id: ApplicationId::from_uuid(Uuid::from_u128(i as u128 + 1)),
        name: PersonName::parse(&format!("Applicant {i}")).unwrap(),
        birth_date: BirthDate::parse_str("2003-07-01", today).unwrap(),
        email: Email::parse(&format!("a{i}@example.edu")).unwrap(),
        requested_at: chrono::Utc::now(),
    };
    let decide = |i: u32| CourseCommand::DecideEnrollment {
        application_id: ApplicationId::from_uuid(Uuid::from_u128(i as u128 + 1)),
        today,
    };
    let open = CourseCommand::OpenCourse {
        institution_id: InstitutionId::from_uuid(Uuid::new_v4()),
        campus_id: CampusId::from_uuid(Uuid::new_v4()),
        name: CourseName::parse("Chemistry").unwrap(),
        capacity: Capacity::new(1).unwrap(),
    };
    first.execute(&course, open, &metadata).await.unwrap();
    first.execute(&course, apply(1), &metadata).await.unwrap(); // first caches the course

    // A rejection the cached copy would give (unknown application) is re-checked.
    second.execute(&course, apply(2), &metadata).await.unwrap();
    let decided = first.execute(&course, decide(2), &metadata).await.unwrap();
    assert!(matches!(
        decided.events[..],
        [CourseEvent::StudentEnrolled { .. }]
    ));

    // A decision from the cached copy (application 1 pending, a seat free in the stale
    // copy) loses to the real state: the class is full now.
    second.execute(&course, apply(3), &metadata).await.unwrap();
    let decided = first.execute(&course, decide(1), &metadata).await.unwrap();
    assert!(
        matches!(
            decided.events[..],
            [CourseEvent::EnrollmentDeclined {
                reason: DeclineReason::ClassFull,
                ..
            }]
        ),
        "decided {:?}",
        decided.events
    );
    let sequences = stream_sequences(&db.pool, &course).await;
    assert_eq!(sequences, (1..=6).collect::<Vec<i64>>());
}

/// `execute_expecting_new` decides on the empty aggregate instead of loading the stream
/// (the application flow: one new stream per applicant); on a stream that exists, the
/// guess is a stale cache entry like any other: every answer is the one `execute`
/// gives, and nothing is appended twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guessed_new_stream_answers_as_a_loaded_one() {
    let db = TestDatabase::new().await;
    let bus = || course_bus(db.pool.clone());
    let metadata = EventMetadata::new(Actor::System, None);
    let course = CourseId::from_uuid(Uuid::new_v4()).to_string();
    let open = || CourseCommand::OpenCourse {
        institution_id: InstitutionId::from_uuid(Uuid::from_u128(7)),
        campus_id: CampusId::from_uuid(Uuid::from_u128(8)),
        name: CourseName::parse("Chemistry").unwrap(),
        capacity: Capacity::new(1).unwrap(),
    };
    let today = chrono::Utc::now().date_naive();
    let apply = CourseCommand::RequestEnrollment {
        application_id: ApplicationId::from_uuid(Uuid::from_u128(1)),
        name: PersonName::parse("Applicant").unwrap(),
        birth_date: BirthDate::parse_str("2003-07-01", today).unwrap(),
        email: Email::parse("a@example.edu").unwrap(),
        requested_at: chrono::Utc::now(),
    };

    // A new stream: decided on the guess, appended first time.
    let opened = bus()
        .execute_expecting_new(&course, open(), &metadata)
        .await
        .unwrap();
    assert_eq!((opened.events.len(), opened.attempts), (1, 1));
    // An existing stream, a command the empty guess would refuse (no course yet): it is
    // decided again on the loaded stream and accepted.
    let applied = bus()
        .execute_expecting_new(&course, apply, &metadata)
        .await
        .unwrap();
    assert_eq!(applied.events.len(), 1);
    // An existing stream, a command the guess would accept (open the course): its
    // append fails on the sequence key and the loaded stream answers, as `execute` does.
    let guessed = bus()
        .execute_expecting_new(&course, open(), &metadata)
        .await
        .map(|c| c.events)
        .map_err(|e| e.to_string());
    let loaded = bus()
        .execute(&course, open(), &metadata)
        .await
        .map(|c| c.events)
        .map_err(|e| e.to_string());
    assert_eq!(guessed, loaded);
    let sequences = stream_sequences(&db.pool, &course).await;
    assert_eq!(sequences, vec![1, 2]);
    db.drop_database().await;
}

fn to_decide(i: usize, today: chrono::NaiveDate) -> ApplicationToDecide {
    ApplicationToDecide {
        application_id: ApplicationId::from_uuid(Uuid::from_u128(0xa000 + i as u128)),
        name: PersonName::parse(&format!("Applicant {i}")).unwrap(),
        email: Email::parse(&format!("batch{i}@example.edu")).unwrap(),
        birth_date: BirthDate::parse_str("2001-09-30", today).unwrap(),
    }
}

/// Batch deciders racing (overlapping batches on two "processes", as a redelivery
/// after a crash would overlap a live decider): the class never exceeds its capacity
/// and no application is decided twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batch_deciders_never_exceed_capacity_nor_decide_twice() {
    let db = TestDatabase::new().await;
    let (buses, metadata, course) = two_processes_and_a_course(&db, "Physics II", SEATS).await;
    let today = chrono::Utc::now().date_naive();
    let mut deciders = Vec::new();
    // Windows of 10 starting every 4: each application is in two or three batches.
    for (k, start) in (0..APPLICANTS).step_by(4).enumerate() {
        let bus = buses[k % 2].clone();
        let (course, metadata) = (course.clone(), metadata.clone());
        let applications: Vec<ApplicationToDecide> = (start..(start + 10).min(APPLICANTS))
            .map(|i| to_decide(i, today))
            .collect();
        deciders.push(tokio::spawn(async move {
            let command = CourseCommand::DecideApplications {
                applications,
                today,
            };
            // As the subscription would: a lost batch is offered again.
            let decided = execute_until_not_lost(&bus, &course, command, &metadata).await;
            decided
                .unwrap_or_else(|e| panic!("deciding failed: {e}"))
                .len()
        }));
    }
    let mut decided = 0;
    for decider in deciders {
        decided += decider.await.unwrap();
    }
    assert_eq!(decided, APPLICANTS, "each application decided once");
    assert_decided_once_each(&db.pool, &course, SEATS, APPLICANTS).await;
}

/// The admissions consumer over the real log: the first applications in commit order
/// get the seats; a batch offered again (a crash before the checkpoint) decides
/// nothing twice; a cancellation frees a seat for the next decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_seat_in_commit_order_and_survive_a_redelivered_batch() {
    use aula_eventlog::subscription::Consumer as _;
    use aula_eventlog::LogPosition;
    const SEATS: u32 = 3;
    let db = TestDatabase::new().await;
    let courses = course_bus(db.pool.clone());
    let applications = CommandBus::<Application>::with_upcasters(
        db.pool.clone(),
        Default::default(),
        aula_domain::upcasters(),
    );
    let metadata = EventMetadata::new(Actor::Public, None);
    let course = CourseId::from_uuid(Uuid::new_v4());
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    courses
        .execute(
            &course.to_string(),
            CourseCommand::OpenCourse {
                institution_id: institution,
                campus_id: CampusId::from_uuid(Uuid::new_v4()),
                name: CourseName::parse("Biology").unwrap(),
                capacity: Capacity::new(SEATS).unwrap(),
            },
            &metadata,
        )
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let submit = |i: usize| {
        let email = Email::parse(&format!("fifo{i}@example.edu")).unwrap();
        let id = application_id_for(course, &email);
        let command = ApplicationCommand::SubmitApplication {
            course_id: course,
            institution_id: institution,
            name: PersonName::parse(&format!("Applicant {i}")).unwrap(),
            birth_date: BirthDate::parse_str("2002-01-01", today).unwrap(),
            email,
            requested_at: chrono::Utc::now(),
            idempotency_key: None,
        };
        (id, command)
    };
    // Committed one after the other: this is the commit order.
    let mut order = Vec::new();
    for i in 0..8 {
        let (id, command) = submit(i);
        applications
            .execute(&id.to_string(), command, &metadata)
            .await
            .unwrap();
        order.push(id);
    }
    let mut conn = db.pool.acquire().await.unwrap();
    // Transactions still running anywhere on the server (other tests) hold the log's
    // readable end back for a moment: read until every application is readable.
    let batch = read_at_least(&mut conn, LogPosition::START, 9).await;
    let mut admissions = aula_processor::Admissions::new(db.pool.clone());
    admissions.handle(&mut conn, &batch).await.unwrap();
    let (state, _) = courses.load(&course.to_string()).await.unwrap();
    let enrolled: Vec<ApplicationId> = state.enrolled().keys().copied().collect();
    let mut first: Vec<ApplicationId> = order[..SEATS as usize].to_vec();
    first.sort();
    assert_eq!(enrolled, first, "the first {SEATS} in commit order");
    assert!(order.iter().all(|id| state.is_decided(id)));

    // The same batch again (its checkpoint never committed): nothing new.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    admissions.handle(&mut conn, &batch).await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after, "a redelivered batch decides nothing twice");

    // A cancellation frees a seat: the next application takes it.
    courses
        .execute(
            &course.to_string(),
            CourseCommand::CancelEnrollment {
                application_id: order[0],
                at: chrono::Utc::now(),
            },
            &metadata,
        )
        .await
        .unwrap();
    let (id, command) = submit(100);
    applications
        .execute(&id.to_string(), command, &metadata)
        .await
        .unwrap();
    let last = batch.last().unwrap().position;
    // The cancellation and the new application, once both are readable (another
    // test's open transaction may hold back the readable end for a moment).
    let mut next = read_at_least(&mut conn, last, 2).await;
    while !next
        .iter()
        .any(|event| event.aggregate_id == id.to_string())
    {
        // Not readable yet: read_at_least waits for one more.
        next = read_at_least(&mut conn, last, next.len() + 1).await;
    }
    admissions.handle(&mut conn, &next).await.unwrap();
    let (state, _) = courses.load(&course.to_string()).await.unwrap();
    assert!(
        state.enrolled().contains_key(&id),
        "the freed seat went to the next application"
    );
    assert_eq!(state.enrolled_count(), SEATS);
}

/// The log after `after`, once at least `count` events are readable.
async fn read_at_least(
    conn: &mut sqlx::PgConnection,
    after: aula_eventlog::LogPosition,
    count: usize,
) -> Vec<aula_eventlog::RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let batch = aula_eventlog::log::read_batch(conn, after, 1000)
            .await
            .unwrap();
        if batch.len() >= count {
            return batch;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} events readable",
            batch.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An application stored in the older shape (`EnrollmentRequested` in the course's own
/// stream, written here as the literal stored form) still loads, projects as pending,
/// and is decided by the older one-by-one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_stored_in_the_old_shape_still_loads_projects_and_is_decided() {
    use aula_eventlog::LogPosition;
    let db = TestDatabase::new().await;
    let courses = course_bus(db.pool.clone());
    let metadata = EventMetadata::new(Actor::System, None);
    let course = aula_bench::seed::open_course(&courses, "History", 2)
        .await
        .unwrap();
    let application = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('course', $1, 2, 'EnrollmentRequested', '1.0', $2::json, '{\"actor\": \"public\"}'::json)",
    )
    .bind(course.to_string())
    .bind(format!(
        r#"{{"type": "EnrollmentRequested", "application_id": "{application}", "name": "Old Shape",
            "birth_date": "2001-02-03", "email": "old@example.edu", "requested_at": "2026-01-05T10:00:00Z"}}"#
    ))
    .execute(&db.pool)
    .await
    .unwrap();

    let (state, _) = courses.load(&course.to_string()).await.unwrap();
    assert!(state
        .pending()
        .contains_key(&ApplicationId::from_uuid(application)));

    let mut capacity = aula_projections::consumer("course_capacity").unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let batch = read_at_least(&mut conn, LogPosition::START, 2).await;
    capacity.handle(&mut conn, &batch).await.unwrap();
    let row = aula_projections::course_capacity::course_capacity(&db.pool, course)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.pending, row.enrolled), (1, 0));

    let decided = courses
        .execute(
            &course.to_string(),
            CourseCommand::DecideEnrollment {
                application_id: ApplicationId::from_uuid(application),
                today: chrono::Utc::now().date_naive(),
            },
            &metadata,
        )
        .await
        .unwrap();
    assert!(matches!(
        decided.events[..],
        [CourseEvent::StudentEnrolled { .. }]
    ));
    let next = read_at_least(&mut conn, batch.last().unwrap().position, 1).await;
    capacity.handle(&mut conn, &next).await.unwrap();
    let row = aula_projections::course_capacity::course_capacity(&db.pool, course)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.pending, row.enrolled, row.seats_left), (0, 1, 1));
}

/// The sequence numbers stored for one stream, in order.
async fn stream_sequences(pool: &sqlx::PgPool, aggregate_id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(aggregate_id)
        .fetch_all(pool)
        .await
        .unwrap()
}
