//! The reactions' batch statements: where its events' admin rows are locked (in the
//! tasks' insert, or after the webhooks' fan-out), and that the lock order holds.

use std::time::Duration;

use crate::common::{loopback_endpoint, until_waiting_on_a_lock, within};
use aula_eventlog::testing::TestDatabase;
use sqlx::PgPool;

/// A `TeacherCreated` event appended and read back from the log. The log hands out an
/// event once no older transaction can still commit before it: other tests'
/// transactions on the shared server may hold it back for a moment.
pub(crate) async fn teacher_created_read_from_the_log(
    pool: &PgPool,
) -> Vec<aula_eventlog::RecordedEvent> {
    use aula_eventlog::LogPosition;

    let event_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('teacher', gen_random_uuid()::text, 1, 'TeacherCreated', '1.0', '{}', '{}')
         RETURNING event_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    loop {
        let read = aula_eventlog::log::read_batch(
            &mut pool.acquire().await.unwrap(),
            LogPosition::START,
            100,
        )
        .await
        .unwrap();
        let events: Vec<_> = read
            .into_iter()
            .filter(|e| e.event_id == event_id)
            .collect();
        if !events.is_empty() {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `TeacherCreated` event read from the log, with its admin row written as the
/// processing writers do (no task yet: done), so there is a row to lock.
async fn event_with_a_row(pool: &PgPool) -> Vec<aula_eventlog::RecordedEvent> {
    let events = teacher_created_read_from_the_log(pool).await;
    let mut conn = pool.acquire().await.unwrap();
    aula_processor::processing::record(&mut conn, &[], &events)
        .await
        .unwrap();
    events
}

/// Runs the reactions' batch on `events` while another transaction holds the lock on
/// their admin row: returns the query the batch waits in, and how far the tasks' id
/// sequence had moved by then (what the batch had inserted before it waited).
async fn batch_waiting_on_the_row(
    pool: &PgPool,
    events: &[aula_eventlog::RecordedEvent],
) -> (String, i64) {
    use aula_eventlog::Consumer;
    use aula_processor::reactions::Reactions;

    let mut holding = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM admin_events WHERE event_id = $1 FOR UPDATE")
        .bind(events[0].event_id)
        .execute(&mut *holding)
        .await
        .unwrap();
    // Sequences are not transactional: the batch's ids show before it commits.
    let last_id = "SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END FROM tasks_id_seq";
    let before: i64 = sqlx::query_scalar(last_id).fetch_one(pool).await.unwrap();
    let batch = tokio::spawn({
        let pool = pool.clone();
        let events = events.to_vec();
        async move {
            let mut tx = pool.begin().await.unwrap();
            Reactions.handle(&mut tx, &events).await.unwrap();
            tx.commit().await.unwrap();
        }
    });
    until_waiting_on_a_lock(pool, "%", "the batch to wait for the row").await;
    let query: String = sqlx::query_scalar(
        "SELECT query FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let after: i64 = sqlx::query_scalar(last_id).fetch_one(pool).await.unwrap();
    holding.commit().await.unwrap();
    within(batch).await.unwrap();
    let row: (String, i32) =
        sqlx::query_as("SELECT status, tasks_pending FROM admin_events WHERE event_id = $1")
            .bind(events[0].event_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        ("pending".to_owned(), 1),
        "the row counts its new task"
    );
    (query, after - before)
}

/// The reactions' batch locks its events' admin rows in the statement that inserts
/// their tasks (one round trip fewer), and only once the insert has run: the lock
/// order (tasks, then the events' rows) holds, and the batch that waits for the row
/// has its task inserted already.
#[tokio::test(flavor = "multi_thread")]
async fn a_reactions_batch_locks_its_rows_in_its_insert_after_the_tasks() {
    let db = TestDatabase::new().await;
    let events = event_with_a_row(&db.pool).await;
    let (query, inserted) = batch_waiting_on_the_row(&db.pool, &events).await;
    assert!(
        query.trim_start().starts_with("WITH inserted AS"),
        "the insert's statement waits for the row:\n{query}"
    );
    assert_eq!(inserted, 1, "the task was inserted before the row's lock");
    db.drop_database().await;
}

/// With a webhook endpoint, the fan-out inserts tasks after the insert's statement, so
/// the rows are locked after it, in a statement of their own, as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_reactions_batch_with_an_endpoint_locks_its_rows_after_the_fan_out() {
    let db = TestDatabase::new().await;
    loopback_endpoint(&db.pool, "every event").await;
    let events = event_with_a_row(&db.pool).await;
    let (query, inserted) = batch_waiting_on_the_row(&db.pool, &events).await;
    assert!(
        query.trim_start().starts_with("SELECT a.event_id"),
        "the rows' own lock waits:\n{query}"
    );
    assert_eq!(
        inserted, 2,
        "the event's task and its webhook delivery came first"
    );
    let messages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_messages WHERE event_id = $1")
            .bind(events[0].event_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(messages, 1);
    db.drop_database().await;
}
