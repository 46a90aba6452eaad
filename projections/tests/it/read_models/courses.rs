//! The domain read models of courses: age metrics, capacity, enrollments, their
//! keyset pages, and a poison event that stops only its own projection.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_metrics_stay_right_after_the_youngest_and_oldest_cancel() {
    let (db, s) = scenario_projected(&["age_metrics", "course_enrollments"]).await;

    let pool = &db.pool;
    for (scope, id, expected) in [
        (AgeScope::Course, s.c1, (2, 20, 30, 25.0)),
        (AgeScope::Course, s.c2, (1, 25, 25, 25.0)),
        (AgeScope::Course, s.c3, (1, 19, 19, 19.0)),
        (AgeScope::Campus, s.campus_a, (3, 20, 30, 25.0)),
        (AgeScope::Campus, s.campus_b, (1, 19, 19, 19.0)),
        // 20 + 30 + 25 + 19 = 94 over 4 students.
        (AgeScope::Institution, s.institution, (4, 19, 30, 23.5)),
    ] {
        let row = age_metrics_of(pool, scope, id).await.unwrap();
        assert_eq!(metrics(row), expected, "{scope:?} {id}");
    }
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
    let (db, s) = scenario_projected(&["course_capacity"]).await;

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
    let (db, s) = scenario_projected(&["course_enrollments"]).await;

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

/// Opens `course`, named `name` with 5 seats, on a new campus of `world`'s institution.
async fn open(world: &World, course: Uuid, name: &str) {
    let institution = world.metadata.institution_id.unwrap();
    world
        .open(course, institution, Uuid::new_v4(), name, 5)
        .await;
}

/// `ordering`, or its reverse for a descending list.
fn directed(ordering: std::cmp::Ordering, descending: bool) -> std::cmp::Ordering {
    if descending {
        ordering.reverse()
    } else {
        ordering
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_stops_its_projection_and_not_the_others() {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let course = Uuid::new_v4();
    open(&world, course, "Ética").await;
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
    open(&world, later, "Lógica").await;

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
    let (db, s) = scenario_projected(&["course_capacity", "course_enrollments"]).await;

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
                directed(ordering, descending)
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
                directed(ordering, descending)
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
