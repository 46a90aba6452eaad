//! The queue's schema changes upgrade a populated database: a database migrated to
//! 0016 (before the asynchronous admin rows of 0017) holding events, their admin rows
//! and tasks in every state of the old shape is migrated to the end, and today's
//! workers finish its tasks and bring every event's row and the counters to what a full
//! recount says.

use crate::common;

use std::borrow::Cow;
use std::time::Duration;

use aula_eventlog::shutdown;
use aula_eventlog::testing::TestDatabase;
use aula_processor::handlers::{Noop, Registry};
use aula_processor::queue::{self, NewTask};
use aula_processor::{kinds, run_workers, status_counts, ProcessorConfig};
use common::*;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

/// An event's row: its aggregate, status, task counts, whether its processed time is its
/// tasks' last finish, its error.
type EventRow = (String, String, i32, i32, i32, i32, bool, Option<String>);

/// The last migration of the old shape.
const OLD_SHAPE: i64 = 16;

/// Old-shape rows, as 0016's processor wrote them, for five events (`u-1`..`u-5`): one
/// with a pending task, one with a running task whose worker is gone, one with a
/// succeeded task, one without tasks, one with a dead task and a pending manual retry;
/// one task without an event, their attempts, admin rows and counters.
const OLD_ROWS: &str = "
INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                          recorded_at, tx_id)
SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence, recorded_at,
       tx_id::text::bigint
FROM events WHERE aggregate_type = 'upgrade';

INSERT INTO tasks (kind, status, attempt, lease_until, worker, event_id, event_type, idempotency_key,
                   started_at, claimed_at, finished_at, origin_task_id)
SELECT 'noop', v.status, v.attempt,
       CASE WHEN v.status = 'running' THEN now() - interval '10 seconds' END,
       CASE WHEN v.status = 'running' THEN 'gone' END,
       e.event_id, e.event_type, 'upgrade:' || e.aggregate_id || ':' || v.status,
       CASE WHEN v.attempt > 0 THEN now() - interval '50 seconds' END,
       CASE WHEN v.attempt > 0 THEN now() - interval '50 seconds' END,
       CASE WHEN v.status IN ('succeeded', 'dead') THEN now() - interval '40 seconds' END,
       NULL
FROM events e
JOIN (VALUES ('u-1', 'pending', 0), ('u-2', 'running', 1), ('u-3', 'succeeded', 1), ('u-5', 'dead', 5))
     AS v(aggregate_id, status, attempt) ON v.aggregate_id = e.aggregate_id;
-- The manual retry of the dead task: a new pending task naming it.
INSERT INTO tasks (kind, event_id, event_type, idempotency_key, origin_task_id)
SELECT kind, event_id, event_type, idempotency_key, id FROM tasks WHERE status = 'dead';
INSERT INTO tasks (kind, idempotency_key) VALUES ('noop', 'upgrade:eventless');

INSERT INTO task_attempts (task_id, attempt, worker, started_at, finished_at, duration_ms, outcome)
SELECT id, attempt, 'old', started_at, finished_at,
       CASE WHEN finished_at IS NOT NULL THEN 10000 END,
       CASE status WHEN 'running' THEN 'running' ELSE status END
FROM tasks WHERE attempt > 0;

UPDATE admin_events a SET tasks_pending = 1 FROM events e
WHERE e.event_id = a.event_id AND e.aggregate_id = 'u-1';
UPDATE admin_events a SET tasks_running = 1 FROM events e
WHERE e.event_id = a.event_id AND e.aggregate_id = 'u-2';
UPDATE admin_events a SET status = 'succeeded', tasks_succeeded = 1,
       processed_at = now() - interval '40 seconds',
       duration_ms = (extract(epoch FROM now() - interval '40 seconds' - a.recorded_at) * 1000)::bigint
FROM events e WHERE e.event_id = a.event_id AND e.aggregate_id = 'u-3';
UPDATE admin_events a SET status = 'succeeded', processed_at = a.recorded_at, duration_ms = 0
FROM events e WHERE e.event_id = a.event_id AND e.aggregate_id = 'u-4';
UPDATE admin_events a SET tasks_pending = 1, tasks_failed = 1, error = 'smtp down'
FROM events e WHERE e.event_id = a.event_id AND e.aggregate_id = 'u-5';

INSERT INTO task_status_counts (kind, status, count) VALUES
    ('task', 'pending', 3), ('task', 'running', 1), ('task', 'succeeded', 1), ('task', 'dead', 1),
    ('event', 'pending', 3), ('event', 'succeeded', 2);
