//! A class never holds more students than its capacity, whatever the concurrency:
//! many deciders race for the last seats of one course through the real event store.

use std::sync::Arc;

use aula_domain::course::{
    Course, CourseCommand, CourseEvent, CourseServices, DeclineReason, EnrollmentError,
};
use aula_domain::values::{
    ApplicationId, BirthDate, CampusId, Capacity, CourseId, CourseName, Email, InstitutionId,
    PersonName,
};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, CommandError, EventMetadata};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_never_exceed_capacity() {
    const SEATS: u32 = 5;
    const APPLICANTS: usize = 40;
    let db = TestDatabase::new().await;
    // Two buses over two pools: two "processes" deciding at once.
    let second_pool = aula_eventlog::db::pool(db.connect.clone(), 20)
        .await
        .unwrap();
    let buses: Vec<Arc<CommandBus<Course>>> = [db.pool.clone(), second_pool]
        .into_iter()
        .map(|pool| {
            Arc::new(CommandBus::with_upcasters(
                pool,
                CourseServices,
                aula_domain::upcasters(),
            ))
        })
        .collect();
    let metadata = EventMetadata::new(Actor::System, None);
    let course = CourseId::from_uuid(Uuid::new_v4()).to_string();
    buses[0]
        .execute(
            &course,
            CourseCommand::OpenCourse {
                institution_id: InstitutionId::from_uuid(Uuid::new_v4()),
                campus_id: CampusId::from_uuid(Uuid::new_v4()),
                name: CourseName::parse("Physics I").unwrap(),
                capacity: Capacity::new(SEATS).unwrap(),
            },
            &metadata,
        )
        .await
        .unwrap();
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
            // The bus retries lost races itself; a caller that still loses retries
            // as the processor would.
            loop {
                match bus.execute(&course, command.clone(), &metadata).await {
                    Ok(committed) => return committed.events,
                    Err(CommandError::Conflict { .. }) => continue,
                    Err(CommandError::Rejected(EnrollmentError::AlreadyDecided)) => {
                        return Vec::new()
                    }
                    Err(other) => panic!("deciding failed: {other}"),
                }
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

    // What the log holds is what counts.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM events WHERE aggregate_id = $1
         AND event_type IN ('StudentEnrolled', 'EnrollmentDeclined') GROUP BY 1 ORDER BY 1",
    )
    .bind(&course)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        vec![
            (
                "EnrollmentDeclined".to_string(),
                (APPLICANTS - SEATS as usize) as i64
            ),
            ("StudentEnrolled".to_string(), SEATS as i64)
        ]
    );
}

/// Two buses (two processes) with their own aggregate caches: answers never rest on a
/// stale cached copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_aggregates_never_answer_from_stale_state() {
    let db = TestDatabase::new().await;
    let first = CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
    let second = CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
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
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
            .bind(&course)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(sequences, (1..=6).collect::<Vec<i64>>());
}
