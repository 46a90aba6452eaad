//! A subscription's checkpoint moved under it by someone else (a rebuild swapping in
//! new tables sets it): the batch in hand is dropped, never handled, and the
//! subscription goes on from where the checkpoint now stands.

use std::time::{Duration, Instant};

use aula_eventlog::log::RecordedEvent;
use aula_eventlog::shutdown;
use aula_eventlog::subscription::{self, BoxError};
use aula_eventlog::testing::fast_subscription;
use aula_eventlog::{Consumer, Wakeups};
use sqlx::{PgConnection, PgPool};

use super::log_reader::{insert_event, record_seen, setup};

/// Records the positions it handles into `seen`, inside the batch transaction.
struct Positions;

#[async_trait::async_trait]
impl Consumer for Positions {
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        record_seen(tx, "moved", "only", events).await?;
        Ok(())
    }
}

async fn seen(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM seen ORDER BY seen_no")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Waits until `seen` holds `count` rows, up to a generous limit.
async fn wait_for(pool: &PgPool, count: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = seen(pool).await;
        if rows.len() >= count {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "saw {rows:?}, waiting for {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn append(pool: &PgPool, sequence: i64) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    insert_event(&mut conn, "a", sequence).await;
    sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_moved_by_someone_else_is_continued_from() {
    let db = setup().await;
    let pool = &db.pool;
    let (trigger, shutdown) = shutdown::channel();
    let handle = subscription::spawn(
        db.connect.clone(),
        fast_subscription("moved"),
        Positions,
        Wakeups::polling_only(),
        shutdown,
    );
    let first = append(pool, 1).await;
    assert_eq!(wait_for(pool, 1).await, [first]);

    // Two events, and the checkpoint moved past them, in one transaction: the
    // subscription reads them (its own checkpoint is still `first`) only once the
    // checkpoint has moved.
    let mut tx = pool.begin().await.unwrap();
    insert_event(&mut tx, "a", 2).await;
    insert_event(&mut tx, "a", 3).await;
    sqlx::query(
        "UPDATE subscription_checkpoints
         SET tx_id = pg_current_xact_id(),
             global_position = (SELECT max(global_position) FROM events)
         WHERE name = 'moved'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let fourth = append(pool, 4).await;
    assert_eq!(wait_for(pool, 2).await, [first, fourth]);
    let (stored, handled): (i64, i64) = sqlx::query_as(
        "SELECT global_position, events_handled FROM subscription_checkpoints WHERE name = 'moved'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stored, fourth);
    assert_eq!(handled, 2, "only the batches it handled count");
    // Nothing more comes late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen(pool).await, [first, fourth]);
    trigger.trigger();
    handle.task.await.unwrap();
    db.drop_database().await;
}