INSERT INTO processing_rollups (minute, kind, status, count)
SELECT date_trunc('minute', finished_at), 'task', status, count(*) FROM tasks
WHERE finished_at IS NOT NULL GROUP BY 1, 3;
INSERT INTO processing_rollups (minute, kind, status, count)
SELECT date_trunc('minute', processed_at), 'event', 'succeeded', count(*) FROM admin_events
WHERE status = 'succeeded' GROUP BY 1;
";

async fn old_shape_database() -> (String, PgPool) {
    let events = old_events("upgrade", "u", "UpgradeTested", 5);
    database_at(OLD_SHAPE, &events, OLD_ROWS).await
}

/// Today's workers on `pool`, running `noop` tasks and rescuing lost ones quickly.
fn noop_workers(pool: &PgPool, worker_name: &str) -> Running {
    let mut registry = Registry::new();
    registry.register(kinds::NOOP, Noop);
    let config = ProcessorConfig {
        worker_name: worker_name.into(),
        concurrency: 4,
        lease: Duration::from_secs(5),
        rescue_interval: Duration::from_millis(100),
        ..ProcessorConfig::default()
    };
    let (trigger, stop) = shutdown::channel();
    Running {
        trigger,
        reactions: None,
        admissions: None,
        workers: tokio::spawn(run_workers(pool.clone(), config, registry, stop)),
    }
}

async fn drop_database(pool: PgPool, name: &str) {
    pool.close().await;
    let mut conn = sqlx::ConnectOptions::connect(&TestDatabase::admin_options().await)
        .await
        .unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

/// `count` events of type `event_type` recorded a minute ago, in streams `<prefix>-1`,
/// `<prefix>-2`... of aggregate type `aggregate_type`.
fn old_events(aggregate_type: &str, prefix: &str, event_type: &str, count: i32) -> String {
    format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                             recorded_at)
         SELECT '{aggregate_type}', '{prefix}-' || g, 1, '{event_type}', '1.0', '{{}}', '{{}}', now() - interval '1 minute'
         FROM generate_series(1, {count}) g"
    )
}

