//! Bulk reprocessing against a real PostgreSQL: the preview's counts, a job that copies
//! exactly the events at or before the preview's position, and cancellation.

use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Actor;
use aula_processor::bulk::{self, BulkFilter, BulkOptions};
use aula_projections::admin_events::EventListQuery;
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::{eventually, scalar_i64};

/// Appends `n` events of `event_type` for `institution` and writes their
/// `admin_events` rows as the projection would, with processing `status`.
async fn append(pool: &PgPool, event_type: &str, institution: Uuid, status: &str, n: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'test', gen_random_uuid()::text, 1, $1, '1.0', '{}'::json,
                json_build_object('institution_id', $2::text)
         FROM generate_series(1, $3)",
    )
    .bind(event_type)
    .bind(institution.to_string())
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    project(pool, status).await;
}

async fn project(pool: &PgPool, status: &str) {
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, institution_id, recorded_at, reprocessed_from, status)
         SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                (metadata->>'institution_id')::uuid, recorded_at,
                (metadata->>'reprocessed_from')::uuid, $1
         FROM events ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

async fn copies_of_type(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'reprocessed' AND event_type = $1",
    )
    .bind(event_type)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_finished(pool: &PgPool, id: Uuid) -> bulk::BulkJob {
    eventually("the job to finish", || async {
        let job = bulk::job(pool, id).await.unwrap().unwrap();
        (job.status != "running").then_some(job)
    })
    .await
}

#[tokio::test]
async fn the_preview_counts_what_the_filter_matches_by_type_and_status() {
    let db = TestDatabase::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    append(&db.pool, "CourseCreated", a, "succeeded", 5).await;
    append(&db.pool, "StudentEnrolled", a, "failed", 3).await;
    append(&db.pool, "CourseCreated", b, "succeeded", 4).await;

    let all = bulk::preview(&db.pool, &EventListQuery::default())
        .await
        .unwrap();
    assert_eq!(all.count, 12);
    assert_eq!(
        all.by_type,
        vec![("CourseCreated".into(), 9), ("StudentEnrolled".into(), 3)]
    );
    assert_eq!(
        all.by_status,
        vec![("failed".into(), 3), ("succeeded".into(), 9)]
    );
    assert_eq!(
        all.up_to_position,
        scalar_i64(&db.pool, "SELECT max(global_position) FROM events").await
    );

    let query = EventListQuery {
        institution_id: Some(a),
        event_types: vec!["CourseCreated".into()],
        ..EventListQuery::default()
    };
    let scoped = bulk::preview(&db.pool, &query).await.unwrap();
    assert_eq!(scoped.count, 5);
    assert_eq!(scoped.by_status, vec![("succeeded".into(), 5)]);

    let failed_only = EventListQuery {
        status: Some("failed".into()),
        ..EventListQuery::default()
    };
    assert_eq!(
        bulk::preview(&db.pool, &failed_only).await.unwrap().count,
        3
    );
}

#[tokio::test]
async fn a_job_copies_every_matching_event_up_to_the_preview_position_and_no_later_one() {
    let db = TestDatabase::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    append(&db.pool, "CourseCreated", a, "succeeded", 450).await;
    append(&db.pool, "CourseCreated", b, "succeeded", 7).await;
    let query = EventListQuery {
        institution_id: Some(a),
        ..EventListQuery::default()
    };
    let preview = bulk::preview(&db.pool, &query).await.unwrap();
    assert_eq!(preview.count, 450);
    // Arrives after the preview: not included.
    append(&db.pool, "CourseCreated", a, "succeeded", 20).await;

    let admin = Uuid::new_v4();
    let id = bulk::start(
        &db.pool,
        &BulkFilter::from(&query),
        preview.up_to_position,
        Actor::User(admin),
    )
    .await
    .unwrap();
    let job = wait_finished(&db.pool, id).await;
    assert_eq!(job.status, "done");
    assert_eq!((job.total, job.done, job.failed), (450, 450, 0));
    assert_eq!(job.requested_by, format!("user:{admin}"));
    assert_eq!(job.institution_id, Some(a));
    assert_eq!(job.up_to_position, preview.up_to_position);

    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, 450);
    // Each original at or before the position, of institution a, has exactly one copy;
    // the later ones and the other institution's have none.
    let (copied, late_copied, other_copied): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE e.global_position <= $1),
                count(*) FILTER (WHERE e.global_position > $1),
                count(*) FILTER (WHERE (e.metadata->>'institution_id')::uuid = $3)
         FROM events e
         WHERE e.aggregate_type = 'test'
           AND (SELECT count(*) FROM events c
                WHERE c.metadata->>'reprocessed_from' = e.event_id::text) = 1
           AND ((e.metadata->>'institution_id')::uuid = $2 OR (e.metadata->>'institution_id')::uuid = $3)",
    )
    .bind(preview.up_to_position)
    .bind(a)
    .bind(b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((copied, late_copied, other_copied), (450, 0, 0));

    // A second job over everything skips the copies themselves.
    project(&db.pool, "pending").await;
    let everything = bulk::preview(&db.pool, &EventListQuery::default())
        .await
        .unwrap();
    assert_eq!(everything.count, 450 + 7 + 20);
}

#[tokio::test]
async fn cancelling_stops_a_job_before_its_next_batch() {
    let db = TestDatabase::new().await;
    append(&db.pool, "CourseCreated", Uuid::new_v4(), "succeeded", 300).await;
    let preview = bulk::preview(&db.pool, &EventListQuery::default())
        .await
        .unwrap();
    let id = bulk::start_with(
        &db.pool,
        &BulkFilter::default(),
        preview.up_to_position,
        Actor::System,
        BulkOptions {
            batch_size: 10,
            pause: Duration::from_millis(100),
        },
    )
    .await
    .unwrap();
    eventually("a first batch", || async {
        let job = bulk::job(&db.pool, id).await.unwrap().unwrap();
        (job.done > 0).then_some(())
    })
    .await;
    let cancelled = bulk::cancel(&db.pool, id).await.unwrap();
    assert_eq!(cancelled.status, "cancelled");
    // Let any batch in flight finish, then check nothing moves any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = bulk::job(&db.pool, id).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = bulk::job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(later.status, "cancelled");
    assert_eq!(later.done, after.done);
    assert!(later.done < 300, "cancelled after {} of 300", later.done);
    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, later.done);

    // Cancelling a finished job leaves it as it was; an unknown job is an error.
    assert_eq!(
        bulk::cancel(&db.pool, id).await.unwrap().status,
        "cancelled"
    );
    assert!(matches!(
        bulk::cancel(&db.pool, Uuid::new_v4()).await,
        Err(bulk::BulkError::JobNotFound(_))
    ));
}
