//! The refresher of the events' admin rows (ADR 0001): when a claim's refresh is due,
//! and what it takes with it.

use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_processor::processing;
use aula_processor::queue;
use uuid::Uuid;

use crate::processing::{counts, event, processing_of, react, LONG_LEASE};

/// Migration 0047: a worker's claim queues its event's refresh due a moment later, so a
/// task that finishes within it has its event's row written once, at its final status
/// (its completion's refresh takes the claim's id too); a task still running then is
/// shown running.
#[tokio::test(flavor = "multi_thread")]
async fn a_claims_refresh_waits_a_moment_and_goes_with_the_completion() {
    let db = TestDatabase::new().await;
    let quick = event("TeacherCreated", 1);
    let slow = event("TeacherCreated", 2);
    react(&db.pool, &[quick.clone(), slow.clone()]).await;
    let claimed = queue::claim_deferred(&db.pool, "w", 10, LONG_LEASE, true)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let delays: Vec<f64> = sqlx::query_scalar(
        "SELECT DISTINCT extract(epoch FROM r.not_before - t.claimed_at)::float8 * 1000
         FROM admin_event_refresh r JOIN tasks t ON t.event_id = r.event_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(delays, [processing::CLAIM_REFRESH_DELAY_MS as f64]);

    let quick_task = claimed
        .iter()
        .find(|t| t.event_id == Some(quick.event_id))
        .unwrap();
    queue::complete_deferred(&db.pool, &[quick_task.done()])
        .await
        .unwrap();
    assert!(processing::refresh(&db.pool, 100).await.unwrap().unwrap() >= 2);
    let p = processing_of(&db.pool, quick.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("succeeded", [0, 0, 1, 0]));
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM admin_event_refresh")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        !left.contains(&quick.event_id),
        "the claim's id went with it"
    );

    tokio::time::sleep(Duration::from_millis(
        processing::CLAIM_REFRESH_DELAY_MS + 50,
    ))
    .await;
    processing::refresh_all(&db.pool).await.unwrap();
    let p = processing_of(&db.pool, slow.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("pending", [0, 1, 0, 0]));
    assert_eq!(
        crate::common::scalar_i64(&db.pool, "SELECT count(*) FROM admin_event_refresh").await,
        0
    );
    db.drop_database().await;
}
