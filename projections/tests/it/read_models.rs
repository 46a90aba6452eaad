//! Each read model fed by real domain events (appended through the command bus) and
//! run by its subscription until caught up, checked against hand-computed numbers.

use crate::common;

use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Actor;
use aula_projections::admin_events::{self, DurationOp, EventListQuery, EventSort};
use aula_projections::age_metrics::{age_metrics, age_metrics_of, AgeScope};
use aula_projections::audit_log::{audit_log, AuditQuery};
use aula_projections::course_capacity::{course_capacity, list_course_capacity};
use aula_projections::enrollments::course_enrollments;
use aula_projections::{status, NAMES};
use common::*;
use uuid::Uuid;

struct Scenario {
    institution: Uuid,
    campus_a: Uuid,
    campus_b: Uuid,
    c1: Uuid,
    c2: Uuid,
    c3: Uuid,
    c1_youngest: Uuid,
}

/// C1 (campus A, 3 seats): ages 18, 20, 30 enrolled, a fourth applicant declined
/// (class full), then the 18-year-old (the youngest of everything) cancels.
/// C2 (campus A, 5 seats, raised to 10): 25 and 40 enrolled, the 40-year-old (the oldest of
/// everything) cancels. C3 (campus B, 5 seats): 19 enrolled, one application pending.
async fn scenario(world: &World) -> Scenario {
    let institution = world.metadata.institution_id.unwrap();
    let (campus_a, campus_b) = (Uuid::new_v4(), Uuid::new_v4());
    let (c1, c2, c3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    world.open(c1, institution, campus_a, "Física I", 3).await;
    world.open(c2, institution, campus_a, "Química", 5).await;
    world.open(c3, institution, campus_b, "Cálculo", 5).await;
    let c1_youngest = world.apply(c1, 18).await;
    world.apply(c1, 20).await;
    world.apply(c1, 30).await;
    world.apply(c1, 22).await; // declined: class full
    world.apply(c2, 25).await;
    let c2_oldest = world.apply(c2, 40).await;
    world.apply(c3, 19).await;
    world.request(c3, 50).await; // pending
    world.cancel(c1, c1_youngest).await.unwrap();
    world.cancel(c2, c2_oldest).await.unwrap();
    world
        .run(
            c2,
            aula_domain::course::CourseCommand::ChangeCapacity {
                capacity: aula_domain::values::Capacity::new(10).unwrap(),
            },
        )
        .await
        .unwrap();
    Scenario {
        institution,
        campus_a,
        campus_b,
        c1,
        c2,
        c3,
        c1_youngest,
    }
}

fn metrics(row: Option<aula_projections::age_metrics::AgeMetricsRow>) -> (i64, i32, i32, f64) {
    let row = row.expect("metrics exist");
    (row.students, row.min_age, row.max_age, row.average_age)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_metrics_stay_right_after_the_youngest_and_oldest_cancel() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    catch_up(&db, &["age_metrics", "course_enrollments"]).await;

    let pool = &db.pool;
    assert_eq!(
        metrics(age_metrics_of(pool, AgeScope::Course, s.c1).await.unwrap()),
        (2, 20, 30, 25.0)
    );
    assert_eq!(
        metrics(age_metrics_of(pool, AgeScope::Course, s.c2).await.unwrap()),
        (1, 25, 25, 25.0)
    );
    assert_eq!(
        metrics(age_metrics_of(pool, AgeScope::Course, s.c3).await.unwrap()),
        (1, 19, 19, 19.0)
    );
    assert_eq!(
        metrics(
            age_metrics_of(pool, AgeScope::Campus, s.campus_a)
                .await
                .unwrap()
        ),
        (3, 20, 30, 25.0)
    );
    assert_eq!(
        metrics(
            age_metrics_of(pool, AgeScope::Campus, s.campus_b)
                .await
                .unwrap()
        ),
        (1, 19, 19, 19.0)
    );
    // 20 + 30 + 25 + 19 = 94 over 4 students.
    assert_eq!(
        metrics(
            age_metrics_of(pool, AgeScope::Institution, s.institution)
                .await
                .unwrap()
        ),
        (4, 19, 30, 23.5)
    );
    let courses = age_metrics(pool, AgeScope::Course, None, None, 10)
        .await
        .unwrap();
    assert_eq!((courses.rows.len(), courses.next), (3, None));
    // Pages of 2 walk the same rows by key, in id order.
    let first = age_metrics(pool, AgeScope::Course, None, None, 2)
        .await
        .unwrap();
    assert_eq!(first.rows, courses.rows[..2]);
    assert_eq!(first.next, Some(courses.rows[1].scope_id));
    let second = age_metrics(pool, AgeScope::Course, None, first.next, 2)
        .await
        .unwrap();
    assert_eq!(
        (second.rows.as_slice(), second.next),
        (&courses.rows[2..], None)
    );
    assert!(courses
        .rows
        .windows(2)
        .all(|w| w[0].scope_id < w[1].scope_id));

    // Cancelling everyone removes the course from the metrics, and the campus follows.
    let world2 = World::new(&db.pool, Actor::System, s.institution);
    for application in course_enrollments(pool, s.c3, false).await.unwrap() {
        world2
            .cancel(s.c3, application.application_id)
            .await
            .unwrap();
    }
    catch_up(&db, &["age_metrics"]).await;
    assert_eq!(
        age_metrics_of(pool, AgeScope::Course, s.c3).await.unwrap(),
        None
    );
    assert_eq!(
        age_metrics_of(pool, AgeScope::Campus, s.campus_b)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        metrics(
            age_metrics_of(pool, AgeScope::Institution, s.institution)
                .await
                .unwrap()
        ),
        (3, 20, 30, 25.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn course_capacity_counts_seats_requests_declines_and_cancellations() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    catch_up(&db, &["course_capacity"]).await;

    let c1 = course_capacity(&db.pool, s.c1).await.unwrap().unwrap();
    assert_eq!(c1.name.as_deref(), Some("Física I"));
    assert_eq!(c1.campus_id, Some(s.campus_a));
    assert_eq!(
        (
            c1.capacity,
            c1.enrolled,
            c1.seats_left,
            c1.pending,
            c1.declined,
            c1.cancelled
        ),
        (3, 2, 1, 0, 1, 1)
    );
    let c2 = course_capacity(&db.pool, s.c2).await.unwrap().unwrap();
    assert_eq!(
        (c2.capacity, c2.enrolled, c2.seats_left, c2.cancelled),
        (10, 1, 9, 1)
    );
    let c3 = course_capacity(&db.pool, s.c3).await.unwrap().unwrap();
    assert_eq!(
        (c3.capacity, c3.enrolled, c3.seats_left, c3.pending),
        (5, 1, 4, 1)
    );
    assert!(!c3.closed);

    let campus_a = list_course_capacity(&db.pool, Some(s.institution), Some(s.campus_a))
        .await
        .unwrap();
    assert_eq!(campus_a.len(), 2);
    assert_eq!(
        list_course_capacity(&db.pool, None, None)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollments_list_students_with_their_dates() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    catch_up(&db, &["course_enrollments"]).await;

    let current = course_enrollments(&db.pool, s.c1, false).await.unwrap();
    let mut ages: Vec<i32> = current.iter().map(|e| e.age_years).collect();
    ages.sort_unstable();
    assert_eq!(ages, vec![20, 30]);
    assert!(current
        .iter()
        .all(|e| e.enrolled_on == today() && e.status == "enrolled"));
    let all = course_enrollments(&db.pool, s.c1, true).await.unwrap();
    assert_eq!(all.len(), 3, "the declined applicant is not an enrollment");
    let cancelled = all
        .iter()
        .find(|e| e.application_id == s.c1_youngest)
        .unwrap();
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(
        cancelled.cancelled_on,
        chrono::NaiveDate::from_ymd_opt(2026, 2, 10)
    );
    assert_eq!(cancelled.birth_date, born_aged(18));
    assert_eq!(
        course_enrollments(&db.pool, s.c3, false)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A reprocessed copy, as the processor will append it: same data, metadata naming the original.
async fn append_copy_of(pool: &sqlx::PgPool, event_type: &str) -> (Uuid, i64) {
    let (original, aggregate_id, payload, metadata): (
        Uuid,
        String,
        serde_json::Value,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT event_id, aggregate_id, payload, metadata FROM events WHERE event_type = $1
             ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .fetch_one(pool)
    .await
    .unwrap();
    let mut metadata = metadata;
    metadata["reprocessed_from"] = serde_json::Value::String(original.to_string());
    let copy: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'course', $1, max(sequence) + 1, $2, '1.0', $3, $4 FROM events WHERE aggregate_id = $1
         RETURNING global_position",
    )
    .bind(&aggregate_id)
    .bind(event_type)
    .bind(&payload)
    .bind(&metadata)
    .fetch_one(pool)
    .await
    .unwrap();
    (original, copy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocessed_copies_are_skipped_by_domain_models_and_linked_in_the_admin_view() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    catch_up(&db, NAMES).await;
    let before = snapshot(&db.pool).await;
    let (original, copy_position) = append_copy_of(&db.pool, "StudentEnrolled").await;
    catch_up(&db, NAMES).await;
    let after = snapshot(&db.pool).await;
    for ((table, rows_before), (_, rows_after)) in before.iter().zip(&after) {
        match table.as_str() {
            "audit_log" | "admin_events" | "admin_event_search" => {
                assert_eq!(rows_after.len(), rows_before.len() + 1, "{table}")
            }
            _ => assert_eq!(rows_after, rows_before, "{table} must skip the copy"),
        }
    }
    let original_row = admin_events::admin_event(&db.pool, original)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original_row.copies, 1);
    let copies = admin_events::event_copies(&db.pool, original)
        .await
        .unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].global_position, copy_position);
    assert_eq!(copies[0].reprocessed_from, Some(original));
    // The original names its latest copy (from the events alone: a rebuild agrees).
    assert_eq!(original_row.latest_copy_id, Some(copies[0].event_id));
    assert_eq!(copies[0].latest_copy_id, None);
    assert_eq!(
        course_capacity(&db.pool, s.c1)
            .await
            .unwrap()
            .unwrap()
            .enrolled,
        2
    );
}

/// The processor locks `admin_events` rows in log order (a claim of an original's and its
/// copy's tasks locks the original, then the copy). The projection, writing a copy whose
/// row the processor created first, must not hold the copy's row while it waits for the
/// original's: that wait would be a deadlock. Here a transaction holds the original, the
/// projection writes the copy, and the holder must then get the copy's row at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_a_copy_locks_its_original_first() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    scenario(&world).await;
    catch_up(&db, &["admin_events"]).await;
    let (original, copy_position) = append_copy_of(&db.pool, "StudentEnrolled").await;
    // The processor's reactions saw the copy first and created its row.
    let copy: Uuid = sqlx::query_scalar(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type,
                                   aggregate_id, sequence, recorded_at, tx_id)
         SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                recorded_at, tx_id::text::bigint
         FROM events WHERE global_position = $1
         RETURNING event_id",
    )
    .bind(copy_position)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM admin_events WHERE event_id = $1 FOR UPDATE")
        .bind(original)
        .execute(&mut *holder)
        .await
        .unwrap();
    let running = start(&db, &["admin_events"]);
    // Until the projection waits for the original's row.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projection never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Shorter than `deadlock_timeout` (1 s): a wait here is the projection holding the
    // copy's row, not the deadlock detector's doing.
    sqlx::query("SET LOCAL lock_timeout = '500ms'")
        .execute(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM admin_events WHERE event_id = $1 FOR UPDATE")
        .bind(copy)
        .execute(&mut *holder)
        .await
        .expect("the copy's row is free while the projection waits for the original's");
    holder.commit().await.unwrap();
    wait_caught_up(&db.pool, &["admin_events"]).await;
    running.stop().await;
    let original_row = admin_events::admin_event(&db.pool, original)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original_row.copies, 1);
    let status = status(&db.pool).await.unwrap();
    let projection = status.iter().find(|s| s.name == "admin_events").unwrap();
    assert_eq!(projection.last_error, None, "{projection:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_says_who_did_what_and_when() {
    let db = TestDatabase::new().await;
    let user = Uuid::new_v4();
    let institution = Uuid::new_v4();
    let world = World::new(&db.pool, Actor::User(user), institution);
    let course = Uuid::new_v4();
    world
        .open(course, institution, Uuid::new_v4(), "Álgebra", 2)
        .await;
    world.apply(course, 21).await;
    let system = World::new(&db.pool, Actor::System, institution);
    system.apply(course, 22).await;
    catch_up(&db, &["audit_log"]).await;

    let by_user = audit_log(
        &db.pool,
        &AuditQuery {
            actor_user_id: Some(user),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(by_user.entries.len(), 3); // opened, requested, enrolled
    assert!(
        by_user
            .entries
            .windows(2)
            .all(|w| w[0].global_position > w[1].global_position),
        "newest first"
    );
    let first = by_user.entries.last().unwrap();
    assert_eq!(first.event_type, "CourseOpened");
    assert_eq!(
        first.actor.as_deref(),
        Some(format!("user:{user}").as_str())
    );
    assert_eq!(first.institution_id, Some(institution));
    assert_eq!(first.correlation_id, Some(world.metadata.correlation_id));
    assert_eq!(first.causation.as_deref(), Some("request"));
    assert_eq!(first.aggregate_id, course.to_string());

    // Pages of 2, oldest first, cover everything once.
    let mut query = AuditQuery {
        institution_id: Some(institution),
        ascending: true,
        limit: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = audit_log(&db.pool, &query).await.unwrap();
        seen.extend(page.entries.iter().map(|e| e.global_position));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let enrolled = audit_log(
        &db.pool,
        &AuditQuery {
            event_types: vec!["StudentEnrolled".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(enrolled.entries.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_event_list_filters_sorts_and_pages() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    let other = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let course = Uuid::new_v4();
    other
        .open(
            course,
            other.metadata.institution_id.unwrap(),
            Uuid::new_v4(),
            "Outra",
            1,
        )
        .await;
    catch_up(&db, &["admin_events"]).await;
    let pool = &db.pool;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        admin_events::count_admin_events(pool, &EventListQuery::default())
            .await
            .unwrap(),
        total
    );

    // What the processor will write; simulated here.
    sqlx::query(
        "UPDATE admin_events SET status = 'processed', processed_at = recorded_at + interval '1 second',
             duration_ms = global_position * 10 WHERE event_type = 'StudentEnrolled'",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE admin_events SET status = 'failed', tasks_failed = 1, duration_ms = 5, error = 'smtp down',
             processed_at = recorded_at + interval '5 milliseconds'
         WHERE event_type = 'EnrollmentDeclined'",
    )
    .execute(pool)
    .await
    .unwrap();

    let query =
        |q: EventListQuery| async move { admin_events::list_admin_events(pool, &q).await.unwrap() };
    let types = query(EventListQuery {
        event_types: vec!["StudentEnrolled".into(), "EnrollmentCancelled".into()],
        limit: Some(100),
        ..Default::default()
    })
    .await;
    assert_eq!(types.events.len(), 6 + 2);
    let institution = query(EventListQuery {
        institution_id: Some(s.institution),
        limit: Some(500),
        ..Default::default()
    })
    .await;
    assert_eq!(institution.events.len() as i64, total - 1);
    let failed = query(EventListQuery {
        has_failed_tasks: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(failed.events.len(), 1);
    assert_eq!(failed.events[0].error.as_deref(), Some("smtp down"));
    let status = query(EventListQuery {
        status: Some("processed".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(status.events.len(), 6);
    let slow_threshold = status.events[2].duration_ms.unwrap();
    let slow = query(EventListQuery {
        duration: Some((DurationOp::Gt, slow_threshold)),
        ..Default::default()
    })
    .await;
    assert_eq!(slow.events.len(), 3);
    let exact = query(EventListQuery {
        duration: Some((DurationOp::Eq, 5)),
        ..Default::default()
    })
    .await;
    assert_eq!(exact.events.len(), 1);
    let fast = query(EventListQuery {
        duration: Some((DurationOp::Lt, slow_threshold)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        fast.events.len(),
        3,
        "the failed one (5 ms) and two processed ones"
    );

    // Every sort, both directions, paged by 3: the pages concatenate to the full sorted list.
    every_order_pages_the_sorted_list(pool, &EventListQuery::default(), 3, total).await;
    // Events processed late (an hour and a minute, two days after being recorded) and
    // one processed "before" it was recorded (another clock): a time range sorted by the
    // other time reads them apart from the events processed on time.
    for (rank, lateness) in [(3, "2 days"), (5, "61 minutes"), (7, "-1 minute")] {
        sqlx::query(&format!(
            "UPDATE admin_events SET status = 'succeeded', processed_at = recorded_at + interval '{lateness}',
                 duration_ms = greatest(extract(epoch FROM interval '{lateness}') * 1000, 0)
             WHERE global_position = (SELECT global_position FROM admin_events WHERE status = 'pending'
                                      ORDER BY global_position OFFSET $1 LIMIT 1)"
        ))
        .bind(rank)
        .execute(pool)
        .await
        .unwrap();
    }
    // Filters that take other plans (time ranges: candidates from the range's index,
    // the cursor applied outside, or on-time / late / pending branches; processed-only
    // filters: a bound past the pending events): paged by 2, every sort and direction,
    // the pages are the whole filtered list, sorted, and as many as the count.
    let everything = query(EventListQuery {
        limit: Some(500),
        ..Default::default()
    })
    .await
    .events;
    let mut recorded: Vec<_> = everything.iter().map(|e| e.recorded_at).collect();
    recorded.sort();
    let mut processed: Vec<_> = everything.iter().filter_map(|e| e.processed_at).collect();
    processed.sort();
    let filters = [
        EventListQuery {
            recorded_from: Some(recorded[2]),
            recorded_to: Some(recorded[recorded.len() - 3]),
            ..Default::default()
        },
        EventListQuery {
            processed_from: Some(processed[1]),
            processed_to: Some(processed[processed.len() - 1]),
            ..Default::default()
        },
        EventListQuery {
            processed_from: Some(processed[0]),
            processed_to: Some(processed[processed.len() - 1] + chrono::TimeDelta::seconds(1)),
            ..Default::default()
        },
        EventListQuery {
            recorded_from: Some(recorded[2]),
            recorded_to: Some(recorded[recorded.len() - 3]),
            status: Some("pending".into()),
            ..Default::default()
        },
        EventListQuery {
            recorded_from: Some(recorded[1]),
            status: Some("succeeded".into()),
            ..Default::default()
        },
        EventListQuery {
            processed_to: Some(processed[processed.len() - 2]),
            ..Default::default()
        },
        EventListQuery {
            status: Some("failed".into()),
            ..Default::default()
        },
        EventListQuery {
            status: Some("pending".into()),
            ..Default::default()
        },
        EventListQuery {
            duration: Some((DurationOp::Lt, slow_threshold)),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected = admin_events::count_admin_events(pool, &filter)
            .await
            .unwrap();
        assert!(expected > 0, "{filter:?} matches something");
        every_order_pages_the_sorted_list(pool, &filter, 2, expected).await;
    }
    assert!(admin_events::list_admin_events(
        pool,
        &EventListQuery {
            after: Some("garbage".into()),
            ..Default::default()
        }
    )
    .await
    .is_err());
    // A key of the wrong type for the sort is a bad cursor too, not a database error.
    for (sort, key) in [
        (EventSort::Position, "12:twelve"),
        (EventSort::RecordedAt, "12:yesterday-ish"),
        (EventSort::ProcessedAt, "12:2026-13-45"),
        (EventSort::Duration, "12:1.5"),
    ] {
        let bad = admin_events::list_admin_events(
            pool,
            &EventListQuery {
                sort,
                recorded_from: Some(recorded[0]),
                after: Some(key.into()),
                ..Default::default()
            },
        )
        .await;
        assert!(
            matches!(bad, Err(admin_events::EventListError::BadCursor)),
            "{sort:?} {key}: {bad:?}"
        );
    }
}

/// For every sort in both directions: the pages of `page` rows under `filter`, followed
/// by their cursors, are the whole list; it has `expected` rows and is sorted (missing
/// times and durations first, ties by position).
async fn every_order_pages_the_sorted_list(
    pool: &sqlx::PgPool,
    filter: &EventListQuery,
    page: i64,
    expected: i64,
) {
    let sorts = [
        EventSort::Position,
        EventSort::RecordedAt,
        EventSort::ProcessedAt,
        EventSort::Duration,
        EventSort::EventType,
        EventSort::Status,
    ];
    for sort in sorts {
        for descending in [false, true] {
            let paged = every_page(
                pool,
                EventListQuery {
                    sort,
                    descending,
                    limit: Some(page),
                    ..filter.clone()
                },
            )
            .await;
            let whole = admin_events::list_admin_events(
                pool,
                &EventListQuery {
                    sort,
                    descending,
                    limit: Some(500),
                    ..filter.clone()
                },
            )
            .await
            .unwrap()
            .events;
            assert_eq!(paged, whole, "{filter:?} {sort:?} desc={descending}");
            assert_eq!(whole.len() as i64, expected, "{filter:?} {sort:?}");
            let mut sorted = whole.clone();
            let key = |e: &admin_events::AdminEventRow| {
                let (number, text) = match sort {
                    EventSort::Position => (0, String::new()),
                    EventSort::RecordedAt => (e.recorded_at.timestamp_micros(), String::new()),
                    EventSort::ProcessedAt => (
                        e.processed_at.map_or(i64::MIN, |t| t.timestamp_micros()),
                        String::new(),
                    ),
                    EventSort::Duration => (e.duration_ms.unwrap_or(-1), String::new()),
                    EventSort::EventType => (0, e.event_type.clone()),
                    EventSort::Status => (0, e.status.clone()),
                };
                (number, text, e.global_position)
            };
            sorted.sort_by_key(key);
            if descending {
                sorted.reverse();
            }
            assert_eq!(whole, sorted, "{filter:?} {sort:?} desc={descending}");
        }
    }
}

/// Every page of the admin event list for `q`, following the cursors.
async fn every_page(
    pool: &sqlx::PgPool,
    mut q: EventListQuery,
) -> Vec<admin_events::AdminEventRow> {
    let mut rows = Vec::new();
    loop {
        let page = admin_events::list_admin_events(pool, &q).await.unwrap();
        // A cursor that does not move on would page forever.
        assert!(rows.len() <= 1_000, "{q:?} keeps paging");
        rows.extend(page.events);
        match page.next {
            Some(next) => q.after = Some(next),
            None => return rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_its_projection_and_not_the_others() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let course = Uuid::new_v4();
    world
        .open(
            course,
            world.metadata.institution_id.unwrap(),
            Uuid::new_v4(),
            "Ética",
            5,
        )
        .await;
    let status_before = status(&db.pool).await.unwrap();
    assert_eq!(status_before.len(), NAMES.len());
    assert!(status_before
        .iter()
        .all(|s| s.lag_events == 1 && s.position == 0));

    let poison: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('course', $1, 2, 'StudentEnrolled', '1.0', '{\"type\": \"StudentEnrolled\"}', '{}')
         RETURNING global_position",
    )
    .bind(course.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let later = Uuid::new_v4();
    world
        .open(
            later,
            world.metadata.institution_id.unwrap(),
            Uuid::new_v4(),
            "Lógica",
            5,
        )
        .await;

    let running = start(&db, &["course_capacity", "audit_log"]);
    wait_caught_up(&db.pool, &["audit_log"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let stuck = loop {
        let all = status(&db.pool).await.unwrap();
        let capacity = all
            .into_iter()
            .find(|s| s.name == "course_capacity")
            .unwrap();
        if capacity.failed_position.is_some() && capacity.attempts >= 2 {
            break capacity;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported the poison: {capacity:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stuck.failed_position, Some(poison));
    assert!(stuck.position < poison, "it must not skip the poison");
    assert_eq!(stuck.lag_events, 2);
    assert!(stuck.failing_since.is_some());
    assert!(
        stuck
            .last_error
            .as_deref()
            .unwrap()
            .contains("StudentEnrolled"),
        "{:?}",
        stuck.last_error
    );
    // The event before the poison took effect; the one after did not.
    assert!(course_capacity(&db.pool, course).await.unwrap().is_some());
    assert!(course_capacity(&db.pool, later).await.unwrap().is_none());
    running.stop().await;
}

/// Every page of `page(after)` in turn, until the last.
async fn walk<T, C: Clone, F, Fut>(mut page: F) -> Vec<T>
where
    F: FnMut(Option<C>) -> Fut,
    Fut: std::future::Future<Output = aula_projections::course_capacity::Page<T, C>>,
{
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let p = page(after.clone()).await;
        rows.extend(p.rows);
        match p.next {
            Some(next) => after = Some(next),
            None => return rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn course_and_enrollment_lists_page_by_key_in_sql() {
    use aula_projections::course_capacity::{
        page_course_capacity, CapacityListQuery, CapacitySort, PageError,
    };
    use aula_projections::enrollments::{
        page_course_enrollments, EnrollmentListQuery, EnrollmentSort,
    };
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    catch_up(&db, &["course_capacity", "course_enrollments"]).await;

    let courses = list_course_capacity(&db.pool, None, None).await.unwrap();
    for sort in [
        CapacitySort::Name,
        CapacitySort::Capacity,
        CapacitySort::Enrolled,
        CapacitySort::SeatsLeft,
        CapacitySort::Pending,
        CapacitySort::Declined,
        CapacitySort::OpenedAt,
    ] {
        for descending in [false, true] {
            let mut expected = courses.clone();
            expected.sort_by(|a, b| {
                let ordering = match sort {
                    CapacitySort::Name => a.name.cmp(&b.name),
                    CapacitySort::Capacity => a.capacity.cmp(&b.capacity),
                    CapacitySort::Enrolled => a.enrolled.cmp(&b.enrolled),
                    CapacitySort::SeatsLeft => a.seats_left.cmp(&b.seats_left),
                    CapacitySort::Pending => a.pending.cmp(&b.pending),
                    CapacitySort::Declined => a.declined.cmp(&b.declined),
                    CapacitySort::OpenedAt => a.opened_at.cmp(&b.opened_at),
                }
                .then(a.course_id.cmp(&b.course_id));
                if descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
            for limit in [1, 2, 5] {
                let pool = &db.pool;
                let walked = walk(|after| async move {
                    let query = CapacityListQuery {
                        sort,
                        descending,
                        after,
                        limit: Some(limit),
                        ..CapacityListQuery::default()
                    };
                    page_course_capacity(pool, &query).await.unwrap()
                })
                .await;
                assert_eq!(
                    walked, expected,
                    "{sort:?} descending={descending} by {limit}"
                );
            }
        }
    }
    // Campus A only: the two courses there; a cursor from outside the list is refused.
    let campus_a = CapacityListQuery {
        institution_id: Some(s.institution),
        campus_id: Some(s.campus_a),
        ..CapacityListQuery::default()
    };
    let page = page_course_capacity(&db.pool, &campus_a).await.unwrap();
    assert_eq!(page.rows.len(), 2);
    assert_eq!(page.next, None);
    let foreign = CapacityListQuery {
        after: Some(s.c3),
        ..campus_a
    };
    assert!(matches!(
        page_course_capacity(&db.pool, &foreign).await,
        Err(PageError::BadCursor)
    ));

    let enrollments = course_enrollments(&db.pool, s.c1, true).await.unwrap();
    assert_eq!(enrollments.len(), 3);
    for sort in [
        EnrollmentSort::EnrolledOn,
        EnrollmentSort::Name,
        EnrollmentSort::AgeYears,
    ] {
        for descending in [false, true] {
            let mut expected = enrollments.clone();
            expected.sort_by(|a, b| {
                let ordering = match sort {
                    EnrollmentSort::EnrolledOn => a.enrolled_on.cmp(&b.enrolled_on),
                    EnrollmentSort::Name => a.name.cmp(&b.name),
                    EnrollmentSort::AgeYears => a.age_years.cmp(&b.age_years),
                }
                .then(a.global_position.cmp(&b.global_position));
                if descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
            let pool = &db.pool;
            let walked = walk(|after| async move {
                let query = EnrollmentListQuery {
                    course_id: s.c1,
                    include_cancelled: true,
                    sort,
                    descending,
                    after,
                    limit: Some(1),
                };
                page_course_enrollments(pool, &query).await.unwrap()
            })
            .await;
            assert_eq!(walked, expected, "{sort:?} descending={descending}");
        }
    }
    // The cancelled student is not in the current list, so not a cursor of it.
    let current = EnrollmentListQuery {
        course_id: s.c1,
        include_cancelled: false,
        sort: EnrollmentSort::EnrolledOn,
        descending: false,
        after: Some(s.c1_youngest),
        limit: None,
    };
    assert!(matches!(
        page_course_enrollments(&db.pool, &current).await,
        Err(PageError::BadCursor)
    ));
}

/// The late branch of the admin event list must repeat the late indexes' predicate, or
/// the planner cannot prove that their rows are the ones asked for and reads the whole
/// range instead: compared as PostgreSQL parses both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_late_branch_repeats_the_late_indexes_predicate() {
    let db = TestDatabase::new().await;
    sqlx::query(&format!(
        "CREATE INDEX late_probe ON admin_events (recorded_at) WHERE {}",
        admin_events::LATE
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let predicates: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(i.indpred, i.indrelid)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relname IN ('late_probe', 'admin_events_late_recorded_idx', 'admin_events_late_processed_idx')
         ORDER BY c.relname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(predicates.len(), 3, "{predicates:?}");
    assert!(
        predicates.iter().all(|(_, p)| *p == predicates[0].1),
        "{predicates:?}"
    );
}

/// Issue #23: the admin list's search finds an event by any value of its payload, at
/// any depth, case ignored, and never by a sensitive field (what the dashboard redacts
/// cannot be probed by searching).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_list_searches_payload_values_but_not_sensitive_fields() {
    let db = TestDatabase::new().await;
    for (i, payload) in [
        serde_json::json!({ "email": "Ada.Lovelace@Example.org", "password_hash": "argon2-secret-hash",
                            "nested": { "token_hash": "tok-secret", "note": "Course not found" } }),
        serde_json::json!({ "email": "grace@example.org", "name": "Grace 100%_sure" }),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('user', $1, 1, 'UserCreated', '1.0', $2, '{}')",
        )
        .bind(format!("user-{i}"))
        .bind(payload)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    catch_up(&db, &["admin_events"]).await;
    let found = |text: &str| {
        let query = EventListQuery {
            search: Some(text.to_owned()),
            ..EventListQuery::default()
        };
        let pool = db.pool.clone();
        async move {
            admin_events::list_admin_events(&pool, &query)
                .await
                .unwrap()
                .events
                .into_iter()
                .map(|e| e.aggregate_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found("ada.lovelace@example").await, ["user-0"]);
    assert_eq!(found("course NOT found").await, ["user-0"]);
    let mut both = found("example.org").await;
    both.sort();
    assert_eq!(both, ["user-0", "user-1"]);
    // `%` and `_` are matched as themselves.
    assert_eq!(found("100%_s").await, ["user-1"]);
    assert!(found("0%s").await.is_empty());
    for secret in ["argon2-secret", "tok-secret", "password_hash", "email"] {
        assert!(found(secret).await.is_empty(), "{secret} must not be found");
    }
    // The SQL function leaves out every field the catalog calls sensitive.
    for field in aula_domain::catalog::SENSITIVE_FIELDS {
        let mut doc = serde_json::Map::new();
        doc.insert("keep".into(), "visible".into());
        doc.insert((*field).to_owned(), "hidden-value".into());
        let body: String = sqlx::query_scalar("SELECT aula_search_text($1)")
            .bind(serde_json::Value::Object(doc))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(body, "visible", "{field}");
    }
}
