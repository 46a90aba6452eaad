//! What each write of an event's `admin_events` row costs: the writes that need no new
//! row version skip it, and the reactions' pending count is a heap-only update (no
//! index entries). The rush and the drain pay these per event (issues #17, #20).

use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Consumer, RecordedEvent};
use aula_processor::reactions::Reactions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::processing::{counts, event, processing_of, react};

/// Session 12: when the processor wrote an event's row first, the `admin_events`
/// projection's identical identity columns leave the row as it is (no new row version,
/// whose ten index entries the rush paid for every event), and its processing columns
/// stay the processor's.
#[tokio::test(flavor = "multi_thread")]
async fn the_projection_after_the_processor_writes_no_new_row_version() {
    let db = TestDatabase::new().await;
    let student = event("StudentCreated", 1);
    react(&db.pool, std::slice::from_ref(&student)).await;
    let version = |pool: PgPool, id: Uuid| async move {
        sqlx::query_scalar::<_, String>("SELECT xmin::text FROM admin_events WHERE event_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = version(db.pool.clone(), student.event_id).await;
    let processed = processing_of(&db.pool, student.event_id).await;

    let mut tx = db.pool.begin().await.unwrap();
    aula_projections::admin_events::AdminEvents
        .handle(&mut tx, std::slice::from_ref(&student))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(version(db.pool.clone(), student.event_id).await, before);
    assert_eq!(processing_of(&db.pool, student.event_id).await, processed);
    let searchable = crate::common::scalar_i64(
        &db.pool,
        "SELECT count(*) FROM admin_event_search WHERE global_position = 1",
    )
    .await;
    assert_eq!(searchable, 1, "the projection's own table is still written");
    db.drop_database().await;
}

/// When the projection wrote an event's row first, the reactions' write of its pending
/// count changes no indexed column, and `admin_events` keeps room on its pages
/// (fillfactor, migration 0050), so the write is heap-only: no entry in the table's ten
/// indexes. Counted in the writing transaction itself (PostgreSQL's per-transaction
/// statistics), so no other session's writes can blur it.
#[tokio::test(flavor = "multi_thread")]
async fn the_reactions_pending_count_after_the_projection_is_a_heap_only_update() {
    let db = TestDatabase::new().await;
    // Enough events for several pages, so page room, not luck, decides.
    let students: Vec<RecordedEvent> = (1..=200).map(|p| event("StudentCreated", p)).collect();
    let mut tx = db.pool.begin().await.unwrap();
    aula_projections::admin_events::AdminEvents
        .handle(&mut tx, &students)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    Reactions.handle(&mut tx, &students).await.unwrap();
    let (updated, heap_only): (i64, i64) = sqlx::query_as(
        "SELECT pg_stat_get_xact_tuples_updated('admin_events'::regclass),
                pg_stat_get_xact_tuples_hot_updated('admin_events'::regclass)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(updated, 200, "one update per event's row");
    assert_eq!(heap_only, 200, "every one of them heap-only");
    for student in &students {
        let p = processing_of(&db.pool, student.event_id).await;
        assert_eq!((p.status.as_str(), counts(&p)), ("pending", [2, 0, 0, 0]));
    }
    db.drop_database().await;
}
