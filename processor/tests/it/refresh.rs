//! The refresher of the events' admin rows (ADR 0001): when a claim's refresh is due,
//! and what it takes with it.

use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::db::try_transaction_lock;
use aula_eventlog::shutdown;
use aula_eventlog::testing::TestDatabase;
use aula_processor::{
    processing, queue, run_workers, Registry, TaskContext, TaskError, TaskHandler,
};
use uuid::Uuid;

use crate::common::{eventually, fast_config};

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

/// Keeps refreshing in rounds of `limit` until nothing is queued.
async fn refresh_until_empty(pool: sqlx::PgPool, limit: i64) -> usize {
    let mut taken = 0;
    loop {
        match processing::refresh(&pool, limit).await.unwrap() {
            Some(0) | None => {
                let left =
                    crate::common::scalar_i64(&pool, "SELECT count(*) FROM admin_event_refresh")
                        .await;
                if left == 0 {
                    return taken;
                }
                // The claims' ids are due a moment later, or the other rounds hold them.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(n) => taken += n,
        }
    }
}

/// Session 12: `processing::REFRESHERS` rounds may run at once. They take disjoint ids,
/// a round beyond the slots does nothing, and racing rounds (an event's claim id in one,
/// its completion id in another) write every row and counter as one round would.
#[tokio::test(flavor = "multi_thread")]
async fn refresh_rounds_run_side_by_side_up_to_the_slots_and_count_each_event_once() {
    let db = TestDatabase::new().await;
    assert_eq!(processing::REFRESHERS, 4);
    let events: Vec<_> = (1..=120).map(|i| event("TeacherCreated", i)).collect();
    react(&db.pool, &events).await;
    let claimed = queue::claim_deferred(&db.pool, "w", 1_000, LONG_LEASE, true)
        .await
        .unwrap();
    let tasks = claimed.len();
    assert!(tasks >= events.len(), "every event issues a task");
    // Half of them finish at once (their completion's id is due now, the claim's later),
    // the rest only after a first race of refreshers (their claim's id was due first).
    let (now, later) = claimed.split_at(tasks / 2);
    let done: Vec<_> = now.iter().map(|t| t.done()).collect();
    queue::complete_deferred(&db.pool, &done).await.unwrap();

    // Every slot held elsewhere: a round does nothing and leaves the ids queued.
    let mut holder = db.pool.begin().await.unwrap();
    for slot in 0..processing::REFRESHERS {
        let held = try_transaction_lock(&mut holder, (0x6175_6c61, 17 + slot))
            .await
            .unwrap();
        assert!(held);
        if slot == 0 {
            // One slot free: a round runs.
            assert!(processing::refresh(&db.pool, 1).await.unwrap().is_some());
        }
    }
    assert_eq!(processing::refresh(&db.pool, 1).await.unwrap(), None);
    holder.rollback().await.unwrap();

    let race = |pool: sqlx::PgPool| async move {
        // One more round than the slots.
        let rounds: Vec<_> = (0..=processing::REFRESHERS)
            .map(|_| tokio::spawn(refresh_until_empty(pool.clone(), 7)))
            .collect();
        let mut taken = 0;
        for round in rounds {
            taken += round.await.unwrap();
        }
        taken
    };
    race(db.pool.clone()).await;
    let done: Vec<_> = later.iter().map(|t| t.done()).collect();
    queue::complete_deferred(&db.pool, &done).await.unwrap();
    race(db.pool.clone()).await;

    for e in &events {
        let p = processing_of(&db.pool, e.event_id).await;
        assert_eq!(p.status, "succeeded", "{e:?}");
        assert_eq!(
            (p.tasks_pending, p.tasks_running, p.tasks_failed),
            (0, 0, 0)
        );
        assert!(p.tasks_succeeded >= 1);
        assert!(p.processed_at.is_some());
    }
    let events = events.len() as i64;
    for (sql, expected) in [
        (
            "SELECT COALESCE(sum(count), 0)::bigint FROM task_status_counts
             WHERE kind = 'event' AND status = 'succeeded'",
            events,
        ),
        (
            "SELECT COALESCE(sum(count), 0)::bigint FROM task_status_counts
             WHERE kind = 'event' AND status IN ('pending', 'retrying', 'failed')",
            0,
        ),
        (
            "SELECT COALESCE(sum(count), 0)::bigint FROM processing_rollups
             WHERE kind = 'event' AND status = 'succeeded'",
            events,
        ),
        (
            "SELECT COALESCE(sum(tasks_succeeded), 0)::bigint FROM admin_events",
            tasks as i64,
        ),
    ] {
        assert_eq!(
            crate::common::scalar_i64(&db.pool, sql).await,
            expected,
            "{sql}"
        );
    }
    db.drop_database().await;
}

/// Runs its first attempt until released; the others succeed at once.
struct FirstWaits(Arc<tokio::sync::Semaphore>, std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl TaskHandler for FirstWaits {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = self.0.acquire().await;
        }
        Ok(())
    }
}

