//! Consumers that fail: one that returns an error or panics on an event holds the
//! subscription at that event, is retried and reported as failing, and recovers by
//! itself once healed; a batch that conflicts with another transaction is run again
//! whole. Each test skips nothing and repeats nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::log::RecordedEvent;
use aula_eventlog::shutdown;
use aula_eventlog::subscription::{self, BoxError, SubscriptionState};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Consumer, Wakeups};
use sqlx::{PgConnection, PgPool};

use super::log_reader::{
    append_events, committed_positions, fast, record_seen, setup, wait_for_seen, within,
};

/// How a [`Faulty`] consumer fails on its poisoned event.
#[derive(Clone, Copy)]
enum Fault {
    Error,
    Panic,
}

/// Records what it consumes as subscription `name`, and fails on the event with sequence
/// `poisoned` (an error or a panic) until `healed` is set ("the bug is fixed").
struct Faulty {
    name: &'static str,
    poisoned: i64,
    fault: Fault,
    healed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Consumer for Faulty {
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        let healed = self.healed.load(Ordering::SeqCst);
        if !healed && events.iter().any(|e| e.sequence == self.poisoned) {
            match self.fault {
                Fault::Error => return Err("poisoned event".into()),
                Fault::Panic => panic!("a bug in the consumer"),
            }
        }
        record_seen(tx, self.name, "x", events).await?;
        Ok(())
    }
}

/// 30 events, then subscription `name` on a [`Faulty`] consumer poisoned by the tenth,
/// once it reports `Failing`. Returns its stop trigger, handle and healing switch.
async fn start_failing(
    db: &TestDatabase,
    name: &'static str,
    fault: Fault,
) -> (
    shutdown::ShutdownTrigger,
    subscription::SubscriptionHandle,
    Arc<AtomicBool>,
) {
    append_events(&db.pool, "a", 1, 30).await;
    let (stop, shutdown) = shutdown::channel();
    let healed = Arc::new(AtomicBool::new(false));
    let consumer = Faulty {
        name,
        poisoned: 10,
        fault,
        healed: healed.clone(),
    };
    let handle = subscription::spawn(
        db.connect.clone(),
        fast(name),
        consumer,
        Wakeups::polling_only(),
        shutdown,
    );
    let mut state = handle.state.clone();
    within(state.wait_for(|s| matches!(s, SubscriptionState::Failing { .. })))
        .await
        .unwrap();
    (stop, handle, healed)
}

/// Heals the consumer of subscription `name`: the failure was transient, so it recovers
/// by itself and consumes every event, skipping nothing.
async fn heal_and_catch_up(db: &TestDatabase, name: &str, healed: &AtomicBool) {
    healed.store(true, Ordering::SeqCst);
    wait_for_seen(&db.pool, name, 30).await;
    assert_seen_in_order(&db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_consumer_stops_at_its_event_and_reports_it() {
    let db = setup().await;
    let (stop, handle, healed) = start_failing(&db, "poison", Fault::Error).await;
    // Let it retry a few more times: it must keep holding the line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (failed_position, last_error): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT failed_position, last_error FROM subscription_checkpoints WHERE name = 'poison'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let poisoned: i64 =
        sqlx::query_scalar("SELECT global_position FROM events WHERE sequence = 10")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(failed_position, Some(poisoned));
    assert_eq!(last_error.as_deref(), Some("poisoned event"));
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM seen WHERE global_position >= $1")
        .bind(poisoned)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        before, 0,
        "events at or after the failing one were consumed"
    );
    let earlier: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        earlier, 9,
        "the events before the failing one were not all consumed"
    );
    heal_and_catch_up(&db, "poison", &healed).await;
    stop.trigger();
    handle.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_consumer_is_retried_and_reported_like_a_failing_one() {
    let db = setup().await;
    // Before: the panic ended the subscription's task and its state stayed `Active`.
    let (stop, handle, healed) = start_failing(&db, "panics", Fault::Panic).await;
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM subscription_checkpoints WHERE name = 'panics'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        last_error.as_deref(),
        Some("the consumer panicked: a bug in the consumer")
    );
    heal_and_catch_up(&db, "panics", &healed).await;
    stop.trigger();
    handle.task.await.unwrap();
}

/// Fails every batch that holds the event with sequence `at_sequence` with PostgreSQL's
/// error `errcode` (a condition name: `deadlock_detected`, `disk_full`), raised by the
/// server itself, `times` times; records what it sees as subscription `name`, and the
/// size of every batch it is offered.
pub(super) struct FailsWith {
    pub(super) name: &'static str,
    pub(super) errcode: &'static str,
    pub(super) at_sequence: i64,
    pub(super) times: Arc<AtomicUsize>,
    pub(super) offered: Arc<std::sync::Mutex<Vec<usize>>>,
}

#[async_trait::async_trait]
impl Consumer for FailsWith {
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        self.offered.lock().unwrap().push(events.len());
        if events.iter().any(|e| e.sequence == self.at_sequence)
            && self
                .times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let raise = format!(
                "DO $$ BEGIN RAISE EXCEPTION '{0}' USING ERRCODE = '{0}'; END $$",
                self.errcode
            );
            sqlx::query(&raise).execute(&mut *tx).await?;
        }
        record_seen(tx, self.name, "x", events).await?;
        Ok(())
    }
}

/// A batch that conflicts with another transaction (a deadlock) is run again whole, at
/// once: not isolated one event at a time, not reported as failing, nothing skipped or
/// repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_conflicts_with_another_transaction_is_run_again_whole() {
    let db = setup().await;
    append_events(&db.pool, "a", 1, 30).await;
    let (stop, shutdown) = shutdown::channel();
    let offered = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A real error from the server, as a deadlock between two writers reports it.
    let consumer = FailsWith {
        name: "conflicts",
        errcode: "deadlock_detected",
        at_sequence: 10,
        times: Arc::new(AtomicUsize::new(3)),
        offered: offered.clone(),
    };
    let handle = subscription::spawn(
        db.connect.clone(),
        fast("conflicts"),
        consumer,
        Wakeups::polling_only(),
        shutdown,
    );
    let mut states = handle.state.clone();
    wait_for_seen(&db.pool, "conflicts", 30).await;
    assert!(
        !matches!(
            *states.borrow_and_update(),
            SubscriptionState::Failing { .. }
        ),
        "a conflict is not a failing consumer"
    );
    assert_seen_in_order(&db.pool).await;
    // The whole batch of 30 was offered four times: three conflicts, then its commit.
    assert_eq!(*offered.lock().unwrap(), [30, 30, 30, 30]);
    let last_error: Option<String> = sqlx::query_scalar(
        "SELECT last_error FROM subscription_checkpoints WHERE name = 'conflicts'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(last_error, None);
    stop.trigger();
    handle.task.await.unwrap();
}

/// Every committed event was seen once, in log order.
async fn assert_seen_in_order(pool: &PgPool) {
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM seen ORDER BY seen_no")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(positions, committed_positions(pool).await);
}
