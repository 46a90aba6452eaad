//! A subscription while the database cannot run its batches at all (a full disk): the
//! batch waits whole, shown `Disconnected`, and goes on as soon as the database can.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aula_eventlog::shutdown;
use aula_eventlog::subscription::{self, SubscriptionState};
use aula_eventlog::testing::fast_subscription;
use aula_eventlog::Wakeups;

use super::failing_consumers::FailsWith;
use super::log_reader::{append_events, setup};

/// Before session 17 such a batch was treated as a failing consumer's: isolated one
/// event at a time, with a back-off growing to 30 s and the subscription reported
/// failing on its first event, so the read models stayed 21 s behind after a full disk
/// was freed. Now the same batch runs again whole after at most 2 s between tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_cannot_run_waits_whole_and_goes_on_at_once() {
    let db = setup().await;
    append_events(&db.pool, "a", 1, 30).await;
    let (stop, shutdown) = shutdown::channel();
    let offered = Arc::new(Mutex::new(Vec::new()));
    // The server's own "disk full" (53100), as a write on a full disk reports it.
    let consumer = FailsWith {
        name: "outage",
        errcode: "disk_full",
        at_sequence: 10,
        times: Arc::new(AtomicUsize::new(3)),
        offered: offered.clone(),
    };
    let mut options = fast_subscription("outage");
    options.batch_size = 50;
    let started = Instant::now();
    let handle = subscription::spawn(
        db.connect.clone(),
        options,
        consumer,
        Wakeups::polling_only(),
        shutdown,
    );
    let mut states = handle.state.clone();
    let mut disconnected = false;
    loop {
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM seen WHERE subscription = 'outage'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if seen == 30 {
            break;
        }
        disconnected |= matches!(*states.borrow_and_update(), SubscriptionState::Disconnected);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "seen {seen} of 30"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Three outages, each followed by the same whole batch; never one event alone.
    assert_eq!(*offered.lock().unwrap(), [30, 30, 30, 30]);
    assert!(
        disconnected,
        "shown disconnected while the database could not"
    );
    // Backed off 100, 200 and 400 ms (plus jitter), nowhere near the consumer's 30 s.
    assert!(started.elapsed() < Duration::from_secs(10));
    let (last_error, failed_position): (Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT last_error, failed_position FROM subscription_checkpoints WHERE name = 'outage'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (last_error, failed_position),
        (None, None),
        "no event failed"
    );
    stop.trigger();
    handle.task.await.unwrap();
}
