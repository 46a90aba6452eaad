//! The task queue against a real PostgreSQL: retries with backoff until dead, permanent
//! failures, fencing of a superseded attempt, lease rescue, manual retries, priorities,
//! graceful release, several concurrent worker sets, and the nightly archive.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_processor::archive::{archive_once, ArchiveConfig};
use aula_processor::handlers::{Registry, TaskContext, TaskError, TaskHandler};
use aula_processor::queue::{self, NewTask};
use chrono::{DateTime, Utc};
use common::*;
use serde_json::json;
use sqlx::PgPool;

pub(crate) async fn insert(pool: &PgPool, tasks: &[NewTask]) {
    let mut conn = pool.acquire().await.unwrap();
    queue::insert_tasks(&mut conn, tasks).await.unwrap();
}

pub(crate) fn task(kind: &str, key: &str) -> NewTask {
    NewTask::new(kind, key, json!({}))
}

async fn status_of(pool: &PgPool, id: i64) -> (String, i32) {
    sqlx::query_as("SELECT status, attempt FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until task `id` is `status` (`what` names the wait if it times out).
async fn wait_status(pool: &PgPool, id: i64, status: &str, what: &str) {
    eventually(what, || async {
        (status_of(pool, id).await.0 == status).then_some(())
    })
    .await;
}

async fn only_task_id(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT id FROM tasks")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Fails with a retryable error `failures` times, then succeeds.
struct Flaky {
    failures: u32,
    calls: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl TaskHandler for Flaky {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.failures {
            let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer reset");
            return Err(TaskError::retry(SmtpLike(io)));
        }
        Ok(())
    }
}

/// An error with a source, to check the stored chain.
#[derive(Debug, thiserror::Error)]
#[error("sending failed")]
struct SmtpLike(#[source] std::io::Error);

struct Permanent;

#[async_trait::async_trait]
impl TaskHandler for Permanent {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        Err(TaskError::permanent("the address does not exist"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_task_is_retried_with_growing_delays_until_it_succeeds() {
    let db = TestDatabase::new().await;
    let calls = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    registry.register(
        "flaky",
        Flaky {
            failures: 2,
            calls: calls.clone(),
        },
    );
    let mut config = fast_config("w");
    config.retry_base = Duration::from_millis(100);
    config.retry_max = Duration::from_secs(5);
    insert(&db.pool, &[task("flaky", "k1")]).await;
    let running = start(&db, registry, config, false).await;
    let id = only_task_id(&db.pool).await;
    wait_status(&db.pool, id, "succeeded", "the task to succeed").await;
    running.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    type Attempt = (i32, String, Option<String>, DateTime<Utc>, DateTime<Utc>);
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT attempt, outcome, error, started_at, finished_at FROM task_attempts WHERE task_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "succeeded"]);
    assert_eq!(
        attempts[0].2.as_deref(),
        Some("sending failed: peer reset"),
        "the full error chain"
    );
    // Backoff: the second retry waited at least twice the base, the first at least the base.
    let gap = |a: usize| (attempts[a + 1].3 - attempts[a].4).num_milliseconds();
    assert!(gap(0) >= 100, "first retry after {} ms", gap(0));
    assert!(gap(1) >= 200, "second retry after {} ms", gap(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_keeps_failing_ends_dead_after_its_budget() {
    let db = TestDatabase::new().await;
    let mut registry = Registry::new();
    registry.register(
        "flaky",
        Flaky {
            failures: u32::MAX,
            calls: Arc::default(),
        },
    );
    let mut t = task("flaky", "k");
    t.max_attempts = 3;
    insert(&db.pool, &[t]).await;
    let running = start(&db, registry, fast_config("w"), false).await;
    let id = only_task_id(&db.pool).await;
    wait_status(&db.pool, id, "dead", "the task to be dead").await;
    running.stop().await;
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM task_attempts WHERE task_id = $1 ORDER BY attempt")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["retry", "retry", "dead"]);
    let (finished, error): (Option<DateTime<Utc>>, Option<String>) =
        sqlx::query_as("SELECT finished_at, last_error FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(finished.is_some());
    assert_eq!(error.as_deref(), Some("sending failed: peer reset"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_failure_is_not_retried_and_unknown_kinds_fail() {
    let db = TestDatabase::new().await;
    let mut registry = Registry::new();
    registry.register("permanent", Permanent);
    insert(
        &db.pool,
        &[task("permanent", "a"), task("nobody-handles-this", "b")],
    )
    .await;
    let running = start(&db, registry, fast_config("w"), false).await;
    wait_idle(&db.pool, 2).await;
    running.stop().await;
    let rows: Vec<(String, String, i32, Option<String>)> =
        sqlx::query_as("SELECT kind, status, attempt, last_error FROM tasks ORDER BY kind")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows[0].0, "nobody-handles-this");
    assert_eq!((rows[0].1.as_str(), rows[0].2), ("failed", 1));
    assert!(rows[0].3.as_deref().unwrap().contains("no handler"));
    assert_eq!((rows[1].1.as_str(), rows[1].2), ("failed", 1));
    assert_eq!(rows[1].3.as_deref(), Some("the address does not exist"));
}

/// Every report of `stale`, a claim a later claim of its task superseded, is rejected:
/// its completion, its failure (to retry after `retry_after`), its heartbeat and its
/// release change nothing.
async fn assert_fenced_out(
    pool: &PgPool,
    stale: &queue::TaskRow,
    lease: Duration,
    retry_after: Option<Duration>,
) {
    let late = stale.done();
    assert!(queue::complete(pool, &[late]).await.unwrap().is_empty());
    let late_failure = stale.failed("late", retry_after);
    assert!(queue::fail(pool, &[late_failure]).await.unwrap().is_empty());
    assert!(queue::heartbeat(pool, &[late], lease)
        .await
        .unwrap()
        .is_empty());
    assert!(queue::release(pool, &[late]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_attempts_late_completion_is_rejected() {
    let db = TestDatabase::new().await;
    insert(&db.pool, &[task("noop", "k")]).await;
    let lease = Duration::from_secs(60);
    // Worker A claims attempt 1, then stalls past its lease.
    let a = queue::claim(&db.pool, "A", 10, lease, true).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].attempt, 1);
    let id = a[0].id;
    sqlx::query("UPDATE tasks SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    // Any worker rescues it; worker B claims attempt 2.
    assert_eq!(queue::rescue_expired(&db.pool, 100).await.unwrap(), 1);
    let b = queue::claim(&db.pool, "B", 10, lease, true).await.unwrap();
    assert_eq!((b[0].id, b[0].attempt), (id, 2));
    // A wakes up and reports: rejected, whether success or failure, and A's heartbeat
    // no longer extends anything.
    assert_fenced_out(&db.pool, &a[0], lease, Some(Duration::ZERO)).await;
    assert_eq!(status_of(&db.pool, id).await, ("running".to_owned(), 2));
    // B's completion counts.
    assert_eq!(
        queue::complete(&db.pool, &[b[0].done()]).await.unwrap(),
        vec![id]
    );
    assert_eq!(status_of(&db.pool, id).await, ("succeeded".to_owned(), 2));
    let outcomes: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT attempt, worker, outcome FROM task_attempts WHERE task_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        vec![
            (1, "A".to_owned(), "lease_expired".to_owned()),
            (2, "B".to_owned(), "succeeded".to_owned())
        ]
    );
    // Completing twice is rejected too.
    assert!(queue::complete(&db.pool, &[b[0].done()])
        .await
        .unwrap()
        .is_empty());
}

/// Claims commit asynchronously: a database crash can lose the last ones, and recovery
/// leaves such a task pending at its previous attempt. The next claim then has the same
/// attempt number as the lost one, whose worker may still be running; the claim's time
/// keeps the fence: the lost claim's outcome, heartbeat and release are all rejected.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_lost_in_a_database_crash_cannot_finish_its_successors_attempt() {
    let db = TestDatabase::new().await;
    insert(&db.pool, &[task("noop", "k")]).await;
    let lease = Duration::from_secs(60);
    let lost = queue::claim(&db.pool, "A", 10, lease, true).await.unwrap();
    assert_eq!(lost[0].attempt, 1);
    let id = lost[0].id;
    // What recovery leaves of a claim whose commit never reached the disk.
    sqlx::query(
        "UPDATE tasks SET status = 'pending', attempt = 0, lease_until = NULL, worker = NULL,
                          started_at = NULL, claimed_at = NULL
         WHERE id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM task_attempts WHERE task_id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let again = queue::claim(&db.pool, "B", 10, lease, true).await.unwrap();
    assert_eq!((again[0].id, again[0].attempt), (id, 1));
    assert_ne!(again[0].claimed_at, lost[0].claimed_at);

    assert_fenced_out(&db.pool, &lost[0], lease, None).await;
    assert_eq!(status_of(&db.pool, id).await, ("running".to_owned(), 1));
    assert_eq!(
        queue::complete(&db.pool, &[again[0].done()]).await.unwrap(),
        vec![id]
    );
    assert_eq!(status_of(&db.pool, id).await, ("succeeded".to_owned(), 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rescued_task_on_its_last_attempt_is_dead() {
    let db = TestDatabase::new().await;
    let mut t = task("noop", "k");
    t.max_attempts = 1;
    insert(&db.pool, &[t]).await;
    let claimed = queue::claim(&db.pool, "A", 1, Duration::from_millis(1), true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(queue::rescue_expired(&db.pool, 100).await.unwrap(), 1);
    assert_eq!(status_of(&db.pool, claimed[0].id).await.0, "dead");
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_follow_priority_then_run_at_and_skip_future_tasks() {
    let db = TestDatabase::new().await;
    let mut low = task("noop", "low");
    low.priority = 90;
    let mut high = task("noop", "high");
    high.priority = 10;
    let mut later = task("noop", "later");
    later.priority = 0;
    later.run_at = Some(Utc::now() + chrono::Duration::hours(1));
    let mut mid = task("noop", "mid");
    mid.priority = 40;
    insert(&db.pool, &[low, high, later, mid]).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        for claimed in queue::claim(&db.pool, "w", 1, Duration::from_secs(30), true)
            .await
            .unwrap()
        {
            order.push(claimed.idempotency_key);
        }
    }
    assert_eq!(order, ["high", "mid", "low"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_retry_is_a_new_task_linked_to_the_old_one_whose_history_stays() {
    let db = TestDatabase::new().await;
    let mut t = task("flaky", "key-1");
    t.max_attempts = 1;
    t.event_id = Some(uuid::Uuid::new_v4());
    insert(&db.pool, &[t]).await;
    let calls = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    registry.register(
        "flaky",
        Flaky {
            failures: 1,
            calls: calls.clone(),
        },
    );
    let running = start(&db, registry, fast_config("w"), false).await;
    let old = only_task_id(&db.pool).await;
    wait_status(&db.pool, old, "dead", "the task to be dead").await;
    let not_finished = aula_processor::retry_task(&db.pool, 999_999).await;
    assert!(not_finished.is_err());
    let new = aula_processor::retry_task(&db.pool, old).await.unwrap();
    wait_status(&db.pool, new, "succeeded", "the retry to succeed").await;
    running.stop().await;
    let (origin, key, event_matches): (Option<i64>, String, bool) = sqlx::query_as(
        "SELECT n.origin_task_id, n.idempotency_key, n.event_id = o.event_id FROM tasks n, tasks o WHERE n.id = $1 AND o.id = $2",
    )
    .bind(new)
    .bind(old)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(origin, Some(old));
    assert_eq!(key, "key-1");
    assert!(event_matches);
    assert_eq!(
        status_of(&db.pool, old).await,
        ("dead".to_owned(), 1),
        "the old task is unchanged"
    );
    let history: Vec<(i64, String)> =
        sqlx::query_as("SELECT task_id, outcome FROM task_attempts ORDER BY task_id, attempt")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        history,
        vec![(old, "dead".to_owned()), (new, "succeeded".to_owned())]
    );
}

/// Blocks until the test lets it go.
struct Blocking(Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl TaskHandler for Blocking {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        self.0.notified().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_shutdown_releases_tasks_that_do_not_finish_in_time() {
    let db = TestDatabase::new().await;
    insert(&db.pool, &[task("block", "k")]).await;
    let mut registry = Registry::new();
    registry.register("block", Blocking(Arc::default()));
    let mut config = fast_config("w");
    config.drain_timeout = Duration::from_millis(200);
    let running = start(&db, registry, config, false).await;
    let id = only_task_id(&db.pool).await;
    wait_status(&db.pool, id, "running", "the task to run").await;
    running.stop().await;
    let (status, max_attempts): (String, i32) =
        sqlx::query_as("SELECT status, max_attempts FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(
        max_attempts, 6,
        "a released attempt does not count against the budget"
    );
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM task_attempts WHERE task_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "released");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_shutdown_lets_running_tasks_finish() {
    let db = TestDatabase::new().await;
    insert(&db.pool, &[task("block", "k")]).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    registry.register("block", Blocking(release.clone()));
    let running = start(&db, registry, fast_config("w"), false).await;
    let id = only_task_id(&db.pool).await;
    wait_status(&db.pool, id, "running", "the task to run").await;
    running.trigger.trigger();
    release.notify_one();
    within(running.workers).await.unwrap().unwrap();
    assert_eq!(status_of(&db.pool, id).await.0, "succeeded");
}

/// Records each execution (no key) and each effect (one per task).
struct Effect;

#[async_trait::async_trait]
impl TaskHandler for Effect {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        sqlx::query("INSERT INTO executions (task_id, attempt, worker) VALUES ($1, $2, $3)")
            .bind(ctx.task.id)
            .bind(ctx.task.attempt)
            .bind(&ctx.worker)
            .execute(&ctx.pool)
            .await?;
        sqlx::query("INSERT INTO effects (task_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(ctx.task.id)
            .execute(&ctx.pool)
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_worker_sets_run_each_task_exactly_once() {
    let db = TestDatabase::new().await;
    sqlx::raw_sql(
        "CREATE TABLE executions (task_id bigint, attempt int, worker text);
         CREATE TABLE effects (task_id bigint PRIMARY KEY);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let total = 3000;
    let tasks: Vec<NewTask> = (0..total)
        .map(|i| task("effect", &format!("k{i}")))
        .collect();
    let mut runners = Vec::new();
    for w in 0..3 {
        let mut registry = Registry::new();
        registry.register("effect", Effect);
        runners.push(start(&db, registry, fast_config(&format!("w{w}")), false).await);
    }
    // Inserted while the workers are already waiting: they are woken by NOTIFY.
    for chunk in tasks.chunks(500) {
        insert(&db.pool, chunk).await;
    }
    wait_idle(&db.pool, total).await;
    for runner in runners {
        runner.stop().await;
    }
    assert_each_task_succeeded_once(&db.pool, "effects", total).await;
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM executions").await,
        total,
        "no task ran twice"
    );
    let workers = scalar_i64(&db.pool, "SELECT count(DISTINCT worker) FROM executions").await;
    assert!(
        workers >= 2,
        "the work was shared, {workers} worker set(s) did it all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_archive_moves_old_succeeded_tasks_and_their_attempts_by_the_injected_clock() {
    let db = TestDatabase::new().await;
    let now: DateTime<Utc> = "2026-11-23T03:00:00Z".parse().unwrap();
    // 5 succeeded 2 days ago, 2 succeeded 1 hour ago, 1 dead 3 days ago, 1 pending.
    let mut tasks = Vec::new();
    for i in 0..9 {
        tasks.push(task("noop", &format!("k{i}")));
    }
    insert(&db.pool, &tasks).await;
    sqlx::raw_sql(
        "INSERT INTO task_attempts (task_id, attempt, worker, outcome) SELECT id, 1, 'w', 'succeeded' FROM tasks;
         UPDATE tasks SET status = 'succeeded', attempt = 1, finished_at = '2026-11-21T03:00:00Z' WHERE idempotency_key IN ('k0','k1','k2','k3','k4');
         UPDATE tasks SET status = 'succeeded', attempt = 1, finished_at = '2026-11-23T02:00:00Z' WHERE idempotency_key IN ('k5','k6');
         UPDATE tasks SET status = 'dead', attempt = 1, finished_at = '2026-11-20T03:00:00Z' WHERE idempotency_key = 'k7';",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    aula_processor::stash_token(&db.pool, "old", "raw", now - chrono::Duration::hours(2))
        .await
        .unwrap();
    aula_processor::stash_token(&db.pool, "fresh", "raw", now + chrono::Duration::hours(2))
        .await
        .unwrap();
    let config = ArchiveConfig {
        batch_size: 2,
        ..ArchiveConfig::default()
    };
    let report = archive_once(&db.pool, now, &config).await.unwrap();
    assert_eq!(
        (report.tasks_moved, report.attempts_moved, report.batches),
        (5, 5, 3)
    );
    assert_eq!(report.tokens_purged, 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM tasks ORDER BY idempotency_key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, ["k5", "k6", "k7", "k8"]);
    let archived: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT idempotency_key, archived_at FROM tasks_archive ORDER BY idempotency_key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(archived.len(), 5);
    assert!(archived.iter().all(|(_, at)| *at == now));
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM task_attempts_archive").await,
        5
    );
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM task_attempts").await,
        4
    );
    // A day later the two recent ones go too; nothing is moved twice.
    let report = archive_once(&db.pool, now + chrono::Duration::days(1), &config)
        .await
        .unwrap();
    assert_eq!(report.tasks_moved, 2);
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM tasks_archive").await,
        7
    );
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM archive_runs WHERE finished_at IS NOT NULL"
        )
        .await,
        2
    );
}
