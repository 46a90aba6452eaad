//! The log reader under races: slow transactions that commit late, killed subscribers,
//! competing instances. Each test creates the race rather than arguing about it.
//!
//! Removing the commit-order guard (`tx_id < pg_snapshot_xmin(...)`) from
//! `READ_BATCH_SQL` makes `concurrent_writers_with_late_commits_are_seen_exactly_once`
//! fail: events of transactions that commit after a later-positioned one are skipped.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_eventlog::log::RecordedEvent;
use aula_eventlog::shutdown;
use aula_eventlog::subscription::{self, BoxError, SubscriptionState};
use aula_eventlog::testing::{fast_subscription, TestDatabase};
use aula_eventlog::{Consumer, SubscriptionOptions, Wakeups};
use rand::Rng;
use sqlx::{PgConnection, PgPool};

/// Records every event it is handed into `seen`, inside the batch transaction.
struct Recorder {
    subscription: String,
    instance: String,
    /// Blocks forever (holding its transaction open) when this many batches were done.
    hang_after_batches: Option<usize>,
    batches: Arc<AtomicUsize>,
    hung: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    /// Reads the next batch while delivering (`Consumer::reads_ahead`); each delivery
    /// then waits a little, as on a broker's acknowledgements, and every
    /// `fail_every`-th one fails.
    read_ahead: Option<ReadAhead>,
}

struct ReadAhead {
    deliveries: usize,
    fail_every: usize,
}

impl Recorder {
    fn new(subscription: &str, instance: &str) -> Self {
        Recorder {
            subscription: subscription.into(),
            instance: instance.into(),
            hang_after_batches: None,
            batches: Arc::new(AtomicUsize::new(0)),
            hung: None,
            read_ahead: None,
        }
    }

    fn reading_ahead(mut self, fail_every: usize) -> Self {
        self.read_ahead = Some(ReadAhead {
            deliveries: 0,
            fail_every,
        });
        self
    }
}

#[async_trait::async_trait]
impl Consumer for Recorder {
    fn reads_ahead(&self) -> bool {
        self.read_ahead.is_some()
    }