/// Session 14: the workers' claims queue no refresh of their events' rows; a worker
/// queues one itself for the tasks it still runs `CLAIM_REFRESH_DELAY_MS` after their
/// claim (`worker`'s notices). So a slow task's event shows running while it runs, and
/// every event ends up at its final status.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_shows_the_event_of_a_task_it_still_runs_as_running() {
    let db = TestDatabase::new().await;
    let slow = event("TeacherCreated", 1);
    react(&db.pool, std::slice::from_ref(&slow)).await;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut registry = Registry::new();
    registry.register(
        "notification.link_teacher",
        FirstWaits(release.clone(), Default::default()),
    );
    let (trigger, stop) = shutdown::channel();
    let workers = tokio::spawn(run_workers(
        db.pool.clone(),
        fast_config("w"),
        registry,
        stop,
    ));
    eventually("the slow task's event shows running", || async {
        let p = processing_of(&db.pool, slow.event_id).await;
        (p.status == "pending" && counts(&p) == [0, 1, 0, 0]).then_some(())
    })
    .await;

    let quick = event("TeacherCreated", 2);
    react(&db.pool, std::slice::from_ref(&quick)).await;
    release.add_permits(1);
    for event in [&slow, &quick] {
        eventually("the events end succeeded", || async {
            let p = processing_of(&db.pool, event.event_id).await;
            (p.status == "succeeded" && counts(&p) == [0, 0, 1, 0]).then_some(())
        })
        .await;
    }
    trigger.trigger();
    workers.await.unwrap().unwrap();
    db.drop_database().await;
}

/// The refresher's own VACUUM of its queue (`processing::VACUUM_AFTER`): the rows its
/// rounds deleted are gone from the table's pages, so the next round's scan does not
/// read them; and it runs on a pooled connection, outside any transaction.
#[tokio::test(flavor = "multi_thread")]
async fn the_refresh_queue_is_vacuumed_of_the_ids_taken() {
    let db = TestDatabase::new().await;
    let ids: Vec<Uuid> = (0..20_000).map(|_| Uuid::now_v7()).collect();
    processing::queue_refresh(&db.pool, &ids).await.unwrap();
    sqlx::query("DELETE FROM admin_event_refresh")
        .execute(&db.pool)
        .await
        .unwrap();
    let pages =
        "SELECT pg_relation_size('admin_event_refresh') / current_setting('block_size')::bigint";
    let before: i64 = sqlx::query_scalar(pages).fetch_one(&db.pool).await.unwrap();
    assert!(before > 50, "20,000 dead rows fill pages: {before}");
    processing::vacuum_queue(&db.pool).await.unwrap();
    // Emptied pages at the end of a table are given back by VACUUM.
    let after: i64 = sqlx::query_scalar(pages).fetch_one(&db.pool).await.unwrap();
    assert_eq!(after, 0, "{before} pages before the VACUUM");
}

/// A new database whose queue the statistics know to be empty, as a connection planning
/// its statements on a quiet queue sees it.
async fn with_an_empty_queue_analyzed() -> TestDatabase {
    let db = TestDatabase::new().await;
    sqlx::raw_sql("VACUUM ANALYZE task_queue")
        .execute(&db.pool)
        .await
        .unwrap();
    db
}