/// A database migrated up to `version` holding `events` (see [`old_events`]), then
/// `rows`.
async fn database_at(version: i64, events: &str, rows: &str) -> (String, PgPool) {
    let admin = TestDatabase::admin_options().await;
    let name = format!("aula_upgrade_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::ConnectOptions::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(admin.database(&name))
        .await
        .unwrap();
    let old = Migrator {
        migrations: Cow::Owned(
            aula_migrations::MIGRATOR
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    old.run(&pool).await.unwrap();
    sqlx::raw_sql(events).execute(&pool).await.unwrap();
    sqlx::raw_sql(rows).execute(&pool).await.unwrap();
    (name, pool)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_of_the_old_shape_is_upgraded_and_its_tasks_and_event_rows_finish() {
    let (name, pool) = old_shape_database().await;
    aula_migrations::run(&pool).await.unwrap();
    let applied: i64 = scalar_i64(&pool, "SELECT max(version) FROM _sqlx_migrations").await;
    assert_eq!(
        applied,
        aula_migrations::MIGRATOR
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap()
    );

    let workers = noop_workers(&pool, "upgraded");
    // The running task of the lost worker is rescued and run again; every other open
    // task runs once.
    wait_idle(&pool, 6).await;
    workers.stop().await;

    assert_eq!(
        scalar_i64(&pool, "SELECT count(*) FROM admin_event_refresh").await,
        0
    );
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT e.aggregate_id, a.status, a.tasks_pending, a.tasks_running, a.tasks_succeeded,
                a.tasks_failed,
                a.processed_at IS NOT DISTINCT FROM (SELECT max(finished_at) FROM tasks t
                                                    WHERE t.event_id = a.event_id)
                    OR (e.aggregate_id = 'u-4' AND a.processed_at = a.recorded_at),
                a.error
         FROM admin_events a JOIN events e USING (event_id) ORDER BY e.aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = |id: &str, status: &str, counts: [i32; 4], error: Option<&str>| {
        (
            id.to_owned(),
            status.to_owned(),
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            true,
            error.map(str::to_owned),
        )
    };
    assert_eq!(
        rows,
        vec![
            expected("u-1", "succeeded", [0, 0, 1, 0], None),
            // The rescue's error stays on the row, for the admin's information.
            expected(
                "u-2",
                "succeeded",
                [0, 0, 1, 0],
                Some("the lease expired: worker gone was lost"),
            ),
            expected("u-3", "succeeded", [0, 0, 1, 0], None),
            expected("u-4", "succeeded", [0, 0, 0, 0], None),
            // The manual retry succeeded: its outcome replaces the dead task's.
            expected("u-5", "succeeded", [0, 0, 1, 0], Some("smtp down")),
        ]
    );
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT a.outcome FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.idempotency_key LIKE 'upgrade:u-2:%' ORDER BY a.attempt",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["lease_expired", "succeeded"]);

    let counts: Vec<(String, String, i64)> = status_counts(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.2 != 0)
        .collect();
    let recount: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, status, n FROM (
             SELECT 'event' AS kind, status, count(*) AS n FROM admin_events GROUP BY status
             UNION ALL SELECT 'task', status, count(*) FROM tasks GROUP BY status) c
         ORDER BY kind = 'task', array_position(ARRAY['pending', 'running', 'succeeded', 'failed', 'dead'], status)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(counts, recount);

    drop_database(pool, &name).await;
}

/// The last migration before the narrow queue (0046): `tasks` was queue and history.
const WIDE_SHAPE: i64 = 45;

/// Tasks in every status as 0045's processor left them in the one wide `tasks` table:
/// pending, retrying (pending with an error), paused (its kind resumed since: the
/// rescuer's sweep unparks it), running (its worker gone, lease expired), succeeded,
/// failed, dead and cancelled, each issued by an event of its own; their attempts; the
/// task counters as the processor kept them.
const WIDE_ROWS: &str = "
INSERT INTO tasks (kind, status, attempt, lease_until, worker, event_id, event_type, idempotency_key,
                   started_at, claimed_at, finished_at, last_error)
SELECT 'noop', v.status, v.attempt,
       CASE WHEN v.status = 'running' THEN now() - interval '10 seconds' END,
       CASE WHEN v.status = 'running' THEN 'gone' END,
       e.event_id, e.event_type, 'wide:' || e.aggregate_id,
       CASE WHEN v.attempt > 0 THEN now() - interval '50 seconds' END,
       CASE WHEN v.attempt > 0 THEN now() - interval '50 seconds' END,
       CASE WHEN v.status IN ('succeeded', 'failed', 'dead', 'cancelled') THEN now() - interval '40 seconds' END,
       v.error
FROM events e
JOIN (VALUES ('w-1', 'pending', 0, NULL), ('w-2', 'pending', 1, 'boom'), ('w-3', 'paused', 0, NULL),
             ('w-4', 'running', 1, NULL), ('w-5', 'succeeded', 1, NULL), ('w-6', 'failed', 1, 'refused'),
             ('w-7', 'dead', 5, 'boom'), ('w-8', 'cancelled', 0, NULL))
     AS v(aggregate_id, status, attempt, error) ON v.aggregate_id = e.aggregate_id;

INSERT INTO task_attempts (task_id, attempt, worker, started_at, finished_at, duration_ms, outcome, error)
SELECT id, attempt, 'old', started_at, finished_at,
       CASE WHEN finished_at IS NOT NULL THEN 10000 END,
       CASE status WHEN 'pending' THEN 'retry' ELSE status END, last_error
FROM tasks WHERE attempt > 0;

INSERT INTO task_status_counts (kind, status, count)
SELECT 'task', CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 'retrying' ELSE status END,
       count(*)
FROM tasks GROUP BY 2;
";

#[tokio::test(flavor = "multi_thread")]
async fn the_wide_tasks_table_is_split_into_queue_and_history_and_its_tasks_finish() {
    let events = old_events("wide", "w", "WideTested", 8);
    let (name, pool) = database_at(WIDE_SHAPE, &events, WIDE_ROWS).await;
    let before: String = sqlx::query_scalar("SELECT json_agg(t ORDER BY t.id)::text FROM tasks t")
        .fetch_one(&pool)
        .await
        .unwrap();
    let attempts_before = scalar_i64(&pool, "SELECT count(*) FROM task_attempts").await;
    aula_migrations::run(&pool).await.unwrap();

    // Every task kept as it was, read through the view `tasks`; the unfinished ones in
    // the queue, the finished ones in the history; every attempt kept.
    let after: String = sqlx::query_scalar("SELECT json_agg(t ORDER BY t.id)::text FROM tasks t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&after).unwrap(),
        serde_json::from_str::<serde_json::Value>(&before).unwrap()
    );
    let statuses = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!("SELECT status FROM {table} ORDER BY id"))
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        statuses("task_queue").await,
        ["pending", "pending", "paused", "running"]
    );
    assert_eq!(
        statuses("task_history").await,
        ["succeeded", "failed", "dead", "cancelled"]
    );
    assert_eq!(
        scalar_i64(&pool, "SELECT count(*) FROM task_attempts").await,
        attempts_before
    );

    // An event issues a task of a kind once, whether that task waits or finished.
    let again: Vec<NewTask> = sqlx::query_as::<_, (uuid::Uuid, String)>(
        "SELECT event_id, event_type FROM events WHERE aggregate_type = 'wide' ORDER BY aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(event_id, event_type)| NewTask {
        event_id: Some(event_id),
        event_type: Some(event_type),
        ..NewTask::new(kinds::NOOP, "again", serde_json::json!({}))
    })
    .collect();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(queue::insert_tasks(&mut conn, &again).await.unwrap(), 0);
    drop(conn);

    let workers = noop_workers(&pool, "split");
    // The lost worker's task is rescued and run again, the retrying one retried, the
    // parked one unparked and run: the queue empties into the history.
    eventually("the upgraded queue to drain", || async {
        (scalar_i64(&pool, "SELECT count(*) FROM task_queue").await == 0).then_some(())
    })
    .await;
    workers.stop().await;

    let finished: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.aggregate_id, t.status FROM task_history t JOIN events e USING (event_id)
         ORDER BY e.aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = [
        ("w-1", "succeeded"),
        ("w-2", "succeeded"),
        ("w-3", "succeeded"),
        ("w-4", "succeeded"),
        ("w-5", "succeeded"),
        ("w-6", "failed"),
        ("w-7", "dead"),
        ("w-8", "cancelled"),
    ]
    .into_iter()
    .map(|(a, s)| (a.to_owned(), s.to_owned()))
    .collect();
    assert_eq!(finished, expected);
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT a.outcome FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.idempotency_key = 'wide:w-4' ORDER BY a.attempt",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["lease_expired", "succeeded"]);

    // The counters kept across the upgrade still say what a recount says.
    let counts: Vec<(String, i64)> = status_counts(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.0 == "task" && c.2 != 0)
        .map(|c| (c.1, c.2))
        .collect();
    let recount: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM tasks GROUP BY status
         ORDER BY array_position(ARRAY['pending', 'retrying', 'paused', 'running', 'succeeded',
                                       'failed', 'dead', 'cancelled'], status)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(counts, recount);

    drop_database(pool, &name).await;
}

/// 0052 and 0053 on a populated database: a finished job whose counts did not add up (events a
/// single reprocess resolved meanwhile) gets them as `skipped`; a running or cancelled
/// job gets none (its runner counts them when it ends).
#[tokio::test(flavor = "multi_thread")]
async fn finished_bulk_jobs_get_what_they_skipped_on_upgrade() {
    let rows = "
INSERT INTO bulk_reprocess_jobs (id, filter, up_to_position, up_to_tx, requested_by, status, total,
                                 done, failed)
VALUES ('00000000-0000-0000-0000-000000000001', '{}', 10, 5, 'system', 'done', 6, 4, 0),
       ('00000000-0000-0000-0000-000000000002', '{}', 10, 5, 'system', 'done', 5, 4, 1),
       ('00000000-0000-0000-0000-000000000003', '{}', 10, 5, 'system', 'running', 6, 2, 0),
       ('00000000-0000-0000-0000-000000000004', '{}', 10, 5, 'system', 'cancelled', 6, 1, 0);";
    let (name, pool) = database_at(51, "SELECT 1", rows).await;
    aula_migrations::run(&pool).await.unwrap();
    let skipped: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT status, total, done, failed, skipped FROM bulk_reprocess_jobs ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        skipped,
        vec![
            ("done".into(), 6, 4, 0, 2),
            ("done".into(), 5, 4, 1, 0),
            ("running".into(), 6, 2, 0, 0),
            ("cancelled".into(), 6, 1, 0, 0),
        ]
    );
    // 0053: jobs recorded before it have no members, and their runner knows it (the
    // running one filters the list as it goes: `bulk::a_job_recorded_before_its_members_
    // stops_at_its_total`).
    let (fixed, members): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bulk_reprocess_jobs WHERE fixed_members),
                (SELECT count(*) FROM bulk_reprocess_members)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((fixed, members), (0, 0), "jobs with fixed members, members");
    drop_database(pool, &name).await;
}