    async fn deliver(&mut self, _events: &[RecordedEvent]) -> Result<(), BoxError> {
        let Some(read_ahead) = &mut self.read_ahead else {
            return Ok(());
        };
        read_ahead.deliveries += 1;
        // Long enough for the read of the next batch to finish first.
        tokio::time::sleep(Duration::from_millis(3)).await;
        if read_ahead.deliveries % read_ahead.fail_every == 0 {
            return Err("the broker did not acknowledge".into());
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        record_seen(tx, &self.subscription, &self.instance, events).await?;
        let done = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(done) == self.hang_after_batches {
            if let Some(hung) = &self.hung {
                let _ = hung.send(());
            }
            // Simulates a process frozen mid-batch: rows written, nothing committed.
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// What every test consumer does with its batch: records each event in `seen` (created by
/// [`setup`]) as handled by `instance` of `subscription`, in the batch's transaction and
/// order.
pub(super) async fn record_seen(
    tx: &mut PgConnection,
    subscription: &str,
    instance: &str,
    events: &[RecordedEvent],
) -> Result<(), sqlx::Error> {
    let positions: Vec<i64> = events.iter().map(|e| e.global_position()).collect();
    let aggregates: Vec<String> = events.iter().map(|e| e.aggregate_id.clone()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    sqlx::query(
        "INSERT INTO seen (subscription, instance, global_position, aggregate_id, sequence)
         SELECT $1, $2, p, a, s FROM unnest($3::bigint[], $4::text[], $5::bigint[]) WITH ORDINALITY AS t(p, a, s, o) ORDER BY o",
    )
    .bind(subscription)
    .bind(instance)
    .bind(&positions)
    .bind(&aggregates)
    .bind(&sequences)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Bounds a wait so a broken implementation fails the test instead of hanging it.
pub(super) async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("timed out after 120 s")
}

pub(super) async fn setup() -> TestDatabase {
    let db = TestDatabase::new().await;
    sqlx::raw_sql(
        "CREATE TABLE seen (
            seen_no bigint GENERATED ALWAYS AS IDENTITY,
            subscription text NOT NULL, instance text NOT NULL,
            global_position bigint NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

pub(super) fn fast(name: &str) -> SubscriptionOptions {
    let mut options = fast_subscription(name);
    options.batch_size = 50;
    options
}

/// Subscription `name` on a [`Recorder`] of instance `instance`.
fn spawn_recorder(
    db: &TestDatabase,
    name: &str,
    instance: &str,
    wakeups: &Wakeups,
    shutdown: shutdown::Shutdown,
) -> subscription::SubscriptionHandle {
    let recorder = Recorder::new(name, instance);
    subscription::spawn(
        db.connect.clone(),
        fast(name),
        recorder,
        wakeups.clone(),
        shutdown,
    )
}

pub(super) async fn insert_event(conn: &mut PgConnection, aggregate: &str, sequence: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('test', $1, $2, 'Tested', '1.0', '{}', '{}')",
    )
    .bind(aggregate)
    .bind(sequence)
    .execute(conn)
    .await
    .unwrap();
}

pub(super) async fn append_events(pool: &PgPool, aggregate: &str, from: i64, count: i64) {
    let mut tx = pool.begin().await.unwrap();
    for sequence in from..from + count {
        insert_event(&mut tx, aggregate, sequence).await;
    }
    tx.commit().await.unwrap();
}

pub(super) async fn committed_positions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Waits until `subscription` has recorded `expected` rows (or more), up to a generous
/// limit: a slow shared machine must not fail the test, only a wrong result.
pub(super) async fn wait_for_seen(pool: &PgPool, subscription: &str, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM seen WHERE subscription = $1")
            .bind(subscription)
            .fetch_one(pool)
            .await
            .unwrap();
        if count as usize >= expected {
            // Give a wrong implementation the chance to deliver duplicates too.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{subscription} saw {count} of {expected} events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every committed event exactly once, and per aggregate in sequence order.
async fn assert_exactly_once_in_order(pool: &PgPool, subscription: &str) {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT global_position, aggregate_id, sequence FROM seen WHERE subscription = $1 ORDER BY seen_no",
    )
    .bind(subscription)
    .fetch_all(pool)
    .await
    .unwrap();
    let committed = committed_positions(pool).await;
    let mut seen: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{subscription} saw some event twice"
    );
    seen.sort_unstable();
    let missing: Vec<i64> = committed
        .iter()
        .filter(|p| !unique.contains(p))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{subscription} skipped {} events: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        seen, committed,
        "{subscription} saw events that were never committed"
    );
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, aggregate, sequence) in &rows {
        let previous = last.insert(aggregate, *sequence).unwrap_or(0);
        assert_eq!(
            *sequence,
            previous + 1,
            "{subscription}: {aggregate} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_late_commits_are_seen_exactly_once() {
    let db = setup().await;
    let (stop, shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, shutdown.clone()).await.unwrap();
    // `delta` reads each next batch while delivering the current one, and one delivery
    // in seven fails: the batch read ahead must then be dropped, never skipped past.
    let names = ["alpha", "beta", "gamma", "delta"];
    let handles: Vec<_> = names
        .iter()
        .map(|name| {
            let recorder = Recorder::new(name, "only");
            subscription::spawn(
                db.connect.clone(),
                fast(name),
                if *name == "delta" {
                    recorder.reading_ahead(7)
                } else {
                    recorder
                },
                wakeups.clone(),
                shutdown.clone(),
            )
        })
        .collect();

    const WRITERS: usize = 12;
    const TRANSACTIONS: i64 = 25;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let pool = db.pool.clone();
        writers.push(tokio::spawn(async move {
            let aggregate = format!("writer-{writer}");
            let mut sequence = 1;
            for _ in 0..TRANSACTIONS {
                let (events, hold, abort) = {
                    let mut rng = rand::thread_rng();
                    let events = rng.gen_range(1..=3);
                    // One transaction in five stays open long enough for dozens of
                    // later ones to commit first; one in ten rolls back.
                    let hold = if rng.gen_bool(0.2) {
                        rng.gen_range(50..250)
                    } else {
                        rng.gen_range(0..5)
                    };
                    (events, hold, rng.gen_bool(0.1))
                };
                let mut tx = pool.begin().await.unwrap();
                for k in 0..events {
                    insert_event(&mut tx, &aggregate, sequence + k).await;
                }
                tokio::time::sleep(Duration::from_millis(hold)).await;
                if abort {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    sequence += events;
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let total = committed_positions(&db.pool).await.len();
    assert!(
        total > WRITERS * 10,
        "the workload committed too little: {total}"
    );
    for name in names {
        wait_for_seen(&db.pool, name, total).await;
        assert_exactly_once_in_order(&db.pool, name).await;
    }
    stop.trigger();
    for handle in handles {
        handle.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_killed_mid_batch_resumes_without_loss_or_duplicate() {
    let db = setup().await;
    for aggregate in 0..10 {
        append_events(&db.pool, &format!("agg-{aggregate}"), 1, 200).await;
    }
    let total = committed_positions(&db.pool).await.len();

    let (_stop, shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, shutdown.clone()).await.unwrap();
    // Three instances in turn freeze mid-batch and are killed; a fourth finishes.
    for (round, hang_after) in [3usize, 7, 2].into_iter().enumerate() {
        let (hung_tx, mut hung_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut recorder = Recorder::new("victim", &format!("round-{round}"));
        recorder.hang_after_batches = Some(hang_after);
        recorder.hung = Some(hung_tx);
        let handle = subscription::spawn(
            db.connect.clone(),
            fast("victim"),
            recorder,
            wakeups.clone(),
            shutdown.clone(),
        );
        within(hung_rx.recv())
            .await
            .expect("the subscriber never reached its fatal batch");
        // The kill: the task and its connection vanish mid-transaction.
        handle.task.abort();
        let _ = handle.task.await;
    }
    let survivor = spawn_recorder(&db, "victim", "survivor", &wakeups, shutdown.clone());
    wait_for_seen(&db.pool, "victim", total).await;
    assert_exactly_once_in_order(&db.pool, "victim").await;
    let (handled, last_error): (i64, Option<String>) = sqlx::query_as(
        "SELECT events_handled, last_error FROM subscription_checkpoints WHERE name = 'victim'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(handled as usize, total);
    assert_eq!(last_error, None);
    survivor.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_one_instance_consumes_and_a_standby_takes_over() {
    let db = setup().await;
    let (stop_first, first_shutdown) = shutdown::channel();
    let (stop_second, second_shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, second_shutdown.clone())
        .await
        .unwrap();
    let first = spawn_recorder(&db, "single", "first", &wakeups, first_shutdown);
    let mut first_state = first.state.clone();
    within(first_state.wait_for(|s| matches!(s, SubscriptionState::Active { .. })))
        .await
        .unwrap();
    let second = spawn_recorder(&db, "single", "second", &wakeups, second_shutdown);
    let mut second_state = second.state.clone();
    within(second_state.wait_for(|s| *s == SubscriptionState::Standby))
        .await
        .unwrap();

    for aggregate in 0..5 {
        append_events(&db.pool, &format!("before-{aggregate}"), 1, 40).await;
    }
    wait_for_seen(&db.pool, "single", 200).await;
    assert_eq!(*second.state.borrow(), SubscriptionState::Standby);

    stop_first.trigger();
    first.task.await.unwrap();
    within(second_state.wait_for(|s| matches!(s, SubscriptionState::Active { .. })))
        .await
        .unwrap();
    for aggregate in 0..5 {
        append_events(&db.pool, &format!("after-{aggregate}"), 1, 40).await;
    }
    wait_for_seen(&db.pool, "single", 400).await;
    assert_exactly_once_in_order(&db.pool, "single").await;

    let by_instance: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT instance, split_part(aggregate_id, '-', 1), count(*) FROM seen GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        by_instance,
        vec![
            ("first".into(), "before".into(), 200),
            ("second".into(), "after".into(), 200)
        ]
    );
    stop_second.trigger();
    second.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_reconnects_after_its_connection_is_killed() {
    let db = setup().await;
    let (stop, shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, shutdown.clone()).await.unwrap();
    let handle = spawn_recorder(&db, "phoenix", "only", &wakeups, shutdown);
    append_events(&db.pool, "one", 1, 100).await;
    wait_for_seen(&db.pool, "phoenix", 100).await;
    for round in 0..3 {
        // The database drops the subscription's connection (and the listener's).
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'aula subscription%'")
            .execute(&db.pool)
            .await
            .unwrap();
        append_events(&db.pool, &format!("after-{round}"), 1, 50).await;
    }
    wait_for_seen(&db.pool, "phoenix", 250).await;
    assert_exactly_once_in_order(&db.pool, "phoenix").await;
    stop.trigger();
    handle.task.await.unwrap();
}

/// A subscription's batches commit without waiting for the WAL flush (see
/// `aula_eventlog::subscription`): a server killed under it may lose the last batches,
/// but each whole, with its checkpoint. The postmaster of a private server is SIGKILLed
/// while a writer appends (durably) and a subscription records what it reads: after
/// the restart, every event the writer got acknowledged is seen exactly once.
#[test]
fn a_killed_server_loses_no_event_and_repeats_none_of_a_subscription() {
    use aula_eventlog::local_pg::{LocalPgOptions, LocalPostgres};
    let dir = super::local_pg::scratch_dir();
    let mut options = LocalPgOptions::new(&dir);
    // Durable commits for the writer; fsync off only spares the disk (a killed process
    // does not lose what it handed to the kernel, but it does lose the WAL it had not
    // written yet: the batches committed asynchronously).
    options.settings = vec![("fsync".into(), "off".into())];
    options.restart_backoff = Duration::from_millis(100);
    let server = LocalPostgres::start(&options).expect("the server starts");
    let rt = super::local_pg::runtime();
    let (acknowledged, failed) = rt.block_on(async {
        let pool = super::local_pg::pool_of(&server).await;
        aula_eventlog::db::migrate(&pool).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE seen (
                seen_no bigint GENERATED ALWAYS AS IDENTITY,
                subscription text NOT NULL, instance text NOT NULL,
                global_position bigint NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let (stop, shutdown) = shutdown::channel();
        let handle = subscription::spawn(
            server.connect_options(),
            fast("crash"),
            Recorder::new("crash", "a"),
            Wakeups::polling_only(),
            shutdown,
        );
        // One event per aggregate, so a retried insert never needs its sequence.
        let writing = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn({
            let (pool, writing) = (pool.clone(), writing.clone());
            async move {
                let (mut acknowledged, mut failed) = (0usize, 0usize);
                while writing.load(Ordering::Relaxed) {
                    let mut conn = match pool.acquire().await {
                        Ok(conn) => conn,
                        Err(_) => {
                            failed += 1;
                            continue;
                        }
                    };
                    let aggregate = format!("w-{acknowledged}-{failed}");
                    match sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                         VALUES ('test', $1, 1, 'Tested', '1.0', '{}', '{}')",
                    )
                    .bind(&aggregate)
                    .execute(&mut *conn)
                    .await
                    {
                        Ok(_) => acknowledged += 1,
                        Err(_) => failed += 1,
                    }
                    drop(conn);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (acknowledged, failed)
            }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let old = server.pid();
        // SAFETY: kill(2) on the postmaster this test started.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
        let killed = Instant::now();
        while server.restarts() < 1 || server.pid() == old {
            assert!(killed.elapsed() < Duration::from_secs(90), "the server did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Appends and reads go on after the restart.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        writing.store(false, Ordering::Relaxed);
        let (acknowledged, failed) = writer.await.unwrap();
        let committed = committed_positions(&pool).await.len();
        assert!(committed >= acknowledged, "acknowledged events were lost");
        wait_for_seen(&pool, "crash", committed).await;
        assert_exactly_once_in_order(&pool, "crash").await;
        stop.trigger();
        handle.task.await.unwrap();
        pool.close().await;
        (acknowledged, failed)
    });
    eprintln!("SIGKILL under a subscription: {acknowledged} events acknowledged, {failed} appends failed, each seen once");
    assert!(server.stop(), "the restarted server stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records the size of each batch it handles.
struct Sizes(Arc<std::sync::Mutex<Vec<usize>>>);

#[async_trait::async_trait]
impl Consumer for Sizes {
    async fn handle(
        &mut self,
        _tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(events.len());
        Ok(())
    }
}

/// A subscription that is behind takes larger batches, doubling after each full one up
/// to `CATCH_UP_GROWTH` times its batch size; once it has caught up (a batch that is not
/// full) it reads at its batch size again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_behind_reads_growing_batches_then_small_ones() {
    assert_eq!(aula_eventlog::subscription::CATCH_UP_GROWTH, 4);
    let db = setup().await;
    append_events(&db.pool, "a", 1, 100).await;
    let (stop, shutdown) = shutdown::channel();
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut options = fast_subscription("growing");
    options.batch_size = 10;
    let handle = subscription::spawn(
        db.connect.clone(),
        options,
        Sizes(sizes.clone()),
        Wakeups::polling_only(),
        shutdown,
    );
    let mut states = handle.state.clone();
    let last = *committed_positions(&db.pool).await.last().unwrap();
    within(states.wait_for(
        |s| matches!(s, SubscriptionState::Active { position } if position.global_position == last),
    ))
    .await
    .unwrap();
    // 10, 20, 40 (the ceiling), then the 30 left: not full.
    assert_eq!(*sizes.lock().unwrap(), [10, 20, 40, 30]);
    // Caught up: a few new events come in a batch of the batch size.
    append_events(&db.pool, "b", 1, 25).await;
    let last = *committed_positions(&db.pool).await.last().unwrap();
    within(states.wait_for(
        |s| matches!(s, SubscriptionState::Active { position } if position.global_position == last),
    ))
    .await
    .unwrap();
    assert_eq!(sizes.lock().unwrap()[4..], [10, 15]);
    stop.trigger();
    handle.task.await.unwrap();
}