/// A statement a connection planned while the queue was empty (a table PostgreSQL saw
/// with no rows) keeps scanning the whole queue once it is long, until an ANALYZE makes
/// every connection plan again; the refresher runs one when the queue grows.
#[tokio::test(flavor = "multi_thread")]
async fn a_queue_that_grows_is_analyzed_so_its_statements_are_planned_again() {
    let db = with_an_empty_queue_analyzed().await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&db.connect)
        .await
        .unwrap();
    // `controls::unpark_resumed`'s look for parked tasks, prepared while the queue is empty.
    sqlx::raw_sql(
        "PREPARE parked AS SELECT DISTINCT kind FROM task_queue t WHERE status = 'paused'
         AND NOT EXISTS (SELECT 1 FROM task_kind_pauses p WHERE p.kind = t.kind)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert!(parked_plan(&mut conn)
        .await
        .contains("Seq Scan on task_queue"));

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let refresher = tokio::spawn(processing::run_refresher(
        db.pool.clone(),
        Arc::new(tokio::sync::Notify::new()),
        Duration::from_millis(50),
        Duration::from_millis(50),
        stop,
    ));
    aula_processor::bench::insert_noop_tasks(&db.pool, 20_000)
        .await
        .unwrap();
    eventually("the grown queue analyzed", || async {
        let analyzed: Option<f32> = sqlx::query_scalar(
            "SELECT reltuples FROM pg_class WHERE relname = 'task_queue' AND reltuples >= 10000",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        analyzed
    })
    .await;
    let plan = parked_plan(&mut conn).await;
    assert!(
        plan.contains("task_queue_paused_idx"),
        "planned again for the long queue:\n{plan}"
    );
    stop_tx.send(true).unwrap();
    refresher.await.unwrap();
}

/// The plan of the statement `parked` prepared on `conn`.
async fn parked_plan(conn: &mut sqlx::PgConnection) -> String {
    let lines: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE parked")
        .fetch_all(conn)
        .await
        .unwrap();
    lines.join("\n")
}

/// `controls::unpark_resumed` runs every few seconds in every process. Prepared once on
/// an empty queue, its plan (a scan of the table) stayed after a burst filled the queue;
/// planned at each run, it reads the parked tasks' index whatever the statistics say.
#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_for_parked_tasks_does_not_scan_a_queue_that_grew() {
    let db = with_an_empty_queue_analyzed().await;
    // One connection, so the sweeps share it (and would share a prepared plan).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.connect.clone())
        .await
        .unwrap();
    for _ in 0..6 {
        aula_processor::controls::unpark_resumed(&pool)
            .await
            .unwrap();
    }
    aula_processor::bench::insert_noop_tasks(&db.pool, 20_000)
        .await
        .unwrap();
    let seq_scans = || async {
        let mut conn = pool.acquire().await.unwrap();
        // This backend's counts reach the statistics now, not within the second.
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'task_queue'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    };
    let before = seq_scans().await;
    aula_processor::controls::unpark_resumed(&pool)
        .await
        .unwrap();
    assert_eq!(seq_scans().await, before, "the sweep scanned the queue");
}

/// Every process's refresher sees a burst; the queue is analyzed once, by whichever
/// takes the lock first, and not again while the statistics fit its size.
#[tokio::test(flavor = "multi_thread")]
async fn a_grown_queue_is_analyzed_once_whoever_sees_it() {
    let db = with_an_empty_queue_analyzed().await;
    aula_processor::bench::insert_noop_tasks(&db.pool, 20_000)
        .await
        .unwrap();
    let analyzed =
        futures::future::join_all((0..4).map(|_| processing::analyze_queue(&db.pool, 20_000)))
            .await;
    let runs = analyzed
        .into_iter()
        .filter(|a| *a.as_ref().unwrap())
        .count();
    assert_eq!(runs, 1, "one ANALYZE for the burst");
    assert!(!processing::analyze_queue(&db.pool, 20_000).await.unwrap());
    // Four times bigger again: due again.
    assert!(processing::analyze_queue(&db.pool, 80_001).await.unwrap());
}
